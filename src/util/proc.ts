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
