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

import { EditableTree } from './edits.js';
import { writeAll } from './nodes.js';
import { HINT_HOSTILE, HOST_PATH_MAX, O_CREATE_NEW, type Inode, type Node } from './treeTypes.js';

export type { EntryMeta, EntryType, TreeEntry, TreeStats } from './treeTypes.js';

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

export class RootfsTree extends EditableTree {
  private totalEntries = 0;
  private totalBytes = 0;
  /** Device nodes left out, by path: hard links to them are left out too. */
  private readonly skippedDevices = new Set<string>();

  private constructor(
    dir: string,
    limits: Partial<TreeLimits>,
    /** Bytes the staging dir may take (tmpfs); past it, applying fails with `stagingFull`. */
    readonly budgetBytes?: number,
  ) {
    super(dir, resolveLimits(limits));
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

  /** Opaque directory: drop everything lower layers put below `dir`. */
  private clearLower(dir: Node, layer: number): void {
    for (const child of [...dir.children!.values()]) {
      if (child.layer !== layer) this.removeNode(child);
      else if (child.children) this.clearLower(child, layer);
    }
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
}
