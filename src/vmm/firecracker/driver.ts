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
import {
  api,
  apiSocketPath,
  describeAt,
  launchFirecracker,
  processLabel as what,
  removeApiSocket,
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
    return [apiSocketPath(vm.dir), vm.agentSocket];
  }

  private pollMs(): number {
    return this.opts.pollMs ?? 25;
  }

  private api(h: VmHandle): ReturnType<typeof api> {
    return api(h.controlSocket, vmRef(h), { timeoutMs: this.opts.apiTimeoutMs });
  }

  /** Spawn a fresh Firecracker for spec and send `requests` in order (launch.ts). */
  private launch(bin: string, spec: LaunchSpec, requests: FcRequest[], signal?: AbortSignal) {
    return launchFirecracker({
      bin,
      spec,
      requests,
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
    const sock = apiSocketPath(spec.dir);
    checkSocketPath(spec, sock, 'API socket');
    const reqOpts: LaunchRequestOptions = {
      guestCid: this.opts.guestCid,
      serialOutPath: this.opts.serialToConsoleLog ? spec.consoleLog : undefined,
    };
    // Build (and so validate) every request before anything is spawned.
    return this.launch(bin, spec, launchRequests(spec, reqOpts), signal);
  }

  /** The agent listens on a vsock port; the host end is Firecracker's Unix socket and a CONNECT handshake. */
  agentChannel(vm: Pick<LaunchSpec, 'name' | 'agentSocket'>): AgentChannel {
    return {
      dial: (signal) =>
        connectVsock(vm.agentSocket, AGENT_VSOCK_PORT, {
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

  kill(h: VmHandle, signal: NodeJS.Signals): Promise<void> {
    return deliverSignal(h, signal, what(h));
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
    await this.api(h).call(
      snapshotCreate({ snapshotPath: files.statePath, memFilePath: files.memPath }),
      { timeoutMs: 120_000, signal },
    );
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
  }
}

export function createFirecrackerDriver(opts: FirecrackerDriverOptions = {}): FirecrackerDriver {
  return new FirecrackerDriver(opts);
}

/** The VM id of a handle: its control socket lives in vms/<id>/. */
const vmRef = (h: VmHandle): string => path.basename(path.dirname(h.controlSocket));
