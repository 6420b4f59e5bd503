import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { CpuTicks } from '../../src/guest/agentProtocol.js';
import { waitQuiet } from '../../src/vm/settle.js';
import { cpuTicks } from '../helpers/cpu-ticks.js';

const ticks = cpuTicks;

/** A guest whose CPU is busy for the given share of each 25-tick window, in turn. */
function guest(shares: number[]) {
  let busy = 0;
  let idle = 0;
  let i = 0;
  let now = 0;
  return {
    sample: async (): Promise<CpuTicks | null> => ticks(busy, idle),
    sleep: async (ms: number): Promise<void> => {
      now += ms;
      const share = shares[Math.min(i++, shares.length - 1)]!;
      busy += 25 * share;
      idle += 25 * (1 - share);
    },
    now: () => now,
  };
}

const opts = { intervalMs: 250, quietBelow: 0.2, quietWindows: 2, maxMs: 8000 };

describe('a booted guest settles before its boot snapshot', () => {
  test('waits for two quiet windows in a row', async () => {
    const r = await waitQuiet({ ...guest([1, 0.9, 0.1, 0.6, 0.05, 0.1]), ...opts });
    assert.equal(r.quiet, true);
    assert.deepEqual(
      r.windows.map((w) => Math.round(w * 100) / 100),
      [1, 0.9, 0.1, 0.6, 0.05, 0.1],
    );
    assert.equal(r.waitedMs, 6 * 250);
  });

  test('a guest that never goes quiet is given up on at maxMs', async () => {
    const r = await waitQuiet({ ...guest([0.8]), ...opts, maxMs: 2000 });
    assert.equal(r.quiet, false);
    assert.equal(r.waitedMs, 2000);
  });

  test('no CPU figures (agent cannot say): no wait at all', async () => {
    const g = guest([0]);
    const r = await waitQuiet({ ...g, sample: async () => null, ...opts });
    assert.deepEqual(r, { quiet: false, waitedMs: 0, windows: [] });
  });
});
