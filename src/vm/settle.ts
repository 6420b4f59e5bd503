import type { CpuTicks } from '../guest/agentProtocol.js';
import { guestCpuPercent } from './idle.js';

/**
 * Waiting for a freshly booted guest to go quiet before its boot snapshot is
 * taken. "Ready" (sshd answers) comes before the end of the boot: systemd
 * still starts sockets, gettys and the like for a second or more under TCG.
 * A snapshot taken then makes every warm start finish that work again, on the
 * same vCPU as its identity step and first ssh session.
 */

export interface SettleOptions {
  /** One guest CPU sample; null when the agent cannot say (then there is nothing to wait for). */
  sample(): Promise<CpuTicks | null>;
  sleep(ms: number): Promise<void>;
  now(): number;
  /** Time between samples. */
  intervalMs: number;
  /** A window below this busy share is quiet. */
  quietBelow: number;
  /** Consecutive quiet windows needed. */
  quietWindows: number;
  /** Give up waiting after this long (the snapshot is taken anyway). */
  maxMs: number;
}

export interface Settled {
  quiet: boolean;
  waitedMs: number;
  /** Busy share of each window seen, in order. */
  windows: number[];
}

/** Sample the guest's CPU until `quietWindows` windows in a row were quiet, or `maxMs` passed. */
export async function waitQuiet(o: SettleOptions): Promise<Settled> {
  const t0 = o.now();
  const windows: number[] = [];
  let prev = await o.sample();
  if (!prev) return { quiet: false, waitedMs: o.now() - t0, windows };
  let run = 0;
  while (o.now() - t0 < o.maxMs) {
    await o.sleep(o.intervalMs);
    const cur = await o.sample();
    if (!cur) break;
    // Busy share of all the guest's CPUs (no figure, e.g. a counter reset: not known to be quiet).
    const busy = (guestCpuPercent(prev, cur, 1) ?? 100) / 100;
    windows.push(busy);
    prev = cur;
    run = busy < o.quietBelow ? run + 1 : 0;
    if (run >= o.quietWindows) return { quiet: true, waitedMs: o.now() - t0, windows };
  }
  return { quiet: false, waitedMs: o.now() - t0, windows };
}
