import fs from 'node:fs';
import path from 'node:path';
import type { ProgressSink } from '../../api/events.js';
import { BangerError } from '../../errors.js';
import { decompress, type Compression } from './decompress.js';
import {
  classifyWhiteout,
  entryPathParts,
  resolveLimits,
  stagingMode,
  xattrProblem,
  type TreeLimits,
} from './rules.js';
import { TarFormatError, TarReader, type TarHeader } from './tar.js';

/**
 * One root filesystem assembled from tar layers: a staging directory on the host
 * holding file contents, directories and symlinks (what `mkfs.ext4 -d` copies), and
 * an in-memory tree holding the truth about every entry: owner, mode with setuid
 * bits, mtime, device numbers, xattrs and hard links (what the ext4 builder fixes
 * up afterwards, so no root is needed).
 *
 * Safety: every write goes to a path computed from the in-memory tree, whose
 * directories are all real directories created by this class. Symlinks met on
 * the way (a later entry under `lib/` when `lib -> usr/lib`) are resolved inside
 * the tree; one that would climb above the root is refused. New files are opened
 * with O_EXCL|O_NOFOLLOW, so nothing is ever written outside `dir`.
 */
export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo';

export interface TreeEntry {
  /** Absolute path inside the image, `/` for the root. */
  path: string;
  type: EntryType;
  uid: number;
  gid: number;
  /** Permission bits including setuid/setgid/sticky (0o7777). */
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Bytes for files, target length for symlinks, else 0. */
  size: number;
  linkTarget?: string;
  /** On the second and later names of a hard-linked inode: the first name. */
  hardlinkTo?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: ReadonlyMap<string, Buffer>;
  /** Tree-local inode id, shared by hard links. */
  inode: number;
  nlink: number;
}

export interface EntryMeta {
  uid?: number;
  gid?: number;
  mode?: number;
  mtime?: number;
}

export interface ApplyLayerOptions {
  compression?: Compression;
  /** Names the layer in errors and warnings, e.g. `layer sha256:0123abcd`. */
  label?: string;
  /** Device nodes: `skip` (with one warning per layer, the OCI default) or `keep`. */
  devices?: 'skip' | 'keep';
  emit?: ProgressSink;
  signal?: AbortSignal;
  /** Compressed bytes consumed so far (for progress bars). */
  onInputBytes?: (n: number) => void;
  zstdBin?: string;
}

export interface ApplyLayerResult {
  entries: number;
  /** Uncompressed tar bytes. */
  tarBytes: number;
  /** Compressed bytes read. */
  inputBytes: number;
  whiteouts: number;
  skippedDevices: string[];
  warnings: string[];
}

export interface TreeStats {
  entries: number;
  inodes: number;
  files: number;
  dirs: number;
  symlinks: number;
  specials: number;
  /** Bytes of file contents (hard-linked inodes once). */
  fileBytes: number;
}

interface Inode {
  id: number;
  type: EntryType;
  uid: number;
  gid: number;
  mode: number;
  mtime: number;
  size: number;
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Map<string, Buffer>;
  nlink: number;
}

interface Node {
  name: string;
  parent: Node | null;
  inode: Inode;
  children: Map<string, Node> | null;
  /** Index of the layer that last created or re-declared this entry. */
  layer: number;
}

const O_CREATE_NEW =
  fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
const MAX_SYMLINK_HOPS = 40;
const HOST_PATH_MAX = 4095;
const HINT_HOSTILE = 'the image is malformed or hostile; nothing was written outside its work dir';

export class RootfsTree {
  readonly limits: TreeLimits;
  private readonly root: Node;
  private nextInode = 1;
  private layerIndex = 0;
  private totalEntries = 0;
  private totalBytes = 0;
  private finalized = false;
  private disposed = false;
  /** Device nodes left out, by path: hard links to them are left out too. */
  private readonly skippedDevices = new Set<string>();

  private constructor(
    readonly dir: string,
    limits: Partial<TreeLimits>,
    /** Bytes the staging dir may take (tmpfs); past it, applying fails with `stagingFull`. */
    readonly budgetBytes?: number,
  ) {
    this.limits = resolveLimits(limits);
    this.root = {
      name: '',
      parent: null,
      inode: this.newInode('dir', {
        uid: 0,
        gid: 0,
        mode: 0o755,
        mtime: Math.floor(Date.now() / 1000),
      }),
      children: new Map(),
      layer: 0,
    };
    this.root.inode.nlink = 1;
  }

