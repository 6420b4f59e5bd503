import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DISKS } from '../../guest/bootContract.js';
import { BangerError } from '../../errors.js';
import { lastLine, run, which } from '../../util/exec.js';
import { isProcessAlive, processStartTime } from '../../util/proc.js';
import type {
  LaunchSpec,
  StopOptions,
  VmHandle,
  VmmCapabilities,
  VmmDriver,
  VmmStatus,
} from '../driver.js';
import { buildQemuArgv } from './argv.js';
import { qmpOnce } from './qmp.js';
import { VM_FILES } from '../../vm/layout.js';

/**
 * QEMU microvm driver. Each VM is one qemu-system-x86_64 process started in
 * its own session (it outlives daemon restarts), controlled through QMP.
 */
export interface QemuDriverOptions {
  bin?: string;
  /** How long to wait for the QMP socket after spawn. */
  startTimeoutMs?: number;
}

export const QEMU_CAPABILITIES: VmmCapabilities = {
  accels: ['kvm', 'tcg'],
  kernelFormats: ['bzImage', 'elf'],
  agentTransport: 'virtio-serial',
  gracefulStop: 'acpi-powerdown',
  pauseResume: true,
  snapshot: false,
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Serial numbers the guest's /init looks for, by disk id. */
const SERIALS: Record<string, string> = Object.fromEntries(
  Object.entries(DISKS).map(([id, d]) => [id, d.serial]),
);

/** A fatal KVM problem in the VMM log, turned into an actionable error. */
export function kvmFailure(log: string): string | undefined {
  const m =
    /KVM internal error[^\n]*|kvm run failed[^\n]*|failed to initialize kvm[^\n]*|Could not access KVM kernel module[^\n]*/i.exec(
      log,
    );
  return m?.[0];
}

export class QemuDriver implements VmmDriver {
  readonly name = 'qemu' as const;
  readonly capabilities = QEMU_CAPABILITIES;

  constructor(private readonly opts: QemuDriverOptions = {}) {}

  binary(): string | undefined {
    return which(this.opts.bin ?? 'qemu-system-x86_64');
  }

  private bin(): string {
    const b = this.binary();
    if (!b) {
      throw new BangerError('tool_missing', `${this.opts.bin ?? 'qemu-system-x86_64'} not found`, {
        hint: 'sudo apt-get install qemu-system-x86, or set qemu_bin in config.toml',
      });
    }
    return b;
  }

  async version(): Promise<string> {
    const r = await run(this.bin(), ['--version'], { what: 'checking the QEMU version' });
    return /version ([0-9.]+)/.exec(r.stdout)?.[1] ?? lastLine(r.stdout);
  }

  qmpSocket(spec: Pick<LaunchSpec, 'dir'>): string {
    return path.join(spec.dir, VM_FILES.qmpSocket);
  }

  argv(spec: LaunchSpec): string[] {
    return buildQemuArgv(spec, { qmpSocket: this.qmpSocket(spec), diskSerials: SERIALS });
  }

  async start(spec: LaunchSpec, signal?: AbortSignal): Promise<VmHandle> {
    const bin = this.bin();
    const qmp = this.qmpSocket(spec);
    for (const s of [qmp, spec.agentSocket]) fs.rmSync(s, { force: true });
    const args = this.argv(spec);
    const logFd = fs.openSync(spec.vmmLog, 'a', 0o600);
    fs.writeSync(
      logFd,
      `--- ${new Date().toISOString()} ${bin} ${args.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ')}\n`,
    );
    const child = spawn(bin, args, {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      cwd: spec.dir,
    });
    fs.closeSync(logFd);
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    child.on('exit', (code, sig) => (exited = { code, signal: sig }));
    const spawnError = await new Promise<Error | undefined>((resolve) => {
      child.once('error', resolve);
      child.once('spawn', () => resolve(undefined));
    });
    if (spawnError || !child.pid)
      throw new BangerError(
        'vmm_failed',
        `cannot start QEMU for vm '${spec.name}': ${spawnError?.message ?? 'no pid'}`,
      );
    child.unref();
    const pid = child.pid;
    const pidStartTime = processStartTime(pid) ?? 0;
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 15_000);
    // QEMU creates its sockets during initialisation; QMP answering means it runs.
    for (;;) {
      if (exited) {
        const log = readTail(spec.vmmLog);
        const kvm = kvmFailure(log);
        if (kvm) throw kvmError(spec.name, kvm);
        throw new BangerError(
          'vmm_failed',
          `QEMU exited while starting vm '${spec.name}': ${lastLine(log) || `exit ${exited.code ?? exited.signal}`}`,
          {
            hint: `see ${spec.vmmLog}`,
          },
        );
      }
      if (signal?.aborted) {
        process.kill(pid, 'SIGKILL');
        throw new BangerError('cancelled', `starting vm '${spec.name}' was cancelled`);
      }
      if (fs.existsSync(qmp)) {
        try {
          await qmpOnce(qmp, 'query-status', undefined, 2000);
          break;
        } catch {
          // not ready yet
        }
      }
      if (Date.now() > deadline) {
        process.kill(pid, 'SIGKILL');
        throw new BangerError(
          'timeout',
          `QEMU for vm '${spec.name}' did not open its control socket within ${(this.opts.startTimeoutMs ?? 15_000) / 1000}s`,
          {
            hint: `see ${spec.vmmLog}`,
          },
        );
      }
      await sleep(20);
    }
    return { pid, pidStartTime, controlSocket: qmp };
  }

  async stop(handle: VmHandle, opts: StopOptions): Promise<{ graceful: boolean }> {
    if (!isProcessAlive(handle.pid, handle.pidStartTime)) return { graceful: true };
    try {
      await qmpOnce(handle.controlSocket, 'system_powerdown', undefined, 2000);
    } catch {
      // QMP gone: fall through to waiting / killing
    }
    const deadline = Date.now() + opts.timeoutMs;
    while (Date.now() < deadline) {
      if (!isProcessAlive(handle.pid, handle.pidStartTime)) return { graceful: true };
      if (opts.signal?.aborted) throw new BangerError('cancelled', 'stop was cancelled');
      await sleep(100);
    }
    await this.kill(handle, 'SIGKILL');
    return { graceful: false };
  }

  async kill(handle: VmHandle, signal: NodeJS.Signals): Promise<void> {
    if (!isProcessAlive(handle.pid, handle.pidStartTime)) return;
    try {
      process.kill(handle.pid, signal);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
      return;
    }
    if (signal === 'SIGKILL' || signal === 'SIGTERM' || signal === 'SIGINT') {
      const deadline = Date.now() + 10_000;
      while (isProcessAlive(handle.pid, handle.pidStartTime) && Date.now() < deadline)
        await sleep(20);
    }
  }

  async status(handle: VmHandle): Promise<VmmStatus> {
    if (!isProcessAlive(handle.pid, handle.pidStartTime)) return 'stopped';
    try {
      const r = (await qmpOnce(handle.controlSocket, 'query-status', undefined, 2000)) as {
        status?: string;
      };
      return r.status === 'paused' ? 'paused' : 'running';
    } catch {
      return 'running';
    }
  }
}

export function kvmError(vmName: string, line: string): BangerError {
  return new BangerError('vmm_failed', `vm '${vmName}' died under KVM (${line.trim()})`, {
    hint: 'KVM on this host cannot run the guest: set accel = "tcg" in config.toml (software emulation)',
  });
}

function readTail(file: string, bytes = 8192): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(bytes, size);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}
