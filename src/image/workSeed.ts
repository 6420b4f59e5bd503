import { DISKS } from '../guest/bootContract.js';
import { WORK_SEED_DIR, WORK_SEED_MODE } from '../guest/contract.js';
import type { ProgressSink } from '../api/events.js';
import { treeToExt4, type Ext4Result } from './tree/toExt4.js';
import { createStagedTree, type RootfsTree, type TreeEntry } from './tree/index.js';

/**
 * The work-seed: the image's `/root` as its own small ext4 (label
 * banger-work, with a journal: it is mounted read-write). VM create clones it
 * (sparse) and grows it to the VM's disk size; the initramfs mounts it at
 * /root. The base rootfs keeps an empty /root (root:root 0700) as mount point.
 */

export interface WorkSeedEntry<E extends { path: string } = TreeEntry> {
  /** Path inside the seed (`/` is the seed's root = the guest's /root). */
  path: string;
  entry: E;
}

/** Entries below `dir` re-rooted at `/` (parents first, as the tree lists them). Pure. */
export function seedEntries<E extends { path: string }>(
  entries: Iterable<E>,
  dir = WORK_SEED_DIR,
): WorkSeedEntry<E>[] {
  const prefix = `${dir}/`;
  const out: WorkSeedEntry<E>[] = [];
  for (const e of entries) {
    if (e.path.startsWith(prefix)) out.push({ path: e.path.slice(dir.length), entry: e });
  }
  return out;
}

export interface WorkSeedResult extends Ext4Result {
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
  tree: RootfsTree,
  out: string,
  o: { workDir: string; emit?: ProgressSink; signal?: AbortSignal },
): Promise<WorkSeedResult> {
  const moving = seedEntries([...tree.entries()]);
  const seed = await createStagedTree(o.workDir);
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
    const built = await treeToExt4(seed, out, {
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
