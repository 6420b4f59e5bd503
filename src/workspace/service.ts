import type { ProgressSink } from '../api/events.js';
import type { VmSpec, VmView } from '../api/schemas/vms.js';
import type {
  WorkspacePrepareRequest,
  WorkspaceResult,
  WorkspaceRunRequest,
  WorkspaceRunResult,
} from '../api/schemas/workspace.js';
import type { Paths } from '../config/paths.js';
import type { Config } from '../config/schema.js';
import type { Journal } from '../store/journal.js';
import { BangerError } from '../errors.js';
import { writeFilesExt4 } from '../storage/ext4.js';
import { writeTreeExt4 } from '../storage/ext4Tree.js';
import { formatSize } from '../util/units.js';
import { sweepDeadScratch } from '../util/scratch.js';
import { collectWorkspace, SCRATCH_PREFIX, type Collected } from './collect.js';
import {
  DEFAULT_GUEST_PATH,
  manifestPath,
  readManifestScript,
  receiveScript,
  setupScript,
  toolingLog,
  validateGuestPath,
} from './guestScript.js';
import { parseManifest, planUpdate, streamPreamble, totals } from './plan.js';
import { guestRun, receiveStream, type GuestTarget } from './transfer.js';

/**
 * Workspaces: a host directory (usually a git checkout) copied into a VM.
 * `run` writes it onto a new VM's work disk before the first boot (the guest
 * does nothing), or, for a warm-started VM, sends it like `prepare`; `prepare` sends it, or what changed since the last copy, to
 * a running VM as one tar over ssh. The host does the work: listing, git
 * metadata, the tar.
 */

/** What this service needs from the VM service (src/vm/service.ts), declared here by the consumer. */
export interface WorkspaceVms {
  /** `vm create` with a hook that fills the new work disk before the first boot. */
  create(
    req: WorkspaceRunRequest['vm'],
    emit: ProgressSink,
    signal: AbortSignal | undefined,
    hooks: {
      populateWorkDisk?: (workDisk: string) => Promise<void>;
      /** The same copy into the running guest (a warm-started VM): under the VM's lock. */
      populateRunning?: (vm: VmView) => Promise<void>;
    },
  ): Promise<{ vm: VmView; spec: VmSpec }>;
  show(ref: string): VmView;
  /**
   * Run fn under the VM's lock (no start, stop or delete meanwhile); refused
   * unless the VM is running then.
   */
  whileRunning<T>(ref: string, fn: (vm: VmView) => Promise<T>): Promise<T>;
}

export interface WorkspaceDeps {
  paths: Pick<Paths, 'tmpDir' | 'sshKey' | 'knownHosts'>;
  config(): Pick<Config, 'sshKeyPath'>;
  vms: WorkspaceVms;
  /** The intent journal (docs/reliability.md); without it (unit tests) nothing is journaled. */
  store?: { journal: Pick<Journal, 'run' | 'onRecover'> };
}

const STEP = 'workspace';
const SCAN_STEP = 'workspace:scan';

export class WorkspaceService {
  constructor(private readonly deps: WorkspaceDeps) {
    sweepDeadScratch(deps.paths.tmpDir, [SCRATCH_PREFIX]);
    // A prepare cut short leaves only its scratch listing on the host (swept by owner pid) and a
    // partial copy in the guest, which the next prepare completes (it re-reads the guest's manifest).
    deps.store?.journal.onRecover('workspace', async () => {
      sweepDeadScratch(deps.paths.tmpDir, [SCRATCH_PREFIX]);
    });
  }

  // ------------------------------------------------------------------ vm run PATH