  /** A new, empty tree staged in `dir`, which must not exist yet (its parent is created). */
  static async create(
    dir: string,
    opts: { limits?: Partial<TreeLimits>; budgetBytes?: number } = {},
  ): Promise<RootfsTree> {
    const abs = path.resolve(dir);
    await fs.promises.mkdir(path.dirname(abs), { recursive: true });
    try {
      await fs.promises.mkdir(abs, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new BangerError('conflict', `staging dir ${abs} already exists`, {
          hint: 'remove it or use another work dir',
        });
      }
      throw e;
    }
    await fs.promises.chmod(abs, 0o700);
    return new RootfsTree(abs, opts.limits ?? {}, opts.budgetBytes);
  }

  // ---------------------------------------------------------------- layers

  /** Apply one tar layer (compressed or not) on top of what the tree holds. */
  async applyLayer(
    input: AsyncIterable<Uint8Array>,
    opts: ApplyLayerOptions = {},
  ): Promise<ApplyLayerResult> {
    this.assertUsable();
    const label = opts.label ?? 'layer';
    const layer = ++this.layerIndex;
    const limits = this.limits;
    let inputBytes = 0;
    const startTotal = this.totalBytes;
    const result: ApplyLayerResult = {
      entries: 0,
      tarBytes: 0,
      inputBytes: 0,
      whiteouts: 0,
      skippedDevices: [],
      warnings: [],
    };
    const compressed = opts.compression !== 'none';
    const stream = decompress(input, opts.compression ?? 'auto', {
      label,
      signal: opts.signal,
      zstdBin: opts.zstdBin,
      onInputBytes: (n) => {
        inputBytes = n;
        opts.onInputBytes?.(n);
      },
    });
    const reader = new TarReader(stream, {
      onBytes: (n) => {
        this.totalBytes = startTotal + n;
        if (this.budgetBytes !== undefined && this.totalBytes > this.budgetBytes) {
          throw new BangerError(
            'precondition',
            `${label}: the image outgrew its ${this.budgetBytes}-byte staging space on tmpfs`,
            { hint: "stage it on disk (staging: 'disk')", details: { stagingFull: true } },
          );
        }
        if (this.totalBytes > limits.maxTotalBytes) {
          throw this.limitError(
            label,
            `uncompressed size exceeds the limit of ${limits.maxTotalBytes} bytes`,
          );
        }
        if (
          compressed &&
          n > limits.ratioGraceBytes &&
          n > limits.maxRatio * Math.max(inputBytes, 1)
        ) {
          throw this.limitError(
            label,
            `expands more than ${limits.maxRatio}x (${n} bytes from ${inputBytes}): a decompression bomb?`,
          );
        }
      },
    });
    try {
      for (;;) {
        if (opts.signal?.aborted) throw new BangerError('cancelled', `${label}: cancelled`);
        const h = await reader.next();
        if (!h) break;
        result.entries++;
        if (++this.totalEntries > limits.maxEntries) {
          throw this.limitError(label, `has more than ${limits.maxEntries} entries`);
        }
        await this.applyEntry(h, reader, layer, label, opts, result);
      }
    } catch (e) {
      if (e instanceof TarFormatError) {
        throw new BangerError('image_invalid', `${label}: ${e.message} (at byte ${e.offset})`, {
          hint: 'the layer is not a valid tar archive',
        });
      }
      throw e;
    } finally {
      await stream.return(undefined);
    }
    result.tarBytes = reader.bytesRead;
    result.inputBytes = inputBytes;
    if (result.skippedDevices.length) {
      const n = result.skippedDevices.length;
      result.warnings.unshift(
        `${label}: skipped ${n} device node${n === 1 ? '' : 's'} (${result.skippedDevices
          .slice(0, 5)
          .join(', ')}${n > 5 ? ', …' : ''})`,
      );
    }
    for (const w of result.warnings) opts.emit?.({ type: 'log', level: 'warn', message: w });
    return result;
  }

