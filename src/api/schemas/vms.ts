import { z } from 'zod';
import { ErrorShapeSchema } from '../events.js';
import {
  DISK_MIN_BYTES,
  DISK_RULE,
  MEMORY_MIN_MIB,
  MEMORY_RULE,
  VCPU_MAX,
  VCPU_MIN,
  VCPU_RULE,
  VM_NAME_RE,
  VM_NAME_RULE,
} from '../limits.js';
import { VM_STATES } from '../vmStates.js';
import { VmSizingSchema } from './daemon.js';

export { VM_STATES };

/** Wire shapes of VMs. */

/** What the daemon's sampler last saw of a running VM (src/vm/sampler.ts). */
export const VmActivitySchema = z.object({
  /** When the last sample was taken. */
  sampledAt: z.string(),
  /** The guest agent has not answered any sample since then; null while it answers. */
  agentSilentSince: z.string().nullable(),
  /** The last time the VM was active (ssh session, CPU, an operation), or its start. */
  lastActiveAt: z.string(),
  /** Why the last sample counted as active; null when it was idle. */
  activeReason: z.string().nullable(),
});
export type VmActivity = z.infer<typeof VmActivitySchema>;

/** Idle auto-stop as it applies to one VM. */
export const VmAutoStopSchema = z.object({
  /** 0 = never. */
  afterMs: z.number().int().nonnegative(),
  /** `vm` when set with `vm set --auto-stop`, else `config` (auto_stop_stale_after). */
  source: z.enum(['config', 'vm']),
});

/** The last stop was the idle auto-stop. */
export const VmIdleStopSchema = z.object({ idleMs: z.number(), at: z.string() });

export const VmViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  state: z.enum(VM_STATES),
  image: z.string(),
  imageId: z.string(),
  kernel: z.string().nullable(),
  vmm: z.string(),
  accel: z.string().nullable(),
  vcpu: z.number(),
  memoryMib: z.number(),
  diskSize: z.number(),
  nat: z.boolean(),
  ip: z.string().nullable(),
  mac: z.string().nullable(),
  tap: z.string().nullable(),
  pid: z.number().nullable(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  stoppedAt: z.string().nullable(),
  lastError: z.string().nullable(),
  /** Host name for ssh (`<name>.vm`). */
  sshHost: z.string(),
  /**
   * The daemon's network namespace (its /proc/self/ns/net link): a client in
   * the same one reaches `ip` itself, without the daemon's ssh tunnel.
   */
  netns: z.string().nullable().optional(),
  dir: z.string(),
  /** Restored from a snapshot or forked: from what (null for a booted VM). */
  origin: z.string().nullable().optional(),
  /** How its first start went: `warm (boot snapshot NAME)` or `cold` (null: not started by create, or restored). */
  start: z.string().nullable().optional(),
  /** Time from VMM start to guest readiness on the last boot. */
  bootMs: z.number().nullable(),
  /** How the running VMM is confined, read from /proc (null when not running). */
  confinement: z.string().nullable(),
  autoStop: VmAutoStopSchema.optional(),
  /** Set while the VM stays stopped after an idle auto-stop. */
  idleStop: VmIdleStopSchema.nullable().optional(),
  /** The sampler's last view of a running VM (null when none yet). */
  activity: VmActivitySchema.nullable().optional(),
  /** The last stats sample of a running VM (null when none yet). */
  sample: z
    .lazy(() => VmStatsSchema)
    .nullable()
    .optional(),
});
export type VmView = z.infer<typeof VmViewSchema>;

const Sourced = <T extends z.ZodType>(t: T) => z.object({ value: t, source: z.string() });

/** What `vm run` / `vm create` print first: the effective spec and where each value came from. */
export const VmSpecSchema = z.object({
  name: Sourced(z.string()),
  sizing: VmSizingSchema,
  image: Sourced(z.string()),
  kernel: Sourced(z.string()),
  vmm: Sourced(z.string()),
  accel: Sourced(z.string()),
  nat: z.boolean(),
  /** Set when the VM was restored from a snapshot or forked, e.g. `fork of dev` or `snapshot s1 of dev`. */
  origin: z.string().optional(),
  /** `vm create`/`vm run` that start the VM: `warm` (restored from a boot snapshot) or `cold` (booted). */
  start: z.enum(['warm', 'cold']).optional(),
});
export type VmSpec = z.infer<typeof VmSpecSchema>;

