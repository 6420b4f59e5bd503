import net from 'node:net';
import { z } from 'zod';
import { parseCidr } from '../util/ipv4.js';
import { parseDuration, parseSize } from '../util/units.js';

/**
 * The config keys of spec §3: raw TOML value → normalised value. Each field has
 * its own schema so a failure names exactly one key.
 */

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export const VMM_CHOICES = ['auto', 'firecracker', 'qemu'] as const;
export const ACCEL_CHOICES = ['auto', 'kvm', 'tcg'] as const;
/** auto: route `.vm` through systemd-resolved (per link, on the bridge) where that is safe. */
export const DNS_ROUTING_CHOICES = ['auto', 'off'] as const;

export type LogLevel = (typeof LOG_LEVELS)[number];
export type VmmChoice = (typeof VMM_CHOICES)[number];
export type AccelChoice = (typeof ACCEL_CHOICES)[number];
export type DnsRoutingChoice = (typeof DNS_ROUTING_CHOICES)[number];

const nameRe = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const ifnameRe = /^[a-zA-Z0-9_.-]{1,15}$/;

const ipv4 = z
  .string()
  .refine((s) => net.isIPv4(s), { message: 'must be an IPv4 address like 172.16.0.1' });

/** true/false, also as the strings env vars carry. */
const bool = z.union([
  z.boolean(),
  z.enum(['true', 'false'], { message: 'must be true or false' }).transform((v) => v === 'true'),
]);

/** Accept what users write: numbers, strings, and strings that came from env vars. */
const fromEnvNumber = z.union([z.number(), z.string().regex(/^\d+$/).transform(Number)]);

const positiveInt = (max: number) =>
  fromEnvNumber.pipe(
    z
      .number()
      .int('must be a whole number')
      .min(1, 'must be at least 1')
      .max(max, `must be at most ${max}`),
  );

const size = (min: number, what: string) =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    try {
      const bytes = parseSize(v);
      if (bytes < min) {
        ctx.addIssue({ code: 'custom', message: `${what} must be at least ${min / 1024 ** 2}M` });
        return z.NEVER;
      }
      return bytes;
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });

const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  if (v === 'off' || v === 'never') return 0;
  try {
    return parseDuration(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

const path = z.string().min(1, 'must not be empty');

const listenAddr = z.string().transform((v, ctx) => {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d{1,5})$/.exec(v);
  if (!m || !net.isIPv4(m[1]!) || Number(m[2]) > 65535) {
    ctx.addIssue({ code: 'custom', message: `'${v}' must be IPv4:port like 127.0.0.1:42069` });
    return z.NEVER;
  }
  // The DNS listener answers the host only (issue 16): never a bridge or LAN address.
  if (!m[1]!.startsWith('127.')) {
    ctx.addIssue({ code: 'custom', message: `'${v}' must be a loopback address (127.0.0.0/8)` });
    return z.NEVER;
  }
  return { host: m[1]!, port: Number(m[2]) };
});

const dnsList = z
  .union([z.string(), z.array(z.string())])
  .transform((v) =>
    Array.isArray(v)
      ? v
      : v
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean),
  )
  .pipe(z.array(ipv4).max(3, 'at most 3 servers'));

