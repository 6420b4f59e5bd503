import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../errors.js';
import { growDiskFile } from './growFile.js';
import { run } from '../util/exec.js';
import { debugfs, dq, parseLsListings, S_IFMT, TYPE_BITS, type LsEntry } from './debugfs.js';

/**
 * ext4 without loop mounts and without root: the mkfs arguments and sizing,
 * VM disks (sparse, cloned, grown), files written into an image and images
 * listed, all through mkfs.ext4, resize2fs and debugfs. Building an image from a
 * rootfs tree is src/image/tree/toExt4.ts, on top of these.
 *
 * Filesystem features are pinned by a mke2fs.conf of our own, so the host's
 * /etc/mke2fs.conf never changes what is built.
 */

export const BLOCK_SIZE = 4096;
const MiB = 1024 * 1024;

/** Features of every ext4 banger makes (Debian 12's defaults; kernels ≥ 4.x read them). */
export const EXT4_FEATURES = [
  'has_journal',
  'extent',
  'huge_file',
  'flex_bg',
  'metadata_csum',
  '64bit',
  'dir_nlink',
  'extra_isize',
] as const;

export const MKE2FS_CONF = `[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = ${BLOCK_SIZE}
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = ${EXT4_FEATURES.join(',')}
\t}
\tdefault = {
\t\tblocksize = ${BLOCK_SIZE}
\t}
`;

export interface MkfsOptions {
  label: string;
  journal: boolean;
  inodes?: number;
  uuid?: string;
  /** Directory to copy in (`-d`). */
  root?: string;
}

/** mkfs.ext4 arguments (the image file is already sized: no size argument, which mke2fs reads as KiB). */
export function mkfsArgs(image: string, o: MkfsOptions): string[] {
  if (Buffer.byteLength(o.label) > 16) {
    throw new BangerError('usage', `ext4 label '${o.label}' is longer than 16 bytes`);
  }
  const args = ['-q', '-F', '-t', 'ext4', '-T', 'default', '-b', String(BLOCK_SIZE), '-I', '256'];
  args.push('-m', '0', '-L', o.label);
  if (!o.journal) args.push('-O', '^has_journal');
  if (o.inodes) args.push('-N', String(o.inodes));
  if (o.uuid) args.push('-U', o.uuid);
  args.push('-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0');
  if (o.root) args.push('-d', o.root);
  args.push(image);
  return args;
}

export interface SizeInput {
  /** Data blocks needed (contents, directories, long symlinks, xattr blocks). */
  blocks: number;
  inodes: number;
}

export interface SizeChoice {
  sizeBytes: number;
  inodes: number;
}

/** ext4's default journal size for a filesystem of `blocks` 4 KiB blocks. */
export function journalBytes(blocks: number): number {
  if (blocks < 32768) return 1024 * BLOCK_SIZE;
  if (blocks < 256 * 1024) return 4096 * BLOCK_SIZE;
  if (blocks < 512 * 1024) return 8192 * BLOCK_SIZE;
  if (blocks < 4096 * 1024) return 16384 * BLOCK_SIZE;
  if (blocks < 8192 * 1024) return 32768 * BLOCK_SIZE;
  if (blocks < 16384 * 1024) return 65536 * BLOCK_SIZE;
  if (blocks < 32768 * 1024) return 131072 * BLOCK_SIZE;
  return 262144 * BLOCK_SIZE;
}

/**
 * Content + headroom: data blocks × (1 + headroom) + inode tables + metadata
 * (1%, at least 16 MiB) + journal, rounded up to MiB.
 */
export function chooseSize(
  need: SizeInput,
  o: { headroom: number; extraBytes: number; journal: boolean },
): SizeChoice {
  const inodes = Math.ceil(need.inodes * (1 + o.headroom)) + 1024;
  const data = need.blocks * BLOCK_SIZE;
  let size =
    data * (1 + o.headroom) + o.extraBytes + inodes * 256 + Math.max(16 * MiB, data * 0.01);
  if (o.journal) size += journalBytes(Math.ceil(size / BLOCK_SIZE));
  size = Math.ceil(size / MiB) * MiB;
  return { sizeBytes: Math.max(size, 32 * MiB), inodes };
}

