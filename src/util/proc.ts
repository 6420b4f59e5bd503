import fs from 'node:fs';

/** Process facts from /proc, used to tell a live VMM from a recycled pid. */

/** Start time of a process in clock ticks since boot (field 22 of /proc/pid/stat). */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // after[0] is field 3 (state); field 22 is index 19.
    const v = Number(after[19]);
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

export function processState(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** True when pid is alive (not a zombie) and, if given, started at startTime. */
export function isProcessAlive(pid: number, startTime?: number | null): boolean {
  const state = processState(pid);
  if (state === undefined || state === 'Z' || state === 'X') return false;
  if (startTime !== undefined && startTime !== null) return processStartTime(pid) === startTime;
  return true;
}

export function processCmdline(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** Effective capability bit check, e.g. CAP_NET_ADMIN = 12. */
export function hasCapability(bit: number, pid: number | 'self' = 'self'): boolean {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    if (!m) return false;
    return ((BigInt(`0x${m[1]}`) >> BigInt(bit)) & 1n) === 1n;
  } catch {
    return false;
  }
}

export const CAP_NET_ADMIN = 12;

/** CPU time (utime+stime, in USER_HZ=100 ticks) and resident memory of a process. */
export function processUsage(pid: number): { ticks: number; rssBytes: number } | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]);
    const rssPages = Number(f[21]);
    return { ticks, rssBytes: rssPages * 4096 };
  } catch {
    return undefined;
  }
}

/**
 * True when nothing of the process is left that could hold its files and
 * sockets. A multi-threaded process shows its leader as a zombie while the
 * other threads are still exiting and keep the fd table (e.g. a listening
 * socket) open; only when the last thread is gone are they closed.
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

/** How a process is confined, from /proc/<pid>/status. */
export interface Confinement {
  /** Real uid. */
  uid: number;
  /** 0 none, 1 strict, 2 filter. */
  seccomp: number;
  noNewPrivs: boolean;
}

/** Parse the Uid, Seccomp and NoNewPrivs lines of /proc/<pid>/status (pure). */
export function parseConfinement(status: string): Confinement | undefined {
  const field = (k: string): string | undefined =>
    new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim();
  const uid = Number(field('Uid')?.split(/\s+/)[0]);
  if (!Number.isInteger(uid)) return undefined;
  return {
    uid,
    seccomp: Number(field('Seccomp') ?? 0) || 0,
    noNewPrivs: field('NoNewPrivs') === '1',
  };
}

export function processConfinement(pid: number): Confinement | undefined {
  try {
    return parseConfinement(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return undefined;
  }
}
