import path from 'node:path';
import type { WorkspaceResult, WorkspaceRunResult } from '../../api/schemas/workspace.js';
import { WORKSPACE_MODES, type WorkspaceModeName } from '../../api/workspaceModes.js';
import { BangerError } from '../../errors.js';
import { formatSize } from '../../util/units.js';
import type { CliContext } from '../context.js';
import { ExitWith } from '../exit.js';
import {
  createRequest,
  remindIfRunning,
  failedRun,
  removeQuietly,
  specPrinter,
  sshInto,
  type RunFlags,
} from './vm.js';

/** `banger vm run PATH` and `banger vm workspace prepare`: thin wrappers over the workspace routes. */

export interface WorkspaceRunFlags extends RunFlags {
  mode?: string;
}

export function parseMode(mode: string | undefined): WorkspaceModeName {
  if (mode === undefined) return 'shallow';
  if (!(WORKSPACE_MODES as readonly string[]).includes(mode)) {
    throw new BangerError('usage', `invalid --mode '${mode}'`, {
      hint: `use ${WORKSPACE_MODES.join(' or ')}`,
    });
  }
  return mode as WorkspaceModeName;
}

export async function vmRunWorkspace(
  ctx: CliContext,
  hostPath: string | undefined,
  f: WorkspaceRunFlags,
  command: string[],
): Promise<void> {
  if (hostPath === undefined) {
    const given = (['branch', 'from', 'mode'] as const)
      .filter((k) => f[k] !== undefined)
      .map((k) => `--${k}`);
    throw new BangerError(
      'usage',
      `${given.slice(0, -1).join(', ')}${given.length > 1 ? ' and ' : ''}${given.at(-1)} ${given.length === 1 ? 'needs' : 'need'} a PATH to copy`,
      {
        hint: `e.g. banger vm run . ${given.includes('--mode') ? '--mode full_copy' : '--branch feat'}`,
      },
    );
  }
  if (f.from !== undefined && f.branch === undefined) {
    throw new BangerError('usage', '--from needs --branch', {
      hint: 'pass --branch NAME to say which branch to create from that ref',
    });
  }
  const mode = parseMode(f.mode);
  let r: WorkspaceRunResult;
  try {
    r = await ctx.stream(
      'workspaceRun',
      {
        body: {
          vm: createRequest(f, true),
          workspace: { path: path.resolve(hostPath), mode, branch: f.branch, from: f.from },
        },
      },
      { onItem: specPrinter(ctx) },
    );
  } catch (e) {
    throw await failedRun(ctx, f, e);
  }
  if (r.workspace.toolingLog)
    ctx.note(`tooling: mise install runs in the background, log in ${r.workspace.toolingLog}`);
  const { sessionCommand } = await import('../../guest/ssh.js');
  const code = await sshInto(ctx, r.vm, command, {
    script: sessionCommand(r.workspace.setup, command),
  });
  if (f.rm) await removeQuietly(ctx, r.vm.name);
  else if (command.length === 0) await remindIfRunning(ctx, r.vm.name);
  if (code !== 0) throw new ExitWith(code);
}

export interface PrepareFlags {
  guestPath?: string;
  mode?: string;
  readonly?: boolean;
}

export function formatPrepared(vm: string, r: WorkspaceResult): string {
  return (
    `${vm}:${r.guestPath}: ${r.files} files (${formatSize(r.bytes)}) copied, ` +
    `${r.unchanged} unchanged, ${r.removed} removed${r.readonly ? ', read-only' : ''}`
  );
}

export async function workspacePrepare(
  ctx: CliContext,
  ref: string,
  hostPath: string | undefined,
  f: PrepareFlags,
): Promise<void> {
  const r = await ctx.stream('workspacePrepare', {
    params: { ref },
    body: {
      path: path.resolve(hostPath ?? '.'),
      mode: parseMode(f.mode),
      guestPath: f.guestPath,
      readonly: Boolean(f.readonly),
    },
  });
  if (ctx.flags.json) ctx.printJson(r);
  else ctx.print(formatPrepared(ref, r));
}
