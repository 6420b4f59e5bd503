import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ProgressSink } from '../api/events.js';
import { BangerError } from '../errors.js';
import { currentBranch, git, headCommit, resolveCommit } from './git.js';
import { fullGitDir, shallowGitDir } from './gitMeta.js';
import { TOOLING_FILES } from './guestScript.js';
import { signatureOf, withParents, type WorkspaceEntry } from './plan.js';
import { listDir, listRepo, locateSource, type WorkspaceMode } from './source.js';

/**
 * The host side of a workspace copy, before any VM is touched: find what
 * PATH belongs to, check the branch and ref, list the files, build the git
 * metadata. Everything wrong with the input fails here.
 */

/** A copy ready to go: entries (working tree + git metadata) and what the guest needs to know. */
export interface Collected {
  /** Host directory copied (the repository's top, or PATH). */
  source: string;
  /** PATH's place inside it ('' or 'a/b'). */
  prefix: string;
  git: boolean;
  mode: WorkspaceMode;
  head: string | null;
  branch: string | null;
  /** The --branch switch to make in the guest. */
  switchTo?: { name: string; from?: string; unborn: boolean };
  /** A mise config at the top: start `mise install`. */
  tooling: boolean;
  repoName: string;
  /** The working tree's files, links and directories, ready at once. */
  worktree: WorkspaceEntry[];
  /**
   * The `.git` entries. Built in the background from the moment of collect (a
   * pack takes a while), so the working tree can be written meanwhile.
   */
  metadata: Promise<WorkspaceEntry[]>;
  /** Working tree and metadata together. */
  all(): Promise<WorkspaceEntry[]>;
  /** Remove the generated files (after the metadata settled). */
  dispose(): Promise<void>;
}

export const SCRATCH_PREFIX = 'workspace';

export interface CollectOptions {
  branch?: string;
  from?: string;
  /** Where generated metadata is staged (a `workspace-<pid>-<hex>` directory is made inside). */
  scratchDir: string;
  emit?: ProgressSink;
  signal?: AbortSignal;
}

const hasTooling = (entries: WorkspaceEntry[]): boolean =>
  entries.some((e) => (TOOLING_FILES as readonly string[]).includes(e.path));

const dirEntry = (p: string, now: number): WorkspaceEntry => {
  const d = { path: p, kind: 'dir' as const, mode: 0o755, size: 0, mtimeMs: now };
  return { ...d, sig: signatureOf(d) };
};

export async function collectWorkspace(
  hostPath: string,
  mode: WorkspaceMode,
  o: CollectOptions,
): Promise<Collected> {
  const loc = await locateSource(hostPath);
  const repoName = path.basename(loc.root);
  const now = Date.now();
  if (!loc.repo) {
    if (o.branch !== undefined) {
      throw new BangerError('usage', `${loc.root} is not in a git repository: --branch needs one`, {
        hint: 'drop --branch, or pass a path inside a git checkout',
      });
    }
    o.emit?.({
      type: 'log',
      level: 'info',
      message: `note: ${loc.root} is not in a git repository: copying it as a plain directory`,
    });
    const d = listDir(loc.root);
    return {
      source: loc.root,
      prefix: '',
      git: false,
      mode,
      head: null,
      branch: null,
      tooling: hasTooling(d.entries),
      repoName,
      worktree: d.entries,
      metadata: Promise.resolve([]),
      all: () => Promise.resolve(d.entries),
      dispose: () => Promise.resolve(),
    };
  }
  const repo = loc.repo;
  let from: string | undefined;
  if (o.branch !== undefined) {
    await checkBranchName(repo.root, o.branch);
    if (o.from !== undefined) {
      from = await resolveCommit(repo.root, o.from);
      if (!from) {
        throw new BangerError('not_found', `no commit '${o.from}' in ${repo.root}`, {
          hint: 'pass a branch, tag or commit that `git rev-parse` knows there',
        });
      }
    }
  }
  const [listed, headInfo, branch] = await Promise.all([
    listRepo(repo, mode, o.signal),
    headCommit(repo.root),
    currentBranch(repo.root),
  ]);
  for (const w of listed.warnings) o.emit?.({ type: 'log', level: 'warn', message: w });
  const head = headInfo?.commit ?? null;

  const staging = path.join(
    o.scratchDir,
    `${SCRATCH_PREFIX}-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  let metadata: Promise<WorkspaceEntry[]>;
  if (mode === 'full_copy') {
    metadata = Promise.resolve().then(() => fullGitDir(repo));
  } else {
    fs.mkdirSync(staging, { recursive: true, mode: 0o700 });
    metadata = shallowGitDir({
      repo,
      index: listed.index,
      head: head ?? undefined,
      branch,
      from,
      staging,
      signal: o.signal,
    }).then((m) => withParents(m.entries, (p) => dirEntry(p, now)));
  }
  metadata.catch(() => undefined); // awaited by whoever uses it; never unhandled meanwhile
  return {
    source: repo.root,
    prefix: repo.prefix,
    git: true,
    mode,
    head,
    branch: mode === 'full_copy' ? null : branch,
    switchTo:
      o.branch !== undefined
        ? { name: o.branch, from: from ?? head ?? undefined, unborn: !head }
        : undefined,
    tooling: hasTooling(listed.entries),
    repoName,
    worktree: listed.entries,
    metadata,
    all: async () => [...listed.entries, ...(await metadata)],
    dispose: async () => {
      await metadata.catch(() => undefined);
      fs.rmSync(staging, { recursive: true, force: true });
    },
  };
}

async function checkBranchName(root: string, name: string): Promise<void> {
  const r = await git(root, ['check-ref-format', '--branch', name], { allowFailure: true });
  if (r.code !== 0 || name.startsWith('-')) {
    throw new BangerError('usage', `'${name}' is not a valid branch name`, {
      hint: 'see `git check-ref-format --help` for the rules',
    });
  }
}
