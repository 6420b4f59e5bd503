import { z } from 'zod';
import { VM_NAME_RE, VM_NAME_RULE } from '../limits.js';
import { VmSpecSchema, VmViewSchema } from './vms.js';

/** Wire shapes of VM snapshots (`vm snapshot`, `vm restore`, `vm fork`, `snapshot list|show|delete`). */

/** Snapshot names follow the VM name rule. */
export const SnapshotName = z.string().regex(VM_NAME_RE, VM_NAME_RULE);

export const SnapshotViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  kind: z.enum(['user', 'boot']),
  sourceVm: z.string(),
  sourceVmId: z.string().nullable(),
  image: z.string(),
  imageId: z.string(),
  kernel: z.string().nullable(),
  vmm: z.string(),
  accel: z.string(),
  vcpu: z.number(),
  memoryMib: z.number(),
  diskSize: z.number(),
  nat: z.boolean(),
  dir: z.string(),
  files: z.object({
    state: z.string(),
    mem: z.string(),
    overlay: z.string(),
    work: z.string(),
  }),
  /** Allocated bytes of the files. */
  sizeBytes: z.number(),
  createdAt: z.string(),
  /** VMs being restored from it right now (delete waits for none). */
  restoring: z.array(z.string()),
});
export type SnapshotView = z.infer<typeof SnapshotViewSchema>;

export const VmSnapshotRequestSchema = z.object({ name: SnapshotName.optional() }).strict();

export const VmRestoreRequestSchema = z.object({ name: z.string().min(1).optional() }).strict();

export const FORK_MAX = 16;
export const VmForkRequestSchema = z
  .object({
    name: z.string().min(1).optional(),
    count: z.number().int().min(1).max(FORK_MAX).default(1),
  })
  .strict();

/** One VM made from a snapshot: its view and spec (the spec's `origin` says from what). */
export const VmRestoreResultSchema = z.object({ vm: VmViewSchema, spec: VmSpecSchema });

export const VmForkResultSchema = z.object({
  parent: z.string(),
  children: z.array(VmRestoreResultSchema),
});

/** `snapshot prune`: boot snapshots removed, the bytes their files took, those kept (being restored from). */
export const SnapshotPruneResultSchema = z.object({
  pruned: z.array(z.string()),
  freedBytes: z.number(),
  kept: z.array(z.string()),
});
