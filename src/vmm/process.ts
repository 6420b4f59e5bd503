import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BangerError, isErrno } from '../errors.js';
import { run, which as whichOnPath } from '../util/exec.js';
import { isProcessAlive, processGone, processStartTime } from '../util/proc.js';
import { sleep } from '../util/sleep.js';
import { tailLines } from '../util/tail.js';
import type { VmHandle } from './driver.js';

/**
 * The process plumbing every VMM driver shares: find the binary, probe its
 * version, spawn it detached with its output in the VM's VMM log, signal it,
 * and kill it with a bounded wait that ends in one error. Drivers add only
 * what is theirs (argv or API requests, control sockets).
 */

/** The VMM binary, or undefined when it is not installed. `bin` is a name on PATH or a path. */
export function findBinary(
  bin: string,
  which: (cmd: string) => string | undefined = whichOnPath,
): string | undefined {
  return which(bin);
}

/** The VMM binary, or a tool_missing error with the driver's install hint. */
export function requireBinary(
  bin: string,
  hint: string,
  which: (cmd: string) => string | undefined = whichOnPath,
): string {
  const found = findBinary(bin, which);
  if (!found) throw new BangerError('tool_missing', `${bin} not found`, { hint });
  return found;
}

/**
 * `<bin> --version`, parsed by the driver. A version the parser cannot read
 * is a tool_failed error naming the binary and what it printed.
 */
export async function probeVersion(
  bin: string,
  parse: (output: string) => string | undefined,
  opts: { what: string; hint: string; env?: NodeJS.ProcessEnv },
): Promise<string> {
  const r = await run(bin, ['--version'], {
    what: `checking the ${opts.what} version`,
    timeoutMs: 10_000,
    env: opts.env,
  });
  const v = parse(r.stdout) ?? parse(r.stderr);
  if (!v) {
    throw new BangerError(
      'tool_failed',
      `cannot tell the version of ${bin} from '${r.stdout.split('\n')[0]}'`,
      { hint: opts.hint },
    );
  }
  return v;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export const describeExit = (ex: ExitInfo | undefined): string =>
  ex ? (ex.signal ? `killed by ${ex.signal}` : `exit code ${ex.code}`) : 'exited';

/** A spawned VMM: its pid, and what is known about its exit while the daemon watches it. */
export interface VmmProcess {
  pid: number;
  /** /proc start time; undefined when the process was already gone when asked. */
  pidStartTime: number | undefined;
  /** Size of the VMM log before this run wrote to it: `logTail(from)` shows this run only. */
  logStart: number;
  exited(): ExitInfo | undefined;
  /** The last lines this run wrote to the VMM log. */
  logTail(maxLines?: number): string;
}

export interface SpawnVmmOptions {
  bin: string;
  args: string[];
  /** The VM's directory (the working directory of the VMM). */
  cwd: string;
  /** The VM's VMM log: stdout and stderr go here, after a header line naming the command. */
  log: string;
  env?: NodeJS.ProcessEnv;
  /** How to install the binary, shown when it cannot be found. */
  installHint: string;
}

/**
 * Start the VMM detached (own session: it outlives daemon restarts) with its
 * output appended to the VMM log. Resolves once the process exists; a binary
 * that cannot be executed is a one-line error.
 */
export async function spawnVmm(o: SpawnVmmOptions): Promise<VmmProcess> {
  fs.mkdirSync(path.dirname(o.log), { recursive: true });
  const logFd = fs.openSync(o.log, 'a', 0o600);
  let logStart: number;
  let child: ReturnType<typeof spawn>;
  try {
    const shown = [o.bin, ...o.args].map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ');
    fs.writeSync(logFd, `[banger] ${new Date().toISOString()} starting ${shown}\n`);
    logStart = fs.fstatSync(logFd).size;
    child = spawn(o.bin, o.args, {
      cwd: o.cwd,
      env: o.env ?? process.env,
      detached: true,
      stdio: ['ignore', logFd, logFd],
    });
  } finally {
    fs.closeSync(logFd);
  }
  let exit: ExitInfo | undefined;
  child.once('exit', (code, sig) => (exit = { code, signal: sig }));
  const spawnError = await new Promise<Error | undefined>((resolve) => {
    child.once('error', resolve);
    child.once('spawn', () => resolve(undefined));
  });
  if (spawnError || child.pid === undefined) throw spawnFailed(o.bin, spawnError, o.installHint);
  child.unref();
  const pid = child.pid;
  return {
    pid,
    pidStartTime: processStartTime(pid),
    logStart,
    exited: () => exit,
    logTail: (maxLines = 20) => tailLines(o.log, logStart, maxLines),
  };
}

function spawnFailed(bin: string, e: Error | undefined, installHint: string): BangerError {
  if (e && isErrno(e, 'ENOENT')) {
    return new BangerError('tool_missing', `${bin} not found`, { hint: installHint });
  }
  if (e && isErrno(e, 'EACCES')) {
    return new BangerError('permission', `${bin} is not executable`, { hint: `chmod +x ${bin}` });
  }
  return new BangerError('vmm_failed', `cannot start ${bin}: ${e?.message ?? 'no pid'}`, {
    cause: e,
  });
}

/** Wait for the exit status after a broken connection hinted at a death (it may lag). */
export async function settleExit(p: VmmProcess, ms = 200): Promise<ExitInfo | undefined> {
  for (let i = 0; i < ms / 10 && !p.exited(); i++) await sleep(10);
  return p.exited();
}

const startTimeOf = (h: Pick<VmHandle, 'pidStartTime'>): number | undefined =>
  h.pidStartTime >= 0 ? h.pidStartTime : undefined;

/** The VMM process of this handle is alive (a recycled pid does not count). */
export function vmmAlive(h: Pick<VmHandle, 'pid' | 'pidStartTime'>): boolean {
  return isProcessAlive(h.pid, startTimeOf(h));
}

/**
 * Wait until the process is gone (threads included, so its sockets are
 * closed); true if it went within timeoutMs. An abort is a `cancelled` error.
 */
export async function waitGone(
  h: Pick<VmHandle, 'pid' | 'pidStartTime'>,
  timeoutMs: number,
  opts: { signal?: AbortSignal; what?: string; pollMs?: number } = {},
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!processGone(h.pid, startTimeOf(h))) {
    if (opts.signal?.aborted) {
      throw new BangerError(
        'cancelled',
        `waiting for ${opts.what ?? `pid ${h.pid}`} to exit was cancelled`,
      );
    }
    if (Date.now() >= deadline) return false;
    await sleep(Math.min(opts.pollMs ?? 20, Math.max(1, deadline - Date.now())));
  }
  return true;
}

