import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../errors.js';
import {
  git,
  GITLINK_MODE,
  treeEntries,
  upstreamOf,
  type IndexEntry,
  type RepoLocation,
} from './git.js';
import { contentSignature, signatureOf, type WorkspaceEntry } from './plan.js';
import { listTree } from './source.js';

/**
 * The git metadata of a workspace copy.
 *
 * Shallow (the default): a new `.git` made on the host — HEAD and its branch,
 * one pack with the current commit, its trees and blobs and the blobs of the
 * index (so staged changes and `git diff` are right), the host's index file
 * as is, `info/exclude`, and the repository config without what only makes
 * sense on the host. The commit is marked shallow, like `git clone --depth 1`.
 *
 * full_copy: the host's `.git` directory as it is.
 */

export interface GitConfigPair {
  key: string;
  value: string;
}

/** `git config --list -z` → pairs (a key without a value has value ''). */
export function parseConfigList(out: string): GitConfigPair[] {
  return out
    .split('\0')
    .filter(Boolean)
    .map((rec) => {
      const nl = rec.indexOf('\n');
      return nl < 0 ? { key: rec, value: '' } : { key: rec.slice(0, nl), value: rec.slice(nl + 1) };
    });
}

/** Keys that describe the host's checkout rather than the repository. */
const HOST_ONLY = [
  /^core\.worktree$/,
  /^core\.bare$/,
  /^core\.fsmonitor/,
  /^core\.sparsecheckout/,
  /^extensions\.worktreeconfig$/,
  /^include\.path$/,
  /^includeif\./,
];

/**
 * The config of the guest's copy: the host's, without host-only keys; branch
 * sections only for the current branch and only while its upstream ref is
 * copied too (else `git status` would report an upstream that is gone).
 */
export function filterConfig(
  pairs: GitConfigPair[],
  keepBranch: string | undefined,
): GitConfigPair[] {
  return pairs.filter(({ key }) => {
    const k = key.toLowerCase();
    if (HOST_ONLY.some((re) => re.test(k))) return false;
    if (k.startsWith('branch.')) {
      return (
        keepBranch !== undefined && key.slice(0, key.lastIndexOf('.')) === `branch.${keepBranch}`
      );
    }
    return true;
  });
}

const quoteValue = (v: string): string =>
  `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\t/g, '\\t')}"`;

/** Pairs → a git config file (sections in first-seen order, values quoted). */
export function renderConfig(pairs: GitConfigPair[]): string {
  const sections = new Map<string, string[]>();
  for (const { key, value } of pairs) {
    const first = key.indexOf('.');
    const last = key.lastIndexOf('.');
    if (first < 0) continue;
    const section = key.slice(0, first);
    const sub = first === last ? undefined : key.slice(first + 1, last);
    const head =
      sub === undefined
        ? `[${section}]`
        : `[${section} "${sub.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"]`;
    const lines = sections.get(head) ?? [];
    lines.push(`\t${key.slice(last + 1)} = ${quoteValue(value)}`);
    sections.set(head, lines);
  }
  return [...sections].map(([h, lines]) => `${h}\n${lines.join('\n')}\n`).join('');
}

export interface ShallowInput {
  repo: RepoLocation;
  index: IndexEntry[];
  /** Current commit (undefined: none yet) and branch (null: detached), as collect found them. */
  head: string | undefined;
  branch: string | null;
  /** Commit to also carry (the start of --branch), when it differs from HEAD. */
  from?: string;
  /** Host scratch directory for generated files (removed by the caller). */
  staging: string;
  signal?: AbortSignal;
}

export interface GitMeta {
  entries: WorkspaceEntry[];
  objects: number;
}

const sha1 = (b: Buffer | string): string => createHash('sha1').update(b).digest('hex');

