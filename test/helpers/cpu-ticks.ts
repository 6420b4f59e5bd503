import type { CpuTicks } from '../../src/guest/agentProtocol.js';

/** Guest CPU counters with `busy` ticks of user time and `idle` idle ticks, the rest zero. */
export const cpuTicks = (busy: number, idle: number): CpuTicks => ({
  user: busy,
  nice: 0,
  system: 0,
  idle,
  iowait: 0,
  irq: 0,
  softirq: 0,
  steal: 0,
  guest: 0,
  guestNice: 0,
});