  async run(
    req: WorkspaceRunRequest,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<WorkspaceRunResult> {
    const guestPath = DEFAULT_GUEST_PATH;
    const ws = req.workspace;
    if (ws.from !== undefined && ws.branch === undefined) {
      throw new BangerError('usage', '--from needs --branch', {
        hint: 'pass --branch NAME to say which branch to create from that ref',
      });
    }
    // Everything that can be wrong with PATH or the refs fails here, before any VM exists.
    const c = await this.collect(ws.path, ws.mode, emit, signal, ws);
    try {
      let written = { files: 0, bytes: 0 };
      const r = await this.deps.vms.create(req.vm, emit, signal, {
        populateWorkDisk: async (workDisk) => {
          written = await this.writeDisk(workDisk, c, guestPath, emit, signal);
        },
        // A warm start (docs/snapshots.md): the VM runs already, so the copy goes over ssh.
        populateRunning: async (vm) => {
          // No tooling start here: the session's setup script starts it, as after a cold start.
          const r = await this.send(vm, c, guestPath, false, emit, signal, () => undefined, false);
          written = { files: r.files, bytes: r.bytes };
        },
      });
      return {
        ...r,
        workspace: this.result(c, guestPath, {
          ...written,
          removed: 0,
          unchanged: 0,
          readonly: false,
        }),
      };
    } finally {
      await c.dispose();
    }
  }

  /**
   * The copy onto a new work disk: the working tree first (the git metadata
   * is still being built meanwhile), then `.git`, then the manifest.
   */
  private async writeDisk(
    workDisk: string,
    c: Collected,
    guestPath: string,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<{ files: number; bytes: number }> {
    const t0 = Date.now();
    const label = `Copying ${c.source} to ${guestPath}`;
    const dest = onWorkDisk(guestPath);
    emit({ type: 'step', id: STEP, label, state: 'start' });
    let total = totals(c.worktree);
    let base = { files: 0, bytes: 0 };
    const onProgress = (p: { files: number; bytes: number }): void =>
      emit({
        type: 'progress',
        id: STEP,
        current: base.bytes + p.bytes,
        total: total.bytes,
        unit: 'bytes',
        items: { current: base.files + p.files, total: total.files, label: 'files' },
      });
    await writeTreeExt4(workDisk, dest, c.worktree, { signal, onProgress });
    const meta = await c.metadata;
    if (meta.length) {
      base = total;
      const mt = totals(meta);
      total = { files: total.files + mt.files, bytes: total.bytes + mt.bytes };
      const inGit = meta
        .filter((e) => e.path !== '.git')
        .map((e) => ({ ...e, path: e.path.slice('.git/'.length) }));
      await writeTreeExt4(workDisk, `${dest}/.git`, inGit, { signal, onProgress });
    }
    const plan = planUpdate(guestPath, [...c.worktree, ...meta], undefined);
    await writeFilesExt4(
      workDisk,
      [
        {
          path: onWorkDisk(manifestPath(guestPath)),
          content: `${JSON.stringify(plan.manifest)}\n`,
          mode: 0o600,
        },
      ],
      [],
      signal,
    );
    emit({
      type: 'step',
      id: STEP,
      label,
      state: 'done',
      detail: `${total.files} files, ${formatSize(total.bytes)}`,
      ms: Date.now() - t0,
    });
    return total;
  }

  // ------------------------------------------------------------------ vm workspace prepare

  async prepare(
    ref: string,
    req: WorkspacePrepareRequest,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<WorkspaceResult> {
    const guestPath = validateGuestPath(req.guestPath ?? DEFAULT_GUEST_PATH);
    // Refused early (before reading PATH) when the VM is not running; checked again under its lock.
    const early = this.deps.vms.show(ref);
    if (early.state !== 'running') {
      throw new BangerError('precondition', `vm '${early.name}' is not running (${early.state})`, {
        hint: `start it first: banger vm start ${early.name}`,
      });
    }
    const c = await this.collect(req.path, req.mode, emit, signal, {});
    try {
      return await this.deps.vms.whileRunning(early.id, (vm) =>
        this.journaled(vm.id, (step) =>
          this.send(vm, c, guestPath, req.readonly, emit, signal, step),
        ),
      );
    } finally {
      await c.dispose();
    }
  }

  /** Run a prepare under an intent (`step` passes the journal's step boundaries), if there is a journal. */
  private journaled<T>(vmId: string, fn: (step: (s: string) => void) => Promise<T>): Promise<T> {
    const journal = this.deps.store?.journal;
    if (!journal) return fn(() => undefined);
    return journal.run('workspace', vmId, {}, (intent) => fn((s) => intent.step(s)));
  }

  private async send(
    vm: VmView,
    c: Collected,
    guestPath: string,
    readonly: boolean,
    emit: ProgressSink,
    signal: AbortSignal | undefined,
    step: (s: string) => void,
    tooling = true,
  ): Promise<WorkspaceResult> {
    const config = this.deps.config();
    const target: GuestTarget = {
      name: vm.name,
      ip: vm.ip!,
      keyPath: config.sshKeyPath ?? this.deps.paths.sshKey,
      knownHosts: this.deps.paths.knownHosts,
    };
    const label = `Copying ${c.source} to ${vm.name}:${guestPath}`;
    const t0 = Date.now();
    emit({ type: 'step', id: STEP, label, state: 'start' });
    const old = await guestRun(target, readManifestScript(guestPath), { signal });
    if (old.code !== 0) {
      emit({ type: 'step', id: STEP, label, state: 'fail' });
      throw sshFailure(vm.name, old.stderr);
    }
    step('after-manifest');
    const plan = planUpdate(guestPath, await c.all(), parseManifest(old.stdout, guestPath));
    const t = totals(plan.send);
    const script = receiveScript({
      guestPath,
      readonly,
      after:
        c.tooling && tooling
          ? setupScript({ guestPath, workdir: guestPath, toolingLog: toolingLog(c.repoName) })
          : undefined,
    });
    let files = 0;
    const sizes = plan.send.map((e) => (e.kind === 'file' ? e.size : 0));
    let cum = 0;
    let lastReport = 0;
    const r = await guestRun(target, script, {
      input: receiveStream(streamPreamble(plan), plan.send),
      signal,
      onSent: (sent) => {
        const now = Date.now();
        if (now - lastReport < 100) return;
        lastReport = now;
        while (files < sizes.length && cum + sizes[files]! <= sent) cum += sizes[files++]!;
        emit({
          type: 'progress',
          id: STEP,
          current: Math.min(sent, t.bytes),
          total: t.bytes,
          unit: 'bytes',
          items: { current: Math.min(files, t.files), total: t.files, label: 'files' },
        });
      },
    });
    if (r.code !== 0) {
      emit({ type: 'step', id: STEP, label, state: 'fail' });
      throw new BangerError(
        'tool_failed',
        `copying ${c.source} into vm '${vm.name}' failed: ${lastLine(r.stderr) || `exit status ${r.code}`}`,
        { hint: `see what the guest has with \`banger vm ssh ${vm.name} -- ls -la ${guestPath}\`` },
      );
    }
    step('after-copy');
    const removed = plan.removeFiles.length;
    emit({
      type: 'step',
      id: STEP,
      label,
      state: 'done',
      detail: `${t.files} files, ${formatSize(t.bytes)} sent; ${plan.unchanged} unchanged; ${removed} removed`,
      ms: Date.now() - t0,
    });
    return this.result(c, guestPath, {
      files: t.files,
      bytes: t.bytes,
      removed,
      unchanged: plan.unchanged,
      readonly,
    });
  }

  /**
   * List the host side. Reported as a finished step only: input errors come
   * out as the one error line, with no progress lines before it.
   */
  private async collect(
    hostPath: string,
    mode: Collected['mode'],
    emit: ProgressSink,
    signal: AbortSignal | undefined,
    refs: { branch?: string; from?: string },
  ): Promise<Collected> {
    const t0 = Date.now();
    const c = await collectWorkspace(hostPath, mode, {
      branch: refs.branch,
      from: refs.from,
      scratchDir: this.deps.paths.tmpDir,
      emit,
      signal,
    });
    const t = totals(c.worktree);
    emit({
      type: 'step',
      id: SCAN_STEP,
      label: `Read ${c.source}`,
      state: 'done',
      detail: `${t.files} files, ${formatSize(t.bytes)} in the working tree`,
      ms: Date.now() - t0,
    });
    return c;
  }

  private result(
    c: Collected,
    guestPath: string,
    r: Pick<WorkspaceResult, 'files' | 'bytes' | 'removed' | 'unchanged' | 'readonly'>,
  ): WorkspaceResult {
    const workdir = c.prefix ? `${guestPath}/${c.prefix}` : guestPath;
    const log = c.tooling ? toolingLog(c.repoName) : null;
    return {
      source: c.source,
      guestPath,
      workdir,
      git: c.git,
      mode: c.mode,
      branch: c.switchTo?.name ?? c.branch,
      head: c.head,
      ...r,
      toolingLog: log,
      setup: setupScript({
        guestPath,
        workdir,
        branch: c.switchTo,
        toolingLog: log ?? undefined,
      }),
    };
  }
}

/** A guest path under /root as a path on the work disk (mounted at /root). */
function onWorkDisk(guestPath: string): string {
  if (!guestPath.startsWith('/root/')) {
    throw new BangerError('internal', `${guestPath} is not on the work disk`);
  }
  return guestPath.slice('/root'.length);
}

const lastLine = (s: string): string =>
  s
    .trim()
    .split('\n')
    .filter((l) => l.trim())
    .pop() ?? '';

function sshFailure(vm: string, stderr: string): BangerError {
  return new BangerError(
    'network',
    `cannot reach vm '${vm}' over ssh: ${lastLine(stderr) || 'no answer'}`,
    {
      hint: `check it with \`banger vm ssh ${vm} -- true\` and \`banger vm logs ${vm}\``,
    },
  );
}
