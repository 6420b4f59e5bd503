import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../../errors.js';
import { lastLine } from '../../util/exec.js';
import { socketAnswers } from '../../util/socket.js';
import { sleep } from '../../util/sleep.js';
import type {
  AgentChannel,
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
  describeExit,
  findBinary,
  killVmm,
  KILL_WAIT_MS,
  probeVersion,
  requireBinary,
  settleExit,
  spawnVmm,
  vmmAlive,
  waitGone,
  type VmmProcess,
} from '../process.js';
import { FirecrackerApi } from './api.js';
import {
  ACPI_VIRTIO_MIN,
  checkFirecrackerCompat,
  parseFirecrackerVersion,
  readKernelFormat,
  versionAtLeast,
} from './compat.js';
import {
  checkSocketPath,
  describeInstance,
  isValidInstanceId,
  launchRequests,
  pauseVm,
  resumeVm,
  sendCtrlAltDel,
  snapshotCreate,
  snapshotLoad,
  type FcRequest,
  type InstanceInfo,
  type LaunchRequestOptions,
} from './requests.js';
import { AGENT_VSOCK_PORT, connectVsock, removeStaleSocket } from './vsock.js';

/**
 * The Firecracker VMM driver: one `firecracker --api-sock <vm dir>/fc.sock`
 * process per VM, detached into its own session so it outlives the daemon,
 * configured through its REST API (requests.ts) and stopped with
 * Ctrl+Alt+Del. The process is identified by pid + /proc start time so a
 * recycled pid is never signalled.
 */

/** File names inside a VM's directory that belong to this driver. */
export const FC_FILES = {
  apiSocket: 'fc.sock',
} as const;

export const apiSocketPath = (vmDir: string): string => path.join(vmDir, FC_FILES.apiSocket);

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