  private async applyEntry(
    h: TarHeader,
    reader: TarReader,
    layer: number,
    label: string,
    opts: ApplyLayerOptions,
    result: ApplyLayerResult,
  ): Promise<void> {
    const bad = (reason: string) =>
      new BangerError('image_invalid', `${label}: entry '${h.name}' ${reason}`, {
        hint: HINT_HOSTILE,
      });
    const check = entryPathParts(h.name, this.limits.maxPathBytes);
    if (!check.ok) throw bad(check.reason);
    const parts = check.parts;

    if (h.type === 'unsupported') {
      result.warnings.push(`${label}: skipped '${h.name}' (tar entry type '${h.typeflag}')`);
      return;
    }
    if (parts.length === 0) {
      if (h.type !== 'dir') throw bad('replaces the root directory with a non-directory');
      this.setInodeMeta(this.root.inode, h, label, result);
      this.root.layer = layer;
      return;
    }
    const base = parts[parts.length - 1]!;
    const wh = classifyWhiteout(base);
    if (wh.kind === 'meta') return;
    if (wh.kind === 'delete') {
      result.whiteouts++;
      const parent = this.resolveDir(parts.slice(0, -1), { create: false, what: h.name, bad });
      const victim = parent?.children!.get(wh.name);
      if (victim && victim.layer !== layer) this.removeNode(victim);
      return;
    }
    if (wh.kind === 'opaque') {
      result.whiteouts++;
      const dir = this.resolveDir(parts.slice(0, -1), {
        create: true,
        what: h.name,
        bad,
        mtime: h.mtime,
      })!;
      this.clearLower(dir, layer);
      return;
    }

    const parent = this.resolveDir(parts.slice(0, -1), {
      create: true,
      what: h.name,
      bad,
      mtime: h.mtime,
    })!;
    const existing = parent.children!.get(base);
    const hostPath = this.hostPath(parent, base);
    if (Buffer.byteLength(hostPath) > HOST_PATH_MAX) throw bad('is too deep to stage on this host');

    switch (h.type) {
      case 'dir': {
        if (existing?.inode.type === 'dir') {
          this.setInodeMeta(existing.inode, h, label, result);
          existing.layer = layer;
          return;
        }
        if (existing) this.removeNode(existing);
        const inode = this.newInode('dir', h);
        this.setXattrs(inode, h, label, result);
        fs.mkdirSync(hostPath, { mode: 0o700 });
        fs.chmodSync(hostPath, stagingMode('dir', inode.mode));
        this.attach(parent, base, inode, layer);
        return;
      }
      case 'file': {
        if (h.size > this.limits.maxFileBytes) {
          throw this.limitError(
            label,
            `file '${h.name}' of ${h.size} bytes exceeds the limit of ${this.limits.maxFileBytes}`,
          );
        }
        if (existing) this.removeNode(existing);
        const inode = this.newInode('file', h);
        inode.size = h.size;
        this.setXattrs(inode, h, label, result);
        const fd = fs.openSync(hostPath, O_CREATE_NEW, 0o600);
        try {
          for await (const chunk of reader.body()) writeAll(fd, chunk);
          fs.fchmodSync(fd, stagingMode('file', inode.mode));
          fs.futimesSync(fd, inode.mtime, inode.mtime);
        } finally {
          fs.closeSync(fd);
        }
        this.attach(parent, base, inode, layer);
        return;
      }
      case 'symlink': {
        if (h.linkname.length === 0) throw bad('is a symlink with an empty target');
        if (Buffer.byteLength(h.linkname) > 4095)
          throw bad('is a symlink with a target over 4095 bytes');
        if (existing) this.removeNode(existing);
        const inode = this.newInode('symlink', h);
        inode.linkTarget = h.linkname;
        inode.size = Buffer.byteLength(h.linkname);
        this.setXattrs(inode, h, label, result);
        fs.symlinkSync(h.linkname, hostPath);
        fs.lutimesSync(hostPath, inode.mtime, inode.mtime);
        this.attach(parent, base, inode, layer);
        return;
      }
      case 'hardlink': {
        const t = entryPathParts(h.linkname, this.limits.maxPathBytes);
        if (!t.ok) throw bad(`is a hard link whose target '${h.linkname}' ${t.reason}`);
        if (t.parts.length === 0) throw bad('is a hard link to the root directory');
        const tparent = this.resolveDir(t.parts.slice(0, -1), { create: false, what: h.name, bad });
        const target = tparent?.children!.get(t.parts[t.parts.length - 1]!);
        if (!target) {
          if (this.skippedDevices.has('/' + t.parts.join('/'))) {
            result.skippedDevices.push(h.name);
            this.skippedDevices.add('/' + parts.join('/'));
            return;
          }
          throw bad(`is a hard link to '${h.linkname}', which is not in the image`);
        }
        if (target.inode.type === 'dir') throw bad(`is a hard link to directory '${h.linkname}'`);
        if (target === existing) return;
        if (existing) this.removeNode(existing);
        if (target.inode.type === 'file' || target.inode.type === 'symlink') {
          fs.linkSync(this.hostPathOf(target), hostPath);
        }
        target.inode.nlink++;
        this.attach(parent, base, target.inode, layer, true);
        return;
      }
      case 'char':
      case 'block':
      case 'fifo': {
        if (h.type !== 'fifo' && opts.devices !== 'keep') {
          result.skippedDevices.push(h.name);
          this.skippedDevices.add('/' + parts.join('/'));
          if (existing) this.removeNode(existing);
          return;
        }
        if (existing) this.removeNode(existing);
        const inode = this.newInode(h.type, h);
        inode.devMajor = h.devMajor;
        inode.devMinor = h.devMinor;
        this.setXattrs(inode, h, label, result);
        this.attach(parent, base, inode, layer);
        return;
      }
    }
  }

