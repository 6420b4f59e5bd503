import fs from 'node:fs';
import path from 'node:path';
import type { WorkspaceModeName as WorkspaceMode } from '../api/workspaceModes.js';
import { BangerError } from '../errors.js';
import {
  GITLINK_MODE,
  indexEntries,
  locateRepo,
  untrackedFiles,
  type IndexEntry,
  type RepoLocation,
} from './git.js';
import { signatureOf, withParents, type WorkspaceEntry } from './plan.js';

/**
 * What to copy from the host: the repository around PATH (its tracked files
 * and its untracked files that are not ignored, as they are in the working
 * tree), or a plain directory. Nothing is followed: symlinks are copied as
 * links, and a path whose parent directory is a symlink is not read at all.
 */

export type { WorkspaceMode };

export interface RepoSource {
  kind: 'git';
  repo: RepoLocation;
  /** Index entries of the top repository (blob ids for the metadata). */
  index: IndexEntry[];
  /** Gitlink paths (submodules). */
  submodules: string[];
  entries: WorkspaceEntry[];
  warnings: string[];
}

export interface DirSource {
  kind: 'dir';
  root: string;
  entries: WorkspaceEntry[];
  warnings: string[];
}

export type Source = RepoSource | DirSource;

/** Reads the host's file system without following links; one cache of directory checks per listing. */
class TreeReader {
  private readonly dirOk = new Map<string, boolean>();

  constructor(private readonly root: string) {}

  /** Whether every directory between the root and `rel`'s parent is a real directory. */
  parentsAreDirs(rel: string): boolean {
    const i = rel.lastIndexOf('/');
    return i < 0 || this.isDir(rel.slice(0, i));
  }

  private isDir(rel: string): boolean {
    const known = this.dirOk.get(rel);
    if (known !== undefined) return known;
    const i = rel.lastIndexOf('/');
    let ok = i < 0 || this.isDir(rel.slice(0, i));
    if (ok) {
      try {
        ok = fs.lstatSync(path.join(this.root, rel)).isDirectory();
      } catch {
        ok = false;
      }
    }
    this.dirOk.set(rel, ok);
    return ok;
  }

  /** An entry for `rel` as it is now, or undefined (gone, or not a file, link or directory). */
  entry(rel: string, as: string = rel): WorkspaceEntry | undefined {
    if (!this.parentsAreDirs(rel)) return undefined;
    const abs = path.join(this.root, rel);
    const st = fs.lstatSync(abs, { throwIfNoEntry: false });
    if (!st) return undefined;
    const base = { path: as, mode: st.mode & 0o7777, size: 0, mtimeMs: st.mtimeMs };
    let e: Omit<WorkspaceEntry, 'sig'>;
    if (st.isFile()) e = { ...base, kind: 'file', size: st.size, source: abs };
    else if (st.isSymbolicLink()) e = { ...base, kind: 'symlink', target: fs.readlinkSync(abs) };
    else if (st.isDirectory()) e = { ...base, kind: 'dir' };
    else return undefined;
    return { ...e, sig: signatureOf(e) };
  }

  dirEntry(rel: string, as: string = rel): WorkspaceEntry {
    const e = this.entry(rel, as);
    if (e?.kind === 'dir') return e;
    const d = { path: as, kind: 'dir' as const, mode: 0o755, size: 0, mtimeMs: Date.now() };
    return { ...d, sig: signatureOf(d) };
  }
}

/** Where PATH's copy lands: the repository (or directory) root and PATH's place inside it. */
export async function locateSource(
  hostPath: string,
): Promise<{ repo?: RepoLocation; root: string; prefix: string }> {
  let st: fs.Stats;
  try {
    st = fs.statSync(hostPath);
  } catch {
    throw new BangerError('not_found', `${hostPath} does not exist`, {
      hint: 'pass the path of a directory (a git checkout or any folder)',
    });
  }
  if (!st.isDirectory()) {
    throw new BangerError('usage', `${hostPath} is not a directory`, {
      hint: 'pass the directory to copy (a git checkout or any folder)',
    });
  }
  const repo = await locateRepo(hostPath);
  if (repo) return { repo, root: repo.root, prefix: repo.prefix };
  return { root: path.resolve(hostPath), prefix: '' };
}

/**
 * The working tree of a repository: index paths (minus submodules and files
 * deleted in the working tree) plus untracked files that are not ignored.
 * With `full_copy`, initialised submodules are listed too (with their `.git`
 * file) and the git directory is added by the caller.
 */
