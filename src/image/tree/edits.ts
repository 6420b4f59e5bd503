import fs from 'node:fs';
import { BangerError } from '../../errors.js';
import { TreeNodes, writeAll } from './nodes.js';
import { entryPathParts, stagingMode } from './rules.js';
import { O_CREATE_NEW, type EntryMeta, type Inode, type Node } from './treeTypes.js';

/** The edits a prepare hook makes to a tree (the guest contract, first-boot files), on top of TreeNodes. */
export class EditableTree extends TreeNodes {
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

  protected applyMeta(inode: Inode, meta: EntryMeta): void {
    if (meta.uid !== undefined) inode.uid = meta.uid;
    if (meta.gid !== undefined) inode.gid = meta.gid;
    if (meta.mtime !== undefined) inode.mtime = Math.floor(meta.mtime);
    if (meta.mode !== undefined) inode.mode = meta.mode & 0o7777;
  }

  protected editTarget(p: string): { parent: Node; name: string } {
    const check = entryPathParts(p.replace(/^\/+/, ''), this.limits.maxPathBytes);
    if (!check.ok || check.parts.length === 0) {
      throw new BangerError('usage', `path '${p}' ${check.ok ? 'is the root' : check.reason}`);
    }
    const bad = (reason: string) => new BangerError('usage', `path '${p}' ${reason}`);
    const parent = this.resolveDir(check.parts.slice(0, -1), { create: true, what: p, bad })!;
    return { parent, name: check.parts[check.parts.length - 1]! };
  }
}
