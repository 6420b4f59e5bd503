import fs from 'node:fs';
import { BangerError } from '../errors.js';

/** Disk files grow in whole 4 KiB blocks (the ext4 block size banger uses). */
export const DISK_BLOCK = 4096;

/** The size a disk file gets for `sizeBytes`: rounded up to a whole block. Pure. */
export const diskFileSize = (sizeBytes: number): number =>
  Math.ceil(sizeBytes / DISK_BLOCK) * DISK_BLOCK;

/**
 * Make a disk file `sizeBytes` long (rounded up to a block) by extending it
 * sparsely; the filesystem inside is not touched (the guest grows it, online
 * through its agent or at its next boot). Never shrinks. Returns the size the
 * file had, so a caller can put it back if what follows fails.
 */
export async function growDiskFile(file: string, sizeBytes: number): Promise<number> {
  const st = await fs.promises.stat(file);
  const target = diskFileSize(sizeBytes);
  if (target < st.size) {
    throw new BangerError(
      'usage',
      `disk ${file} is ${st.size} bytes; it cannot shrink to ${sizeBytes}`,
      {
        hint: 'disks only grow',
      },
    );
  }
  if (target > st.size) await fs.promises.truncate(file, target);
  return st.size;
}
