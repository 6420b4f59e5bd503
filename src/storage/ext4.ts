import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ProgressSink } from '../api/events.js';
import { BangerError } from '../errors.js';
import type { Compression } from '../image/tree/decompress.js';
import type { TreeLimits } from '../image/tree/rules.js';
import type { RootfsTree, TreeEntry, TreeStats } from '../image/tree/rootfsTree.js';
import { createStagedTree } from '../image/tree/staging.js';
import { run } from '../util/exec.js';
import {
  debugfs,
  dq,
  parseLsListings,
  S_IFMT,
  scriptable,
  TYPE_BITS,
  type LsEntry,
} from './debugfs.js';

/**
 * ext4 images without loop mounts and without root: `mkfs.ext4 -d` copies a
 * staged tree (contents, dirs, symlinks, hard links, mtimes), then one debugfs
 * pass creates device nodes and lists what mkfs made, and a second sets owner,
 * mode (setuid bits included) and xattrs wherever they differ from the truth the
 * RootfsTree holds. Inodes are addressed by number (`<ino>`), so huge flat
 * directories cost nothing extra.
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

const blocksOf = (bytes: number): number => Math.ceil(bytes / BLOCK_SIZE);

/** Directory blocks for entries of these name lengths (htree leaves fill ~¾). */
export function dirBlocks(nameLengths: number[]): number {
  let bytes = 24;
  for (const n of nameLengths) bytes += 8 + Math.ceil(n / 4) * 4;
  return bytes <= BLOCK_SIZE - 12 ? 1 : Math.ceil(bytes / 3000) + 1;
}

/** Blocks and inodes a tree needs. */
export function measureTree(entries: Iterable<TreeEntry>): SizeInput & { entries: number } {
  let blocks = 0;
  let inodes = 0;
  let count = 0;
  const names = new Map<string, number[]>();
  for (const e of entries) {
    count++;
    if (e.path !== '/') {
      const parent = e.path.slice(0, e.path.lastIndexOf('/')) || '/';
      const base = e.path.slice(e.path.lastIndexOf('/') + 1);
      let list = names.get(parent);
      if (!list) names.set(parent, (list = []));
      list.push(Buffer.byteLength(base));
    }
    if (e.hardlinkTo) continue;
    inodes++;
    if (e.type === 'file') {
      const b = blocksOf(e.size);
      blocks += b + (b > 4 * 32768 ? Math.ceil(b / 32768 / 340) + 1 : 0);
    } else if (e.type === 'symlink' && e.size >= 60) blocks += 1;
    if (e.xattrs) {
      let x = 0;
      for (const [k, v] of e.xattrs) x += 16 + Math.ceil((k.length + v.length) / 4) * 4;
      if (x > 90) blocks += blocksOf(x);
    }
  }
  for (const [, list] of names) blocks += dirBlocks(list);
  blocks += 1; // lost+found
  return { blocks, inodes: inodes + 11, entries: count };
}

export interface BuildExt4Options {
  /** Filesystem label (≤ 16 bytes). Default `banger-root`. */
  label?: string;
  /** A journal is only useful for filesystems mounted read-write. Default false. */
  journal?: boolean;
  /** Free space as a fraction of the content. Default 0.10. */
  headroom?: number;
  /** Free space to add on top, in bytes. */
  extraBytes?: number;
  /** Exact image size (otherwise computed from the content). */
  sizeBytes?: number;
  /** Exact inode count (otherwise computed). */
  inodes?: number;
  uuid?: string;
  emit?: ProgressSink;
  signal?: AbortSignal;
}

export interface Ext4Result {
  path: string;
  /** Apparent size of the image file. */
  sizeBytes: number;
  /** Bytes the sparse image occupies on the host. */
  allocatedBytes: number;
  inodes: number;
  entries: number;
  /** debugfs commands run to fix owners, modes, devices and xattrs. */
  fixups: number;
  ms: number;
}

