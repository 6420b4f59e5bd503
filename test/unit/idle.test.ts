import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { VmStats } from '../../src/api/schemas/vms.js';
import { activityRows, formatStats, parseAutoStop } from '../../src/cli/commands/vm.js';
import type { VmRecord } from '../../src/store/vms.js';
import { silentLogger } from '../../src/util/log.js';
import {
  activityReason,
  effectiveAutoStop,
  guestCpuPercent,
  idleStopDue,
  nextRunDelay,
  samplingPlan,
  type ActivityObservation,
} from '../../src/vm/idle.js';
import { VmSampler } from '../../src/vm/sampler.js';
import { cpuTicks } from '../helpers/cpu-ticks.js';

/** Pure idle decisions (src/vm/idle.ts) and the sampler (src/vm/sampler.ts) with a fake clock. */

const quiet: ActivityObservation = {
  locked: false,
  agentAnswered: true,
  guestSshSessions: 0,
  tunnels: 0,
  guestCpuPercent: 1,
  hostCpuPercent: 50,
};

const ticks = cpuTicks;

describe('idle decision', () => {
  test('a quiet VM (no session, guest CPU under 10%) is idle even when its VMM burns host CPU', () => {
    assert.equal(activityReason(quiet), null);
  });

  test('each kind of activity keeps a VM active', () => {
    assert.equal(activityReason({ ...quiet, guestSshSessions: 1 }), 'ssh session');
    assert.equal(activityReason({ ...quiet, tunnels: 1 }), 'ssh session');
    assert.equal(activityReason({ ...quiet, guestCpuPercent: 10 }), 'cpu busy');
    assert.equal(activityReason({ ...quiet, locked: true }), 'operation in progress');
    assert.equal(
      activityReason({ ...quiet, agentAnswered: false, guestSshSessions: null }),
      'agent not answering',
    );
  });

  test('without guest CPU figures the VMM CPU decides; with neither nothing is assumed idle', () => {
    assert.equal(activityReason({ ...quiet, guestCpuPercent: null, hostCpuPercent: 3 }), null);
    assert.equal(
      activityReason({ ...quiet, guestCpuPercent: null, hostCpuPercent: 30 }),
      'cpu busy',
    );
    assert.equal(
      activityReason({ ...quiet, guestCpuPercent: null, hostCpuPercent: null }),
      'cpu unknown',
    );
  });

  test("a VM's own setting overrides the config, 0 meaning never", () => {
    assert.deepEqual(effectiveAutoStop(7_200_000, undefined), {
      afterMs: 7_200_000,
      source: 'config',
    });
    assert.deepEqual(effectiveAutoStop(7_200_000, 1_800_000), { afterMs: 1_800_000, source: 'vm' });
    assert.deepEqual(effectiveAutoStop(7_200_000, 0), { afterMs: 0, source: 'vm' });
    assert.deepEqual(effectiveAutoStop(0, 60_000), { afterMs: 60_000, source: 'vm' });
  });

  test('a stop is due once idle for the whole delay, never with 0', () => {
    assert.equal(idleStopDue(1_000_000 + 19_999, 1_000_000, 20_000), false);
    assert.equal(idleStopDue(1_000_000 + 20_000, 1_000_000, 20_000), true);
    assert.equal(idleStopDue(9_000_000_000, 0, 0), false);
  });

  test('guest CPU from two tick readings is percent of one CPU', () => {
    // 2 CPUs, 200 ticks elapsed in all, 50 of them busy: 25% of the machine = 50% of one CPU
    assert.equal(guestCpuPercent(ticks(100, 100), ticks(150, 250), 2), 50);
    assert.equal(guestCpuPercent(ticks(100, 100), ticks(100, 300), 1), 0);
    assert.equal(guestCpuPercent(null, ticks(1, 1), 1), null);
    // counters went backwards (the guest rebooted)
    assert.equal(guestCpuPercent(ticks(500, 500), ticks(10, 10), 1), null);
  });
});