  /**
   * Walk directory components from the root. Missing ones are created when
   * `create`; symlinks are followed inside the tree (absolute targets from the
   * tree's root); climbing above the root through one is refused.
   */
  private resolveDir(
    parts: string[],
    o: {
      create: boolean;
      what: string;
      bad: (reason: string) => Error;
      mtime?: number;
      clamp?: boolean;
    },
  ): Node | undefined {
    let cur = this.root;
    const queue = [...parts];
    let hops = 0;
    let via: string | undefined;
    while (queue.length) {
      const c = queue.shift()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (cur.parent) cur = cur.parent;
        else if (!o.clamp)
          throw o.bad(`is written through symlink '${via}', which points outside the image root`);
        continue;
      }
      const child = cur.children!.get(c);
      if (!child) {
        if (!o.create) return undefined;
        const inode = this.newInode('dir', { uid: 0, gid: 0, mode: 0o755, mtime: o.mtime ?? 0 });
        const host = this.hostPath(cur, c);
        fs.mkdirSync(host, { mode: 0o700 });
        fs.chmodSync(host, stagingMode('dir', inode.mode));
        cur = this.attach(cur, c, inode, this.layerIndex);
        continue;
      }
      if (child.inode.type === 'dir') {
        cur = child;
        continue;
      }
      if (child.inode.type === 'symlink') {
        if (++hops > MAX_SYMLINK_HOPS)
          throw o.bad('goes through too many levels of symbolic links');
        via = this.pathOf(child);
        const target = child.inode.linkTarget!;
        if (target.startsWith('/')) cur = this.root;
        queue.unshift(...target.split('/'));
        continue;
      }
      if (!o.create) return undefined;
      throw o.bad(
        `needs '${this.pathOf(child)}' to be a directory, but it is a ${child.inode.type}`,
      );
    }
    return cur;
  }

  /** Opaque directory: drop everything lower layers put below `dir`. */
  private clearLower(dir: Node, layer: number): void {
    for (const child of [...dir.children!.values()]) {
      if (child.layer !== layer) this.removeNode(child);
      else if (child.children) this.clearLower(child, layer);
    }
  }

  private removeNode(node: Node): void {
    const host = this.hostPathOf(node);
    if (node.children) {
      fs.rmSync(host, { recursive: true, force: true });
      const drop = (n: Node): void => {
        n.inode.nlink--;
        if (n.children) for (const c of n.children.values()) drop(c);
      };
      drop(node);
    } else {
      if (node.inode.type === 'file' || node.inode.type === 'symlink') {
        try {
          fs.unlinkSync(host);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        }
      }
      node.inode.nlink--;
    }
    node.parent!.children!.delete(node.name);
    node.parent = null;
  }

  private attach(parent: Node, name: string, inode: Inode, layer: number, linked = false): Node {
    const node: Node = {
      name,
      parent,
      inode,
      children: inode.type === 'dir' ? new Map() : null,
      layer,
    };
    if (!linked) inode.nlink = 1;
    parent.children!.set(name, node);
    return node;
  }

  private newInode(
    type: EntryType,
    h: { uid: number; gid: number; mode: number; mtime: number },
  ): Inode {
    return {
      id: this.nextInode++,
      type,
      uid: h.uid,
      gid: h.gid,
      mode: h.mode & 0o7777,
      mtime: Math.floor(h.mtime),
      size: 0,
      nlink: 0,
    };
  }

  private setInodeMeta(inode: Inode, h: TarHeader, label: string, result: ApplyLayerResult) {
    inode.uid = h.uid;
    inode.gid = h.gid;
    inode.mode = h.mode & 0o7777;
    inode.mtime = Math.floor(h.mtime);
    inode.xattrs = undefined;
    this.setXattrs(inode, h, label, result);
  }

  private setXattrs(inode: Inode, h: TarHeader, label: string, result: ApplyLayerResult) {
    if (h.xattrs.size === 0) return;
    for (const [k, v] of h.xattrs) {
      const problem = xattrProblem(k, v, this.limits.maxXattrBytes);
      if (problem) {
        result.warnings.push(`${label}: dropped ${problem} on '${h.name}'`);
        continue;
      }
      (inode.xattrs ??= new Map()).set(k, v);
    }
  }

  private limitError(label: string, what: string): BangerError {
    return new BangerError('image_invalid', `${label}: ${what}`, {
      hint: 'the image is too large or hostile; limits are set by the caller',
    });
  }

  // ---------------------------------------------------------------- paths

  private pathOf(node: Node): string {
    const names: string[] = [];
    for (let n: Node | null = node; n && n.parent; n = n.parent) names.push(n.name);
    return '/' + names.reverse().join('/');
  }

  private hostPathOf(node: Node): string {
    return node === this.root ? this.dir : this.dir + this.pathOf(node);
  }

  private hostPath(parent: Node, name: string): string {
    return `${this.hostPathOf(parent)}/${name}`;
  }

  /** Host path of an entry's staged copy (files, dirs, symlinks). Never follows symlinks. */
  stagingPath(p: string): string {
    return this.hostPathOf(this.lookup(p, false, 'path'));
  }

  private lookup(p: string, follow: boolean, what: string): Node {
    const n = this.find(p, follow);
    if (!n) throw new BangerError('not_found', `${what} '${p}' is not in the image`);
    return n;
  }

  /** A node by path; symlinks in parents resolve inside the tree (clamped at /), the last one only with `follow`. */
  private find(p: string, follow: boolean): Node | undefined {
    const check = entryPathParts(p.replace(/^\/+/, '') || '.', this.limits.maxPathBytes);
    if (!check.ok) throw new BangerError('usage', `path '${p}' ${check.reason}`);
    return this.findParts(p, check.parts, follow, 0);
  }

  private findParts(p: string, parts: string[], follow: boolean, hops: number): Node | undefined {
    const bad = (reason: string) => new BangerError('image_invalid', `path '${p}' ${reason}`);
    const parent = this.resolveDir(parts.slice(0, -1), {
      create: false,
      what: p,
      bad,
      clamp: true,
    });
    if (!parent) return undefined;
    const last = parts.length ? parts[parts.length - 1]! : '.';
    const node =
      last === '.' || last === ''
        ? parent
        : last === '..'
          ? (parent.parent ?? parent)
          : parent.children!.get(last);
    if (!follow || node?.inode.type !== 'symlink') return node;
    if (hops >= MAX_SYMLINK_HOPS) throw bad('goes through too many levels of symbolic links');
    const t = node.inode.linkTarget!;
    const base = t.startsWith('/') ? [] : this.pathOf(parent).split('/').filter(Boolean);
    return this.findParts(p, [...base, ...t.split('/')], true, hops + 1);
  }

  // ---------------------------------------------------------------- queries

  /** The entry at `p` (symlinks in parents are followed inside the tree; the last one only with `follow`). */
  get(p: string, opts: { follow?: boolean } = {}): TreeEntry | undefined {
    const n = this.find(p, opts.follow ?? false);
    return n ? this.toEntry(n, this.pathOf(n)) : undefined;
  }

  exists(p: string, opts: { follow?: boolean } = {}): boolean {
    return this.find(p, opts.follow ?? false) !== undefined;
  }

  /** Names in a directory. */
  list(p: string): string[] {
    const n = this.lookup(p, true, 'directory');
    if (!n.children) throw new BangerError('usage', `'${p}' is not a directory`);
    return [...n.children.keys()].sort();
  }

  /** A file's contents (follows symlinks inside the tree). */
  readFile(p: string): Buffer {
    const n = this.lookup(p, true, 'file');
    if (n.inode.type !== 'file') throw new BangerError('usage', `'${p}' is not a regular file`);
    const fd = fs.openSync(this.hostPathOf(n), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      return fs.readFileSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Every entry, parents before children, names sorted; hard links name their first path. */
  *entries(): Generator<TreeEntry> {
    const seen = new Map<number, string>();
    const stack: [Node, string][] = [[this.root, '/']];
    while (stack.length) {
      const [n, p] = stack.pop()!;
      const e = this.toEntry(n, p);
      if (n.inode.nlink > 1 && n.inode.type !== 'dir') {
        const first = seen.get(n.inode.id);
        if (first) e.hardlinkTo = first;
        else seen.set(n.inode.id, p);
      }
      yield e;
      if (n.children) {
        const names = [...n.children.keys()].sort().reverse();
        const prefix = p === '/' ? '/' : `${p}/`;
        for (const name of names) stack.push([n.children.get(name)!, prefix + name]);
      }
    }
  }

  stats(): TreeStats {
    const s: TreeStats = {
      entries: 0,
      inodes: 0,
      files: 0,
      dirs: 0,
      symlinks: 0,
      specials: 0,
      fileBytes: 0,
    };
    for (const e of this.entries()) {
      s.entries++;
      if (e.hardlinkTo) continue;
      s.inodes++;
      if (e.type === 'file') {
        s.files++;
        s.fileBytes += e.size;
      } else if (e.type === 'dir') s.dirs++;
      else if (e.type === 'symlink') s.symlinks++;
      else s.specials++;
    }
    return s;
  }

  private toEntry(n: Node, p: string): TreeEntry {
    const i = n.inode;
    const e: TreeEntry = {
      path: p,
      type: i.type,
      uid: i.uid,
      gid: i.gid,
      mode: i.mode,
      mtime: i.mtime,
      size: i.size,
      inode: i.id,
      nlink: i.nlink,
    };
    if (i.linkTarget !== undefined) e.linkTarget = i.linkTarget;
    if (i.devMajor !== undefined) e.devMajor = i.devMajor;
    if (i.devMinor !== undefined) e.devMinor = i.devMinor;
    if (i.xattrs?.size) e.xattrs = i.xattrs;
    return e;
  }

  // ---------------------------------------------------------------- edits (prepare hooks)

  /** Create or replace a regular file. Parent directories are created (root-owned, 0755). */
  writeFile(p: string, content: string | Buffer, meta: EntryMeta = {}): void {
    this.assertUsable();
    const { parent, name } = this.editTarget(p);
    const existing = parent.children!.get(name);
    if (existing) this.removeNode(existing);
    const inode = this.newInode('file', {
      uid: meta.uid ?? 0,
      gid: meta.gid ?? 0,
      mode: meta.mode ?? 0o644,
      mtime: meta.mtime ?? Date.now() / 1000,
    });
    const buf = typeof content === 'string' ? Buffer.from(content) : content;
    inode.size = buf.length;
    const host = this.hostPath(parent, name);
    const fd = fs.openSync(host, O_CREATE_NEW, 0o600);
    try {
      writeAll(fd, buf);
      fs.fchmodSync(fd, stagingMode('file', inode.mode));
      fs.futimesSync(fd, inode.mtime, inode.mtime);
    } finally {
      fs.closeSync(fd);
    }
    this.attach(parent, name, inode, this.layerIndex);
  }

  /** `mkdir -p`; an existing directory keeps its contents and gets `meta` applied. */
  mkdir(p: string, meta: EntryMeta = {}): void {
    this.assertUsable();
    const { parent, name } = this.editTarget(p);
    const existing = parent.children!.get(name);
    if (existing?.inode.type === 'dir') {
      this.applyMeta(existing.inode, meta);
      return;
    }
    if (existing) throw new BangerError('conflict', `'${p}' exists and is not a directory`);
    const inode = this.newInode('dir', {
      uid: meta.uid ?? 0,
      gid: meta.gid ?? 0,
      mode: meta.mode ?? 0o755,
      mtime: meta.mtime ?? Date.now() / 1000,
    });
    const host = this.hostPath(parent, name);
    fs.mkdirSync(host, { mode: 0o700 });
    fs.chmodSync(host, stagingMode('dir', inode.mode));
    this.attach(parent, name, inode, this.layerIndex);
  }

  symlink(p: string, target: string, meta: EntryMeta = {}): void {
    this.assertUsable();
    const { parent, name } = this.editTarget(p);
    const existing = parent.children!.get(name);
    if (existing) this.removeNode(existing);
    const inode = this.newInode('symlink', {
      uid: meta.uid ?? 0,
      gid: meta.gid ?? 0,
      mode: 0o777,
      mtime: meta.mtime ?? Date.now() / 1000,
    });
    inode.linkTarget = target;
    inode.size = Buffer.byteLength(target);
    const host = this.hostPath(parent, name);
    fs.symlinkSync(target, host);
    fs.lutimesSync(host, inode.mtime, inode.mtime);
    this.attach(parent, name, inode, this.layerIndex);
  }

  /** Remove an entry (recursively for directories); false if it was not there. */
  remove(p: string): boolean {
    this.assertUsable();
    const n = this.find(p, false);
    if (!n) return false;
    if (n === this.root) throw new BangerError('usage', 'cannot remove the root directory');
    this.removeNode(n);
    return true;
  }

  /** Change owner, mode or mtime of an existing entry (not following a final symlink). */
  setMeta(p: string, meta: EntryMeta): void {
    this.assertUsable();
    this.applyMeta(this.lookup(p, false, 'path').inode, meta);
  }

  private applyMeta(inode: Inode, meta: EntryMeta): void {
    if (meta.uid !== undefined) inode.uid = meta.uid;
    if (meta.gid !== undefined) inode.gid = meta.gid;
    if (meta.mtime !== undefined) inode.mtime = Math.floor(meta.mtime);
    if (meta.mode !== undefined) inode.mode = meta.mode & 0o7777;
  }

  private editTarget(p: string): { parent: Node; name: string } {
    const check = entryPathParts(p.replace(/^\/+/, ''), this.limits.maxPathBytes);
    if (!check.ok || check.parts.length === 0) {
      throw new BangerError('usage', `path '${p}' ${check.ok ? 'is the root' : check.reason}`);
    }
    const bad = (reason: string) => new BangerError('usage', `path '${p}' ${reason}`);
    const parent = this.resolveDir(check.parts.slice(0, -1), { create: true, what: p, bad })!;
    return { parent, name: check.parts[check.parts.length - 1]! };
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Bring staged directory mtimes in line with the tree (adding entries touched
   * them). Called by the ext4 builder; harmless to call again.
   */
  finalize(): void {
    this.assertUsable();
    const walk = (n: Node) => {
      if (!n.children) return;
      for (const c of n.children.values()) walk(c);
      fs.utimesSync(this.hostPathOf(n), n.inode.mtime, n.inode.mtime);
    };
    walk(this.root);
    this.finalized = true;
  }

  get isFinalized(): boolean {
    return this.finalized;
  }

  /** Remove the staging directory. The tree is unusable afterwards. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await fs.promises.rm(this.dir, { recursive: true, force: true });
  }

  private assertUsable(): void {
    if (this.disposed) throw new BangerError('internal', `tree at ${this.dir} was disposed`);
    this.finalized = false;
  }
}

function writeAll(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
}