/** `firecracker of vm '<id>'` for a handle (its control socket lives in vms/<id>/). */
const what = (h: VmHandle): string =>
  `firecracker of vm '${path.basename(path.dirname(h.controlSocket))}'`;

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

  private api(socketPath: string, vmName: string, logPath?: string): FirecrackerApi {
    return new FirecrackerApi({ socketPath, vmName, logPath, timeoutMs: this.opts.apiTimeoutMs });
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
    await this.checkKernel(spec);
    const sock = apiSocketPath(spec.dir);
    checkSocketPath(spec, sock, 'API socket');
    const reqOpts: LaunchRequestOptions = {
      guestCid: this.opts.guestCid,
      serialOutPath: this.opts.serialToConsoleLog ? spec.consoleLog : undefined,
    };
    // Build (and so validate) every request before anything is spawned.
    return this.launch(bin, spec, launchRequests(spec, reqOpts), signal);
  }

  /** Spawn a fresh Firecracker for spec, send `requests` in order; on any failure leave nothing running. */
  private async launch(
    bin: string,
    spec: LaunchSpec,
    requests: FcRequest[],
    signal?: AbortSignal,
  ): Promise<VmHandle> {
    const sock = apiSocketPath(spec.dir);
    fs.mkdirSync(spec.dir, { recursive: true });
    await this.clearStaleSockets(spec, sock);

    const args = ['--api-sock', sock];
    if (isValidInstanceId(spec.vmId)) args.push('--id', spec.vmId);
    if (spec.extraArgs) args.push(...spec.extraArgs);
    const proc = await spawnVmm({
      bin,
      args,
      cwd: spec.dir,
      log: spec.vmmLog,
      env: this.opts.env,
      installHint: INSTALL_HINT,
    });
    const handle: VmHandle = {
      pid: proc.pid,
      pidStartTime: proc.pidStartTime ?? -1,
      controlSocket: sock,
    };
    try {
      await this.waitForSocket(spec, sock, proc, signal);
      if (proc.pidStartTime === undefined) throw await this.exitedEarly(spec, proc);
      const api = this.api(sock, spec.name, spec.vmmLog);
      for (const req of requests) {
        if (signal?.aborted) throw cancelled(spec);
        try {
          await api.call(req, { signal });
        } catch (e) {
          // A rejected call may be the VMM dying: report its last words rather than ECONNRESET.
          if (proc.exited() || !vmmAlive(handle)) throw await this.exitedEarly(spec, proc);
          throw e;
        }
      }
      return handle;
    } catch (e) {
      await killVmm(handle, what(handle), this.opts.killWaitMs ?? KILL_WAIT_MS);
      this.removeSockets(spec, sock);
      throw e;
    }
  }

  private async checkKernel(spec: LaunchSpec): Promise<void> {
    let format: string;
    try {
      format = (await readKernelFormat(spec.kernel.path)).format;
    } catch (e) {
      throw new BangerError(
        'not_found',
        `kernel ${spec.kernel.path} of vm '${spec.name}' cannot be read: ${(e as Error).message}`,
        {
          hint: 'check the kernel entry (banger kernel list)',
          cause: e,
        },
      );
    }
    if (format === 'bzImage') {
      throw new BangerError(
        'precondition',
        `firecracker needs an uncompressed ELF vmlinux; the kernel of vm '${spec.name}' is a bzImage (${spec.kernel.path})`,
        {
          hint: 'use a kernel entry with a vmlinux (banger kernel list) or vmm = "qemu"',
        },
      );
    }
    if (format !== 'elf') {
      throw new BangerError(
        'precondition',
        `firecracker needs an uncompressed ELF vmlinux; ${spec.kernel.path} of vm '${spec.name}' is not one`,
        {
          hint: 'use a kernel entry with a vmlinux (banger kernel list)',
        },
      );
    }
  }

  /** Refuse to start over a live Firecracker; remove sockets a dead one left behind. */
  private async clearStaleSockets(spec: LaunchSpec, sock: string): Promise<void> {
    // A process that is still exiting may accept a connection but never answers HTTP.
    if ((await socketAnswers(sock, 500)) && (await this.describeAt(sock, spec.name, 1_000))) {
      throw new BangerError(
        'conflict',
        `vm '${spec.name}' already has a firecracker answering on ${sock}`,
        {
          hint: `stop it first (banger vm stop ${spec.name})`,
        },
      );
    }
    this.removeSockets(spec, sock);
  }

  private removeSockets(spec: LaunchSpec, sock: string): void {
    for (const p of [sock, spec.agentSocket]) {
      try {
        removeStaleSocket(p);
      } catch {
        // not a socket: leave it, Firecracker will say what is wrong
      }
    }
  }

  private async waitForSocket(
    spec: LaunchSpec,
    sock: string,
    proc: VmmProcess,
    signal?: AbortSignal,
  ): Promise<void> {
    const timeoutMs = this.opts.socketTimeoutMs ?? 5_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (signal?.aborted) throw cancelled(spec);
      if (proc.exited()) throw await this.exitedEarly(spec, proc);
      if (await socketAnswers(sock, 500)) return;
      if (Date.now() > deadline) {
        const tail = proc.logTail();
        throw new BangerError(
          'timeout',
          `firecracker of vm '${spec.name}' did not open its API socket ${sock} within ${timeoutMs} ms${tail ? `; its log ends with: ${lastLine(tail)}` : ''}`,
          { hint: `see the VMM log ${spec.vmmLog}`, details: { logTail: tail } },
        );
      }
      await sleep(this.pollMs());
    }
  }

  private async exitedEarly(spec: LaunchSpec, proc: VmmProcess): Promise<BangerError> {
    // The exit status may arrive a moment after the API connection broke.
    const ex = await settleExit(proc);
    const tail = proc.logTail();
    return new BangerError(
      'vmm_failed',
      `firecracker of vm '${spec.name}' exited during startup (${describeExit(ex)})${tail ? `: ${lastLine(tail)}` : ''}`,
      { hint: `see the VMM log ${spec.vmmLog}`, details: { logTail: tail, exit: ex } },
    );
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
    return this.describeAt(
      h.controlSocket,
      path.basename(path.dirname(h.controlSocket)),
      timeoutMs,
    );
  }

  private async describeAt(
    sock: string,
    vmName: string,
    timeoutMs: number,
  ): Promise<InstanceInfo | undefined> {
    try {
      return await this.api(sock, vmName).call<InstanceInfo>(describeInstance(), { timeoutMs });
    } catch {
      return undefined;
    }
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
    const api = this.api(h.controlSocket, path.basename(path.dirname(h.controlSocket)));
    const budget = (): number => Math.max(0, opts.timeoutMs - (Date.now() - started));
    const info = await this.describe(h, Math.min(2_000, Math.max(1, budget())));
    let asked = false;
    if (info?.state !== 'Not started') {
      try {
        // A paused guest cannot see the key press.
        if (info?.state === 'Paused')
          await api.call(resumeVm(), { timeoutMs: Math.max(1, budget()), signal: opts.signal });
        await api.call(sendCtrlAltDel(), {
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
    await this.api(h.controlSocket, path.basename(path.dirname(h.controlSocket))).call(pauseVm());
  }

  /** `PATCH /vm {state: Resumed}`. */
  async resume(h: VmHandle): Promise<void> {
    await this.api(h.controlSocket, path.basename(path.dirname(h.controlSocket))).call(resumeVm());
  }

  /** `PUT /snapshot/create` (Full) of a paused VM (capabilities.snapshot). */
  async save(h: VmHandle, files: SnapshotFiles, signal?: AbortSignal): Promise<void> {
    await this.api(h.controlSocket, path.basename(path.dirname(h.controlSocket))).call(
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
    try {
      removeStaleSocket(h.controlSocket);
    } catch {
      // not a socket: not ours
    }
  }
}

export function createFirecrackerDriver(opts: FirecrackerDriverOptions = {}): FirecrackerDriver {
  return new FirecrackerDriver(opts);
}

const cancelled = (spec: LaunchSpec): BangerError =>
  new BangerError('cancelled', `starting vm '${spec.name}' was cancelled`);
