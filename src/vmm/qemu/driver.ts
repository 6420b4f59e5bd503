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
  probeVersion,
  requireBinary,
  spawnVmm,
  vmmAlive,
  waitGone,
  type VmmProcess,
} from '../process.js';
import { blockResizeArgs, buildQemuArgv } from './argv.js';
import { lookupUser } from '../../util/users.js';
import { processConfinement } from '../../util/proc.js';
import { QmpClient, qmpOnce } from './qmp.js';
import { awaitMigration, restoreCommands, runCommands, saveCommands } from './migrate.js';
import {
  checkShmRoom,
  DEFAULT_SHM_DIR,
  migrationDir,
  ramFdPath,
  ramFilePath,
  receiveToFile,
  sendFile,
  sparseCopy,
  unlinkRamFile,
} from './ramFile.js';

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
  /** The tmpfs guest RAM files live on (default /dev/shm). */
  shmDir?: string;
  /** How long a save or restore migration may take (default 120 s). */
  migrateTimeoutMs?: number;
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
  snapshot: true,
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

  argv(spec: LaunchSpec, o: { incoming?: boolean } = {}): string[] {
    return buildQemuArgv(spec, {
      qmpSocket: this.qmpSocket(spec),
      diskSerials: SERIALS,
      sandbox: true,
      runAs: this.runAs(),
      ramFile: this.ramFile(spec.vmId),
      incoming: o.incoming,
    });
  }

  /** Where a VM's guest RAM is mapped from (removed once QEMU runs). */
  ramFile(vmId: string): string {
    return ramFilePath(this.opts.shmDir ?? DEFAULT_SHM_DIR, vmId);
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
    checkShmRoom(spec.name, this.opts.shmDir ?? DEFAULT_SHM_DIR, spec.memoryMib);
    const ramFile = this.ramFile(spec.vmId);
    unlinkRamFile(ramFile); // a stale file of a VMM that died before unlinking it
    try {
      const { handle } = await this.launch(bin, spec, this.argv(spec), signal);
      return handle;
    } finally {
      // QEMU has it mapped (or failed): its memory now lives exactly as long as the process.
      unlinkRamFile(ramFile);
    }
  }

  /**
   * Spawn QEMU with args and wait until QMP answers; a QEMU that exits, a
   * cancel or a timeout is one error (and no process left).
   */
  private async launch(
    bin: string,
    spec: LaunchSpec,
    args: string[],
    signal?: AbortSignal,
  ): Promise<{ handle: VmHandle; proc: VmmProcess }> {
    const qmp = this.qmpSocket(spec);
    for (const s of [qmp, spec.agentSocket]) fs.rmSync(s, { force: true });
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
          return { handle, proc };
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
        running?: boolean;
      };
      // Not running: paused, or stopped after a save (postmigrate) or before a restore (inmigrate).
      return r.running === false ? 'paused' : 'running';
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

  /**
   * Save a paused VM: its device state through a migration to a socket the
   * daemon listens on (RAM left out: x-ignore-shared), then a sparse copy of
   * its RAM file. The VM stays paused (runstate postmigrate; `cont` resumes
   * it and re-activates its disks).
   */
  async save(handle: VmHandle, files: SnapshotFiles, signal?: AbortSignal): Promise<void> {
    // The caller names the VM in its own error; this names the process.
    const label = `saving the state of QEMU (pid ${handle.pid})`;
    const ramFd = ramFdPath(handle.pid, this.opts.shmDir ?? DEFAULT_SHM_DIR);
    const uid = processConfinement(handle.pid)?.uid;
    // QEMU runs as another user after -runas: it must be able to connect.
    const mig = migrationDir(
      this.opts.shmDir ?? DEFAULT_SHM_DIR,
      uid !== undefined && uid !== process.getuid?.() ? { uid, gid: -1 } : undefined,
    );
    let qmp: QmpClient | undefined;
    try {
      const recv = await receiveToFile(
        mig.socket,
        files.statePath,
        uid !== undefined ? { uid, gid: -1 } : undefined,
      );
      try {
        qmp = await QmpClient.connect(handle.controlSocket, 5000);
        await runCommands(qmp, saveCommands(mig.socket));
        await awaitMigration(qmp, {
          what: label,
          timeoutMs: this.opts.migrateTimeoutMs ?? 120_000,
          signal,
          failure: recv.error,
        });
        await recv.done;
      } finally {
        recv.close();
      }
      await sparseCopy(ramFd, files.memPath, 'copying the guest memory');
    } catch (e) {
      for (const f of [files.statePath, files.memPath]) fs.rmSync(f, { force: true });
      throw e;
    } finally {
      qmp?.close();
      mig.remove();
    }
  }

  /**
   * A new QEMU for spec from saved files: the RAM copied sparsely onto tmpfs
   * and mapped like a boot's, the same command line plus `-incoming defer`,
   * the device state streamed in over a socket QEMU listens on. Resolves once
   * the state is loaded and the RAM file unlinked; running unless `paused`.
   */
  async restore(
    spec: LaunchSpec,
    files: SnapshotFiles,
    opts: { paused?: boolean; signal?: AbortSignal } = {},
  ): Promise<VmHandle> {
    const bin = requireBinary(this.opts.bin ?? DEFAULT_BIN, INSTALL_HINT);
    const label = `restoring vm '${spec.name}'`;
    for (const f of [files.statePath, files.memPath])
      if (!fs.existsSync(f))
        throw new BangerError('not_found', `${label}: ${f} is missing`, {
          hint: 'the saved state is gone; stop the VM to discard it',
        });
    checkShmRoom(spec.name, this.opts.shmDir ?? DEFAULT_SHM_DIR, spec.memoryMib);
    const ramFile = this.ramFile(spec.vmId);
    const args = this.argv(spec, { incoming: true });
    const runAs = this.runAs();
    const owner = runAs ? lookupUser(runAs) : undefined;
    const mig = migrationDir(
      this.opts.shmDir ?? DEFAULT_SHM_DIR,
      owner ? { uid: owner.uid, gid: owner.gid } : undefined,
    );
    let handle: VmHandle | undefined;
    let qmp: QmpClient | undefined;
    try {
      await sparseCopy(files.memPath, ramFile, `${label}: copying its memory`);
      handle = (await this.launch(bin, spec, args, opts.signal)).handle;
      qmp = await QmpClient.connect(handle.controlSocket, 5000);
      await runCommands(qmp, restoreCommands(mig.socket));
      await sendFile(mig.socket, files.statePath, { timeoutMs: 10_000, what: label });
      await awaitMigration(qmp, {
        what: label,
        timeoutMs: this.opts.migrateTimeoutMs ?? 120_000,
        signal: opts.signal,
      });
      await waitRunState(qmp, (st) => st !== 'inmigrate', label);
      unlinkRamFile(ramFile);
      if (!opts.paused) await qmp.execute('cont', undefined, 5000);
      return handle;
    } catch (e) {
      if (handle) await killVmm(handle, what(handle)).catch(() => undefined);
      throw e;
    } finally {
      qmp?.close();
      unlinkRamFile(ramFile);
      mig.remove();
    }
  }
}

/** Poll query-status until ok(status) (the incoming migration's bottom half sets it). */
async function waitRunState(
  qmp: QmpClient,
  ok: (status: string) => boolean,
  label: string,
  timeoutMs = 10_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = (await qmp.execute('query-status', undefined, 5000)) as { status?: string };
    const st = r.status ?? 'unknown';
    if (ok(st)) return st;
    if (Date.now() > deadline)
      throw new BangerError('timeout', `${label}: QEMU stayed '${st}' for ${timeoutMs / 1000}s`);
    await sleep(10);
  }
}