describe('sampling schedule', () => {
  test('stats_poll_interval sets the pace', () => {
    assert.deepEqual(samplingPlan(5000, 0), { sample: true, everyMs: 5000 });
    assert.deepEqual(samplingPlan(5000, 20_000), { sample: true, everyMs: 5000 });
  });

  test('with sampling off, auto-stop still samples (10 s, or a quarter of a short delay, at least 1 s)', () => {
    assert.deepEqual(samplingPlan(0, 3_600_000), { sample: true, everyMs: 10_000 });
    assert.deepEqual(samplingPlan(0, 20_000), { sample: true, everyMs: 5000 });
    assert.deepEqual(samplingPlan(0, 2000), { sample: true, everyMs: 1000 });
  });

  test('with both off nothing is sampled and the config is looked at again in 5 s', () => {
    assert.deepEqual(samplingPlan(0, 0), { sample: false, everyMs: 5000 });
  });

  test('runs start a fixed interval apart however long one took', () => {
    assert.equal(nextRunDelay(5000, 100_000, 101_200), 3800);
    assert.equal(nextRunDelay(5000, 100_000, 107_000), 0);
  });
});

// ---------------------------------------------------------------- the sampler

const T0 = Date.parse('2026-01-01T00:00:00Z');

function vmRow(id: string, meta: Record<string, unknown> = {}): VmRecord {
  return {
    id,
    name: `vm-${id}`,
    imageId: 'img',
    kernelName: null,
    state: 'running',
    vmm: 'qemu',
    accel: 'tcg',
    vcpu: 1,
    memoryMib: 512,
    diskSize: 1 << 30,
    nat: false,
    ip: '172.16.0.2',
    mac: null,
    tap: null,
    pid: 1,
    pidStartTime: 1,
    lastError: null,
    meta,
    createdAt: new Date(T0).toISOString(),
    updatedAt: new Date(T0).toISOString(),
    startedAt: new Date(T0).toISOString(),
    stoppedAt: null,
  };
}

function statsOf(vm: VmRecord, guest: { sshSessions: number; cpuPercent: number } | null): VmStats {
  return {
    id: vm.id,
    name: vm.name,
    state: vm.state,
    cpuPercent: 40,
    rssBytes: 100 << 20,
    memoryMib: vm.memoryMib,
    guest: guest && {
      memTotalBytes: 512 << 20,
      memAvailableBytes: 400 << 20,
      load1: 0,
      uptimeMs: 60_000,
      cpuPercent: guest.cpuPercent,
      sshSessions: guest.sshSessions,
      disks: [],
    },
    disk: { overlayBytes: 0, workBytes: 0, workSizeBytes: 0 },
  };
}

interface Rig {
  sampler: VmSampler;
  clock: { now: number };
  vms: VmRecord[];
  guest: Map<string, { sshSessions: number; cpuPercent: number } | null>;
  locked: Set<string>;
  tunnels: Map<string, number>;
  stops: { id: string; idleMs: number; afterMs: number }[];
  config: { statsPollIntervalMs: number; autoStopStaleAfterMs: number };
}

function rig(vms: VmRecord[], autoStopStaleAfterMs = 20_000): Rig {
  const r: Omit<Rig, 'sampler'> & { sampler?: VmSampler } = {
    clock: { now: T0 },
    vms,
    guest: new Map(vms.map((v) => [v.id, { sshSessions: 0, cpuPercent: 1 }])),
    locked: new Set(),
    tunnels: new Map(),
    stops: [],
    config: { statsPollIntervalMs: 5000, autoStopStaleAfterMs },
  };
  r.sampler = new VmSampler({
    list: () => r.vms,
    config: () => r.config,
    isLocked: (id) => r.locked.has(id),
    read: async (vm) => statsOf(vm, r.guest.get(vm.id) ?? null),
    tunnels: (id) => r.tunnels.get(id) ?? 0,
    stopIdle: async (vm, idleMs, afterMs) => {
      r.stops.push({ id: vm.id, idleMs, afterMs });
    },
    logger: silentLogger(),
    now: () => r.clock.now,
  });
  return r as Rig;
}

