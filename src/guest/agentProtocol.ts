import { z } from 'zod';

/**
 * The host <-> guest agent protocol (see docs/guest-agent.md): newline-delimited
 * JSON. Host requests `{"id":n,"op":...}`, the agent answers each with
 * `{"id":n,"ok":true,"result":{...}}` or `{"id":n,"ok":false,"error":"...","code":"..."}`
 * and may send unsolicited `{"event":...}` lines. These schemas are what the
 * host holds the agent to; result objects are not strict so a newer agent may
 * add fields without breaking an older host.
 */

export const AGENT_PROTOCOL_VERSION = 1;
/** Name of the QEMU virtserialport the agent looks for (`-device virtserialport,name=...`). */
export const AGENT_VIRTIO_PORT_NAME = 'banger.agent';
/**
 * Guest vsock port the agent listens on (Firecracker: `CONNECT 52`). Below
 * 1024, so only root in the guest (CAP_NET_BIND_SERVICE) can bind it: an
 * unprivileged guest process cannot take the agent's place.
 */
export const AGENT_VSOCK_PORT = 52;
/** A request line, newline included, may not exceed this many bytes. */
export const AGENT_MAX_REQUEST_BYTES = 65536;

export const AGENT_OPS = [
  'hello',
  'wait-ready',
  'ports',
  'stats',
  'sync',
  'poweroff',
  'reboot',
  'set-time',
  'set-identity',
  'grow-fs',
] as const;
export const AgentOpSchema = z.enum(AGENT_OPS);
export type AgentOp = z.infer<typeof AgentOpSchema>;

/** Error codes the agent puts in `code` next to `error`. */
export const AGENT_ERROR_CODES = [
  'bad_request',
  'unknown_op',
  'too_large',
  'timeout',
  'busy',
  'failed',
] as const;

// ---------- requests ----------

const requestId = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const WaitReadyArgsSchema = z.object({
  /** Agent-side limit; the agent answers `timeout` after it. Absent = until the connection ends. */
  timeoutMs: z.number().int().nonnegative().optional(),
});

export const SetTimeArgsSchema = z.object({
  /** The host's time, ms since the Unix epoch, taken as the request leaves. */
  unixMs: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
});

/**
 * A restored VM's new identity (docs/guest-agent.md, "Identity after a
 * restore"): the agent sets the clock, adds the entropy and reseeds the
 * kernel CRNG, writes /etc/machine-id, the hostname, /etc/hostname and
 * /etc/hosts, gives the interface its MAC, address and default route, makes
 * new SSH host keys and has sshd load them. The ed25519 key is the host's
 * (`hostKeySeed`/`hostKeyPublic`, src/guest/hostKey.ts) when it sends one;
 * an agent sent neither runs ssh-keygen for it.
 */
export const SetIdentityArgsSchema = z.object({
  hostname: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/),
  /** 32 lowercase hex characters. */
  machineId: z.string().regex(/^[0-9a-f]{32}$/),
  iface: z.string().regex(/^[a-z0-9]{1,15}$/),
  mac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/),
  ip: z.ipv4(),
  prefix: z.number().int().min(1).max(32),
  gateway: z.ipv4(),
  /** 64 bytes from the host's CSPRNG, hex. */
  entropy: z.string().regex(/^[0-9a-f]{128}$/),
  /** The host's wall clock, ms since the epoch. */
  timeMs: z.number().positive(),
  /** The new ed25519 host key's 32-byte private seed, hex (both or neither). Secret: never logged. */
  hostKeySeed: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
  /** Its 32-byte public key, hex. */
  hostKeyPublic: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
});

export const AgentRequestSchema = z.discriminatedUnion('op', [
  z.object({ id: requestId, op: z.literal('hello') }),
  z.object({ id: requestId, op: z.literal('wait-ready') }).extend(WaitReadyArgsSchema.shape),
  z.object({ id: requestId, op: z.literal('ports') }),
  z.object({ id: requestId, op: z.literal('stats') }),
  z.object({ id: requestId, op: z.literal('sync') }),
  z.object({ id: requestId, op: z.literal('poweroff') }),
  z.object({ id: requestId, op: z.literal('reboot') }),
  z.object({ id: requestId, op: z.literal('set-time') }).extend(SetTimeArgsSchema.shape),
  z.object({ id: requestId, op: z.literal('set-identity') }).extend(SetIdentityArgsSchema.shape),
  z.object({ id: requestId, op: z.literal('grow-fs') }),
]);
export type AgentRequest = z.infer<typeof AgentRequestSchema>;

/** Arguments each op takes besides id/op. */
export interface AgentArgs {
  hello: Record<string, never>;
  'wait-ready': z.infer<typeof WaitReadyArgsSchema>;
  ports: Record<string, never>;
  stats: Record<string, never>;
  sync: Record<string, never>;
  poweroff: Record<string, never>;
  reboot: Record<string, never>;
  'set-time': z.infer<typeof SetTimeArgsSchema>;

