import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../../errors.js';
import type {
  AgentChannel,
  DiskSpec,
  LaunchSpec,
  PreflightInput,
  SnapshotFiles,
  StopOptions,
  VmHandle,
  VmmCapabilities,
  VmmDriver,
  VmmStatus,
} from '../driver.js';
import {
  deliverSignal,
  findBinary,
  killVmm,
  KILL_WAIT_MS,
  probeVersion,
  requireBinary,
  vmmAlive,
  waitGone,
} from '../process.js';
import {
  ACPI_VIRTIO_MIN,
  checkFirecrackerCompat,
  checkLaunchKernel,
  parseFirecrackerVersion,
  versionAtLeast,
} from './compat.js';
import { lookupUser } from '../../util/users.js';
import { jailOfSocket } from '../jail.js';
import {
  hostPathInJail,
  JAIL_SNAPSHOT,
  jailCgroupDir,
  jailDir,
  jailerArgv,
  jailPlan,
  jailRoot,
  vmCgroups,
  type JailPlan,
} from './jailer.js';
import {
  cgroupV2Memory,
  linkInto,
  moveOut,
  prepareJail,
  removeJail,
  type Owner,
} from './jailerSetup.js';
import {
  api,
  apiSocketPath,
  clearStaleSockets,
  describeAt,
  launchFirecracker,
  processLabel as what,
  removeApiSocket,
  vmRef,
} from './launch.js';
import {
  checkSocketPath,
  launchRequests,
  driveRescan,
  pauseVm,
  resumeVm,
  sendCtrlAltDel,
  snapshotCreate,
  snapshotLoad,
  type FcRequest,
  type InstanceInfo,
  type LaunchRequestOptions,
} from './requests.js';
import { AGENT_VSOCK_PORT, connectVsock } from './vsock.js';

export { apiSocketPath, FC_FILES } from './launch.js';

/**
 * The Firecracker VMM driver: one `firecracker --api-sock <vm dir>/fc.sock`
 * process per VM, detached into its own session so it outlives the daemon,
 * configured through its REST API (requests.ts) and stopped with
 * Ctrl+Alt+Del. The process is identified by pid + /proc start time so a
 * recycled pid is never signalled.
 */

export const FIRECRACKER_CAPABILITIES: VmmCapabilities = {
  accels: ['kvm'],
  kernelFormats: ['elf'],
  agentTransport: 'vsock',
  gracefulStop: 'ctrl-alt-del',
  pauseResume: true,
  snapshot: true,
};

export interface FirecrackerDriverOptions {
  /** `firecracker_bin` from config: a name looked up on PATH or a path. Default `firecracker`. */
  bin?: string;
  which?: (cmd: string) => string | undefined;
  /** Environment of the VMM process. Default: the daemon's. */
  env?: NodeJS.ProcessEnv;
  /** How long the API socket may take to appear after spawning. Default 5 s. */
  socketTimeoutMs?: number;
  /** Per API request. Default 10 s. */
  apiTimeoutMs?: number;
  /** How long to wait for the process to vanish after SIGKILL. Default KILL_WAIT_MS. */
  killWaitMs?: number;
  /** Vsock guest CID. Default 3. */
  guestCid?: number;
  /**
   * Send the guest serial console to spec.consoleLog with `PUT /serial`
   * (recent Firecracker releases only). Default off: Firecracker writes the
   * console to its stdout, i.e. into spec.vmmLog with its own messages.
   */
  serialToConsoleLog?: boolean;
  /** Poll interval while waiting for sockets and exits. Default 25 ms. */
  pollMs?: number;
  /** Start every VM through Firecracker's jailer when one is found (docs/firecracker.md). */
  jailer?: FirecrackerJailerOptions;
}

export interface FirecrackerJailerOptions {
  /**
   * `jailer_bin` from config: a name or path; `off` never uses a jailer.
   * Default: a `jailer` next to the firecracker binary.
   */
  bin?: string;
  /** Where jails are made: `<state dir>/jailer`. */
  chrootBase: string;
  /** `vmm_user`: whom Firecracker runs as. */
  vmmUser: string;
  /** The cgroup v2 mount. Default `/sys/fs/cgroup` (BANGER_CGROUP_ROOT in tests). */
  cgroupRoot?: string;
  /** The cgroup every VM's cgroup is made under. Default `banger`. */
  parentCgroup?: string;
  /** The daemon's uid. Default process.getuid(). */
  uid?: number;
}

/** A usable jailer: its binary, the VMM user's ids, where cgroups live. */
interface Jail {
  bin: string;
  owner: Owner;
  chrootBase: string;
  cgroupRoot: string;
  parentCgroup: string;
}

