import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RootfsTree } from './rootfsTree.js';
import type { TreeLimits } from './rules.js';
import { sweepDeadScratch } from '../../util/scratch.js';

/**
 * Where a tree is staged. Creating inodes is the slow part of unpacking (on the
 * project machines ~0.5 ms per file on ext4, ~10 µs on tmpfs), and the staged
 * copy only lives until mkfs has read it, so a tree that comfortably fits in
 * memory is staged on tmpfs (/dev/shm) and otherwise in the caller's work dir.
 *
 * tmpfs staging lives in a private per-user dir (`/dev/shm/banger-<uid>`, 0700,
 * refused if someone else made it); dirs of dead processes are swept on use.
 */
export interface StagingOptions {
  /** Expected uncompressed size; without it the work dir is used. */
  expectedBytes?: number;
  /** `auto` (default), `disk` (always the work dir) or an explicit parent dir. */
  staging?: 'auto' | 'disk' | string;
  /** The tmpfs to consider (tests). */
  tmpfs?: string;
  /** Cap on the tmpfs budget (tests). */
  maxBudgetBytes?: number;
  limits?: Partial<TreeLimits>;
}

const DEFAULT_TMPFS = '/dev/shm';
const TMPFS_MAGIC = 0x01021994;

export interface StagingChoice {
  parent: string;
  /** On tmpfs: the most the tree may hold before it must move to disk. */
  budgetBytes?: number;
}

/** The parent dir for a new staging tree. Pure apart from statfs/lstat/meminfo. */
export function chooseStaging(workDir: string, o: StagingOptions = {}): StagingChoice {
  const mode = o.staging ?? 'auto';
  const disk = { parent: workDir };
  if (mode === 'disk') return disk;
  if (mode !== 'auto') return { parent: mode };
  if (!o.expectedBytes) return disk;
  const tmpfs = o.tmpfs ?? DEFAULT_TMPFS;
  try {
    const st = fs.statfsSync(tmpfs);
    if (st.type !== TMPFS_MAGIC) return disk;
    const budget = Math.min(
      (st.bavail * st.bsize) / 2,
      os.freemem() / 4,
      o.maxBudgetBytes ?? Infinity,
    );
    if (o.expectedBytes * 1.2 > budget && !o.maxBudgetBytes) return disk;
    const uid = process.getuid?.() ?? 0;
    const mine = path.join(tmpfs, `banger-${uid}`);
    try {
      fs.mkdirSync(mine, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return disk;
    }
    const l = fs.lstatSync(mine);
    if (!l.isDirectory() || l.uid !== uid || (l.mode & 0o077) !== 0) return disk;
    sweepDeadScratch(mine, ['tree']);
    return { parent: mine, budgetBytes: Math.floor(budget) };
  } catch {
    return disk;
  }
}

/** A new RootfsTree staged where `chooseStaging` says (with its tmpfs budget). */
export function createStagedTree(workDir: string, o: StagingOptions = {}): Promise<RootfsTree> {
  const { parent, budgetBytes } = chooseStaging(workDir, o);
  const name = `tree-${process.pid}-${randomBytes(4).toString('hex')}`;
  return RootfsTree.create(path.join(parent, name), { limits: o.limits, budgetBytes });
}