/** Build a sized, sparse ext4 image at `out` from a tree (atomically: temp file + rename). */
export async function treeToExt4(
  tree: RootfsTree,
  out: string,
  opts: BuildExt4Options = {},
): Promise<Ext4Result> {
  const t0 = Date.now();
  const label = opts.label ?? 'banger-root';
  const journal = opts.journal ?? false;
  const emit = opts.emit;
  tree.finalize();
  const entries = [...tree.entries()];
  for (const e of entries) {
    if (!scriptable(e.path)) {
      throw new BangerError(
        'image_invalid',
        `entry ${JSON.stringify(e.path)} has a line break in its name`,
        {
          hint: 'ext4 images are built with debugfs, which cannot express such names',
        },
      );
    }
  }
  const need = measureTree(entries);
  let choice = chooseSize(need, {
    headroom: opts.headroom ?? 0.1,
    extraBytes: opts.extraBytes ?? 0,
    journal,
  });
  if (opts.sizeBytes) choice = { ...choice, sizeBytes: opts.sizeBytes };
  if (opts.inodes) choice = { ...choice, inodes: opts.inodes };

  const work = `${out}.build-${randomBytes(4).toString('hex')}`;
  const tmpImage = path.join(work, 'image.ext4');
  await fs.promises.mkdir(work, { recursive: false, mode: 0o700 });
  try {
    const conf = path.join(work, 'mke2fs.conf');
    await fs.promises.writeFile(conf, MKE2FS_CONF);
    emit?.({ type: 'step', id: 'ext4:mkfs', label: 'make ext4', state: 'start' });
    const tm = Date.now();
    // A tight estimate can still miss (fragmentation, huge dirs): retry larger.
    for (let attempt = 1; ; attempt++) {
      await fs.promises.rm(tmpImage, { force: true });
      const fh = await fs.promises.open(tmpImage, 'wx', 0o644);
      await fh.truncate(choice.sizeBytes);
      await fh.close();
      try {
        await run(
          'mkfs.ext4',
          mkfsArgs(tmpImage, {
            label,
            journal,
            inodes: choice.inodes,
            uuid: opts.uuid,
            root: tree.dir,
          }),
          {
            what: `making ext4 image ${out}`,
            env: { ...process.env, MKE2FS_CONFIG: conf, E2FSPROGS_LIBMAGIC_SUPPRESS: '1' },
            signal: opts.signal,
          },
        );
        break;
      } catch (e) {
        const msg =
          e instanceof BangerError ? `${e.message} ${JSON.stringify(e.details ?? {})}` : '';
        if (attempt >= 3 || opts.sizeBytes || !/allocate|space|inode/i.test(msg)) throw e;
        emit?.({
          type: 'log',
          level: 'debug',
          message: `ext4 estimate too small (${choice.sizeBytes} bytes), retrying larger`,
        });
        choice = {
          sizeBytes: Math.ceil((choice.sizeBytes * 1.5) / MiB) * MiB,
          inodes: Math.ceil(choice.inodes * 1.5),
        };
      }
    }
    emit?.({
      type: 'step',
      id: 'ext4:mkfs',
      label: 'make ext4',
      state: 'done',
      ms: Date.now() - tm,
    });

    emit?.({
      type: 'step',
      id: 'ext4:fixup',
      label: 'set owners, modes, devices, xattrs',
      state: 'start',
    });
    const tf = Date.now();
    const fixups = await fixupImage(tmpImage, entries, work, opts.signal);
    emit?.({
      type: 'step',
      id: 'ext4:fixup',
      label: 'set owners, modes, devices, xattrs',
      state: 'done',
      ms: Date.now() - tf,
      detail: `${fixups} changes`,
    });

    await fs.promises.rename(tmpImage, out);
    const st = await fs.promises.stat(out);
    return {
      path: out,
      sizeBytes: st.size,
      allocatedBytes: st.blocks * 512,
      inodes: choice.inodes,
      entries: need.entries,
      fixups,
      ms: Date.now() - t0,
    };
  } finally {
    await fs.promises.rm(work, { recursive: true, force: true });
  }
}

