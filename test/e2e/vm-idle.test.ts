import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { VmStats, VmView } from '../../src/api/schemas/vms.js';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { sleep } from '../helpers/sandbox.js';

/**
 * Stats sampling and idle auto-stop with real VMs (QEMU, TCG here) in a
 * network namespace made by the test. The daemon samples every 2 s and stops
 * VMs idle for 30 s (auto_stop_stale_after). Two VMs boot side by side: one
 * is left alone and must be stopped; the other holds an ssh session and must
 * keep running past the same delay, with the session visible in its stats;
 * once the session ends, `vm set --auto-stop 5s` stops it too.
 */

const AUTO_STOP_MS = 30_000;

describe('stats sampling and idle auto-stop (real VMs)', { timeout: 20 * 60_000 }, () => {
  let env: VmEnv | undefined;

  before(async () => {
    if (!isRoot()) return;
    env = await vmEnv('idle', {
      config: 'auto_stop_stale_after = "30s"\nstats_poll_interval = "2s"\n',
    });
  });
  after(async () => {
    await env?.cleanup();
  });

  const e = (): VmEnv => env!;
  const show = (name: string): Promise<VmView> => e().json<VmView>(['vm', 'show', name]);
  /** Poll until pred holds (every 2 s), failing with the last value after deadlineMs. */
  async function until<T>(
    what: string,
    get: () => Promise<T>,
    pred: (v: T) => boolean,
    deadlineMs: number,
  ): Promise<T> {
    const end = Date.now() + deadlineMs;
    let last: T = await get();
    while (!pred(last)) {
      if (Date.now() > end)
        assert.fail(`${what}: not within ${deadlineMs} ms; last ${JSON.stringify(last)}`);
      await sleep(2000);
      last = await get();
    }
    return last;
  }

  test('an idle VM is stopped and says so; one with an ssh session keeps running; stats come from samples', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const idle = e().name('idle');
    const busy = e().name('busy');
    let sessionEnd = 'ssh still running';
    // The busy VM's session opens as soon as it is ready, whatever the other VM is doing.
    const busyFlow = (async () => {
      const c = await e().run(['vm', 'create', '--name', busy]);
      assert.equal(c.code, 0, c.stderr);
      const readyAt = Date.now();
      const session = e()
        .run(['vm', 'ssh', busy, '--', 'sleep 55'], { timeoutMs: 180_000 })
        .then((r) => {
          sessionEnd = `ssh ended after ${Date.now() - readyAt} ms (exit ${r.code}): ${r.stderr}`;
          return r;
        });
      return { readyAt, session };
    })();
    const idleCreate = e().run(['vm', 'create', '--name', idle]);
    const [ic, { readyAt, session }] = await Promise.all([idleCreate, busyFlow]);
    assert.equal(ic.code, 0, ic.stderr);

    // The busy VM: the sampler sees the session (guest-side count) and calls it activity.
    const st = await until(
      'a sample of the busy VM showing its ssh session',
      async () => (await e().json<VmStats[]>(['vm', 'stats', busy]))[0]!,
      (s) => (s.guest?.sshSessions ?? 0) >= 1 && s.activity?.activeReason === 'ssh session',
      60_000,
    );
    assert.equal(st.state, 'running');
    assert.ok(st.sampledAt && Date.now() - Date.parse(st.sampledAt) < 30_000, st.sampledAt);
    assert.ok(st.guest && st.guest.memTotalBytes > 0 && st.guest.uptimeMs > 0);
    assert.equal(st.activity?.agentSilentSince, null);
    const statsTable = await e().run(['vm', 'stats', busy]);
    assert.equal(statsTable.code, 0, statsTable.stderr);
    assert.match(statsTable.stdout, /SSH\s+IDLE\s+AGE/);

    // The idle VM: stopped by the sampler, with the reason in its view and the daemon log.
    const stopped = await until(
      'the idle VM auto-stopped',
      () => show(idle),
      (v) => v.state === 'stopped',
      AUTO_STOP_MS + 150_000,
    );
    assert.ok(stopped.idleStop, JSON.stringify(stopped));
    assert.ok(stopped.idleStop.idleMs >= AUTO_STOP_MS, `idle ${stopped.idleStop.idleMs} ms`);
    assert.equal(stopped.idleStop.at, stopped.stoppedAt);
    assert.deepEqual(stopped.autoStop, { afterMs: AUTO_STOP_MS, source: 'config' });
    const text = await e().run(['vm', 'show', idle]);
    assert.match(text.stdout, /^stopped: +idle for \d/m);
    const log = fs.readFileSync(e().sb.paths.log, 'utf8');
    assert.ok(
      log.split('\n').some((l) => l.includes('"vm.idle_stop"') && l.includes(`"${idle}"`)),
      'vm.idle_stop in the daemon log',
    );

    // The busy VM outlived the delay with its session open.
    const wait = readyAt + AUTO_STOP_MS + 15_000 - Date.now();
    if (wait > 0) await sleep(wait);
    const b = await show(busy);
    assert.equal(
      b.state,
      'running',
      `a VM with an ssh session must not be auto-stopped (${sessionEnd})`,
    );
    assert.equal(b.activity?.activeReason, 'ssh session');
    assert.equal(b.sample?.guest?.sshSessions, 1);
    const busyText = await e().run(['vm', 'show', busy]);
    assert.match(busyText.stdout, /^active: +now \(ssh session\)/m);
    assert.match(busyText.stdout, /^sessions: ?1$/m);
    assert.match(busyText.stdout, /^cpu: .*sampled .* ago/m);

    // Session over: a per-VM delay of 5 s stops it too.
    const s = await session;
    assert.equal(s.code, 0, s.stderr);
    const set = await e().run(['vm', 'set', busy, '--auto-stop', '5s']);
    assert.equal(set.code, 0, set.stderr);
    const b2 = await until(
      'the busy VM stopped after its session',
      () => show(busy),
      (v) => v.state === 'stopped',
      90_000,
    );
    assert.deepEqual(b2.autoStop, { afterMs: 5000, source: 'vm' });
    assert.ok(b2.idleStop && b2.idleStop.idleMs >= 5000, JSON.stringify(b2.idleStop));
  });
});
