import { z } from 'zod';

export const SourcedNumber = z.object({
  value: z.number(),
  source: z.enum(['flag', 'config', 'host', 'builtin', 'snapshot']),
});

export const VmSizingSchema = z.object({
  vcpu: SourcedNumber,
  memoryMib: SourcedNumber,
  diskSize: SourcedNumber,
});

export const VmmResolutionSchema = z.object({
  configured: z.enum(['auto', 'firecracker', 'qemu']),
  resolved: z.enum(['firecracker', 'qemu']).nullable(),
  binary: z.string().nullable(),
  reason: z.string(),
});
export type VmmResolution = z.infer<typeof VmmResolutionSchema>;

export const DnsStatusSchema = z.object({
  listener: z.object({
    /** dns_listen from config.toml. */
    configured: z.string(),
    /** Where it listens now (the real port when dns_listen asks for port 0). */
    address: z.string().nullable(),
    state: z.enum(['listening', 'failed', 'stopped']),
    /** One line: why it is not listening. */
    error: z.string().nullable(),
    /** VMs with a `<name>.vm` record. */
    names: z.number(),
  }),
  /** `.vm` routing through systemd-resolved on the bridge. */
  routing: z.object({
    state: z.enum(['applied', 'pending', 'not-routed', 'off', 'failed']),
    detail: z.string(),
  }),
});
export type DnsStatusView = z.infer<typeof DnsStatusSchema>;

export const StatusSchema = z.object({
  apiVersion: z.literal('v1'),
  version: z.string(),
  build: z.string(),
  pid: z.number(),
  startedAt: z.string(),
  uptimeMs: z.number(),
  socket: z.string(),
  logPath: z.string(),
  stateDir: z.string(),
  configFile: z.string(),
  logLevel: z.string(),
  /** Where the DNS server listens (dns_listen until it does). */
  dnsListen: z.string(),
  dns: DnsStatusSchema,
  vmm: VmmResolutionSchema,
  accel: z.string(),
  counts: z.object({
    vms: z.record(z.string(), z.number()),
    vmsTotal: z.number(),
    images: z.number(),
    kernels: z.number(),
  }),
  inflight: z.number(),
});
export type Status = z.infer<typeof StatusSchema>;

export const ShutdownRequestSchema = z
  .object({
    /** Only shut down when no operation is in flight (used on version mismatch). */
    ifIdle: z.boolean().default(false),
  })
  .strict();
export const ShutdownResponseSchema = z.object({
  stopping: z.boolean(),
  inflight: z.number(),
  pid: z.number(),
});

export const CheckStatus = z.enum(['pass', 'warn', 'fail']);
export const CheckSchema = z.object({
  id: z.string(),
  title: z.string(),
  status: CheckStatus,
  detail: z.string(),
  hint: z.string().optional(),
});
export type Check = z.infer<typeof CheckSchema>;

export const DoctorResultSchema = z.object({
  checks: z.array(CheckSchema),
  vmDefaults: VmSizingSchema,
  summary: z.object({ pass: z.number(), warn: z.number(), fail: z.number() }),
});
export type DoctorResult = z.infer<typeof DoctorResultSchema>;

export const CompletionNamesSchema = z.object({
  vms: z.array(z.string()),
  images: z.array(z.string()),
  kernels: z.array(z.string()),
  snapshots: z.array(z.string()).default([]),
});
