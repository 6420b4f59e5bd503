import fs from 'node:fs';
import path from 'node:path';
import type { Check } from '../api/schemas/daemon.js';
import { toBangerError } from '../errors.js';
import type { Config } from '../config/schema.js';
import { CAP_HINT } from '../network/runner.js';
import { CAP_NET_ADMIN, hasCapability } from '../util/proc.js';
import { formatSize } from '../util/units.js';
import { runtimeDirProblem } from '../util/privateDir.js';
import { lookupUser } from '../util/users.js';
import { kvmDevicePath } from '../vmm/accel.js';
import { createVmmDriver } from '../vmm/registry.js';
import { resolveVmm } from '../vmm/resolve.js';

/**
 * Host checks for `banger doctor`. The host is reached only through the Probe,
 * so the decisions (pass/warn/fail and the hint) are unit-testable.
 */
export interface Probe {
  arch: string;
  uid: number;
  /** The KVM device node to check (kvmDevicePath()). */
  kvmDevice: string;
  which(cmd: string): string | undefined;
  /** Access check with fs.constants flags; false when missing or denied. */
  access(file: string, mode: number): boolean;
  exists(file: string): boolean;
  /** First line of `<bin> --version`, or undefined if it fails. */
  version(bin: string): Promise<string | undefined>;
  freeBytes(dir: string): number | undefined;
  stat(file: string): { uid: number; mode: number } | undefined;
  hasNetAdmin(): boolean;
  openFilesLimit(): number | undefined;
  /** uid of a host user, undefined when there is none by that name. */
  userUid(name: string): number | undefined;
}

export interface CheckContext {
  config: Config;
  stateDir: string;
  runtimeDir: string;
  probe: Probe;
}

export interface CheckDef {
  id: string;
  title: string;
  run(ctx: CheckContext): Promise<Omit<Check, 'id' | 'title'>> | Omit<Check, 'id' | 'title'>;
}

const pass = (detail: string): Omit<Check, 'id' | 'title'> => ({ status: 'pass', detail });
const warn = (detail: string, hint: string): Omit<Check, 'id' | 'title'> => ({
  status: 'warn',
  detail,
  hint,
});
const fail = (detail: string, hint: string): Omit<Check, 'id' | 'title'> => ({
  status: 'fail',
  detail,
  hint,
});

interface ToolSpec {
  id: string;
  anyOf: string[];
  pkg: string;
  why: string;
}

const TOOLS: ToolSpec[] = [
  { id: 'mkfs.ext4', anyOf: ['mkfs.ext4'], pkg: 'e2fsprogs', why: 'creates VM disks and images' },
  {
    id: 'debugfs',
    anyOf: ['debugfs'],
    pkg: 'e2fsprogs',
    why: 'writes files into disks without mounting',
  },
  {
    id: 'e2fsck',
    anyOf: ['e2fsck'],
    pkg: 'e2fsprogs',
    why: 'checks an image work seed before a new VM grows it',
  },
  {
    id: 'resize2fs',
    anyOf: ['resize2fs'],
    pkg: 'e2fsprogs',
    why: 'grows a new VM work disk from the image seed',
  },
  { id: 'ip', anyOf: ['ip'], pkg: 'iproute2', why: 'creates the bridge and taps' },
  { id: 'firewall', anyOf: ['iptables', 'nft'], pkg: 'iptables', why: 'NAT for --nat VMs' },
  { id: 'ssh', anyOf: ['ssh'], pkg: 'openssh-client', why: 'shells into VMs' },
  {
    id: 'ssh-keygen',
    anyOf: ['ssh-keygen'],
    pkg: 'openssh-client',
    why: 'creates the managed SSH key',
  },
  { id: 'git', anyOf: ['git'], pkg: 'git', why: 'copies checkouts into VMs (vm run PATH)' },
  {
    id: 'rootfs-builder',
    anyOf: ['mmdebstrap', 'debootstrap'],
    pkg: 'mmdebstrap',
    why: 'builds the default image',
  },
];