export const VmName = z.string().regex(VM_NAME_RE, VM_NAME_RULE);
const Vcpu = z.number().int(VCPU_RULE).min(VCPU_MIN, VCPU_RULE).max(VCPU_MAX, VCPU_RULE);
const MemoryMib = z.number().int(MEMORY_RULE).min(MEMORY_MIN_MIB, MEMORY_RULE);
const DiskSize = z.number().int(DISK_RULE).min(DISK_MIN_BYTES, DISK_RULE);

export const VmCreateRequestSchema = z
  .object({
    name: VmName.optional(),
    image: z.string().min(1).optional(),
    kernel: z.string().min(1).optional(),
    vcpu: Vcpu.optional(),
    memoryMib: MemoryMib.optional(),
    diskSize: DiskSize.optional(),
    nat: z.boolean().default(false),
    start: z.boolean().default(true),
    /** Boot even when a boot snapshot of the VM's shape could be restored (warm start). */
    cold: z.boolean().default(false),
  })
  .strict();

export const VmCreateResultSchema = z.object({ vm: VmViewSchema, spec: VmSpecSchema });

export const VM_ACTIONS = [
  'start',
  'stop',
  'restart',
  'kill',
  'delete',
  'suspend',
  'resume',
] as const;
export type VmAction = (typeof VM_ACTIONS)[number];

export const VmActionRequestSchema = z
  .object({
    refs: z.array(z.string().min(1)).min(1).max(256),
    /** stop/restart: how long the guest gets to power off before the VMM is killed. */
    timeoutMs: z.number().int().min(0).max(3_600_000).optional(),
    /** kill: the signal. */
    signal: z
      .string()
      .regex(/^(SIG)?[A-Z0-9]+$/)
      .optional(),
    /** delete: stop running VMs first. */
    force: z.boolean().optional(),
  })
  .strict();

export const VmSetRequestSchema = z
  .object({
    refs: z.array(z.string().min(1)).min(1).max(256),
    vcpu: Vcpu.optional(),
    memoryMib: MemoryMib.optional(),
    diskSize: DiskSize.optional(),
    nat: z.boolean().optional(),
    /** Idle auto-stop for these VMs: ms (0 = never), or null to follow auto_stop_stale_after. */
    autoStopMs: z
      .number()
      .int()
      .min(0)
      .max(366 * 86_400_000)
      .nullable()
      .optional(),
  })
  .strict();

export const VmResultSchema = z.object({
  ref: z.string(),
  ok: z.boolean(),
  vm: VmViewSchema.optional(),
  error: ErrorShapeSchema.optional(),
});
export type VmResult = z.infer<typeof VmResultSchema>;
export const VmResultsSchema = z.object({ results: z.array(VmResultSchema) });

export const VmStatsSchema = z.object({
  id: z.string(),
  name: z.string(),
  state: z.string(),
  /** Host CPU used by the VMM process, in percent of one core. */
  cpuPercent: z.number().nullable(),
  /** Resident memory of the VMM process. */
  rssBytes: z.number().nullable(),
  memoryMib: z.number(),
  /** From the guest agent. */
  guest: z
    .object({
      memTotalBytes: z.number(),
      memAvailableBytes: z.number(),
      load1: z.number(),
      uptimeMs: z.number(),
      /** Guest CPU since the previous reading, percent of one CPU; null on the first. */
      cpuPercent: z.number().nullable().optional(),
      /** Established connections to the guest's port 22; null from older agents. */
      sshSessions: z.number().nullable().optional(),
      disks: z.array(
        z.object({ mount: z.string(), totalBytes: z.number(), freeBytes: z.number() }),
      ),
    })
    .nullable(),
  /** Host blocks allocated by the VM's disks (sparse files). */
  disk: z.object({
    overlayBytes: z.number(),
    workBytes: z.number(),
    workSizeBytes: z.number(),
    /** Apparent size of the overlay disk (overlayBytes is what it really takes). */
    overlaySizeBytes: z.number().optional(),
  }),
  /** When these figures were read (the sampler's last sample, or now). */
  sampledAt: z.string().optional(),
  /** The sampler's view: agent silence, last activity (running VMs). */
  activity: VmActivitySchema.nullable().optional(),
});
export type VmStats = z.infer<typeof VmStatsSchema>;

/**
 * `GET /v1/events/vms` (a watch route): first `snapshot` with every VM, then
 * one event per change of the vms table — `vm` with the VM as it is now, or
 * `gone` when it was deleted — until the client leaves.
 */
export const VmEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('snapshot'), vms: z.array(VmViewSchema) }),
  z.object({ type: z.literal('vm'), vm: VmViewSchema }),
  z.object({ type: z.literal('gone'), id: z.string() }),
]);
export type VmEvent = z.infer<typeof VmEventSchema>;
