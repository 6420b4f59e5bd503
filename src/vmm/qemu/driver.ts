import fs from 'node:fs';
import path from 'node:path';
import { DISKS } from '../../guest/bootContract.js';
import { BangerError } from '../../errors.js';
import { lastLine } from '../../util/exec.js';
import { dialUnix } from '../../util/socket.js';
import { sleep } from '../../util/sleep.js';
import type {
  AgentChannel,
  DiskSpec,
  LaunchSpec,
  PreflightInput,
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
  probeVersion,
  requireBinary,
  spawnVmm,
  vmmAlive,
  waitGone,
} from '../process.js';
import { blockResizeArgs, buildQemuArgv } from './argv.js';
import { lookupUser } from '../../util/users.js';
import { qmpOnce } from './qmp.js';

/**
 * QEMU microvm driver. Each VM is one qemu-system-x86_64 process started in
 * its own session (it outlives daemon restarts), controlled through QMP.
 */
export interface QemuDriverOptions {
  bin?: string;
  /** How long to wait for the QMP socket after spawn. */
  startTimeoutMs?: number;
  /** config `vmm_user`: who a root daemon's QEMU runs as ('root' = stay root). */
  vmmUser?: string;
}

/** File names inside a VM's directory that belong to this driver. */
export const QEMU_FILES = {
  qmpSocket: 'qmp.sock',
} as const;

export const QEMU_CAPABILITIES: VmmCapabilities = {
  accels: ['kvm', 'tcg'],
  kernelFormats: ['bzImage', 'elf'],
  agentTransport: 'virtio-serial',
  gracefulStop: 'acpi-powerdown',
  pauseResume: true,
  snapshot: false,
};

const DEFAULT_BIN = 'qemu-system-x86_64';
const INSTALL_HINT = 'sudo apt-get install qemu-system-x86, or set qemu_bin in config.toml';

/** Serial numbers the guest's /init looks for, by disk id. */
const SERIALS: Record<string, string> = Object.fromEntries(
  Object.entries(DISKS).map(([id, d]) => [id, d.serial]),
);

/** A fatal KVM problem in the VMM log (pure). */
export function kvmFailure(log: string): string | undefined {
  const m =
    /KVM internal error[^\n]*|kvm run failed[^\n]*|failed to initialize kvm[^\n]*|Could not access KVM kernel module[^\n]*/i.exec(
      log,
    );
  return m?.[0];
}

export function kvmError(vmName: string, line: string): BangerError {
  return new BangerError('vmm_failed', `vm '${vmName}' died under KVM (${line.trim()})`, {
    hint: 'KVM on this host cannot run the guest: set accel = "tcg" in config.toml (software emulation)',
  });
}

/** `qemu of vm '<id>'` for a handle (its control socket lives in vms/<id>/). */
const what = (h: VmHandle): string =>
  `QEMU of vm '${path.basename(path.dirname(h.controlSocket))}'`;

export class QemuDriver implements VmmDriver {
  readonly name = 'qemu' as const;
  readonly capabilities = QEMU_CAPABILITIES;

  constructor(private readonly opts: QemuDriverOptions = {}) {}

  binary(): string | undefined {
    return findBinary(this.opts.bin ?? DEFAULT_BIN);
  }

  async version(): Promise<string> {
    const bin = requireBinary(this.opts.bin ?? DEFAULT_BIN, INSTALL_HINT);
    return probeVersion(
      bin,
      (out) => /version ([0-9.]+)/.exec(out)?.[1] ?? (lastLine(out) || undefined),
      { what: 'QEMU', hint: INSTALL_HINT },
    );
  }

  versionWarning(): undefined {
    return undefined;
  }

  /** QEMU runs with either accelerator and boots bzImage and ELF kernels: nothing to refuse. */
  async preflight(_input: PreflightInput): Promise<void> {}

  qmpSocket(spec: Pick<LaunchSpec, 'dir'>): string {
    return path.join(spec.dir, QEMU_FILES.qmpSocket);
  }

  socketPaths(vm: Pick<LaunchSpec, 'dir' | 'agentSocket'>): string[] {
    return [this.qmpSocket(vm), vm.agentSocket];
  }

  argv(spec: LaunchSpec): string[] {
    return buildQemuArgv(spec, {
      qmpSocket: this.qmpSocket(spec),
      diskSerials: SERIALS,
      sandbox: true,
      runAs: this.runAs(),
    });
  }

  /**
   * The user QEMU drops to: only a root daemon drops (anyone else already runs
   * QEMU unprivileged), and only to a user that exists — a missing one is a
   * one-line error, not a silent root VMM.
   */
  private runAs(): string | undefined {
    const user = this.opts.vmmUser ?? 'banger-vmm';
    if ((process.getuid?.() ?? 0) !== 0 || user === 'root') return undefined;
    if (!lookupUser(user))
      throw new BangerError('precondition', `vmm_user '${user}' does not exist on this host`, {
        hint: `create it (sudo useradd --system --no-create-home --shell /usr/sbin/nologin ${user}) or set vmm_user in config.toml`,
      });
    return user;
  }

