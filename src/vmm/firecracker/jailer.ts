import path from 'node:path';
import { BangerError } from '../../errors.js';
import type { LaunchSpec } from '../driver.js';

/**
 * Starting Firecracker through its jailer (pure parts): the jailer's command
 * line, and where each file Firecracker opens lives inside the chroot. The
 * jailer makes `<chroot base>/<exec file name>/<id>/root`, copies the
 * Firecracker binary there, joins the cgroups, chroots, drops to uid/gid and
 * execs Firecracker with the arguments after `--`; every path Firecracker is
 * given is then a path inside that root.
 *
 * The driver (driver.ts) uses these when a jailer binary is found
 * (jailerSetup.ts does the linking and cleaning); see docs/firecracker.md.
 */

export interface JailerOptions {
  jailerBin: string;
  firecrackerBin: string;
  /** The VM's id (the jailer allows letters, digits and '-', at most 64). */
  id: string;
  /** The unprivileged user Firecracker runs as (vmm_user). */
  uid: number;
  gid: number;
  chrootBase: string;
  /** cgroup v2 (default) or v1. */
  cgroupVersion?: 1 | 2;
  /** A parent cgroup all banger VMs share (created by the jailer under the root cgroup). */
  parentCgroup?: string;
  /** Limits written by the jailer into the VM's cgroup, e.g. memory.max. */
  cgroups?: Record<string, string>;
}

const JAIL_ID_RE = /^[A-Za-z0-9-]{1,64}$/;
const CGROUP_FILE_RE = /^[a-z_]+\.[a-z_.]+$/;
/** The API socket inside the jail. */
export const JAIL_API_SOCKET = '/fc.sock';

/** `<chroot base>/<exec file name>/<id>/root`, the directory Firecracker sees as `/`. */
export function jailRoot(o: Pick<JailerOptions, 'chrootBase' | 'firecrackerBin' | 'id'>): string {
  return path.join(o.chrootBase, path.basename(o.firecrackerBin), o.id, 'root');
}

/** argv of the jailer (after its binary) for one VM. Throws for values the jailer would refuse. */
export function jailerArgv(o: JailerOptions): string[] {
  if (!JAIL_ID_RE.test(o.id))
    throw new BangerError('internal', `jailer id '${o.id}' must be 1-64 letters, digits or dashes`);
  for (const [what, v] of [
    ['uid', o.uid],
    ['gid', o.gid],
  ] as const)
    if (!Number.isInteger(v) || v <= 0)
      throw new BangerError('precondition', `the jailer needs an unprivileged ${what} (got ${v})`, {
        hint: 'set vmm_user in config.toml to a user other than root',
      });
  if (!path.isAbsolute(o.firecrackerBin) || !path.isAbsolute(o.chrootBase))
    throw new BangerError('internal', 'jailer paths must be absolute');
  if (!path.basename(o.firecrackerBin).includes('firecracker'))
    throw new BangerError(
      'precondition',
      `the jailer runs only a binary whose name contains 'firecracker' (got ${o.firecrackerBin})`,
      { hint: 'name the Firecracker binary firecracker (firecracker_bin)' },
    );
  const args = [
    '--id',
    o.id,
    '--exec-file',
    o.firecrackerBin,
    '--uid',
    String(o.uid),
    '--gid',
    String(o.gid),
    '--chroot-base-dir',
    o.chrootBase,
  ];
  const cgroups = Object.entries(o.cgroups ?? {});
  // Without limits the jailer need not touch cgroups at all.
  if (cgroups.length) {
    args.push('--cgroup-version', String(o.cgroupVersion ?? 2));
    if (o.parentCgroup) args.push('--parent-cgroup', o.parentCgroup);
  }
  for (const [k, v] of cgroups) {
    if (!CGROUP_FILE_RE.test(k) || /[\s=]/.test(v))
      throw new BangerError('internal', `invalid cgroup setting ${k}=${v}`);
    args.push('--cgroup', `${k}=${v}`);
  }
  return [...args, '--', '--api-sock', JAIL_API_SOCKET];
}

