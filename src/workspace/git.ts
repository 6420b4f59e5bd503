import { BangerError } from '../errors.js';
import { run, type RunResult } from '../util/exec.js';

/**
 * The edge where the workspace code runs host git: the repository around a
 * path, its index entries, untracked files and trees. Parsers of git's -z
 * output are pure and exported for tests.
 */

/** Host git with no user hooks or pagers in the way, and the repo trusted whoever owns it. */
export async function git(
  cwd: string,
  args: string[],
  opts: { input?: string; allowFailure?: boolean; what?: string; signal?: AbortSignal } = {},
): Promise<RunResult> {
  return run('git', ['-c', 'safe.directory=*', '-c', 'core.fsmonitor=false', ...args], {
    cwd,
    env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_OPTIONAL_LOCKS: '0', LC_ALL: 'C' },
    input: opts.input,
    allowFailure: opts.allowFailure,
    what: opts.what ?? `git ${args[0]} in ${cwd}`,
    signal: opts.signal,
    maxBuffer: 1024 * 1024 * 1024,
  });
}

export interface RepoLocation {
  /** The working tree's top directory. */
  root: string;
  /** Where PATH sits inside it ('' at the top, else 'a/b'). */
  prefix: string;
  /** This worktree's git directory (absolute). */
  gitDir: string;
  /** The shared git directory (differs from gitDir in a linked worktree). */
  commonDir: string;
}

/** The repository around `dir`, or undefined when `dir` is not inside one. */
export async function locateRepo(dir: string): Promise<RepoLocation | undefined> {
  const r = await git(
    dir,
    ['rev-parse', '--show-toplevel', '--absolute-git-dir', '--git-common-dir', '--show-prefix'],
    { allowFailure: true },
  );
  if (r.code !== 0) {
    if (/not a git repository/i.test(r.stderr)) return undefined;
    // A bare repository or a .git directory itself: not a working tree to copy.
    if (/must be run in a work tree|--show-toplevel/i.test(r.stderr)) return undefined;
    throw new BangerError(
      'tool_failed',
      `git cannot read the repository at ${dir}: ${r.stderr.trim().split('\n')[0]}`,
      { hint: 'check the repository with `git status` there' },
    );
  }
  const [root, gitDir, common, prefix = ''] = r.stdout.split('\n');
  if (!root || !gitDir || !common) {
    throw new BangerError('internal', `unexpected output of git rev-parse in ${dir}`);
  }
  const commonDir = common.startsWith('/') ? common : `${dir.replace(/\/+$/, '')}/${common}`;
  return { root, gitDir, commonDir: normalize(commonDir), prefix: prefix.replace(/\/$/, '') };
}

function normalize(p: string): string {
  const out: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') out.pop();
    else out.push(c);
  }
  return `/${out.join('/')}`;
}

export interface IndexEntry {
  mode: number;
  oid: string;
  stage: number;
  path: string;
}

/** `git ls-files -z --stage` → entries. */
export function parseLsFilesStage(out: string): IndexEntry[] {
  const entries: IndexEntry[] = [];
  for (const rec of out.split('\0')) {
    if (!rec) continue;
    const tab = rec.indexOf('\t');
    const m = /^([0-7]+) ([0-9a-f]+) (\d)$/.exec(rec.slice(0, tab));
    if (tab < 0 || !m) throw new BangerError('internal', `unexpected git ls-files line: ${rec}`);
    entries.push({
      mode: parseInt(m[1]!, 8),
      oid: m[2]!,
      stage: Number(m[3]),
      path: rec.slice(tab + 1),
    });
  }
  return entries;
}

export interface TreeEntry {
  mode: number;
  type: 'blob' | 'tree' | 'commit';
  oid: string;
  path: string;
}

/** `git ls-tree -r -t -z` → entries. */
export function parseLsTree(out: string): TreeEntry[] {
  const entries: TreeEntry[] = [];
  for (const rec of out.split('\0')) {
    if (!rec) continue;
    const tab = rec.indexOf('\t');
    const m = /^([0-7]+) (blob|tree|commit) ([0-9a-f]+)$/.exec(rec.slice(0, tab));
    if (tab < 0 || !m) throw new BangerError('internal', `unexpected git ls-tree line: ${rec}`);
    entries.push({
      mode: parseInt(m[1]!, 8),
      type: m[2] as TreeEntry['type'],
      oid: m[3]!,
      path: rec.slice(tab + 1),
    });
  }
  return entries;
}

export const GITLINK_MODE = 0o160000;

export async function indexEntries(root: string, signal?: AbortSignal): Promise<IndexEntry[]> {
  const r = await git(root, ['ls-files', '-z', '--stage', '--full-name'], { signal });
  return parseLsFilesStage(r.stdout);
}

/** Untracked files that are not ignored (directories holding another repository end in '/'). */
export async function untrackedFiles(root: string, signal?: AbortSignal): Promise<string[]> {
  const r = await git(root, ['ls-files', '-z', '--others', '--exclude-standard', '--full-name'], {
    signal,
  });
  return r.stdout.split('\0').filter(Boolean);
}

/** The commit a ref names, or undefined. */
export async function resolveCommit(root: string, ref: string): Promise<string | undefined> {
  if (ref.startsWith('-')) return undefined;
  const r = await git(
    root,
    ['rev-parse', '-q', '--verify', '--end-of-options', `${ref}^{commit}`],
    {
      allowFailure: true,
    },
  );
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** The short name of the checked-out branch (also when it has no commit yet), or null when detached. */
export async function currentBranch(root: string): Promise<string | null> {
  const r = await git(root, ['symbolic-ref', '-q', 'HEAD'], { allowFailure: true });
  const ref = r.stdout.trim();
  return r.code === 0 && ref.startsWith('refs/heads/') ? ref.slice('refs/heads/'.length) : null;
}

/** The branch's upstream (full ref name and commit), when it has one that resolves. */
export async function upstreamOf(root: string): Promise<{ ref: string; oid: string } | undefined> {
  const r = await git(
    root,
    ['rev-parse', '--symbolic-full-name', '@{upstream}', '@{upstream}^{commit}'],
    { allowFailure: true },
  );
  const [ref, oid] = r.stdout.trim().split('\n');
  return r.code === 0 && ref?.startsWith('refs/') && oid && /^[0-9a-f]+$/.test(oid)
    ? { ref, oid }
    : undefined;
}

/** HEAD's commit and root tree, or undefined in a repository without commits. */
export async function headCommit(
  root: string,
): Promise<{ commit: string; tree: string } | undefined> {
  const r = await git(root, ['rev-parse', 'HEAD^{commit}', 'HEAD^{tree}'], { allowFailure: true });
  const [commit, tree] = r.stdout.trim().split('\n');
  return r.code === 0 && commit && tree ? { commit, tree } : undefined;
}

export async function treeEntries(
  root: string,
  commit: string,
  signal?: AbortSignal,
): Promise<TreeEntry[]> {
  const r = await git(root, ['ls-tree', '-r', '-t', '-z', '--full-tree', commit], { signal });
  return parseLsTree(r.stdout);
}