export async function listRepo(
  repo: RepoLocation,
  mode: WorkspaceMode,
  signal?: AbortSignal,
): Promise<RepoSource> {
  const warnings: string[] = [];
  const [index, untracked] = await Promise.all([
    indexEntries(repo.root, signal),
    untrackedFiles(repo.root, signal),
  ]);
  const submodules = [...new Set(index.filter((e) => e.mode === GITLINK_MODE).map((e) => e.path))];
  if (submodules.length && mode !== 'full_copy') {
    throw new BangerError(
      'precondition',
      `${repo.root} has submodules (${submodules.slice(0, 3).join(', ')}${submodules.length > 3 ? ', …' : ''}), which the default shallow copy cannot carry`,
      { hint: 'copy the whole repository with --mode full_copy' },
    );
  }
  const entries = listWorktree(repo.root, '', index, untracked, warnings);
  if (mode === 'full_copy') {
    for (const sub of submodules) entries.push(...(await listSubmodule(repo.root, sub, warnings)));
  }
  return { kind: 'git', repo, index, submodules, entries: finish(entries, repo.root), warnings };
}

function listWorktree(
  root: string,
  prefix: string,
  index: IndexEntry[],
  untracked: string[],
  warnings: string[],
): WorkspaceEntry[] {
  const reader = new TreeReader(root);
  const paths = new Set<string>();
  for (const e of index) if (e.mode !== GITLINK_MODE) paths.add(e.path);
  for (const p of untracked) {
    if (p.endsWith('/')) {
      warnings.push(`skipped ${prefix}${p}: it is a separate git repository inside the checkout`);
      continue;
    }
    paths.add(p);
  }
  const out: WorkspaceEntry[] = [];
  for (const p of paths) {
    const e = reader.entry(p, `${prefix}${p}`);
    // Deleted in the working tree, or a tracked path that became a directory: nothing to copy.
    if (!e || e.kind === 'dir') continue;
    out.push(e);
  }
  return out;
}

/** An initialised submodule's files and its `.git` (a gitfile pointing into the parent's .git/modules). */
async function listSubmodule(
  root: string,
  sub: string,
  warnings: string[],
): Promise<WorkspaceEntry[]> {
  const dir = path.join(root, sub);
  const dotGit = new TreeReader(root).entry(`${sub}/.git`);
  if (!dotGit) return []; // not initialised: an empty directory, as on the host
  const subRepo = await locateRepo(dir);
  if (!subRepo || path.resolve(subRepo.root) !== path.resolve(dir)) return [];
  const sr = await listRepo(subRepo, 'full_copy');
  warnings.push(...sr.warnings);
  const out = sr.entries.map((e) => ({ ...e, path: `${sub}/${e.path}` }));
  if (dotGit.kind === 'file') out.push(dotGit);
  else if (dotGit.kind === 'dir') out.push(...listTree(dir, '.git', `${sub}/.git`));
  return out;
}

/** Every file, link and directory under `root/rel`, as entries under `as`. */
export function listTree(root: string, rel: string, as: string): WorkspaceEntry[] {
  const reader = new TreeReader(root);
  const out: WorkspaceEntry[] = [];
  const walk = (r: string, a: string): void => {
    const e = reader.entry(r, a);
    if (!e) return;
    out.push(e);
    if (e.kind !== 'dir') return;
    for (const name of fs.readdirSync(path.join(root, r)).sort())
      walk(`${r}/${name}`, `${a}/${name}`);
  };
  walk(rel, as);
  return out;
}

/** A plain directory (not in a repository): everything in it, links as links. */
export function listDir(root: string): DirSource {
  const reader = new TreeReader(root);
  const out: WorkspaceEntry[] = [];
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const e = reader.entry(r);
      if (!e) continue;
      out.push(e);
      if (e.kind === 'dir') walk(r);
    }
  };
  walk('');
  return { kind: 'dir', root, entries: finish(out, root), warnings: [] };
}

/** Add the directories the entries need (with the host's modes) and check every name. */
function finish(entries: WorkspaceEntry[], root: string): WorkspaceEntry[] {
  const reader = new TreeReader(root);
  for (const e of entries) checkName(e.path);
  return withParents(entries, (p) => reader.dirEntry(p));
}

function checkName(p: string): void {
  if (!p || p.startsWith('/') || p.split('/').some((c) => c === '' || c === '.' || c === '..')) {
    throw new BangerError('internal', `refusing to copy the path ${JSON.stringify(p)}`);
  }
}
