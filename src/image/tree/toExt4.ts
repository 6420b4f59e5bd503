import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ProgressSink } from '../../api/events.js';
import { BangerError } from '../../errors.js';
import {
  debugfs,
  dq,
  parseLsListings,
  S_IFMT,
  scriptable,
  TYPE_BITS,
  type LsEntry,
} from '../../storage/debugfs.js';
import {
  BLOCK_SIZE,
  chooseSize,
  dirBlocks,
  MKE2FS_CONF,
  mkfsArgs,
  type SizeInput,
} from '../../storage/ext4.js';
import { run } from '../../util/exec.js';
import type { Compression } from './decompress.js';
import type { RootfsTree, TreeEntry, TreeStats } from './rootfsTree.js';
import type { TreeLimits } from './rules.js';
import { createStagedTree } from './staging.js';

/**
 * Rootfs tree → ext4 image: `mkfs.ext4 -d` copies a staged tree (contents,
 * dirs, symlinks, hard links, mtimes), then one debugfs pass creates device
 * nodes and lists what mkfs made, and a second sets owner, mode (setuid bits
 * included) and xattrs wherever they differ from the truth the RootfsTree holds.
 * Inodes are addressed by number (`<ino>`), so huge flat directories cost
 * nothing extra. The ext4 primitives are src/storage/ext4.ts.
 */

const MiB = 1024 * 1024;
const blocksOf = (bytes: number): number => Math.ceil(bytes / BLOCK_SIZE);
const parentOf = (p: string): string => path.posix.dirname(p);
const baseOf = (p: string): string => path.posix.basename(p);

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
