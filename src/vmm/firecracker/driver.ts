import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BangerError, isErrno } from '../../errors.js';
import { run, which as whichOnPath } from '../../util/exec.js';
import { isProcessAlive, processStartTime, processState } from '../../util/proc.js';
import type {
  LaunchSpec,
  StopOptions,
  VmHandle,
  VmmCapabilities,
  VmmDriver,
  VmmStatus,
} from '../driver.js';
import { FirecrackerApi } from './api.js';
import { parseFirecrackerVersion, readKernelFormat } from './compat.js';
import {
  checkSocketPath,
  describeInstance,
  isValidInstanceId,
  launchRequests,
  pauseVm,
  resumeVm,
  sendCtrlAltDel,
  snapshotCreate,
  type InstanceInfo,
  type LaunchRequestOptions,
} from './requests.js';
import { removeStaleSocket } from './vsock.js';
import { socketAnswers } from '../../util/socket.js';

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
  /** How long to wait for the process to vanish after SIGKILL. Default 5 s. */
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The VM id a handle belongs to: its control socket lives in vms/<id>/. */
const vmRef = (h: VmHandle): string => path.basename(path.dirname(h.controlSocket));

export class FirecrackerDriver implements VmmDriver {
  readonly name = 'firecracker' as const;
  readonly capabilities = FIRECRACKER_CAPABILITIES;
  private readonly opts: FirecrackerDriverOptions;

  constructor(opts: FirecrackerDriverOptions = {}) {
    this.opts = opts;
  }

  binary(): string | undefined {
    return (this.opts.which ?? whichOnPath)(this.opts.bin ?? 'firecracker');
  }

  private requireBinary(): string {
    const bin = this.binary();
    if (!bin) {
      throw new BangerError('tool_missing', `${this.opts.bin ?? 'firecracker'} not found`, {
        hint: 'install firecracker (see docs/firecracker.md) or set firecracker_bin, or use vmm = "qemu"',
      });
    }
    return bin;
  }

  /** The version as printed, e.g. `1.10.1`. */
  async version(): Promise<string> {
    const bin = this.requireBinary();
    const r = await run(bin, ['--version'], {
      what: 'checking the firecracker version',
      timeoutMs: 10_000,
      env: this.opts.env,
    });
    const v = parseFirecrackerVersion(r.stdout) ?? parseFirecrackerVersion(r.stderr);
    if (!v) {
      throw new BangerError(
        'tool_failed',
        `cannot tell the version of ${bin} from '${r.stdout.split('\n')[0]}'`,
        {
          hint: 'check that firecracker_bin points at a Firecracker release',
        },
      );
    }
    return v.text;
  }

  private pollMs(): number {
    return this.opts.pollMs ?? 25;
  }

  private api(socketPath: string, vmName: string, logPath?: string): FirecrackerApi {
    return new FirecrackerApi({ socketPath, vmName, logPath, timeoutMs: this.opts.apiTimeoutMs });
  }

  async start(spec: LaunchSpec, signal?: AbortSignal): Promise<VmHandle> {
    const bin = this.requireBinary();
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
    const requests = launchRequests(spec, reqOpts);

    fs.mkdirSync(spec.dir, { recursive: true });
    await this.clearStaleSockets(spec, sock);

    const args = ['--api-sock', sock];
    if (isValidInstanceId(spec.vmId)) args.push('--id', spec.vmId);
    if (spec.extraArgs) args.push(...spec.extraArgs);

    fs.mkdirSync(path.dirname(spec.vmmLog), { recursive: true });
    const logFd = fs.openSync(spec.vmmLog, 'a');
    let logStart: number;
    let child: ChildProcess;
    try {
      fs.writeSync(
        logFd,
        `[banger] ${new Date().toISOString()} starting ${[bin, ...args].join(' ')}\n`,
      );
      logStart = fs.fstatSync(logFd).size;
      child = spawn(bin, args, {
        cwd: spec.dir,
        env: this.opts.env ?? process.env,
        detached: true,
        stdio: ['ignore', logFd, logFd],
      });
    } finally {
      fs.closeSync(logFd);
    }
    child.unref();

    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let spawnError: Error | undefined;
    child.once('exit', (code, sig) => (exit = { code, signal: sig }));
    child.once('error', (e) => (spawnError = e));

    const pid = child.pid;
    if (pid === undefined) {
      await new Promise((r) => setImmediate(r));
      throw this.spawnFailed(bin, spawnError);
    }
    const pidStartTime = processStartTime(pid);
    const handle: VmHandle = { pid, pidStartTime: pidStartTime ?? -1, controlSocket: sock };

    try {
      await this.waitForSocket(spec, sock, () => exit, logStart, signal);
      if (pidStartTime === undefined) throw await this.exitedEarly(spec, () => exit, logStart);
      const api = this.api(sock, spec.name, spec.vmmLog);
      for (const req of requests) {
        if (signal?.aborted) throw cancelled(spec);
        try {
          await api.call(req, { signal });
        } catch (e) {
          // A rejected call may be the VMM dying: report its last words rather than ECONNRESET.
          if (exit || !isProcessAlive(pid, pidStartTime))
            throw await this.exitedEarly(spec, () => exit, logStart);
          throw e;
        }
      }
      return handle;
    } catch (e) {
      await this.killAndWait(handle, pidStartTime);
      this.removeSockets(spec, sock);
      throw e;
    }
  }

