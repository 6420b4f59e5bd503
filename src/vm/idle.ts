import type { CpuTicks } from '../guest/agentProtocol.js';

/**
 * When a VM counts as idle, and when the sampler runs: plain functions over
 * numbers (times are epoch ms passed in, never read here), used by
 * sampler.ts and unit-tested alone.
 *
 * A VM is *active* in a sample when any of these holds:
 *  - an ssh session is open (the guest agent counts established connections
 *    to its port 22; the daemon counts its own tunnels, which `vm ssh` and
 *    `vm run` go through);
 *  - the guest used at least IDLE_CPU_PERCENT of one CPU since the previous
 *    sample (the VMM's host CPU when the guest's own figures are missing);
 *  - an operation holds the VM's lock (start, stop, set, ...);
 *  - nothing can be said: the agent did not answer, so its sessions are unknown.
 * A VM is idle for `now - lastActiveAt`, where lastActiveAt is the last
 * active sample, or the first sample that saw the VM running (just after it
 * became ready, or after the daemon started), whichever is later.
 */

/** Below this (percent of one CPU, guest view) a VM is not busy. */
export const IDLE_CPU_PERCENT = 10;

/** Sampling interval used for auto-stop when stats_poll_interval is 0. */
export const AUTO_STOP_SAMPLE_MS = 10_000;

/** With sampling off and nothing to auto-stop, how often the config is looked at again. */
export const SAMPLER_RECHECK_MS = 5_000;

export interface ActivityObservation {
  /** The VM's lock is held: an operation is in flight. */
  locked: boolean;
  /** The guest agent answered this sample. */
  agentAnswered: boolean;
  /** Open ssh sessions seen by the guest; null when unknown (older agent, no answer). */
  guestSshSessions: number | null;
  /** Open daemon tunnels into the VM (vm ssh / vm run / ssh via ProxyCommand). */
  tunnels: number;
  /** Guest CPU since the previous sample, percent of one CPU; null when unknown. */
  guestCpuPercent: number | null;
  /** VMM process CPU, percent of one host core; null when unknown. */
  hostCpuPercent: number | null;
}

/** Why a VM counts as active in one observation, or null when it is idle. */
export function activityReason(o: ActivityObservation): string | null {
  if (o.locked) return 'operation in progress';
  if (o.tunnels > 0) return 'ssh session';
  if (!o.agentAnswered) return 'agent not answering';
  if (o.guestSshSessions !== null && o.guestSshSessions > 0) return 'ssh session';
  const cpu = o.guestCpuPercent ?? o.hostCpuPercent;
  if (cpu === null) return 'cpu unknown';
  if (cpu >= IDLE_CPU_PERCENT) return 'cpu busy';
  return null;
}

/** The auto-stop delay that applies to a VM: its own setting, else the config's (0 = never). */
export function effectiveAutoStop(
  configMs: number,
  vmMs: number | undefined,
): { afterMs: number; source: 'config' | 'vm' } {
  if (vmMs !== undefined) return { afterMs: vmMs, source: 'vm' };
  return { afterMs: configMs, source: 'config' };
}

/** Should a VM idle since `lastActiveAt` be stopped at `now`? */
export function idleStopDue(now: number, lastActiveAt: number, afterMs: number): boolean {
  return afterMs > 0 && now - lastActiveAt >= afterMs;
}

/**
 * How the sampler runs under the current config: every stats_poll_interval;
 * when that is 0 but some VM may be auto-stopped, every AUTO_STOP_SAMPLE_MS
 * (never slower than a quarter of the shortest auto-stop delay, never under
 * 1 s); otherwise not at all (the config is looked at again later).
 */
export function samplingPlan(
  pollIntervalMs: number,
  shortestAutoStopMs: number,
): { sample: boolean; everyMs: number } {
  if (pollIntervalMs > 0) return { sample: true, everyMs: pollIntervalMs };
  if (shortestAutoStopMs > 0) {
    return {
      sample: true,
      everyMs: Math.max(1000, Math.min(AUTO_STOP_SAMPLE_MS, Math.floor(shortestAutoStopMs / 4))),
    };
  }
  return { sample: false, everyMs: SAMPLER_RECHECK_MS };
}

/** Delay before the next run, so runs start `everyMs` apart however long one took. */
export function nextRunDelay(everyMs: number, startedAt: number, now: number): number {
  return Math.max(0, everyMs - (now - startedAt));
}

/**
 * Guest CPU between two readings of the agent's `cpuTicks` (totals over all
 * CPUs), as percent of one CPU: busy ticks over all ticks, times the CPUs.
 * Null when there is no earlier reading or the counters went backwards (a
 * reboot).
 */
export function guestCpuPercent(
  prev: CpuTicks | null | undefined,
  cur: CpuTicks | null | undefined,
  cpus: number,
): number | null {
  if (!prev || !cur || cpus <= 0) return null;
  const total = (t: CpuTicks): number =>
    t.user + t.nice + t.system + t.idle + t.iowait + t.irq + t.softirq + t.steal;
  const idle = (t: CpuTicks): number => t.idle + t.iowait;
  const dTotal = total(cur) - total(prev);
  const dIdle = idle(cur) - idle(prev);
  if (dTotal <= 0 || dIdle < 0 || dIdle > dTotal) return null;
  return ((dTotal - dIdle) / dTotal) * cpus * 100;
}