const parentOf = (p: string): string => p.slice(0, p.lastIndexOf('/')) || '/';
const baseOf = (p: string): string => p.slice(p.lastIndexOf('/') + 1);

/** The two debugfs passes: mknod + list, then set what differs. Returns the number of changes. */
async function fixupImage(
  image: string,
  entries: TreeEntry[],
  work: string,
  signal?: AbortSignal,
): Promise<number> {
  // Pass 1: device nodes and FIFOs (mknod names are literal, relative to cwd), then list every dir.
  const lines: string[] = [];
  const specials = entries.filter(
    (e) => e.type === 'char' || e.type === 'block' || e.type === 'fifo',
  );
  for (const e of specials) {
    lines.push(`cd ${dq(parentOf(e.path))}`);
    const kind =
      e.type === 'fifo'
        ? 'p'
        : `${e.type === 'char' ? 'c' : 'b'} ${e.devMajor ?? 0} ${e.devMinor ?? 0}`;
    lines.push(`mknod ${dq(baseOf(e.path))} ${kind}`);
  }
  if (specials.length) lines.push('cd /');
  const dirs = entries.filter((e) => e.type === 'dir');
  for (const d of dirs) lines.push(`ls -p ${dq(d.path)}`);
  const listed = await debugfs(image, lines.join('\n') + '\n', {
    write: specials.length > 0,
    what: `listing ext4 image ${image}`,
    signal,
  });
  const listings = parseLsListings(listed.stdout);
  if (listings.length !== dirs.length) {
    throw new BangerError(
      'internal',
      `debugfs listed ${listings.length} of ${dirs.length} directories in ${image}`,
    );
  }
  const actual = new Map<string, LsEntry>();
  dirs.forEach((d, i) => {
    const list = listings[i];
    if (!list) throw new BangerError('internal', `directory ${d.path} is missing from ${image}`);
    for (const e of list) {
      if (e.name === '..') continue;
      actual.set(
        e.name === '.' ? d.path : d.path === '/' ? `/${e.name}` : `${d.path}/${e.name}`,
        e,
      );
    }
  });

  // Pass 2: owners, modes, times of special files, xattrs.
  const fix: string[] = [];
  const done = new Set<number>();
  let nx = 0;
  for (const e of entries) {
    const a = actual.get(e.path);
    if (!a) throw new BangerError('internal', `${e.path} is missing from ${image} after mkfs`);
    const special = e.type === 'char' || e.type === 'block' || e.type === 'fifo';
    // Hard links share an inode: fix it once.
    if (done.has(a.ino)) continue;
    done.add(a.ino);
    const spec = `<${a.ino}>`;
    const mode = TYPE_BITS[e.type] | e.mode;
    if ((a.mode & S_IFMT) !== TYPE_BITS[e.type]) {
      throw new BangerError(
        'internal',
        `${e.path} has the wrong type in ${image} (mode ${a.mode.toString(8)})`,
      );
    }
    if (a.mode !== mode) fix.push(`sif ${spec} mode 0${mode.toString(8)}`);
    if (a.uid !== e.uid) fix.push(`sif ${spec} uid ${e.uid}`);
    if (a.gid !== e.gid) fix.push(`sif ${spec} gid ${e.gid}`);
    if (special) {
      for (const f of ['mtime', 'atime', 'ctime']) fix.push(`sif ${spec} ${f} @${e.mtime}`);
    }
    if (e.xattrs) {
      for (const [k, v] of e.xattrs) {
        const file = path.join(work, `xattr-${++nx}`);
        await fs.promises.writeFile(file, v);
        fix.push(`ea_set -f ${dq(file)} ${spec} ${k}`);
      }
    }
  }
  if (fix.length) {
    await debugfs(image, fix.join('\n') + '\n', {
      write: true,
      what: `fixing up ext4 image ${image}`,
      signal,
    });
  }
  return fix.length;
}