const INSTALL_HINT =
  'install firecracker (see docs/firecracker.md) or set firecracker_bin, or use vmm = "qemu"';

export class FirecrackerDriver implements VmmDriver {
  readonly name = 'firecracker' as const;
  readonly capabilities = FIRECRACKER_CAPABILITIES;
  private readonly opts: FirecrackerDriverOptions;

  constructor(opts: FirecrackerDriverOptions = {}) {
    this.opts = opts;
  }

  private get bin(): string {
    return this.opts.bin ?? 'firecracker';
  }

  binary(): string | undefined {
    return findBinary(this.bin, this.opts.which);
  }

  /**
   * The jailer banger will start VMs through, or why not: none is found, the
   * daemon is not root (the jailer needs root), or vmm_user is root. A jailer
   * that is configured but missing, or a vmm_user that does not exist, is an
   * error, never a silent unjailed VMM.
   */
  jailer(): { jail?: Jail; reason: string } {
    const o = this.opts.jailer;
    if (!o) return { reason: 'not configured' };
    if (o.bin === 'off') return { reason: 'jailer_bin = "off"' };
    let bin: string | undefined;
    if (o.bin) {
      bin = findBinary(o.bin, this.opts.which);
      if (!bin)
        throw new BangerError('tool_missing', `jailer_bin '${o.bin}' not found`, {
          hint: 'install the jailer from the Firecracker release next to firecracker, or set jailer_bin = "off"',
        });
    } else {
      const fc = this.binary();
      const next = fc ? path.join(path.dirname(fs.realpathSync(fc)), 'jailer') : undefined;
      const beside = fc ? path.join(path.dirname(fc), 'jailer') : undefined;
      bin = [beside, next].find((p) => p !== undefined && isExecutable(p));
      if (!bin) return { reason: `no jailer next to ${fc ?? this.bin}` };
    }
    if ((o.uid ?? process.getuid?.() ?? 0) !== 0)
      return { reason: 'the daemon is not root (the jailer needs root)' };
    if (o.vmmUser === 'root') return { reason: 'vmm_user = "root"' };
    const user = lookupUser(o.vmmUser);
    if (!user)
      throw new BangerError('precondition', `vmm_user '${o.vmmUser}' does not exist on this host`, {
        hint: `create it (sudo useradd --system --no-create-home --shell /usr/sbin/nologin ${o.vmmUser}) or set vmm_user in config.toml`,
      });
    return {
      jail: {
        bin,
        owner: { uid: user.uid, gid: user.gid },
        chrootBase: o.chrootBase,
        cgroupRoot: o.cgroupRoot ?? process.env.BANGER_CGROUP_ROOT ?? '/sys/fs/cgroup',
        parentCgroup: o.parentCgroup ?? 'banger',
      },
      reason: `${bin}, as ${o.vmmUser} (uid ${user.uid})`,
    };
  }

  sandbox(): { bin?: string; detail: string } {
    const r = this.jailer();
    return { bin: r.jail?.bin, detail: r.reason };
  }

  /** The jail directory and root of a VM (whether or not it exists). */
  private jailPaths(vmId: string): { dir: string; root: string } | undefined {
    const o = this.opts.jailer;
    if (!o) return undefined;
    const at = { chrootBase: o.chrootBase, firecrackerBin: this.bin, id: vmId };
    try {
      return { dir: jailDir(at), root: jailRoot(at) };
    } catch {
      return undefined;
    }
  }

  /** The version as printed, e.g. `1.10.1`. */
  async version(): Promise<string> {
    const bin = requireBinary(this.bin, INSTALL_HINT, this.opts.which);
    return probeVersion(bin, (out) => parseFirecrackerVersion(out)?.text, {
      what: 'firecracker',
      hint: 'check that firecracker_bin points at a Firecracker release',
      env: this.opts.env,
    });
  }

  /** Debian's kernels find virtio devices through ACPI, which older releases lack. */
  versionWarning(versionLine: string): { detail: string; hint: string } | undefined {
    const v = parseFirecrackerVersion(versionLine);
    if (!v || versionAtLeast(v, ACPI_VIRTIO_MIN)) return undefined;
    return {
      detail: `older than ${ACPI_VIRTIO_MIN.text}, which Debian kernels need (virtio devices via ACPI)`,
      hint: `install Firecracker ${ACPI_VIRTIO_MIN.text} or newer`,
    };
  }