/** Send a signal to the VMM; a process that is already gone is not an error. */
export function signalVmm(
  h: Pick<VmHandle, 'pid' | 'pidStartTime'>,
  signal: NodeJS.Signals,
  what: string,
): void {
  if (!vmmAlive(h)) return;
  try {
    process.kill(h.pid, signal);
  } catch (e) {
    if (isErrno(e, 'ESRCH')) return;
    if (isErrno(e, 'EPERM')) {
      throw new BangerError('permission', `not allowed to signal ${what} (pid ${h.pid})`, {
        hint: 'it runs as another user; stop it as that user',
      });
    }
    throw e;
  }
}

/** How long a VMM may take to vanish after SIGKILL before that is an error. */
export const KILL_WAIT_MS = 5_000;
/** How long a VMM may take to exit after SIGTERM/SIGINT before the caller looks again. */
export const TERM_WAIT_MS = 10_000;

/**
 * Kill the VMM and wait for it to be gone. The one error for a VMM that
 * survives SIGKILL (uninterruptible sleep in the kernel, another user's
 * process): `<what> (pid N) did not exit within Ns of SIGKILL`.
 */
export async function killVmm(
  h: Pick<VmHandle, 'pid' | 'pidStartTime'>,
  what: string,
  waitMs = KILL_WAIT_MS,
): Promise<void> {
  signalVmm(h, 'SIGKILL', what);
  if (!(await waitGone(h, waitMs, { what }))) {
    throw new BangerError(
      'vmm_failed',
      `${what} (pid ${h.pid}) did not exit within ${waitMs / 1000}s of SIGKILL`,
      { hint: `check the process (ps -o pid,stat,cmd -p ${h.pid})` },
    );
  }
}

/**
 * `vm kill --signal`: deliver the signal; for SIGKILL wait as killVmm does,
 * for SIGTERM/SIGINT give the VMM a bounded time to exit (it may not: the
 * liveness monitor notices a later exit), for other signals return at once.
 */
export async function deliverSignal(
  h: Pick<VmHandle, 'pid' | 'pidStartTime'>,
  signal: NodeJS.Signals,
  what: string,
): Promise<void> {
  if (signal === 'SIGKILL') return killVmm(h, what);
  signalVmm(h, signal, what);
  if (signal === 'SIGTERM' || signal === 'SIGINT') await waitGone(h, TERM_WAIT_MS, { what });
}
