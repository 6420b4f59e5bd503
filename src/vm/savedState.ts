import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { BangerError } from '../errors.js';
import type { ImageRecord } from '../store/images.js';
import { formatSize } from '../util/units.js';
import type { SnapshotFiles } from '../vmm/driver.js';

/**
 * What a save (a snapshot's or a suspend's) records about its files and the
 * image under them, and the check of it before a restore or resume: a memory
 * or device-state file that is shorter than when it was written (a copy cut
 * short, a full disk) or an image whose root filesystem was replaced since
 * (`image register` over the same name keeps the row's id) is refused with
 * one line before anything is made. Saves from before this was recorded are
 * not checked.
 */
export interface SavedFacts {
  stateBytes: number;
  memBytes: number;
  /** imageFingerprint() of the VM's image at save time. */
  image: string;
}

/** The head of the root filesystem (its superblock: UUID, creation time) and its size. */
const HEAD_BYTES = 64 * 1024;

/**
 * The identity of an image's root filesystem: a hash of its size and first
 * 64 KiB (ext4's superblock and its UUID are there). A promoted copy has the
 * same; a filesystem made anew does not. A missing file hashes as 'missing'.
 */
export function imageFingerprint(image: Pick<ImageRecord, 'rootfsPath'>): string {
  const h = createHash('sha256');
  let fd: number | undefined;
  try {
    fd = fs.openSync(image.rootfsPath, 'r');
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(HEAD_BYTES, size));
    fs.readSync(fd, buf, 0, buf.length, 0);
    h.update(`${size}:`).update(buf);
  } catch {
    h.update('missing');
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  return h.digest('hex').slice(0, 32);
}

const sizeOf = (p: string): number | undefined => {
  try {
    return fs.statSync(p).size;
  } catch {
    return undefined;
  }
};

/** What to record once a save is complete. */
export function savedFacts(
  files: SnapshotFiles,
  image: Pick<ImageRecord, 'rootfsPath'>,
): SavedFacts {
  return {
    stateBytes: sizeOf(files.statePath) ?? 0,
    memBytes: sizeOf(files.memPath) ?? 0,
    image: imageFingerprint(image),
  };
}

/** Read back what savedFacts recorded (undefined for an older save). Pure. */
export function factsOf(meta: Record<string, unknown> | undefined): SavedFacts | undefined {
  const f = meta?.saved as Partial<SavedFacts> | undefined;
  if (!f || typeof f.stateBytes !== 'number' || typeof f.memBytes !== 'number') return undefined;
  return { stateBytes: f.stateBytes, memBytes: f.memBytes, image: String(f.image ?? '') };
}

/**
 * The check before a restore or resume: throws one line naming `what` (e.g.
 * `snapshot 's1'`, `vm 'dev'`) and the file, with `hint` (how to get rid of
 * the unusable state). Nothing is read beyond sizes and the image's head.
 */
export function checkSaved(
  what: string,
  files: SnapshotFiles,
  facts: SavedFacts | undefined,
  image: Pick<ImageRecord, 'name' | 'rootfsPath'>,
  hint: string,
): void {
  const labels: [string, string, number | undefined][] = [
    ['memory', files.memPath, facts?.memBytes],
    ['device state', files.statePath, facts?.stateBytes],
  ];
  for (const [label, p, want] of labels) {
    const have = sizeOf(p);
    if (have === undefined)
      throw new BangerError('precondition', `${what}: its saved ${label} (${p}) is missing`, {
        hint,
      });
    if (want !== undefined && have !== want)
      throw new BangerError(
        'precondition',
        `${what}: its saved ${label} (${p}) is ${have < want ? 'truncated' : 'not the size it was saved with'}: ${formatSize(have)} of ${formatSize(want)}`,
        { hint },
      );
  }
  if (facts?.image && facts.image !== imageFingerprint(image))
    throw new BangerError(
      'precondition',
      `${what}: image '${image.name}' was replaced after the save; its saved memory does not match the new root filesystem`,
      { hint },
    );
}