  /**
   * KVM only; with a kernel: KVM access (the device kvmDevicePath() names),
   * the Firecracker version, and whether this Firecracker can boot this kernel.
   */
  async preflight(input: PreflightInput): Promise<void> {
    if (input.accel !== 'kvm') {
      throw new BangerError('precondition', `firecracker needs KVM, but ${input.accelReason}`, {
        hint: 'set vmm = "qemu" in config.toml to use software emulation',
      });
    }
    if (!input.kernel) return;
    await checkFirecrackerCompat({
      kernel: {
        name: input.kernel.name,
        path: input.kernel.path,
        features: input.kernel.features ?? { virtioMmioCmdline: false },
      },
      version: await this.version(),
    });
  }

  socketPaths(vm: Pick<LaunchSpec, 'dir' | 'agentSocket'>): string[] {
    let jailed = false;
    try {
      jailed = this.jailer().jail !== undefined;
    } catch {
      // reported when the VM starts
    }
    const j = jailed ? this.jailPaths(path.basename(vm.dir)) : undefined;
    if (j) return [hostPathInJail(j.root, '/fc.sock'), hostPathInJail(j.root, '/agent.sock')];
    return [apiSocketPath(vm.dir), vm.agentSocket];
  }

  private pollMs(): number {
    return this.opts.pollMs ?? 25;
  }

  private api(h: VmHandle): ReturnType<typeof api> {
    return api(h.controlSocket, vmRef(h), { timeoutMs: this.opts.apiTimeoutMs });
  }

  /** Spawn a fresh Firecracker for spec and send `requests` in order (launch.ts). */
  private launch(
    bin: string,
    spec: LaunchSpec,
    requests: FcRequest[],
    signal?: AbortSignal,
    jailed?: { args: string[]; apiSocket: string; agentSocket: string },
  ) {
    return launchFirecracker({
      bin,
      spec,
      requests,
      jailed,
      env: this.opts.env,
      installHint: INSTALL_HINT,
      socketTimeoutMs: this.opts.socketTimeoutMs ?? 5_000,
      apiTimeoutMs: this.opts.apiTimeoutMs,
      killWaitMs: this.opts.killWaitMs ?? KILL_WAIT_MS,
      pollMs: this.pollMs(),
      signal,
    });
  }

  async start(spec: LaunchSpec, signal?: AbortSignal): Promise<VmHandle> {
    const bin = requireBinary(this.bin, INSTALL_HINT, this.opts.which);
    if (spec.accel !== 'kvm') {
      throw new BangerError(
        'precondition',
        `vm '${spec.name}' asks for accel ${spec.accel}, but firecracker runs only with KVM`,
        {
          hint: 'use vmm = "qemu" for software emulation',
        },
      );
    }
    await checkLaunchKernel(spec);
    const { jail } = this.jailer();
    if (jail) return this.startJailed(bin, jail, spec, undefined, signal);
    const sock = apiSocketPath(spec.dir);
    checkSocketPath(spec, sock, 'API socket');
    // Build (and so validate) every request before anything is spawned.
    return this.launch(bin, spec, launchRequests(spec, this.reqOpts(spec)), signal);
  }

  private reqOpts(spec: LaunchSpec): LaunchRequestOptions {
    return {
      guestCid: this.opts.guestCid,
      serialOutPath: this.opts.serialToConsoleLog ? spec.consoleLog : undefined,
    };
  }