export const CHECKS: CheckDef[] = [
  {
    id: 'arch',
    title: 'CPU architecture',
    run: ({ probe }) =>
      probe.arch === 'x64'
        ? pass('x86_64')
        : fail(`${probe.arch} is not supported`, 'banger needs an x86_64 host'),
  },
  {
    id: 'kvm',
    title: 'KVM access',
    run: ({ probe, config }) => {
      const rw = fs.constants.R_OK | fs.constants.W_OK;
      const dev = probe.kvmDevice;
      if (probe.access(dev, rw)) {
        return pass(
          config.accel === 'tcg'
            ? `${dev} is read/writable (accel = "tcg": not used)`
            : `${dev} is read/writable (whether it runs guests is probed at the first VM start)`,
        );
      }
      const exists = probe.exists(dev);
      const detail = exists ? `${dev} is not accessible` : `${dev} does not exist`;
      const hint = exists
        ? 'add your user to group kvm (sudo usermod -aG kvm $USER) and log in again'
        : 'enable virtualisation in the BIOS / load kvm_intel or kvm_amd, or set accel = "tcg" (slow)';
      if (config.accel === 'kvm') return fail(detail, hint);
      return warn(`${detail}: VMs fall back to TCG software emulation (much slower)`, hint);
    },
  },
  {
    id: 'qemu',
    title: 'QEMU',
    run: async ({ probe, config }) => {
      const bin = probe.which(config.qemuBin ?? 'qemu-system-x86_64');
      const vmm = resolveVmm(config, probe.which);
      if (!bin) {
        const hint = 'sudo apt-get install qemu-system-x86';
        if (config.vmm === 'qemu' || vmm.resolved === null)
          return fail('qemu-system-x86_64 not found', hint);
        return warn('qemu-system-x86_64 not found (not needed while firecracker is used)', hint);
      }
      const v = await probe.version(bin);
      return v
        ? pass(`${bin}: ${v}`)
        : fail(`${bin} does not run (--version failed)`, 'reinstall qemu-system-x86');
    },
  },
  {
    id: 'firecracker',
    title: 'Firecracker',
    run: async ({ probe, config }) => {
      const name = config.firecrackerBin ?? 'firecracker';
      const bin = probe.which(name);
      const hint = 'install firecracker (see README: "Using Firecracker") or set firecracker_bin';
      if (!bin) {
        if (config.vmm === 'firecracker') return fail(`${name} not found`, hint);
        return warn(`${name} not found: using qemu`, hint);
      }
      const v = await probe.version(bin);
      if (!v) return fail(`${bin} does not run (--version failed)`, 'reinstall firecracker');
      const old = createVmmDriver('firecracker', config).versionWarning(v);
      if (old) return warn(`${bin}: ${v}: ${old.detail}`, old.hint);
      return pass(`${bin}: ${v}`);
    },
  },
  {
    id: 'jailer',
    title: 'Firecracker jailer',
    run: async ({ probe, config, stateDir }) => {
      if (!probe.which(config.firecrackerBin ?? 'firecracker'))
        return pass('not needed (no firecracker)');
      let s: { bin?: string; detail: string } | undefined;
      try {
        s = createVmmDriver('firecracker', config, { stateDir }).sandbox?.();
      } catch (e) {
        const err = toBangerError(e);
        return fail(err.message, err.hint ?? 'set jailer_bin = "off" to run firecracker unjailed');
      }
      if (!s?.bin)
        return pass(
          `not used (${s?.detail ?? 'not supported'}): firecracker runs unjailed as ${probe.uid === 0 ? 'root' : 'you'}`,
        );
      const v = await probe.version(s.bin);
      if (!v) return fail(`${s.bin} does not run (--version failed)`, 'reinstall the jailer');
      return pass(`${v}: ${s.detail}, chroot under ${stateDir}/jailer`);
    },
  },
  {
    id: 'vmm',
    title: 'VMM selection',
    run: ({ probe, config }) => {
      const r = resolveVmm(config, probe.which);
      return r.resolved
        ? pass(`${r.resolved} (${r.reason})`)
        : fail(
            r.reason,
            'install qemu-system-x86 or firecracker, or fix vmm / qemu_bin / firecracker_bin in config.toml',
          );
    },
  },
  ...TOOLS.map((t): CheckDef => ({
    id: `tool:${t.id}`,
    title: `tool ${t.anyOf.join(' or ')}`,
    run: ({ probe }) => {
      for (const cmd of t.anyOf) {
        const found = probe.which(cmd);
        if (found) return pass(found);
      }
      return fail(`${t.anyOf.join(' / ')} not found (${t.why})`, `sudo apt-get install ${t.pkg}`);
    },
  })),
  {
    id: 'tun',
    title: '/dev/net/tun',
    run: ({ probe }) =>
      probe.access('/dev/net/tun', fs.constants.R_OK | fs.constants.W_OK)
        ? pass('read/writable')
        : fail(
            '/dev/net/tun is missing or not accessible',
            'load the tun module (sudo modprobe tun)',
          ),
  },
  {
    id: 'net-admin',
    title: 'CAP_NET_ADMIN (bridge, taps, NAT)',
    run: ({ probe, config }) =>
      probe.hasNetAdmin()
        ? pass(`can manage bridge ${config.bridgeName}, taps and NAT rules`)
        : fail('bangerd lacks CAP_NET_ADMIN: bridge networking cannot be set up', CAP_HINT),
  },
  {
    id: 'vmm-confinement',
    title: 'VMM confinement',
    run: ({ probe, config }) => {
      if (probe.uid !== 0)
        return pass(`VMMs run as you (uid ${probe.uid}) under QEMU's seccomp sandbox`);
      if (config.vmmUser === 'root')
        return warn(
          'vmm_user = "root": VMMs of this root daemon run as root (seccomp sandbox only)',
          'remove vmm_user from config.toml to run them as banger-vmm',
        );
      const uid = probe.userUid(config.vmmUser);
      return uid === undefined
        ? fail(
            `vmm_user '${config.vmmUser}' does not exist: VMs cannot start`,
            `sudo useradd --system --no-create-home --shell /usr/sbin/nologin ${config.vmmUser}`,
          )
        : pass(`VMMs run as ${config.vmmUser} (uid ${uid}) under QEMU's seccomp sandbox`);
    },
  },
  {
    id: 'disk',
    title: 'free disk space',
    run: ({ probe, stateDir }) => {
      const free = probe.freeBytes(stateDir);
      if (free === undefined)
        return warn(
          `cannot measure free space at ${stateDir}`,
          'check that the directory is readable',
        );
      const detail = `${formatSize(free)} free at ${stateDir}`;
      if (free < 2 * 1024 ** 3)
        return fail(detail, 'free space or set BANGER_STATE_DIR to a larger disk (2 GiB minimum)');
      if (free < 10 * 1024 ** 3)
        return warn(detail, 'images and VM disks need several GiB; 10 GiB+ recommended');
      return pass(detail);
    },
  },
  {
    id: 'vm-memory',
    title: 'guest memory tmpfs',
    run: ({ probe }) => {
      // QEMU maps each VM's RAM from a file there (docs/snapshots.md).
      const free = probe.freeBytes('/dev/shm');
      const fix =
        'mount a tmpfs on /dev/shm large enough for your VMs (mount -o remount,size=… /dev/shm)';
      if (free === undefined) return fail('cannot use /dev/shm: QEMU VMs cannot start', fix);
      const detail = `${formatSize(free)} free at /dev/shm (QEMU guest memory)`;
      if (free < 512 * 1024 ** 2) return fail(detail, fix);
      if (free < 2 * 1024 ** 3)
        return warn(detail, `${fix}; each running VM needs its --memory there`);
      return pass(detail);
    },
  },
  {
    id: 'runtime-dir',
    title: 'runtime directory',
    run: ({ probe, runtimeDir }) => {
      const st = probe.stat(runtimeDir);
      if (!st) return warn(`${runtimeDir} does not exist yet`, 'it is created when bangerd starts');
      // The same verdict the CLI and bangerd act on (src/util/privateDir.ts).
      const bad = runtimeDirProblem(runtimeDir, st, probe.uid);
      return bad ? fail(bad.what, bad.hint) : pass(`${runtimeDir} (0700)`);
    },
  },
  {
    id: 'ulimit',
    title: 'open files limit',
    run: ({ probe }) => {
      const n = probe.openFilesLimit();
      if (n === undefined) return warn('unknown', 'check `ulimit -n`');
      return n >= 1024
        ? pass(`${n}`)
        : warn(`${n} open files allowed`, 'raise it (ulimit -n 4096) for many VMs');
    },
  },
];