export interface TarToExt4Options extends BuildExt4Options {
  /** Work directory (the staging tree goes inside unless on tmpfs). Default: beside `out`. */
  workDir?: string;
  /** Uncompressed size if known (default: the tar file's size): a tree that fits is staged on tmpfs. */
  sizeHint?: number;
  /** `auto` (tmpfs when it fits, needs sizeHint), `disk`, or a parent dir for the staging tree. */
  staging?: 'auto' | 'disk' | string;
  compression?: Compression;
  /** Device nodes in the tar: kept by default (a Debian rootfs has a few in /dev). */
  devices?: 'keep' | 'skip';
  limits?: Partial<TreeLimits>;
  /** Called with the tree before the image is made (inject or remove files). */
  prepare?: (tree: RootfsTree) => void | Promise<void>;
}

/**
 * One tar (a rootfs tarball, e.g. from mmdebstrap) → ext4 image. Give a file
 * path rather than a stream when there is one: its size decides whether the
 * tree can be staged on tmpfs, and it can be read again if it turns out larger.
 */
export async function tarToExt4(
  tar: string | AsyncIterable<Uint8Array>,
  out: string,
  opts: TarToExt4Options = {},
): Promise<Ext4Result & { tree: TreeStats; extractMs: number }> {
  const t0 = Date.now();
  const workDir = opts.workDir ?? path.dirname(path.resolve(out));
  const sizeHint =
    opts.sizeHint ?? (typeof tar === 'string' ? (await fs.promises.stat(tar)).size : undefined);
  const open = () =>
    typeof tar === 'string' ? fs.createReadStream(tar, { highWaterMark: 1 << 20 }) : tar;
  const unpack = async (staging: TarToExt4Options['staging']): Promise<RootfsTree> => {
    const tree = await createStagedTree(workDir, {
      expectedBytes: sizeHint,
      staging,
      limits: opts.limits,
    });
    try {
      await tree.applyLayer(open(), {
        compression: opts.compression ?? 'auto',
        devices: opts.devices ?? 'keep',
        label: 'rootfs tar',
        emit: opts.emit,
        signal: opts.signal,
      });
      return tree;
    } catch (e) {
      await tree.dispose();
      throw e;
    }
  };
  opts.emit?.({ type: 'step', id: 'ext4:extract', label: 'unpack rootfs tar', state: 'start' });
  let tree: RootfsTree;
  try {
    tree = await unpack(opts.staging);
  } catch (e) {
    // Staged on tmpfs and it grew past its share of memory: start again on disk.
    if (!(typeof tar === 'string' && e instanceof BangerError && e.details?.stagingFull)) throw e;
    tree = await unpack('disk');
  }
  try {
    const extractMs = Date.now() - t0;
    opts.emit?.({
      type: 'step',
      id: 'ext4:extract',
      label: 'unpack rootfs tar',
      state: 'done',
      ms: extractMs,
    });
    await opts.prepare?.(tree);
    const stats = tree.stats();
    const r = await treeToExt4(tree, out, opts);
    return { ...r, tree: stats, extractMs, ms: Date.now() - t0 };
  } finally {
    await tree.dispose();
  }
}

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
  const st = await fs.promises.stat(file);
  const target = roundBlock(sizeBytes);
  if (target < st.size) {
    throw new BangerError(
      'usage',
      `disk ${file} is ${st.size} bytes; it cannot shrink to ${sizeBytes}`,
      {
        hint: 'disks only grow',
      },
    );
  }
  if (target === st.size) return;
  await fs.promises.truncate(file, target);
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
    await fs.promises.truncate(file, st.size).catch(() => undefined);
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
