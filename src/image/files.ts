import fs from 'node:fs';
import path from 'node:path';
import { BangerError, isErrno } from '../errors.js';

/** Files of a managed image: `<state>/images/<id>/<name>`. One place for the names. */
export const IMAGE_FILES = {
  rootfs: 'rootfs.ext4',
  workSeed: 'work-seed.ext4',
  kernel: 'kernel',
  initrd: 'initrd',
  /** Installed packages (`name=version` lines) of images built from packages. */
  packages: 'packages.txt',
} as const;

/** ext4/ext2/ext3 superblock: 1024 bytes in, magic 0xEF53 (LE) at offset 0x38. */
export const EXT_SUPERBLOCK_OFFSET = 1024;
export const EXT_MAGIC_OFFSET = EXT_SUPERBLOCK_OFFSET + 0x38;
export const EXT_MAGIC = 0xef53;

export function hasExtMagic(buf: Buffer): boolean {
  return buf.length >= EXT_MAGIC_OFFSET + 2 && buf.readUInt16LE(EXT_MAGIC_OFFSET) === EXT_MAGIC;
}

/** Superblock fields worth showing: label and the journal feature. */
export function superblockInfo(buf: Buffer): { label: string; journal: boolean } {
  const sb = buf.subarray(EXT_SUPERBLOCK_OFFSET, EXT_SUPERBLOCK_OFFSET + 1024);
  const compat = sb.readUInt32LE(0x5c);
  const label = sb
    .subarray(0x78, 0x78 + 16)
    .toString('utf8')
    .replace(/\0.*$/s, '');
  return { label, journal: (compat & 0x4) !== 0 };
}

/** An existing regular file, as an absolute path; otherwise a one-line usage error naming `what`. */
export function requireFile(p: string, what: string): string {
  const abs = path.resolve(p);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch (e) {
    if (isErrno(e, 'ENOENT', 'ENOTDIR')) {
      throw new BangerError('not_found', `${what} ${abs} does not exist`, {
        hint: 'check the path',
      });
    }
    if (isErrno(e, 'EACCES')) {
      throw new BangerError('permission', `${what} ${abs} is not readable by bangerd`, {
        hint: 'check its permissions (the daemon runs as your user)',
      });
    }
    throw e;
  }
  if (!st.isFile()) {
    throw new BangerError('image_invalid', `${what} ${abs} is not a regular file`, {
      hint: 'pass a file (an ext4 image for rootfs and work-seed)',
    });
  }
  return abs;
}

/** An existing ext4 image file (superblock magic checked). */
export function requireExt4(p: string, what: string): string {
  const abs = requireFile(p, what);
  const buf = Buffer.alloc(EXT_MAGIC_OFFSET + 2);
  let n = 0;
  const fd = fs.openSync(abs, 'r');
  try {
    n = fs.readSync(fd, buf, 0, buf.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (n < buf.length || !hasExtMagic(buf)) {
    throw new BangerError('image_invalid', `${what} ${abs} is not an ext4 file system`, {
      hint: 'banger boots raw ext4 images (no partition table); make one with mkfs.ext4 -d DIR FILE',
    });
  }
  return abs;
}

export interface FileSize {
  /** Apparent size. */
  sizeBytes: number;
  /** Bytes allocated on the host (sparse files). */
  allocatedBytes: number;
}

export function fileSize(p: string | null | undefined): FileSize | null {
  if (!p) return null;
  try {
    const st = fs.statSync(p);
    return { sizeBytes: st.size, allocatedBytes: st.blocks * 512 };
  } catch {
    return null;
  }
}