  'set-identity': z.infer<typeof SetIdentityArgsSchema>;
  'grow-fs': Record<string, never>;
}

// ---------- results ----------

export const HelloResultSchema = z.object({
  protocol: z.number().int(),
  agentVersion: z.string(),
  hostname: z.string(),
  /** /proc/sys/kernel/random/boot_id: changes on every guest boot. */
  bootId: z.string().nullable(),
  uptimeMs: z.number().nonnegative(),
  /** sshd is listening on port 22 right now. */
  ready: z.boolean(),
  transport: z.string(),
  ops: z.array(z.string()),
});
export type HelloResult = z.infer<typeof HelloResultSchema>;

export const ReadyResultSchema = z.object({
  /** Lines of /etc/ssh/ssh_host_*_key.pub (`<type> <base64> [comment]`), sorted by file name. */
  hostKeys: z.array(z.string()),
  /** Guest uptime (ms since boot) when sshd was first seen listening. */
  readyAtMs: z.number().nonnegative(),
  sshPort: z.number().int(),
});
export type ReadyResult = z.infer<typeof ReadyResultSchema>;

export const ListeningSocketSchema = z.object({
  proto: z.enum(['tcp', 'tcp6', 'udp', 'udp6']),
  address: z.string(),
  port: z.number().int().min(0).max(65535),
  pid: z.number().int().positive().nullable(),
  process: z.string().nullable(),
  /** Arguments joined by spaces, at most 160 bytes; null when unknown (and from older agents that do not send it). */
  cmdline: z.string().nullable().default(null),
});
export type ListeningSocket = z.infer<typeof ListeningSocketSchema>;

export const PortsResultSchema = z.object({
  ports: z.array(ListeningSocketSchema),
  /** More sockets than the agent reports at once (1024). */
  truncated: z.boolean(),
});
export type PortsResult = z.infer<typeof PortsResultSchema>;

export const CpuTicksSchema = z.object({
  user: z.number(),
  nice: z.number(),
  system: z.number(),
  idle: z.number(),
  iowait: z.number(),
  irq: z.number(),
  softirq: z.number(),
  steal: z.number(),
  guest: z.number(),
  guestNice: z.number(),
});
export type CpuTicks = z.infer<typeof CpuTicksSchema>;

export const DiskUsageSchema = z.object({
  mount: z.string(),
  totalBytes: z.number().nonnegative(),
  /** Free blocks (what root can still use). */
  freeBytes: z.number().nonnegative(),
  /** Free blocks available to unprivileged users (df's "Avail"). */
  availBytes: z.number().nonnegative(),
});
export type DiskUsage = z.infer<typeof DiskUsageSchema>;

export const StatsResultSchema = z.object({
  uptimeMs: z.number().nonnegative(),
  load1: z.number(),
  load5: z.number(),
  load15: z.number(),
  memTotalKib: z.number().nonnegative(),
  memAvailableKib: z.number().nonnegative(),
  memFreeKib: z.number().nonnegative(),
  cpus: z.number().int().nonnegative(),
  /** USER_HZ: cpuTicks are in 1/clockTicksPerSec seconds. */
  clockTicksPerSec: z.number().int().positive(),
  /** Totals over all CPUs since boot (first line of /proc/stat); diff two samples for usage. */
  cpuTicks: CpuTicksSchema.nullable(),
  /** `/` and `/root` (the work disk); a mount that cannot be read is left out. */
  disks: z.array(DiskUsageSchema),
  /** Established TCP connections to the guest's port 22 (open ssh sessions); null from older agents. */
  sshSessions: z.number().int().nonnegative().nullable().default(null),
});
export type StatsResult = z.infer<typeof StatsResultSchema>;

export const PowerResultSchema = z.object({
  action: z.enum(['poweroff', 'reboot']),
  /** How the agent will act: `systemctl` when systemd is PID 1, else `reboot(2)`. */
  method: z.string(),
  /** True when the agent was started with power actions disabled (tests). */
  dryRun: z.boolean(),
});
export type PowerResult = z.infer<typeof PowerResultSchema>;

export const SetTimeResultSchema = z.object({
  /** How far the guest clock was stepped (host time minus guest time when the request arrived). */
  stepMs: z.number().int(),
  /** True when the agent was started with power actions disabled (tests): nothing was changed. */
  dryRun: z.boolean(),
});
export type SetTimeResult = z.infer<typeof SetTimeResultSchema>;

export const SetIdentityResultSchema = z.object({
  /** The new host keys (lines of /etc/ssh/ssh_host_*_key.pub), sorted by file name. */
  hostKeys: z.array(z.string()),
  hostname: z.string(),
  /** The agent runs on a test transport: files were written, the kernel was left alone. */
  dryRun: z.boolean(),
});
export type SetIdentityResult = z.infer<typeof SetIdentityResultSchema>;