/** Build the shallow `.git` (generated files in `staging`, the index read from the host). */
export async function shallowGitDir(i: ShallowInput): Promise<GitMeta> {
  const root = i.repo.root;
  const { head, branch } = i;
  const upstream = branch && head ? await upstreamOf(root) : undefined;
  const keepUpstream = upstream && upstream.oid === head ? upstream : undefined;

  const entries: WorkspaceEntry[] = [];
  const now = Date.now();
  const dir = (p: string): void => {
    const d = { path: `.git/${p}`, kind: 'dir' as const, mode: 0o755, size: 0, mtimeMs: now };
    entries.push({ ...d, sig: signatureOf(d) });
  };
  const generated = (p: string, content: Buffer | string, sig?: string): void => {
    const buf = Buffer.isBuffer(content) ? content : Buffer.from(content);
    const file = path.join(i.staging, p);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, buf);
    fs.chmodSync(file, 0o644); // the disk writer copies the source's mode
    entries.push({
      path: `.git/${p}`,
      kind: 'file',
      mode: 0o644,
      size: buf.length,
      mtimeMs: now,
      source: file,
      sig: sig ?? contentSignature(0o644, buf.length, sha1(buf)),
    });
  };
  const hostFile = (p: string, from: string): void => {
    let st: fs.Stats;
    try {
      st = fs.statSync(from);
    } catch {
      return;
    }
    if (!st.isFile()) return;
    const e = { kind: 'file' as const, mode: st.mode & 0o777, size: st.size, mtimeMs: st.mtimeMs };
    entries.push({ ...e, path: `.git/${p}`, source: from, sig: signatureOf(e) });
  };

  const top = { path: '.git', kind: 'dir' as const, mode: 0o755, size: 0, mtimeMs: now };
  entries.push({ ...top, sig: signatureOf(top) });
  for (const d of ['refs', 'refs/heads', 'refs/tags', 'objects', 'objects/info', 'objects/pack'])
    dir(d);

  generated('HEAD', branch ? `ref: refs/heads/${branch}\n` : `${head ?? ''}\n`);
  if (branch && head) generated(`refs/heads/${branch}`, `${head}\n`);
  if (keepUpstream) generated(keepUpstream.ref.slice('refs/'.length), `${keepUpstream.oid}\n`);
  const shallow = [head, i.from].filter((x): x is string => Boolean(x));
  if (shallow.length) generated('shallow', `${[...new Set(shallow)].join('\n')}\n`);

  const cfgFile = path.join(i.repo.commonDir, 'config');
  const cfg = fs.existsSync(cfgFile)
    ? parseConfigList(
        (await git(root, ['config', '--file', cfgFile, '--list', '-z'], { signal: i.signal }))
          .stdout,
      )
    : [];
  const kept = filterConfig(cfg, keepUpstream && branch ? branch : undefined);
  if (!kept.some((p) => p.key.toLowerCase() === 'core.repositoryformatversion'))
    kept.unshift({ key: 'core.repositoryformatversion', value: '0' });
  kept.push({ key: 'core.bare', value: 'false' });
  // The host's index describes the host's inodes and ctimes; the copy keeps mtimes and sizes.
  // Comparing only those spares the guest re-hashing every file on its first `git status`.
  const has = (k: string): boolean => kept.some((p) => p.key.toLowerCase() === k);
  if (!has('core.checkstat')) kept.push({ key: 'core.checkStat', value: 'minimal' });
  if (!has('core.trustctime')) kept.push({ key: 'core.trustctime', value: 'false' });
  generated('config', renderConfig(kept));

  // The index as the host has it (staged changes included); a split index needs its shared part.
  const indexFile = path.join(i.repo.gitDir, 'index');
  hostFile('index', indexFile);
  for (const name of fs.readdirSync(i.repo.gitDir)) {
    if (name.startsWith('sharedindex.')) hostFile(name, path.join(i.repo.gitDir, name));
  }
  hostFile('info/exclude', path.join(i.repo.commonDir, 'info', 'exclude'));
  hostFile('info/attributes', path.join(i.repo.commonDir, 'info', 'attributes'));

  // One pack: the commits, every tree and blob they hold, and every blob of the index.
  const oids = new Set<string>();
  if (shallow.length) {
    const trees = await git(root, ['rev-parse', ...shallow.map((c) => `${c}^{tree}`)], {
      signal: i.signal,
    });
    for (const t of trees.stdout.trim().split('\n')) oids.add(t);
  }
  const listings = await Promise.all(shallow.map((c) => treeEntries(root, c, i.signal)));
  for (const c of shallow) oids.add(c);
  for (const l of listings) for (const t of l) if (t.type !== 'commit') oids.add(t.oid);
  for (const e of i.index) if (e.mode !== GITLINK_MODE) oids.add(e.oid);
  if (oids.size) {
    const base = path.join(i.staging, 'objects', 'pack', 'pack');
    fs.mkdirSync(path.dirname(base), { recursive: true });
    const r = await git(
      root,
      ['-c', 'pack.compression=1', 'pack-objects', '-q', '--window=0', base],
      {
        input: `${[...oids].join('\n')}\n`,
        what: `packing the git objects of ${root}`,
        signal: i.signal,
      },
    );
    const hash = r.stdout.trim();
    for (const ext of ['pack', 'idx']) {
      const file = `${base}-${hash}.${ext}`;
      fs.chmodSync(file, 0o444);
      const st = fs.statSync(file);
      entries.push({
        path: `.git/objects/pack/pack-${hash}.${ext}`,
        kind: 'file',
        mode: 0o444,
        size: st.size,
        mtimeMs: now,
        source: file,
        sig: contentSignature(0o444, st.size, hash),
      });
    }
  }
  return { entries, objects: oids.size };
}

/** The host's `.git` directory, whole (lock files left out). */
export function fullGitDir(repo: RepoLocation): WorkspaceEntry[] {
  const dotGit = path.join(repo.root, '.git');
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dotGit);
  } catch {
    throw new BangerError('precondition', `${repo.root} has no .git directory`, {
      hint: 'use the default mode (shallow), which builds the git metadata itself',
    });
  }
  if (!st.isDirectory()) {
    throw new BangerError(
      'precondition',
      `${dotGit} is not a directory (a linked worktree or a submodule checkout), so it cannot be copied whole`,
      { hint: 'use the default mode (shallow), which builds the git metadata itself' },
    );
  }
  return listTree(repo.root, '.git', '.git').filter(
    (e) => !(e.kind === 'file' && e.path.endsWith('.lock')),
  );
}
