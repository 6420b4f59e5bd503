import type { Command } from '@commander-js/extra-typings';
import {
  completionScript,
  planCompletion,
  resolvePlan,
  type CompletionNode,
  type Names,
  type Shell,
} from '../completion.js';
import type { CliContext } from '../context.js';
import { newClient } from '../daemon.js';

type AnyCommand = Command<unknown[], Record<string, unknown>, Record<string, unknown>>;

/** Snapshot a commander tree as plain data for the pure completion planner. */
export function toCompletionTree(cmd: AnyCommand): CompletionNode {
  const c = cmd as unknown as {
    _name: string;
    _hidden?: boolean;
    _aliases: string[];
    options: {
      short?: string;
      long?: string;
      required: boolean;
      optional: boolean;
      argChoices?: string[];
      flags: string;
      hidden: boolean;
    }[];
    registeredArguments: { name(): string; variadic: boolean; argChoices?: string[] }[];
    commands: AnyCommand[];
  };
  return {
    name: c._name,
    aliases: c._aliases ?? [],
    hidden: Boolean(c._hidden),
    options: c.options
      .filter((o) => !o.hidden)
      .map((o) => ({
        flags: [o.short, o.long].filter((f): f is string => Boolean(f)),
        takesValue: o.required || o.optional,
        choices: o.argChoices,
        valueName: /<([^>]+)>|\[([^\]]+)\]/.exec(o.flags)?.slice(1).find(Boolean),
      })),
    args: c.registeredArguments.map((a) => ({
      name: a.name(),
      variadic: a.variadic,
      choices: a.argChoices,
    })),
    children: c.commands.map((child) => toCompletionTree(child)),
  };
}

export async function completionCommand(
  ctx: CliContext,
  _program: unknown,
  shell: string,
): Promise<void> {
  ctx.out.write(completionScript(shell as Shell));
}

const strings = (x: unknown): string[] =>
  Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : [];

/**
 * Live names from a running daemon; nothing (quietly) when it is down. The
 * route is version-exempt (completion never restarts a daemon), so the answer
 * may come from another build: read it defensively.
 */
async function liveNames(ctx: CliContext): Promise<Names | undefined> {
  try {
    const r = (await newClient(ctx.paths, 1500).call('completionNames')) as Record<string, unknown>;
    return {
      vms: strings(r?.vms),
      images: strings(r?.images),
      kernels: strings(r?.kernels),
      snapshots: strings(r?.snapshots),
    };
  } catch {
    return undefined;
  }
}

export async function completeCommand(
  ctx: CliContext,
  program: unknown,
  words: string[],
): Promise<void> {
  const tree = toCompletionTree(program as AnyCommand);
  const plan = planCompletion({ tree, words: words.length ? words : [''] });
  const names = plan.kind === 'names' ? await liveNames(ctx) : undefined;
  const out = resolvePlan(plan, names);
  if (out.length) ctx.out.write(`${out.join('\n')}\n`);
}