  /**
   * Through the jailer: a fresh jail with the VM's files linked in, the
   * jailer execs Firecracker in it as vmm_user (same pid: no --daemonize,
   * no new pid namespace, so the handle is Firecracker's), every request
   * names paths inside the jail. A boot sends the configuration; a restore
   * (`snapshot`) links the saved files in and sends the snapshot load.
   */
  private async startJailed(
    fcBin: string,
    jail: Jail,
    spec: LaunchSpec,
    snapshot: { files: SnapshotFiles; paused: boolean } | undefined,
    signal?: AbortSignal,
  ): Promise<VmHandle> {
    const at = { chrootBase: jail.chrootBase, firecrackerBin: fcBin, id: spec.vmId };
    const root = jailRoot(at);
    const dir = jailDir(at);
    const plan: JailPlan = jailPlan(spec, root, { consoleLogInJail: this.opts.serialToConsoleLog });
    checkSocketPath(spec, plan.hostApiSocket, 'API socket');
    checkSocketPath(spec, plan.hostAgentSocket, 'vsock socket');
    const cgroups = cgroupV2Memory(jail.cgroupRoot) ? vmCgroups(spec) : undefined;
    const args = jailerArgv({
      jailerBin: jail.bin,
      firecrackerBin: fcBin,
      id: spec.vmId,
      uid: jail.owner.uid,
      gid: jail.owner.gid,
      chrootBase: jail.chrootBase,
      parentCgroup: jail.parentCgroup,
      cgroups,
    });
    const requests = snapshot
      ? [
          snapshotLoad({
            snapshotPath: JAIL_SNAPSHOT.state,
            memFilePath: JAIL_SNAPSHOT.mem,
            resume: !snapshot.paused,
            tap: spec.net?.tap,
            vsockPath: plan.spec.agentSocket,
          }),
        ]
      : launchRequests(plan.spec, this.reqOpts(plan.spec));
    // A live Firecracker in this jail is refused before the jail is rebuilt under it.
    await clearStaleSockets(spec, plan.hostApiSocket, plan.hostAgentSocket);
    const cgroupDir = cgroups
      ? jailCgroupDir(jail.cgroupRoot, jail.parentCgroup, spec.vmId)
      : undefined;
    removeJail(dir, cgroupDir);
    prepareJail(dir, root, plan, jail.owner);
    const linked = snapshot
      ? [
          [snapshot.files.statePath, hostPathInJail(root, JAIL_SNAPSHOT.state)],
          [snapshot.files.memPath, hostPathInJail(root, JAIL_SNAPSHOT.mem)],
        ]
      : [];
    try {
      for (const [from, to] of linked) linkInto(from!, to!, jail.owner, false);
      const handle = await this.launch(jail.bin, spec, requests, signal, {
        args,
        apiSocket: plan.hostApiSocket,
        agentSocket: plan.hostAgentSocket,
      });
      // Loaded: Firecracker has what it needs; the links would only keep the files' space.
      for (const [, to] of linked) fs.rmSync(to!, { force: true });
      return handle;
    } catch (e) {
      removeJail(dir, cgroupDir);
      throw e;
    }
  }

  /**
   * The agent listens on a vsock port; the host end is Firecracker's Unix
   * socket (in the VM's jail when it runs jailed) and a CONNECT handshake.
   */
  agentChannel(vm: Pick<LaunchSpec, 'name' | 'dir' | 'agentSocket'>): AgentChannel {
    const jail = this.jailPaths(path.basename(vm.dir));
    const socket = (): string => {
      const inJail = jail ? hostPathInJail(jail.root, '/agent.sock') : undefined;
      return inJail && fs.existsSync(jail!.root) ? inJail : vm.agentSocket;
    };
    return {
      dial: (signal) =>
        connectVsock(socket(), AGENT_VSOCK_PORT, {
          vmName: vm.name,
          timeoutMs: 2000,
          signal,
        }),
      retryAllFailures: true,
    };
  }

  /** Firecracker's own start-up failures are reported by start(); its log has nothing more to add. */
  diagnoseExit(): BangerError | undefined {
    return undefined;
  }

  private describe(h: VmHandle, timeoutMs: number): Promise<InstanceInfo | undefined> {
    return describeAt(h.controlSocket, vmRef(h), timeoutMs);
  }

  private waitGone(h: VmHandle, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return waitGone(h, timeoutMs, { signal, what: what(h), pollMs: this.pollMs() * 2 });
  }

  async stop(h: VmHandle, opts: StopOptions): Promise<{ graceful: boolean }> {
    const started = Date.now();
    if (!vmmAlive(h)) {
      this.cleanupAfterExit(h);
      return { graceful: true };
    }
    const client = this.api(h);
    const budget = (): number => Math.max(0, opts.timeoutMs - (Date.now() - started));
    const info = await this.describe(h, Math.min(2_000, Math.max(1, budget())));
    let asked = false;
    if (info?.state !== 'Not started') {
      try {
        // A paused guest cannot see the key press.
        if (info?.state === 'Paused')
          await client.call(resumeVm(), { timeoutMs: Math.max(1, budget()), signal: opts.signal });
        await client.call(sendCtrlAltDel(), {
          timeoutMs: Math.max(1, Math.min(2_000, budget())),
          signal: opts.signal,
        });
        asked = true;
      } catch (e) {
        if (e instanceof BangerError && e.code === 'cancelled') throw e;
        // API gone or refused: nothing graceful left to try.
      }
    }
    if (asked && (await this.waitGone(h, budget(), opts.signal))) {
      this.cleanupAfterExit(h);
      return { graceful: true };
    }
    await killVmm(h, what(h), this.opts.killWaitMs ?? KILL_WAIT_MS);
    this.cleanupAfterExit(h);
    return { graceful: false };
  }