/** Directory blocks for entries of these name lengths (htree leaves fill ~¾). */
export function dirBlocks(nameLengths: number[]): number {
  let bytes = 24;
  for (const n of nameLengths) bytes += 8 + Math.ceil(n / 4) * 4;
  return bytes <= BLOCK_SIZE - 12 ? 1 : Math.ceil(bytes / 3000) + 1;
}

const parentOf = (p: string): string => p.slice(0, p.lastIndexOf('/')) || '/';
const baseOf = (p: string): string => p.slice(p.lastIndexOf('/') + 1);

// ------------------------------------------------------------------ VM disks

/** A fresh, empty, sparse ext4 (overlay or work disk): a few MiB allocated whatever the size. */
export async function createSparseExt4(
  file: string,
  sizeBytes: number,
  opts: { label: string; journal?: boolean; signal?: AbortSignal },
): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  const conf = `${tmp}.mke2fs.conf`;
  try {
    await fs.promises.writeFile(conf, MKE2FS_CONF);
    const fh = await fs.promises.open(tmp, 'wx', 0o644);
    await fh.truncate(roundBlock(sizeBytes));
    await fh.close();
    await run('mkfs.ext4', mkfsArgs(tmp, { label: opts.label, journal: opts.journal ?? true }), {
      what: `making ext4 disk ${file}`,
      env: { ...process.env, MKE2FS_CONFIG: conf },
      signal: opts.signal,
    });
    await fs.promises.rename(tmp, file);
  } finally {
    await fs.promises.rm(tmp, { force: true });
    await fs.promises.rm(conf, { force: true });
  }
}

const roundBlock = (n: number): number => Math.ceil(n / BLOCK_SIZE) * BLOCK_SIZE;

