import type { Header } from 'tar-stream';

type TarHeader = Partial<Header> & Pick<Header, 'name'>;

/**
 * What a workspace copy is made of, as data: the entries (files, symlinks,
 * directories) relative to the guest destination, the manifest the guest keeps
 * of the last copy, and the difference between the two that an update sends.
 * Pure: listing the host and moving bytes happen elsewhere.
 */

export type EntryKind = 'file' | 'symlink' | 'dir';

export interface WorkspaceEntry {
  /** Relative to the destination, '/'-separated, never absolute, never '..'. */
  path: string;
  kind: EntryKind;
  /** Permission bits (files and directories). */
  mode: number;
  /** Bytes (files). */
  size: number;
  mtimeMs: number;
  /** The host file to read (files). */
  source?: string;
  /** The link target (symlinks), copied as is: never followed. */
  target?: string;
  /** What the guest's manifest records: an entry whose signature is unchanged is not sent again. */
  sig: string;
}

export const MANIFEST_VERSION = 1;

/** Kept in the guest after every copy: what the host sent, so the next copy sends only the difference. */
export interface Manifest {
  version: number;
  guestPath: string;
  /** path → signature */
  entries: Record<string, string>;
}

/** The signature of a host file, link or directory from its metadata. */
export function signatureOf(
  e: Pick<WorkspaceEntry, 'kind' | 'mode' | 'size' | 'mtimeMs' | 'target'>,
): string {
  switch (e.kind) {
    case 'file':
      return `f:${e.mode.toString(8)}:${e.size}:${Math.floor(e.mtimeMs)}`;
    case 'symlink':
      return `l:${e.target ?? ''}`;
    case 'dir':
      return `d:${e.mode.toString(8)}`;
  }
}

/** The signature of a generated file, from its content hash instead of its (fresh) mtime. */
export const contentSignature = (mode: number, size: number, hash: string): string =>
  `f:${mode.toString(8)}:${size}:h${hash}`;

const kindOfSig = (sig: string): string => sig.slice(0, 1);

export interface UpdatePlan {
  /** Entries to write, parents before children. */
  send: WorkspaceEntry[];
  /** Files and links the last copy made that are gone (or changed type) on the host. */
  removeFiles: string[];
  /** Directories the last copy made that are gone: removed only when empty, deepest first. */
  removeDirs: string[];
  manifest: Manifest;
  /** Entries unchanged since the last copy. */
  unchanged: number;
}

const depth = (p: string): number => p.split('/').length;

/** Sort entries so that every directory comes before what it contains. */
export function sortEntries(entries: WorkspaceEntry[]): WorkspaceEntry[] {
  return [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * Compare what the host has now with the guest's manifest of the last copy.
 * Directories are always sent (a header each: modes stay right, and a
 * directory the guest user removed comes back); files and links only when
 * their signature changed. Paths the last copy made and the host no longer
 * has are removed; what the guest made itself (not in the manifest) is kept.
 */
export function planUpdate(
  guestPath: string,
  entries: WorkspaceEntry[],
  previous: Manifest | undefined,
): UpdatePlan {
  const prev = previous?.entries ?? {};
  const now = new Map(entries.map((e) => [e.path, e]));
  const send: WorkspaceEntry[] = [];
  let unchanged = 0;
  for (const e of sortEntries(entries)) {
    if (e.kind !== 'dir' && prev[e.path] === e.sig) unchanged++;
    else send.push(e);
  }
  const removeFiles: string[] = [];
  const removeDirs: string[] = [];
  for (const [p, sig] of Object.entries(prev)) {
    const cur = now.get(p);
    if (cur && kindOfSig(cur.sig) === kindOfSig(sig)) continue;
    if (kindOfSig(sig) === 'd') removeDirs.push(p);
    else removeFiles.push(p);
  }
  removeFiles.sort();
  removeDirs.sort((a, b) => depth(b) - depth(a) || (a < b ? 1 : a > b ? -1 : 0));
  return {
    send,
    removeFiles,
    removeDirs,
    unchanged,
    manifest: {
      version: MANIFEST_VERSION,
      guestPath,
      entries: Object.fromEntries(sortEntries(entries).map((e) => [e.path, e.sig])),
    },
  };
}

/** Parse a manifest read from the guest; anything unreadable counts as no manifest. */
export function parseManifest(text: string, guestPath: string): Manifest | undefined {
  if (!text.trim()) return undefined;
  try {
    const m = JSON.parse(text) as Partial<Manifest>;
    if (
      m.version !== MANIFEST_VERSION ||
      m.guestPath !== guestPath ||
      typeof m.entries !== 'object' ||
      m.entries === null
    )
      return undefined;
    for (const v of Object.values(m.entries)) if (typeof v !== 'string') return undefined;
    return m as Manifest;
  } catch {
    return undefined;
  }
}

/** The tar header of an entry: owned by root, the host's mode and mtime. */
export function tarHeader(e: WorkspaceEntry): TarHeader {
  const base = {
    uid: 0,
    gid: 0,
    uname: 'root',
    gname: 'root',
    mtime: new Date(Math.floor(e.mtimeMs / 1000) * 1000),
  };
  switch (e.kind) {
    case 'dir':
      return { ...base, name: `${e.path}/`, type: 'directory', mode: e.mode };
    case 'symlink':
      return { ...base, name: e.path, type: 'symlink', linkname: e.target ?? '', mode: 0o777 };
    case 'file':
      return { ...base, name: e.path, type: 'file', mode: e.mode, size: e.size };
  }
}

/**
 * What precedes the tar on the guest's stdin: three length-prefixed sections
 * (files to remove, directories to remove, the new manifest). Each is a
 * decimal byte count and a newline, then that many bytes; paths are
 * NUL-terminated so any name survives.
 */
export function streamPreamble(
  plan: Pick<UpdatePlan, 'removeFiles' | 'removeDirs' | 'manifest'>,
): Buffer {
  const section = (b: Buffer): Buffer[] => [Buffer.from(`${b.length}\n`), b];
  const nul = (xs: string[]): Buffer => Buffer.from(xs.map((x) => `${x}\0`).join(''), 'utf8');
  return Buffer.concat([
    ...section(nul(plan.removeFiles)),
    ...section(nul(plan.removeDirs)),
    ...section(Buffer.from(`${JSON.stringify(plan.manifest)}\n`, 'utf8')),
  ]);
}

export interface PlanTotals {
  files: number;
  bytes: number;
}

export function totals(entries: WorkspaceEntry[]): PlanTotals {
  let files = 0;
  let bytes = 0;
  for (const e of entries) {
    if (e.kind === 'dir') continue;
    files++;
    bytes += e.kind === 'file' ? e.size : 0;
  }
  return { files, bytes };
}

/** Every directory the entries need, as dir entries: explicit ones win over implied ones. */
export function withParents(
  entries: WorkspaceEntry[],
  dirOf: (path: string) => WorkspaceEntry,
): WorkspaceEntry[] {
  const have = new Set(entries.filter((e) => e.kind === 'dir').map((e) => e.path));
  const out = [...entries];
  for (const e of entries) {
    let p = e.path;
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/')) {
      p = p.slice(0, i);
      if (have.has(p)) continue;
      have.add(p);
      out.push(dirOf(p));
    }
  }
  return out;
}
