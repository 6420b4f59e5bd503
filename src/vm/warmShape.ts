import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { ImageRecord } from '../store/images.js';
import type { KernelRecord } from '../store/kernels.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import type { WorkspaceEntry } from '../workspace/plan.js';
import type { FileSyncPlan } from './fileSync.js';

/**
 * Warm start, the pure part (docs/snapshots.md, "Warm start"): what makes two
 * VMs the same shape, the name of a shape's boot snapshot, whether a new VM
 * is restored or booted, which boot snapshots went stale, and [[file_sync]]
 * as entries of the tar written into a running guest.
 */

/** size:mtime of a file, `-` when it is missing (a changed or replaced file gives a new identity). */
export type FileStamp = (file: string) => string;

export const fileStamp: FileStamp = (file) => {
  try {
    const st = fs.statSync(file);
    return `${st.size}:${Math.floor(st.mtimeMs)}`;
  } catch {
    return '-';
  }
};

/** An image's content identity: its row (id, last update, digest) and its files as they are now. */
export function imageIdentity(img: ImageRecord, stamp: FileStamp = fileStamp): string {
  const f = (p: string | null): string => (p ? `${p}@${stamp(p)}` : '-');
  return [
    img.id,
    img.updatedAt,
    img.digest ?? '-',
    f(img.rootfsPath),
    f(img.workSeedPath),
    f(img.kernelPath),
    f(img.initrdPath),
  ].join('|');
}

/** A kernel's identity: name, version, when it was installed, its files as they are now. */
export function kernelIdentity(k: KernelRecord | undefined, stamp: FileStamp = fileStamp): string {
  if (!k) return '-';
  const f = (p: string | null): string => (p ? `${p}@${stamp(p)}` : '-');
  return [k.name, k.version, k.createdAt, f(k.kernelPath), f(k.vmlinuxPath), f(k.initrdPath)].join(
    '|',
  );
}

/** Everything a boot snapshot depends on: a restored guest is this, byte for byte. */
export interface Shape {
  imageId: string;
  image: string;
  kernelName: string | null;
  kernel: string;
  vmm: string;
  accel: string;
  vcpu: number;
  memoryMib: number;
  /** NAT is on the kernel command line the snapshot was booted with. */
  nat: boolean;
  /** So is `norandmaps` (a TCG guest without config tcg_aslr, kernelArgs.ts). */
  fixedAddresses: boolean;
  /** The managed SSH public key on the work disk. */
  pubKey: string;
}

/** The shape's key: sha256 of its fields in a fixed order. */
export function shapeKey(s: Shape): string {
  const fields = [
    s.imageId,
    s.image,
    s.kernelName ?? '-',
    s.kernel,
    s.vmm,
    s.accel,
    String(s.vcpu),
    String(s.memoryMib),
    s.nat ? 'nat' : 'no-nat',
    s.fixedAddresses ? 'norandmaps' : 'aslr',
    s.pubKey.trim(),
  ];
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex');
}

/** The boot snapshot's name: one per shape (a unique name, so two first boots cannot both keep one). */
export const bootSnapshotName = (key: string): string => `boot-${key.slice(0, 16)}`;

/** What a boot snapshot's row keeps in `meta`. */
export interface BootMeta {
  shape: string;
  image: string;
  kernel: string;
}

export type StartChoice =
  | { start: 'warm'; snapshot: SnapshotRecord }
  | {
      start: 'cold';
      /** Keep a boot snapshot of this VM once it is ready (its content written after it). */
      keep: boolean;
      why: string;
    };

/**
 * Restore or boot (pure). A boot snapshot is restored when warm start is on,
 * the VM is started, `--cold` was not given, the VMM can restore and the
 * snapshot's disks are not larger than asked (larger asked: grown online after
 * the restore). A VM booted because its shape has no boot snapshot yet keeps
 * one — unless its content cannot be written after the boot (a create hook
 * that only fills the disk before it).
 */
export function chooseStart(o: {
  warmStart: boolean;
  start: boolean;
  cold: boolean;
  canSnapshot: boolean;
  /** Content can be written into the running guest (else only onto its disk before boot). */
  canDefer: boolean;
  diskSize: number;
  snapshot: SnapshotRecord | undefined;
}): StartChoice {
  if (!o.start) return { start: 'cold', keep: false, why: 'not started' };
  if (!o.warmStart) return { start: 'cold', keep: false, why: 'warm_start = false' };
  if (o.cold) return { start: 'cold', keep: false, why: '--cold' };
  if (!o.canSnapshot)
    return { start: 'cold', keep: false, why: 'the VMM cannot restore snapshots' };
  if (!o.snapshot)
    return { start: 'cold', keep: o.canDefer, why: 'no boot snapshot of this shape yet' };
  if (o.snapshot.diskSize > o.diskSize)
    return { start: 'cold', keep: false, why: "the disk is smaller than the boot snapshot's" };
  return { start: 'warm', snapshot: o.snapshot };
}

/** The usable boot snapshot of a shape: the one named for it whose recorded key matches. */
export function bootSnapshotFor(
  key: string,
  byName: (name: string) => SnapshotRecord | undefined,
): SnapshotRecord | undefined {
  const s = byName(bootSnapshotName(key));
  return s && s.kind === 'boot' && (s.meta as Partial<BootMeta>).shape === key ? s : undefined;
}

/**
 * Boot snapshots made from an earlier state of this image or kernel (the
 * image was rebuilt or re-registered, the kernel pulled again): never
 * restored again, so removed.
 */
export function staleBootSnapshots(
  boot: SnapshotRecord[],
  now: { imageId: string; image: string; kernelName: string | null; kernel: string },
): SnapshotRecord[] {
  return boot.filter((s) => {
    if (s.kind !== 'boot') return false;
    const m = s.meta as Partial<BootMeta>;
    if (s.imageId === now.imageId && m.image !== now.image) return true;
    return (
      now.kernelName !== null &&
      s.kernelName === now.kernelName &&
      s.imageId === now.imageId &&
      m.kernel !== now.kernel
    );
  });
}

/**
 * [[file_sync]] (onto /root) as tar entries relative to /root: directories
 * first (parents before children), then files, as resolveFileSync planned
 * them for the work disk.
 */
export function fileSyncEntries(
  plan: Pick<FileSyncPlan, 'files' | 'dirs'>,
  now = Date.now(),
): WorkspaceEntry[] {
  const rel = (p: string): string => p.replace(/^\/+/, '');
  const dirs = plan.dirs
    .filter((d) => rel(d.path) !== '')
    .map((d): WorkspaceEntry => ({
      path: rel(d.path),
      kind: 'dir',
      mode: (d.mode ?? 0o755) & 0o7777,
      size: 0,
      mtimeMs: now,
      sig: '',
    }))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const files = plan.files.map((f): WorkspaceEntry => ({
    path: rel(f.path),
    kind: 'file',
    mode: (f.mode ?? 0o600) & 0o7777,
    size: 0,
    mtimeMs: now,
    source: f.hostPath,
    sig: '',
  }));
  return [...dirs, ...files];
}