/** The real host. */
export function hostProbe(
  run: (bin: string) => Promise<string | undefined>,
  which: (c: string) => string | undefined,
): Probe {
  return {
    arch: process.arch,
    uid: process.getuid?.() ?? 0,
    kvmDevice: kvmDevicePath(),
    which,
    access: (file, mode) => {
      try {
        fs.accessSync(file, mode);
        return true;
      } catch {
        return false;
      }
    },
    exists: (file) => fs.existsSync(file),
    version: run,
    freeBytes: (dir) => {
      let d = dir;
      for (;;) {
        try {
          const s = fs.statfsSync(d);
          return s.bavail * s.bsize;
        } catch {
          const up = path.dirname(d);
          if (up === d) return undefined;
          d = up;
        }
      }
    },
    stat: (file) => {
      try {
        const s = fs.lstatSync(file);
        return { uid: s.uid, mode: s.mode };
      } catch {
        return undefined;
      }
    },
    hasNetAdmin: () => hasCapability(CAP_NET_ADMIN),
    userUid: (name) => lookupUser(name)?.uid,
    openFilesLimit: () => {
      try {
        const m = /^Max open files\s+(\d+|unlimited)/m.exec(
          fs.readFileSync('/proc/self/limits', 'utf8'),
        );
        return m ? (m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1])) : undefined;
      } catch {
        return undefined;
      }
    },
  };
}

export function summarize(checks: Check[]): { pass: number; warn: number; fail: number } {
  return {
    pass: checks.filter((c) => c.status === 'pass').length,
    warn: checks.filter((c) => c.status === 'warn').length,
    fail: checks.filter((c) => c.status === 'fail').length,
  };
}