/** One of banger's disk filesystems in the guest (`/root`, the overlay disk's mount). */
export const GrownFsSchema = z.object({
  mount: z.string(),
  /** An ext4 filesystem is mounted there. */
  mounted: z.boolean(),
  beforeBytes: z.number().nonnegative(),
  afterBytes: z.number().nonnegative(),
  /** Size of the block device under it as the guest sees it (0 = unknown). */
  deviceBytes: z.number().nonnegative(),
  error: z.string().nullable(),
});
export type GrownFs = z.infer<typeof GrownFsSchema>;

export const GrowFsResultSchema = z.object({
  filesystems: z.array(GrownFsSchema),
  /** Measured only (an agent on a Unix-socket transport, in tests). */
  dryRun: z.boolean(),
});
export type GrowFsResult = z.infer<typeof GrowFsResultSchema>;

export const EmptyResultSchema = z.object({});

export const AgentResultSchemas = {
  hello: HelloResultSchema,
  'wait-ready': ReadyResultSchema,
  ports: PortsResultSchema,
  stats: StatsResultSchema,
  sync: EmptyResultSchema,
  poweroff: PowerResultSchema,
  reboot: PowerResultSchema,
  'set-time': SetTimeResultSchema,
  'set-identity': SetIdentityResultSchema,
  'grow-fs': GrowFsResultSchema,
} as const satisfies Record<AgentOp, z.ZodType>;

export type AgentResult<O extends AgentOp> = z.infer<(typeof AgentResultSchemas)[O]>;

// ---------- responses and events ----------

export const AgentOkResponseSchema = z.object({
  id: requestId,
  ok: z.literal(true),
  result: z.unknown(),
});

export const AgentErrorResponseSchema = z.object({
  /** null when the agent could not tell which request failed (unparseable line). */
  id: requestId.nullable(),
  ok: z.literal(false),
  error: z.string(),
  /** One of AGENT_ERROR_CODES; other strings are tolerated from newer agents. */
  code: z.string().optional(),
});

export const AgentResponseSchema = z.discriminatedUnion('ok', [
  AgentOkResponseSchema,
  AgentErrorResponseSchema,
]);
export type AgentResponse = z.infer<typeof AgentResponseSchema>;

export const ReadyEventSchema = z
  .object({ event: z.literal('ready') })
  .extend(ReadyResultSchema.shape);
export type ReadyEvent = z.infer<typeof ReadyEventSchema>;

/** Any event; known ones are checked further with their own schema. */
export const AgentEventSchema = z.looseObject({ event: z.string() });
export type AgentEvent = z.infer<typeof AgentEventSchema>;

/** One line from the agent: a response or an event. */
export type AgentMessage =
  { kind: 'response'; response: AgentResponse } | { kind: 'event'; event: AgentEvent };

/**
 * Parse one line received from the agent. Throws a plain Error with a short
 * reason when the line is neither a valid response nor an event.
 */
export function parseAgentLine(line: string): AgentMessage {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new Error(`not JSON: ${line.slice(0, 80)}`);
  }
  if (raw !== null && typeof raw === 'object' && 'event' in raw) {
    const ev = AgentEventSchema.safeParse(raw);
    if (!ev.success) throw new Error(`invalid event: ${line.slice(0, 80)}`);
    return { kind: 'event', event: ev.data };
  }
  const res = AgentResponseSchema.safeParse(raw);
  if (!res.success) throw new Error(`invalid response: ${line.slice(0, 80)}`);
  return { kind: 'response', response: res.data };
}

/** The request line (with newline) for op; checks the size limit. */
export function encodeAgentRequest<O extends AgentOp>(
  id: number,
  op: O,
  args: AgentArgs[O],
): string {
  const req = AgentRequestSchema.parse({ ...args, id, op });
  const line = JSON.stringify(req) + '\n';
  if (Buffer.byteLength(line) > AGENT_MAX_REQUEST_BYTES) {
    throw new Error(`agent request ${op} is over ${AGENT_MAX_REQUEST_BYTES} bytes`);
  }
  return line;
}

/** Split a host key line `<type> <base64> [comment]` for known_hosts. */
export function parseHostKey(
  line: string,
): { type: string; key: string; comment?: string } | undefined {
  const parts = line.trim().split(/\s+/);
  if (
    parts.length < 2 ||
    !/^(ssh-|ecdsa-|sk-)/.test(parts[0]!) ||
    !/^[A-Za-z0-9+/]+=*$/.test(parts[1]!)
  ) {
    return undefined;
  }
  const comment = parts.slice(2).join(' ');
  return { type: parts[0]!, key: parts[1]!, ...(comment ? { comment } : {}) };
}
