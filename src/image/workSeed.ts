import { DISKS } from '../guest/bootContract.js';
import { WORK_SEED_DIR, WORK_SEED_MODE } from '../guest/contract.js';
import type { ProgressSink } from '../api/events.js';
import type { Ext4Built, Ext4Module, TreeEntryLike, TreeLike } from './ext4.js';

/**
 * The work-seed: the image's `/root` as its own small ext4 (label
 * banger-work, with a journal: it is mounted read-write). VM create clones it
 * (sparse) and grows it to the VM's disk size; the initramfs mounts it at
 * /root. The base rootfs keeps an empty /root (root:root 0700) as mount point.
 */

export interface WorkSeedEntry {
  /** Path inside the seed (`/` is the seed's root = the guest's /root). */
  path: string;
  entry: TreeEntryLike;
}

/** Entries below `dir` re-rooted at `/` (parents first, as the tree lists them). Pure. */
export function seedEntries(
  entries: Iterable<TreeEntryLike>,
  dir = WORK_SEED_DIR,
): WorkSeedEntry[] {
  const prefix = `${dir}/`;
  const out: WorkSeedEntry[] = [];
  for (const e of entries) {
    if (e.path.startsWith(prefix)) out.push({ path: e.path.slice(dir.length), entry: e });
  }
  return out;
}

export interface WorkSeedResult extends Ext4Built {
  /** Entries moved out of the base image. */
  moved: number;
  /** Special files (devices, fifos) left out. */
  skipped: string[];
}

/**
 * Move `/root`'s content from `tree` into a new ext4 at `out`, leaving an
 * empty root-owned 0700 `/root` in the tree.
 */
export async function splitWorkSeed(
  tree: TreeLike,
  out: string,
  mod: Ext4Module,
  o: { workDir: string; emit?: ProgressSink; signal?: AbortSignal },
): Promise<WorkSeedResult> {
  const moving = seedEntries([...tree.entries()]);
  const seed = await mod.createStagedTree(o.workDir);
  const skipped: string[] = [];
  try {
    seed.setMeta('/', { uid: 0, gid: 0, mode: WORK_SEED_MODE });
    for (const { path: p, entry: e } of moving) {
      const meta = { uid: e.uid, gid: e.gid, mode: e.mode, mtime: e.mtime };
      if (e.type === 'dir') seed.mkdir(p, meta);
      else if (e.type === 'file') seed.writeFile(p, tree.readFile(e.path), meta);
      else if (e.type === 'symlink') seed.symlink(p, e.linkTarget ?? '', meta);
      else skipped.push(e.path);
    }
    const built = await mod.treeToExt4(seed, out, {
      label: DISKS.work.label,
      journal: true,
      emit: o.emit,
      signal: o.signal,
    });
    // now the base: /root becomes an empty mount point
    if (tree.get(WORK_SEED_DIR)?.type !== 'dir') {
      tree.remove(WORK_SEED_DIR);
      tree.mkdir(WORK_SEED_DIR, { uid: 0, gid: 0, mode: WORK_SEED_MODE });
    }
    for (const name of tree.list(WORK_SEED_DIR)) tree.remove(`${WORK_SEED_DIR}/${name}`);
    tree.setMeta(WORK_SEED_DIR, { uid: 0, gid: 0, mode: WORK_SEED_MODE });
    return { ...built, moved: moving.length, skipped };
  } finally {
    await seed.dispose();
  }
}