  private spawnFailed(bin: string, e: Error | undefined): BangerError {
    if (e && isErrno(e, 'ENOENT')) {
      return new BangerError('tool_missing', `${bin} not found`, {
        hint: 'install firecracker (see docs/firecracker.md) or set firecracker_bin',
      });
    }
    if (e && isErrno(e, 'EACCES')) {
      return new BangerError('permission', `${bin} is not executable`, { hint: `chmod +x ${bin}` });
    }
    return new BangerError('vmm_failed', `cannot start ${bin}: ${e?.message ?? 'unknown error'}`, {
      cause: e,
    });
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
    exited: () => { code: number | null; signal: NodeJS.Signals | null } | undefined,
    logStart: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const timeoutMs = this.opts.socketTimeoutMs ?? 5_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (signal?.aborted) throw cancelled(spec);
      if (exited()) throw await this.exitedEarly(spec, exited, logStart);
      if (await socketAnswers(sock, 500)) return;
      if (Date.now() > deadline) {
        const tail = readLogTail(spec.vmmLog, logStart);
        throw new BangerError(
          'timeout',
          `firecracker of vm '${spec.name}' did not open its API socket ${sock} within ${timeoutMs} ms${tail ? `; its log ends with: ${lastLine(tail)}` : ''}`,
          { hint: `see the VMM log ${spec.vmmLog}`, details: { logTail: tail } },
        );
      }
      await sleep(this.pollMs());
    }
  }

  private async exitedEarly(
    spec: LaunchSpec,
    exited: () => { code: number | null; signal: NodeJS.Signals | null } | undefined,
    logStart: number,
  ): Promise<BangerError> {
    // The exit status may arrive a moment after the API connection broke.
    for (let i = 0; i < 20 && !exited(); i++) await sleep(10);
    const ex = exited();
    const tail = readLogTail(spec.vmmLog, logStart);
    const how = ex ? (ex.signal ? `killed by ${ex.signal}` : `exit code ${ex.code}`) : 'exited';
    return new BangerError(
      'vmm_failed',
      `firecracker of vm '${spec.name}' exited during startup (${how})${tail ? `: ${lastLine(tail)}` : ''}`,
      { hint: `see the VMM log ${spec.vmmLog}`, details: { logTail: tail, exit: ex } },
    );
  }

  private alive(h: VmHandle): boolean {
    return isProcessAlive(h.pid, h.pidStartTime >= 0 ? h.pidStartTime : undefined);
  }

  /** Wait until the process is gone (and its sockets closed); true if it went within timeoutMs. */
  private async waitGone(h: VmHandle, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!processGone(h.pid, h.pidStartTime >= 0 ? h.pidStartTime : undefined)) {
      if (signal?.aborted) {
        throw new BangerError('cancelled', `waiting for vm '${vmRef(h)}' to stop was cancelled`);
      }
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(this.pollMs() * 2, Math.max(1, deadline - Date.now())));
    }
    return true;
  }

  private async killAndWait(h: VmHandle, startTime: number | undefined): Promise<void> {
    const handle = { ...h, pidStartTime: startTime ?? h.pidStartTime };
    if (!this.alive(handle)) return;
    try {
      process.kill(h.pid, 'SIGKILL');
    } catch (e) {
      if (!isErrno(e, 'ESRCH')) throw e;
    }
    if (!(await this.waitGone(handle, this.opts.killWaitMs ?? 5_000))) {
      throw new BangerError(
        'vmm_failed',
        `firecracker (pid ${h.pid}) of vm '${vmRef(h)}' did not exit after SIGKILL`,
        {
          hint: `check the process (ps -o pid,stat,cmd -p ${h.pid})`,
        },
      );
    }
  }

  private describe(h: VmHandle, timeoutMs: number): Promise<InstanceInfo | undefined> {
    return this.describeAt(h.controlSocket, vmRef(h), timeoutMs);
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

  async stop(h: VmHandle, opts: StopOptions): Promise<{ graceful: boolean }> {
    const started = Date.now();
    if (!this.alive(h)) {
      this.cleanupAfterExit(h);
      return { graceful: true };
    }
    const api = this.api(h.controlSocket, vmRef(h));
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
    await this.killAndWait(h, undefined);
    this.cleanupAfterExit(h);
    return { graceful: false };
  }

  async kill(h: VmHandle, signal: NodeJS.Signals): Promise<void> {
    if (!this.alive(h)) return;
    try {
      process.kill(h.pid, signal);
    } catch (e) {
      if (isErrno(e, 'ESRCH')) return;
      if (isErrno(e, 'EPERM')) {
        throw new BangerError(
          'permission',
          `not allowed to signal firecracker (pid ${h.pid}) of vm '${vmRef(h)}'`,
          {
            hint: 'it runs as another user; stop it as that user',
          },
        );
      }
      throw e;
    }
  }

  /**
   * `running` / `paused` from Firecracker's instance info; a live process whose
   * API does not answer (busy, or a daemon died mid-start) counts as running so
   * it is stopped rather than leaked.
   */
  async status(h: VmHandle): Promise<VmmStatus> {
    if (!this.alive(h)) return 'stopped';
    const info = await this.describe(h, 1_000);
    if (!this.alive(h)) return 'stopped';
    return info?.state === 'Paused' ? 'paused' : 'running';
  }

  /** Pause the vCPUs (capabilities.pauseResume). */
  async pause(h: VmHandle): Promise<void> {
    await this.api(h.controlSocket, vmRef(h)).call(pauseVm());
  }

  async resume(h: VmHandle): Promise<void> {
    await this.api(h.controlSocket, vmRef(h)).call(resumeVm());
  }

  /** Write a snapshot of a paused VM (capabilities.snapshot); not wired to the CLI yet. */
  async snapshot(
    h: VmHandle,
    p: { snapshotPath: string; memFilePath: string; diff?: boolean },
  ): Promise<void> {
    await this.api(h.controlSocket, vmRef(h)).call(snapshotCreate(p), { timeoutMs: 120_000 });
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

/**
 * True when nothing of the process is left that could hold its sockets. A
 * multi-threaded process shows its leader as a zombie while the other threads
 * are still exiting and keep the fd table (the listening API socket) open;
 * only when the last thread is gone are the sockets closed.
 */
export function processGone(pid: number, startTime?: number): boolean {
  const state = processState(pid);
  if (state === undefined) return true;
  if (startTime !== undefined && processStartTime(pid) !== startTime) return true; // pid reused
  if (state !== 'Z' && state !== 'X') return false;
  try {
    return fs.readdirSync(`/proc/${pid}/task`).length <= 1;
  } catch {
    return true;
  }
}

const cancelled = (spec: LaunchSpec): BangerError =>
  new BangerError('cancelled', `starting vm '${spec.name}' was cancelled`);

/** The last lines written to the log since `from` (this run's output only). */
export function readLogTail(file: string, from: number, maxLines = 20): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const start = Math.max(from, size - 16 * 1024);
      const buf = Buffer.alloc(Math.max(0, size - start));
      fs.readSync(fd, buf, 0, buf.length, start);
      return buf
        .toString('utf8')
        .split('\n')
        .map((l) => l.trimEnd())
        .filter(Boolean)
        .slice(-maxLines)
        .join('\n');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

const lastLine = (text: string): string => text.split('\n').filter(Boolean).pop() ?? '';
