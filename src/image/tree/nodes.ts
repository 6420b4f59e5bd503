import fs from 'node:fs';
import { BangerError } from '../../errors.js';
import { entryPathParts, stagingMode, type TreeLimits } from './rules.js';
import {
  MAX_SYMLINK_HOPS,
  type EntryType,
  type Inode,
  type Node,
  type TreeEntry,
  type TreeStats,
} from './treeTypes.js';

/**
 * The in-memory side of a RootfsTree (rootfsTree.ts): the node graph with
 * every entry's metadata, its mirror in the staging directory, path lookup
 * that resolves symlinks inside the tree, queries, and the edits prepare
 * hooks make. Applying tar layers is the subclass's.
 */

export class TreeNodes {
  readonly limits: TreeLimits;
  protected readonly root: Node;
  protected nextInode = 1;
  protected layerIndex = 0;
  protected finalized = false;
  protected disposed = false;

  protected constructor(
    readonly dir: string,
    limits: TreeLimits,
  ) {
    this.limits = limits;
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

  /**
   * Walk directory components from the root. Missing ones are created when
   * `create`; symlinks are followed inside the tree (absolute targets from the
   * tree's root); climbing above the root through one is refused.
   */
  protected resolveDir(
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

  protected removeNode(node: Node): void {
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

  protected attach(parent: Node, name: string, inode: Inode, layer: number, linked = false): Node {
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

  protected newInode(
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

  // ---------------------------------------------------------------- paths

  protected pathOf(node: Node): string {
    const names: string[] = [];
    for (let n: Node | null = node; n && n.parent; n = n.parent) names.push(n.name);
    return '/' + names.reverse().join('/');
  }

  protected hostPathOf(node: Node): string {
    return node === this.root ? this.dir : this.dir + this.pathOf(node);
  }

  protected hostPath(parent: Node, name: string): string {
    return `${this.hostPathOf(parent)}/${name}`;
  }

  /** Host path of an entry's staged copy (files, dirs, symlinks). Never follows symlinks. */
  stagingPath(p: string): string {
    return this.hostPathOf(this.lookup(p, false, 'path'));
  }

  protected lookup(p: string, follow: boolean, what: string): Node {
    const n = this.find(p, follow);
    if (!n) throw new BangerError('not_found', `${what} '${p}' is not in the image`);
    return n;
  }

  /** A node by path; symlinks in parents resolve inside the tree (clamped at /), the last one only with `follow`. */
  protected find(p: string, follow: boolean): Node | undefined {
    const check = entryPathParts(p.replace(/^\/+/, '') || '.', this.limits.maxPathBytes);
    if (!check.ok) throw new BangerError('usage', `path '${p}' ${check.reason}`);
    return this.findParts(p, check.parts, follow, 0);
  }

  protected findParts(p: string, parts: string[], follow: boolean, hops: number): Node | undefined {
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

  protected toEntry(n: Node, p: string): TreeEntry {
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

  protected assertUsable(): void {
    if (this.disposed) throw new BangerError('internal', `tree at ${this.dir} was disposed`);
    this.finalized = false;
  }
}

export function writeAll(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
}