/** The cgroup limits of a VM: its memory plus room for Firecracker itself. */
export function vmCgroups(
  spec: Pick<LaunchSpec, 'memoryMib'>,
  overheadMib = 128,
): Record<string, string> {
  return { 'memory.max': String((spec.memoryMib + overheadMib) * 1024 * 1024) };
}

/** The jail of one VM, `<chroot base>/<exec file name>/<id>`: removed whole when the VM stops. */
export function jailDir(o: Pick<JailerOptions, 'chrootBase' | 'firecrackerBin' | 'id'>): string {
  return path.dirname(jailRoot(o));
}

/** The cgroup v2 directory the jailer makes for a VM: `<cgroup root>/<parent>/<id>`. */
export function jailCgroupDir(cgroupRoot: string, parentCgroup: string, id: string): string {
  if (
    !JAIL_ID_RE.test(id) ||
    !/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(parentCgroup) ||
    parentCgroup.split('/').some((p) => p === '.' || p === '..')
  )
    throw new BangerError('internal', `invalid cgroup path ${parentCgroup}/${id}`);
  return path.join(cgroupRoot, parentCgroup, id);
}

/** Where a snapshot's files are inside the jail while Firecracker writes or reads them. */
export const JAIL_SNAPSHOT = { state: '/snapshot.state', mem: '/snapshot.mem' } as const;

/** The host path of a path Firecracker sees inside the jail at `root`. */
export function hostPathInJail(root: string, inJail: string): string {
  const rel = path.posix.normalize(inJail);
  if (!inJail.startsWith('/') || inJail.split('/').includes('..'))
    throw new BangerError('internal', `'${inJail}' is not an absolute path inside the jail`);
  return path.join(root, rel);
}

export interface JailPlan {
  /** The launch spec as Firecracker inside the jail must see it. */
  spec: LaunchSpec;
  /** Host files to link (or copy) into the jail before the start: from → to (host paths). */
  files: { from: string; to: string; writable: boolean }[];
  /** Host paths of the sockets Firecracker makes inside the jail. */
  hostApiSocket: string;
  hostAgentSocket: string;
}

/**
 * Where everything goes for a jailed start. Disks, kernel and initrd appear
 * at the jail's top level under fixed names (so a snapshot taken in one jail
 * names the same paths in the next one, or in a fork's), the vsock socket too;
 * the console log only when Firecracker writes it (PUT /serial). Pure: the
 * caller links the files and owns the sockets.
 */
export function jailPlan(
  spec: LaunchSpec,
  root: string,
  o: { consoleLogInJail?: boolean } = {},
): JailPlan {
  const files: JailPlan['files'] = [];
  const inJail = (host: string, name: string, writable: boolean): string => {
    files.push({ from: host, to: path.join(root, name), writable });
    return `/${name}`;
  };
  const kernel = {
    ...spec.kernel,
    path: inJail(spec.kernel.path, 'vmlinux', false),
    ...(spec.kernel.initrd ? { initrd: inJail(spec.kernel.initrd, 'initrd', false) } : {}),
  };
  const disks = spec.disks.map((d) => {
    if (!/^[A-Za-z0-9_]{1,64}$/.test(d.id))
      throw new BangerError('internal', `invalid disk id '${d.id}'`);
    return { ...d, path: inJail(d.path, `${d.id}.img`, !d.readOnly) };
  });
  const jailed: LaunchSpec = {
    ...spec,
    dir: '/',
    kernel,
    disks,
    agentSocket: '/agent.sock',
    // Only with PUT /serial does Firecracker open the console log itself.
    consoleLog: o.consoleLogInJail ? inJail(spec.consoleLog, 'console.log', true) : spec.consoleLog,
    // Firecracker's stdout/stderr: the jailer inherits the file the daemon opened.
    vmmLog: spec.vmmLog,
  };
  return {
    spec: jailed,
    files,
    hostApiSocket: path.join(root, JAIL_API_SOCKET.slice(1)),
    hostAgentSocket: path.join(root, 'agent.sock'),
  };
}
