import fs from 'node:fs';
import { DISKS } from '../guest/bootContract.js';
import {
  cloneSparse,
  createSparseExt4,
  growExt4,
  writeFilesExt4,
  type Ext4Dir,
  type Ext4File,
} from '../storage/ext4.js';
import type { ImageRecord } from '../store/images.js';
import { growDiskFiles } from './diskGrowth.js';
import type { VmLayout } from './layout.js';

/**
 * A VM's own disks: the copy-on-write overlay for `/` and the work disk
 * mounted at `/root`. Made at create, grown by `vm set --disk-size`, removed
 * with the VM's directory.
 */
export interface VmDisks {
  /**
   * Make both disks in `layout.dir` (created here), with the SSH key and the
   * [[file_sync]] files and directories (fileSync.ts) in /root.
   */
  make(
    layout: VmLayout,
    o: {
      image: ImageRecord;
      sizeBytes: number;
      pubKey: string;
      files: Ext4File[];
      dirs: Ext4Dir[];
    },
    signal?: AbortSignal,
  ): Promise<void>;
  /**
   * Grow both disk files to sizeBytes; the filesystems are the guest's to grow
   * (its agent does at the next boot), never e2fsprogs on the host. `grown` is
   * told after each disk (the journal's step boundaries).
   */
  grow(
    layout: VmLayout,
    sizeBytes: number,
    grown?: (disk: 'work-disk' | 'overlay-disk') => void,
  ): Promise<void>;
}

/** The real disks: sparse ext4 files made with e2fsprogs (src/storage). */
export const ext4Disks: VmDisks = {
  async make(l, { image, sizeBytes, pubKey, files, dirs }, signal) {
    fs.mkdirSync(l.dir, { recursive: true, mode: 0o700 });
    // Copy-on-write for /: an empty sparse ext4; the guest's /init stacks it over the read-only base.
    await createSparseExt4(l.overlayDisk, sizeBytes, { label: DISKS.overlay.label, signal });
    // /root: the image's seed, cloned sparsely and grown; else a fresh filesystem.
    if (image.workSeedPath) {
      await cloneSparse(image.workSeedPath, l.workDisk, signal);
      await growExt4(l.workDisk, sizeBytes, signal);
    } else {
      await createSparseExt4(l.workDisk, sizeBytes, { label: DISKS.work.label, signal });
    }
    await writeFilesExt4(
      l.workDisk,
      [
        { path: '/.ssh/authorized_keys', content: `${pubKey}\n`, mode: 0o600, uid: 0, gid: 0 },
        ...files,
      ],
      [
        { path: '/', mode: 0o700, uid: 0, gid: 0 },
        { path: '/.ssh', mode: 0o700, uid: 0, gid: 0 },
        ...dirs,
      ],
      signal,
    );
  },
  grow: growDiskFiles,
};