/** Advance the fake clock by ms and run one sampling round. */
async function tick(r: Rig, ms: number): Promise<void> {
  r.clock.now += ms;
  await r.sampler.runOnce();
}

describe('sampler', () => {
  test('an idle VM is stopped once idle for auto_stop_stale_after, counted from when it was first seen running', async () => {
    const r = rig([vmRow('a')]);
    await tick(r, 0);
    await tick(r, 5000);
    await tick(r, 10_000); // idle 15 s
    assert.deepEqual(r.stops, []);
    await tick(r, 5000); // idle 20 s
    assert.deepEqual(r.stops, [{ id: 'a', idleMs: 20_000, afterMs: 20_000 }]);
  });

  test('an ssh session, a tunnel, a busy guest or an operation resets the idle clock', async () => {
    for (const [what, make] of [
      ['guest session', (r: Rig) => r.guest.set('a', { sshSessions: 1, cpuPercent: 0 })],
      ['tunnel', (r: Rig) => r.tunnels.set('a', 1)],
      ['busy guest', (r: Rig) => r.guest.set('a', { sshSessions: 0, cpuPercent: 80 })],
      ['lock held', (r: Rig) => r.locked.add('a')],
      ['agent silent', (r: Rig) => r.guest.set('a', null)],
    ] as const) {
      const r = rig([vmRow('a')]);
      await tick(r, 15_000);
      make(r);
      await tick(r, 15_000); // 30 s after start, active now
      assert.deepEqual(r.stops, [], what);
      assert.ok(r.sampler.activity('a')?.activeReason, what);
      r.guest.set('a', { sshSessions: 0, cpuPercent: 0 });
      r.tunnels.clear();
      r.locked.clear();
      await tick(r, 15_000); // idle 15 s since the active sample
      assert.deepEqual(r.stops, [], `${what}: stopped too early`);
      await tick(r, 5000);
      assert.deepEqual(r.stops, [{ id: 'a', idleMs: 20_000, afterMs: 20_000 }], what);
    }
  });

  test("a VM's own auto-stop setting wins over the config; never means never", async () => {
    const r = rig([vmRow('a', { autoStopAfterMs: 0 }), vmRow('b', { autoStopAfterMs: 60_000 })]);
    await tick(r, 0);
    await tick(r, 30_000);
    assert.equal(r.stops.length, 0);
    await tick(r, 30_000);
    assert.deepEqual(r.stops, [{ id: 'b', idleMs: 60_000, afterMs: 60_000 }]);
    await tick(r, 600_000);
    assert.deepEqual(
      r.stops.map((s) => s.id),
      ['b', 'b'],
    );
  });

  test('with auto_stop_stale_after 0 nothing is stopped, but samples are kept', async () => {
    const r = rig([vmRow('a')], 0);
    await tick(r, 3_600_000);
    assert.deepEqual(r.stops, []);
    assert.equal(r.sampler.lastSample('a')?.guest?.sshSessions, 0);
  });

  test('the last sample and activity are kept; a silent agent is flagged from its first miss', async () => {
    const r = rig([vmRow('a')], 0);
    await tick(r, 5000);
    const a = r.sampler.activity('a');
    assert.equal(a?.sampledAt, '2026-01-01T00:00:05.000Z');
    assert.equal(a?.agentSilentSince, null);
    assert.equal(a?.activeReason, null);
    assert.equal(a?.lastActiveAt, '2026-01-01T00:00:05.000Z');
    r.guest.set('a', null);
    await tick(r, 5000);
    await tick(r, 5000);
    const b = r.sampler.activity('a');
    assert.equal(b?.agentSilentSince, '2026-01-01T00:00:10.000Z');
    assert.equal(b?.activeReason, 'agent not answering');
    assert.equal(r.sampler.lastSample('a')?.guest, null);
    r.guest.set('a', { sshSessions: 0, cpuPercent: 0 });
    await tick(r, 5000);
    assert.equal(r.sampler.activity('a')?.agentSilentSince, null);
  });

  test('a VM that stops is forgotten; a restart begins a new idle clock', async () => {
    const vm = vmRow('a');
    const r = rig([vm]);
    await tick(r, 15_000);
    r.vms = [{ ...vm, state: 'stopped' }];
    await tick(r, 5000);
    assert.equal(r.sampler.activity('a'), null);
    const restartedAt = r.clock.now;
    r.vms = [{ ...vm, startedAt: new Date(restartedAt).toISOString() }];
    await tick(r, 5000);
    await tick(r, 15_000);
    assert.deepEqual(r.stops, []);
    await tick(r, 5000);
    assert.deepEqual(r.stops, [{ id: 'a', idleMs: 20_000, afterMs: 20_000 }]);
  });

  test('the sampling interval follows the config and the shortest auto-stop delay', () => {
    const r = rig([vmRow('a', { autoStopAfterMs: 8000 })], 0);
    r.config.statsPollIntervalMs = 0;
    assert.deepEqual(r.sampler.plan(), { sample: true, everyMs: 2000 });
    r.vms = [];
    assert.deepEqual(r.sampler.plan(), { sample: false, everyMs: 5000 });
  });
});