  async start(spec: LaunchSpec, signal?: AbortSignal): Promise<VmHandle> {
    const bin = requireBinary(this.opts.bin ?? DEFAULT_BIN, INSTALL_HINT);
    const qmp = this.qmpSocket(spec);
    for (const s of [qmp, spec.agentSocket]) fs.rmSync(s, { force: true });
    const args = this.argv(spec);
    const proc = await spawnVmm({
      bin,
      args,
      cwd: spec.dir,
      log: spec.vmmLog,
      installHint: INSTALL_HINT,
    });
    const handle: VmHandle = {
      pid: proc.pid,
      pidStartTime: proc.pidStartTime ?? -1,
      controlSocket: qmp,
    };
    const timeoutMs = this.opts.startTimeoutMs ?? 15_000;
    const deadline = Date.now() + timeoutMs;
    // QEMU creates its sockets during initialisation; QMP answering means it runs.
    for (;;) {
      const exited = proc.exited();
      if (exited || proc.pidStartTime === undefined) {
        const log = proc.logTail();
        const diagnosed = this.diagnoseExit(spec.name, log);
        if (diagnosed) throw diagnosed;
        throw new BangerError(
          'vmm_failed',
          `QEMU exited while starting vm '${spec.name}': ${lastLine(log) || `exit ${exited?.code ?? exited?.signal}`}`,
          { hint: `see ${spec.vmmLog}` },
        );
      }
      if (signal?.aborted) {
        await killVmm(handle, what(handle));
        throw new BangerError('cancelled', `starting vm '${spec.name}' was cancelled`);
      }
      if (fs.existsSync(qmp)) {
        try {
          await qmpOnce(qmp, 'query-status', undefined, 2000);
          return handle;
        } catch {
          // not ready yet
        }
      }
      if (Date.now() > deadline) {
        await killVmm(handle, what(handle));
        throw new BangerError(
          'timeout',
          `QEMU for vm '${spec.name}' did not open its control socket within ${timeoutMs / 1000}s`,
          { hint: `see ${spec.vmmLog}` },
        );
      }
      await sleep(20);
    }
  }

  /** The agent's virtio-serial port is a Unix socket QEMU listens on. */
  agentChannel(vm: Pick<LaunchSpec, 'agentSocket'>): AgentChannel {
    return { dial: (signal) => dialUnix(vm.agentSocket, signal), retryAllFailures: false };
  }

  diagnoseExit(vmName: string, vmmLogTail: string): BangerError | undefined {
    const kvm = kvmFailure(vmmLogTail);
    return kvm ? kvmError(vmName, kvm) : undefined;
  }

  async stop(handle: VmHandle, opts: StopOptions): Promise<{ graceful: boolean }> {
    if (!vmmAlive(handle)) return { graceful: true };
    try {
      await qmpOnce(handle.controlSocket, 'system_powerdown', undefined, 2000);
    } catch {
      // QMP gone: fall through to waiting / killing
    }
    if (
      await waitGone(handle, opts.timeoutMs, {
        signal: opts.signal,
        what: what(handle),
        pollMs: 100,
      })
    )
      return { graceful: true };
    await killVmm(handle, what(handle));
    return { graceful: false };
  }

  kill(handle: VmHandle, signal: NodeJS.Signals): Promise<void> {
    return deliverSignal(handle, signal, what(handle));
  }

  async status(handle: VmHandle): Promise<VmmStatus> {
    if (!vmmAlive(handle)) return 'stopped';
    try {
      const r = (await qmpOnce(handle.controlSocket, 'query-status', undefined, 2000)) as {
        status?: string;
      };
      return r.status === 'paused' ? 'paused' : 'running';
    } catch {
      return 'running';
    }
  }

  /** QMP `stop`: the vCPUs halt, the process stays. */
  async pause(handle: VmHandle): Promise<void> {
    await qmpOnce(handle.controlSocket, 'stop', undefined, 5000);
  }

  /**
   * The disk file grew on the host: QMP `block_resize` of the drive (the same
   * size, so QEMU only re-reads it) tells the guest's virtio-blk the new size.
   */
  async resizeDisk(
    handle: VmHandle,
    disk: Pick<DiskSpec, 'id' | 'path'>,
    sizeBytes: number,
  ): Promise<void> {
    await qmpOnce(
      handle.controlSocket,
      'block_resize',
      blockResizeArgs(disk.id, sizeBytes),
      10_000,
    );
  }

  /** QMP `cont`. */
  async resume(handle: VmHandle): Promise<void> {
    await qmpOnce(handle.controlSocket, 'cont', undefined, 5000);
  }
}
