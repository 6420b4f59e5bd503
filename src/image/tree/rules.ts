/**
 * Pure rules for tar entries in image layers: which names are acceptable, what
 * OCI whiteouts mean, which xattrs survive, and the limits that stop hostile or
 * absurd input (decompression bombs, millions of entries, giant files).
 */

export interface TreeLimits {
  /** Uncompressed tar bytes across all layers of one tree. */
  maxTotalBytes: number;
  /** Tar entries across all layers. */
  maxEntries: number;
  /** One file's size. */
  maxFileBytes: number;
  /** Bytes in an entry's path (ext4 allows 255 per component regardless). */
  maxPathBytes: number;
  /** Uncompressed / compressed bytes of a layer, checked once past `ratioGraceBytes`. */
  maxRatio: number;
  ratioGraceBytes: number;
  /** Largest xattr value kept (ext4 without ea_inode holds values up to a block). */
  maxXattrBytes: number;
}

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

export const DEFAULT_LIMITS: TreeLimits = {
  maxTotalBytes: 32 * GiB,
  maxEntries: 2_000_000,
  maxFileBytes: 16 * GiB,
  maxPathBytes: 3072,
  maxRatio: 200,
  ratioGraceBytes: 64 * MiB,
  maxXattrBytes: 3800,
};

export const resolveLimits = (l: Partial<TreeLimits> = {}): TreeLimits => ({
  ...DEFAULT_LIMITS,
  ...Object.fromEntries(Object.entries(l).filter(([, v]) => v !== undefined)),
});

export type PathCheck = { ok: true; parts: string[] } | { ok: false; reason: string };

/**
 * A tar member name → path components inside the tree. `./a//b/` → [a, b];
 * `./` → [] (the root itself). Absolute names and any `..` component are refused:
 * container layers never need them and they are how archives escape.
 */
export function entryPathParts(name: string, maxPathBytes: number): PathCheck {
  if (name.length === 0) return { ok: false, reason: 'has an empty name' };
  if (name.startsWith('/')) return { ok: false, reason: 'is an absolute path' };
  if (Buffer.byteLength(name) > maxPathBytes) {
    return { ok: false, reason: `has a path longer than ${maxPathBytes} bytes` };
  }
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') return { ok: false, reason: "contains '..'" };
    if (Buffer.byteLength(p) > 255)
      return { ok: false, reason: 'has a name longer than 255 bytes' };
    parts.push(p);
  }
  return { ok: true, parts };
}

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';

export type Whiteout =
  | { kind: 'none' }
  | { kind: 'opaque' }
  | { kind: 'delete'; name: string }
  /** aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): ignored. */
  | { kind: 'meta' };

/** What a path's last component means under the OCI layer whiteout rules. */
export function classifyWhiteout(base: string): Whiteout {
  if (!base.startsWith(WHITEOUT_PREFIX)) return { kind: 'none' };
  if (base === OPAQUE_MARKER) return { kind: 'opaque' };
  if (base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return { kind: 'meta' };
  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..') return { kind: 'meta' };
  return { kind: 'delete', name };
}

const XATTR_NAME = /^(user|trusted|security)\.[\x21-\x7e]{1,250}$/;

/** Whether an xattr can be carried into the ext4 image (and safely scripted for debugfs). */
export function xattrProblem(name: string, value: Buffer, maxBytes: number): string | undefined {
  const ok =
    name === 'system.posix_acl_access' ||
    name === 'system.posix_acl_default' ||
    (XATTR_NAME.test(name) && !name.includes('"'));
  if (!ok) return `unsupported xattr name ${JSON.stringify(name)}`;
  if (value.length > maxBytes) return `xattr ${name} is larger than ${maxBytes} bytes`;
  return undefined;
}

/** Permission bits of the host copy: always owner-readable (and dirs owner-writable) for mkfs -d. */
export const stagingMode = (type: 'file' | 'dir', mode: number): number =>
  type === 'dir' ? (mode & 0o777) | 0o700 : (mode & 0o777) | 0o600;