/** Copy an image keeping holes (reflink when the filesystem can). Atomic. */
export async function cloneSparse(src: string, dst: string, signal?: AbortSignal): Promise<void> {
  const tmp = `${dst}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await run('cp', ['--sparse=always', '--reflink=auto', '--no-preserve=all', '--', src, tmp], {
      what: `copying disk ${src}`,
      signal,
    });
    await fs.promises.rename(tmp, dst);
  } finally {
    await fs.promises.rm(tmp, { force: true });
  }
}

/** Grow an ext4 image file and its filesystem to `sizeBytes` (never shrinks). */
export async function growExt4(
  file: string,
  sizeBytes: number,
  signal?: AbortSignal,
): Promise<void> {
  // Same size: still resized, so a growth cut short after the truncate (a crash) completes.
  const before = await growDiskFile(file, sizeBytes);
  try {
    const r = await run('resize2fs', [file], {
      what: `growing ${file}`,
      allowFailure: true,
      signal,
    });
    if (r.code !== 0) {
      if (!/e2fsck -f/.test(r.stderr + r.stdout)) throw resizeError(file, r.stderr || r.stdout);
      const f = await run('e2fsck', ['-f', '-p', file], {
        what: `checking ${file}`,
        allowFailure: true,
        signal,
      });
      if (f.code > 2) throw resizeError(file, f.stdout + f.stderr);
      const again = await run('resize2fs', [file], {
        what: `growing ${file}`,
        allowFailure: true,
        signal,
      });
      if (again.code !== 0) throw resizeError(file, again.stderr || again.stdout);
    }
  } catch (e) {
    await fs.promises.truncate(file, before).catch(() => undefined);
    throw e;
  }
}

const resizeError = (file: string, out: string): BangerError =>
  new BangerError(
    'tool_failed',
    `growing disk ${file} failed: ${out.trim().split('\n').pop() ?? ''}`,
    {
      hint: 'check the disk with e2fsck -f',
    },
  );

export interface Ext4File {
  /** Absolute path inside the filesystem. */
  path: string;
  content?: string | Buffer;
  /** A host file to copy instead of `content`. */
  hostPath?: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

export interface Ext4Dir {
  path: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

/**
 * Put files into an (unmounted) ext4 image: e.g. authorized_keys and
 * [[file_sync]] files onto a work disk. Missing parents are created
 * (root:root 0755 unless listed in `dirs`); existing files are replaced.
 */
export async function writeFilesExt4(
  image: string,
  files: Ext4File[],
  dirs: Ext4Dir[] = [],
  signal?: AbortSignal,
): Promise<void> {
  const norm = (p: string) => {
    if (!p.startsWith('/') || p.split('/').some((c) => c === '..' || c === '.')) {
      throw new BangerError('usage', `path '${p}' must be absolute, without . or ..`);
    }
    return p.replace(/\/+/g, '/').replace(/(.)\/$/, '$1');
  };
  const wantDirs = new Map<string, Ext4Dir>();
  for (const d of dirs) wantDirs.set(norm(d.path), d);
  const fileList = files.map((f) => ({ ...f, path: norm(f.path) }));
  const allDirs = new Set<string>(['/']);
  const addChain = (p: string) => {
    for (let d = p; d !== '/'; d = parentOf(d)) allDirs.add(d);
  };
  for (const d of wantDirs.keys()) addChain(d);
  for (const f of fileList) addChain(parentOf(f.path));
  const dirList = [...allDirs].sort((a, b) => depth(a) - depth(b) || a.localeCompare(b));

  // What exists: list every parent of every path we touch.
  const parents = [
    ...new Set([
      ...dirList.filter((d) => d !== '/').map(parentOf),
      ...fileList.map((f) => parentOf(f.path)),
      '/',
    ]),
  ];
  const probe = await debugfs(image, parents.map((p) => `ls -p ${dq(p)}`).join('\n') + '\n', {
    what: `reading ${image}`,
    tolerate: (l) => /File not found by ext2_lookup|not a directory/i.test(l),
    signal,
  });
  const listings = parseLsListings(probe.stdout);
  const existing = new Map<string, LsEntry>();
  parents.forEach((p, i) => {
    for (const e of listings[i] ?? []) {
      if (e.name !== '.' && e.name !== '..')
        existing.set(p === '/' ? `/${e.name}` : `${p}/${e.name}`, e);
    }
  });

  const tmp = await fs.promises.mkdtemp(`${image}.files-`);
  try {
    const lines: string[] = [];
    for (const d of dirList) {
      if (d === '/') continue;
      const e = existing.get(d);
      const want = wantDirs.get(d);
      if (e && (e.mode & S_IFMT) !== TYPE_BITS.dir) {
        throw new BangerError('conflict', `${d} exists in ${image} and is not a directory`);
      }
      if (!e) lines.push(`mkdir ${dq(d)}`);
      if (!e || want) {
        lines.push(`sif ${dq(d)} mode 0${(TYPE_BITS.dir | (want?.mode ?? 0o755)).toString(8)}`);
        lines.push(`sif ${dq(d)} uid ${want?.uid ?? 0}`, `sif ${dq(d)} gid ${want?.gid ?? 0}`);
      }
    }
    if (wantDirs.has('/')) {
      const r = wantDirs.get('/')!;
      lines.push(
        `sif <2> mode 0${(TYPE_BITS.dir | (r.mode ?? 0o755)).toString(8)}`,
        `sif <2> uid ${r.uid ?? 0}`,
        `sif <2> gid ${r.gid ?? 0}`,
      );
    }
    let n = 0;
    for (const f of fileList) {
      const e = existing.get(f.path);
      if (e && (e.mode & S_IFMT) === TYPE_BITS.dir) {
        throw new BangerError('conflict', `${f.path} exists in ${image} and is a directory`);
      }
      let src = f.hostPath;
      if (src === undefined) {
        src = path.join(tmp, `f${++n}`);
        await fs.promises.writeFile(src, f.content ?? '');
      } else if (!(await fs.promises.stat(src)).isFile()) {
        throw new BangerError('usage', `${src} is not a regular file`);
      }
      if (e) lines.push(`rm ${dq(f.path)}`);
      lines.push(
        `cd ${dq(parentOf(f.path))}`,
        `write ${dq(path.resolve(src))} ${dq(baseOf(f.path))}`,
        'cd /',
      );
      lines.push(`sif ${dq(f.path)} mode 0${(TYPE_BITS.file | (f.mode ?? 0o600)).toString(8)}`);
      lines.push(`sif ${dq(f.path)} uid ${f.uid ?? 0}`, `sif ${dq(f.path)} gid ${f.gid ?? 0}`);
    }
    if (lines.length) {
      await debugfs(image, lines.join('\n') + '\n', {
        write: true,
        what: `writing files into ${image}`,
        signal,
      });
    }
  } finally {
    await fs.promises.rm(tmp, { recursive: true, force: true });
  }
}

const depth = (p: string): number => (p === '/' ? 0 : p.split('/').length - 1);

export interface Ext4Usage {
  /** Apparent size of the image file. */
  sizeBytes: number;
  /** Host bytes allocated to the (sparse) file. */
  allocatedBytes: number;
  blockSize: number;
  /** Filesystem capacity, used and free space as the superblock says. */
  totalBytes: number;
  usedBytes: number;
  freeBytes: number;
  inodes: number;
  freeInodes: number;
}

export function parseDumpe2fs(out: string): Omit<Ext4Usage, 'sizeBytes' | 'allocatedBytes'> {
  const num = (k: string) => {
    const m = new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(out);
    if (!m) throw new BangerError('tool_failed', `dumpe2fs output has no '${k}'`);
    return Number(m[1]);
  };
  const blockSize = num('Block size');
  const blocks = num('Block count');
  const free = num('Free blocks');
  return {
    blockSize,
    totalBytes: blocks * blockSize,
    usedBytes: (blocks - free) * blockSize,
    freeBytes: free * blockSize,
    inodes: num('Inode count'),
    freeInodes: num('Free inodes'),
  };
}

export async function ext4Usage(file: string): Promise<Ext4Usage> {
  const st = await fs.promises.stat(file);
  const r = await run('dumpe2fs', ['-h', file], { what: `reading ${file}` });
  return { sizeBytes: st.size, allocatedBytes: st.blocks * 512, ...parseDumpe2fs(r.stdout) };
}

export interface Ext4Entry extends LsEntry {
  path: string;
}

/** Every entry of an image (path, inode, mode, owner, size), one debugfs run per directory level. */
export async function listExt4(image: string): Promise<Ext4Entry[]> {
  const out: Ext4Entry[] = [];
  let level = ['/'];
  let rootDone = false;
  while (level.length) {
    const r = await debugfs(image, level.map((d) => `ls -p ${dq(d)}`).join('\n') + '\n', {
      what: `listing ${image}`,
    });
    const listings = parseLsListings(r.stdout);
    const next: string[] = [];
    level.forEach((d, i) => {
      for (const e of listings[i] ?? []) {
        if (e.name === '..') continue;
        if (e.name === '.') {
          if (d === '/' && !rootDone) {
            out.push({ ...e, path: '/' });
            rootDone = true;
          }
          continue;
        }
        const p = d === '/' ? `/${e.name}` : `${d}/${e.name}`;
        out.push({ ...e, path: p });
        if ((e.mode & S_IFMT) === TYPE_BITS.dir) next.push(p);
      }
    });
    level = next;
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