  async kill(h: VmHandle, signal: NodeJS.Signals): Promise<void> {
    await deliverSignal(h, signal, what(h));
    if (!vmmAlive(h)) this.cleanupAfterExit(h);
  }

  /**
   * `running` / `paused` from Firecracker's instance info; a live process whose
   * API does not answer (busy, or a daemon died mid-start) counts as running so
   * it is stopped rather than leaked.
   */
  async status(h: VmHandle): Promise<VmmStatus> {
    if (!vmmAlive(h)) return 'stopped';
    const info = await this.describe(h, 1_000);
    if (!vmmAlive(h)) return 'stopped';
    return info?.state === 'Paused' ? 'paused' : 'running';
  }

  /** `PATCH /vm {state: Paused}` (capabilities.pauseResume). */
  async pause(h: VmHandle): Promise<void> {
    await this.api(h).call(pauseVm());
  }

  /** The disk file grew on the host: `PATCH /drives/{id}` makes Firecracker and the guest see it. */
  async resizeDisk(h: VmHandle, disk: Pick<DiskSpec, 'id' | 'path'>): Promise<void> {
    await this.api(h).call(driveRescan(disk));
  }

  /** `PATCH /vm {state: Resumed}`. */
  async resume(h: VmHandle): Promise<void> {
    await this.api(h).call(resumeVm());
  }

  /** `PUT /snapshot/create` (Full) of a paused VM (capabilities.snapshot). */
  async save(h: VmHandle, files: SnapshotFiles, signal?: AbortSignal): Promise<void> {
    const jail = jailOfSocket(h.controlSocket);
    if (!jail) {
      await this.api(h).call(
        snapshotCreate({ snapshotPath: files.statePath, memFilePath: files.memPath }),
        { timeoutMs: 120_000, signal },
      );
      return;
    }
    // Jailed: Firecracker writes inside its jail; the files are moved out to where the daemon keeps them.
    const inJail = [
      hostPathInJail(jail.root, JAIL_SNAPSHOT.state),
      hostPathInJail(jail.root, JAIL_SNAPSHOT.mem),
    ] as const;
    try {
      await this.api(h).call(
        snapshotCreate({ snapshotPath: JAIL_SNAPSHOT.state, memFilePath: JAIL_SNAPSHOT.mem }),
        { timeoutMs: 120_000, signal },
      );
      moveOut(inJail[0], files.statePath);
      moveOut(inJail[1], files.memPath);
    } finally {
      for (const f of inJail) fs.rmSync(f, { force: true });
    }
  }

  /**
   * A fresh Firecracker, then `PUT /snapshot/load` with the VM's tap and
   * agent socket (a restored VM may get new ones); resumed unless `paused`.
   */
  async restore(
    spec: LaunchSpec,
    files: SnapshotFiles,
    opts: { paused?: boolean; signal?: AbortSignal } = {},
  ): Promise<VmHandle> {
    const bin = requireBinary(this.bin, INSTALL_HINT, this.opts.which);
    const { jail } = this.jailer();
    if (jail)
      return this.startJailed(
        bin,
        jail,
        spec,
        { files, paused: Boolean(opts.paused) },
        opts.signal,
      );
    checkSocketPath(spec, apiSocketPath(spec.dir), 'API socket');
    const load = snapshotLoad({
      snapshotPath: files.statePath,
      memFilePath: files.memPath,
      resume: !opts.paused,
      tap: spec.net?.tap,
      vsockPath: spec.agentSocket,
    });
    return this.launch(bin, spec, [load], opts.signal);
  }

  private cleanupAfterExit(h: VmHandle): void {
    removeApiSocket(h);
    const jail = jailOfSocket(h.controlSocket);
    if (jail) this.released(jail.id);
  }

  /**
   * The VMM of this VM is gone: its jail and cgroup go too (the lifecycle
   * calls this for a VMM that exited on its own, and before deleting a VM).
   */
  released(vmId: string): void {
    const j = this.jailPaths(vmId);
    if (!j) return;
    const o = this.opts.jailer!;
    let cgroupDir: string | undefined;
    try {
      cgroupDir = jailCgroupDir(
        o.cgroupRoot ?? process.env.BANGER_CGROUP_ROOT ?? '/sys/fs/cgroup',
        o.parentCgroup ?? 'banger',
        vmId,
      );
    } catch {
      cgroupDir = undefined;
    }
    removeJail(j.dir, cgroupDir);
  }
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export function createFirecrackerDriver(opts: FirecrackerDriverOptions = {}): FirecrackerDriver {
  return new FirecrackerDriver(opts);
}