describe('CLI: --auto-stop and the sampler in vm show / vm stats', () => {
  test('--auto-stop takes a duration, never or default', () => {
    assert.equal(parseAutoStop('30m'), 1_800_000);
    assert.equal(parseAutoStop('never'), 0);
    assert.equal(parseAutoStop('0'), 0);
    assert.equal(parseAutoStop('default'), null);
    assert.throws(() => parseAutoStop('soon'), /invalid --auto-stop 'soon'/);
    assert.throws(() => parseAutoStop('10ms'), /under 1s/);
  });

  test('vm show: auto-stop, activity, agent silence and the sample with its age', () => {
    const now = T0 + 60_000;
    const stats = statsOf(vmRow('a'), { sshSessions: 0, cpuPercent: 2 });
    const rows = activityRows(
      {
        autoStop: { afterMs: 1_800_000, source: 'vm' },
        activity: {
          sampledAt: new Date(T0 + 55_000).toISOString(),
          agentSilentSince: new Date(T0 + 50_000).toISOString(),
          lastActiveAt: new Date(T0).toISOString(),
          activeReason: null,
        },
        sample: {
          ...stats,
          sampledAt: new Date(T0 + 55_000).toISOString(),
          disk: {
            overlayBytes: 1024 ** 3,
            workBytes: 512 * 1024 ** 2,
            workSizeBytes: 8 * 1024 ** 3,
            overlaySizeBytes: 8 * 1024 ** 3,
          },
        },
      } as Parameters<typeof activityRows>[0],
      now,
    );
    const m = new Map(rows);
    assert.equal(m.get('autostop'), 'after 30m idle (vm set --auto-stop)');
    assert.equal(m.get('active'), 'idle for 1m');
    assert.equal(m.get('agent'), 'not answering since 2026-01-01T00:00:50.000Z (10.0s)');
    assert.equal(m.get('cpu'), '40% host, 2% guest (sampled 5.00s ago)');
    assert.equal(m.get('sessions'), '0');
    assert.equal(m.get('disks'), '1.5 GiB on the host of 16 GiB (overlay 1 GiB, work 512 MiB)');
  });

  test('vm stats: ssh sessions, idle time and sample age columns; a silent agent gets its own line', () => {
    const now = T0 + 60_000;
    const s = {
      ...statsOf(vmRow('a'), null),
      sampledAt: new Date(T0 + 58_000).toISOString(),
      activity: {
        sampledAt: new Date(T0 + 58_000).toISOString(),
        agentSilentSince: new Date(T0 + 40_000).toISOString(),
        lastActiveAt: new Date(T0 + 58_000).toISOString(),
        activeReason: 'agent not answering',
      },
    };
    const out = formatStats([s], now).split('\n');
    assert.match(out[0]!, /SSH +IDLE +AGE$/);
    assert.match(out[1]!, /^vm-a .* - +no +2\.00s$/);
    assert.equal(out[2], 'vm-a: agent: not answering since 2026-01-01T00:00:40.000Z');
  });
});