const cidr = z.string().transform((v, ctx) => {
  try {
    const { network, prefix } = parseCidr(v);
    return `${network}/${prefix}`;
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

export interface FieldSpec {
  key: string;
  schema: z.ZodType;
  help: string;
}

export const TOP_FIELDS: FieldSpec[] = [
  { key: 'log_level', schema: z.enum(LOG_LEVELS), help: 'daemon log level' },
  { key: 'vmm', schema: z.enum(VMM_CHOICES), help: 'VMM to use' },
  { key: 'firecracker_bin', schema: path, help: 'path to the firecracker binary' },
  {
    key: 'jailer_bin',
    schema: path,
    help: 'Firecracker jailer (default: a jailer next to firecracker; "off": never)',
  },
  { key: 'qemu_bin', schema: path, help: 'path to qemu-system-x86_64' },
  {
    key: 'vmm_user',
    schema: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be a user name like banger-vmm'),
    help: 'unprivileged user a root daemon runs each VMM as (root = do not drop)',
  },
  { key: 'accel', schema: z.enum(ACCEL_CHOICES), help: 'QEMU accelerator' },
  { key: 'ssh_key_path', schema: path, help: 'private key banger uses for guests' },
  {
    key: 'default_image_name',
    schema: z.string().regex(nameRe, 'must be a lowercase image name'),
    help: 'image used when --image is not given',
  },
  {
    key: 'default_kernel',
    schema: z.string().regex(nameRe, 'must be a lowercase kernel name'),
    help: 'kernel used when --kernel is not given',
  },
  {
    key: 'bridge_name',
    schema: z.string().regex(ifnameRe, 'must be a valid interface name (max 15 chars)'),
    help: 'host bridge',
  },
  { key: 'bridge_ip', schema: ipv4, help: 'bridge address (gateway of the guests)' },
  { key: 'cidr', schema: cidr, help: 'guest address range' },
  { key: 'default_dns', schema: dnsList, help: 'DNS servers given to guests' },
  { key: 'dns_listen', schema: listenAddr, help: 'where the daemon answers <name>.vm queries' },
  {
    key: 'dns_routing',
    schema: z.enum(DNS_ROUTING_CHOICES),
    help: 'route .vm names to the daemon through systemd-resolved (auto | off)',
  },
  {
    key: 'guest_to_guest',
    schema: bool,
    help: 'let VMs on the bridge reach each other (default false)',
  },
  {
    key: 'tap_pool_size',
    schema: fromEnvNumber.pipe(z.number().int().min(0).max(64)),
    help: 'warm taps kept ready',
  },
  {
    key: 'warm_start',
    schema: bool,
    help: 'restore new VMs from a boot snapshot of their shape instead of booting (default true)',
  },
  {
    key: 'tcg_aslr',
    schema: bool,
    help: 'keep address-space randomization in emulated (TCG) guests (default false: faster)',
  },
  { key: 'auto_stop_stale_after', schema: duration, help: 'stop VMs idle this long (0 = never)' },
  { key: 'stats_poll_interval', schema: duration, help: 'how often VM stats are sampled' },
  {
    key: 'log_max_size',
    schema: size(1024 ** 2, 'log_max_size'),
    help: 'cap of each VM console/VMM log (one older copy is kept as .1)',
  },
];

export const VM_DEFAULT_FIELDS: FieldSpec[] = [
  { key: 'vcpu', schema: positiveInt(64), help: 'vCPUs per VM' },
  {
    key: 'memory_mib',
    schema: positiveInt(1024 * 1024).pipe(z.number().min(128, 'must be at least 128')),
    help: 'memory per VM in MiB',
  },
  { key: 'disk_size', schema: size(1024 ** 3, 'disk_size'), help: 'work disk size per VM' },
];

export const FILE_SYNC_FIELDS: FieldSpec[] = [
  { key: 'host', schema: path, help: 'file on the host' },
  {
    key: 'guest',
    schema: z
      .string()
      .refine((g) => /^(~\/|\/root\/)[^\0]+$/.test(g) && !g.split('/').includes('..'), {
        message: "must be under '~/' or '/root/' without '..'",
      }),
    help: 'destination in the guest',
  },
  {
    key: 'mode',
    schema: z
      .union([z.string().regex(/^0?[0-7]{3,4}$/, "must be octal like '0600'"), z.number().int()])
      .transform((v) => (typeof v === 'number' ? v : parseInt(v, 8)))
      .pipe(z.number().min(0).max(0o7777, 'must be a file mode from 0 to 0o7777')),
    help: 'file mode (default 0600)',
  },
];

export interface FileSync {
  host: string;
  guest: string;
  /** Unset: 0600 for a file, the host's modes for a directory's files. */
  mode?: number;
}

export interface VmDefaultsConfig {
  vcpu?: number;
  memoryMib?: number;
  diskSize?: number;
}

export interface Config {
  logLevel: LogLevel;
  vmm: VmmChoice;
  firecrackerBin?: string;
  /** Firecracker's jailer: a path, `off`, or unset (look next to firecracker). */
  jailerBin?: string;
  qemuBin?: string;
  vmmUser: string;
  accel: AccelChoice;
  sshKeyPath?: string;
  defaultImageName: string;
  defaultKernel: string;
  bridgeName: string;
  bridgeIp: string;
  cidr: string;
  defaultDns: string[];
  dnsListen: { host: string; port: number };
  dnsRouting: DnsRoutingChoice;
  guestToGuest: boolean;
  tapPoolSize: number;
  /** Warm start (docs/snapshots.md): restore a boot snapshot of the VM's shape instead of booting. */
  warmStart: boolean;
  /**
   * User-space address randomization in TCG guests (docs/isolation.md): off by default,
   * because QEMU's translated code is keyed by virtual address.
   */
  tcgAslr: boolean;
  autoStopStaleAfterMs: number;
  statsPollIntervalMs: number;
  logMaxBytes: number;
  vmDefaults: VmDefaultsConfig;
  fileSync: FileSync[];
}

export const DEFAULT_CONFIG: Config = {
  logLevel: 'info',
  vmm: 'auto',
  accel: 'auto',
  defaultImageName: 'debian-bookworm',
  defaultKernel: 'debian-cloud-6.1',
  bridgeName: 'banger0',
  bridgeIp: '172.16.0.1',
  cidr: '172.16.0.0/24',
  defaultDns: [],
  dnsListen: { host: '127.0.0.1', port: 42069 },
  dnsRouting: 'auto',
  guestToGuest: false,
  tapPoolSize: 0,
  warmStart: true,
  tcgAslr: false,
  autoStopStaleAfterMs: 0,
  statsPollIntervalMs: 5000,
  vmmUser: 'banger-vmm',
  logMaxBytes: 16 * 1024 ** 2,
  vmDefaults: {},
  fileSync: [],
};
