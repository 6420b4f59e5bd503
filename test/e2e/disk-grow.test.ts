import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { sleep } from '../helpers/sandbox.js';

/**
 * Disks grow without the host's e2fsprogs touching guest data (issue 19): the
 * host grows the files and tells QEMU (block_resize); the guest agent grows
 * the mounted filesystems, online for a running VM and at the next boot for
 * a stopped one. Then a guest that writes a 10 MiB line into its agent
 * channel gets that channel dropped while the daemon keeps answering.
 * One real QEMU guest in a network namespace made by the test.
 */
const G = 1024 ** 3;

describe('disk growth in the guest, and a flooding agent channel', { timeout: 20 * 60_000 }, () => {
  let env: VmEnv | undefined;
  let name = '';

  before(async () => {
    if (!isRoot()) return;
    env = await vmEnv('dg', { config: 'vmm = "qemu"\n' });
    name = env.name('grow');
    const c = await env.run(['vm', 'create', '--name', name, '--disk-size', '2G'], {
      timeoutMs: 10 * 60_000,
    });
    assert.equal(c.code, 0, c.stderr);
  });
  after(async () => {
    await env?.cleanup();
  });

  /** `df` in the guest: filesystem size in bytes of each mount. */
  async function guestSizes(): Promise<{ root: number; overlay: number }> {
    const r = await env!.run([
      'vm',
      'ssh',
      name,
      '--',
      'df -B1 --output=size /root /run/banger/overlay | tail -n 2',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const [root, overlay] = r.stdout.trim().split(/\s+/).map(Number);
    return { root: root!, overlay: overlay! };
  }

  test('vm set --disk-size on a running VM: df in the guest shows the new size at once', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    const before = await guestSizes();
    assert.ok(
      before.root > 1.5 * G && before.root < 2 * G,
      `/root starts near 2G (${before.root})`,
    );
    const set = await e.run(['vm', 'set', name, '--disk-size', '3G']);
    assert.equal(set.code, 0, set.stderr);
    const after = await guestSizes();
    assert.ok(after.root > 2.5 * G && after.root <= 3 * G, `/root grew to near 3G (${after.root})`);
    assert.ok(after.overlay > 2.5 * G, `the overlay disk grew too (${after.overlay})`);
    const vm = await e.json<{ diskSize: number; state: string; dir: string }>(['vm', 'show', name]);
    assert.equal(vm.diskSize, 3 * G);
    assert.equal(vm.state, 'running');
    assert.equal(fs.statSync(`${vm.dir}/work.ext4`).size, 3 * G);
  });

  test('a stopped VM grown on the host has its filesystems grown at the next boot', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    assert.equal((await e.run(['vm', 'stop', name])).code, 0);
    const set = await e.run(['vm', 'set', name, '--disk-size', '4G']);
    assert.equal(set.code, 0, set.stderr);
    const start = await e.run(['vm', 'start', name], { timeoutMs: 10 * 60_000 });
    assert.equal(start.code, 0, start.stderr);
    const after = await guestSizes();
    assert.ok(after.root > 3.5 * G && after.root <= 4 * G, `/root grew to near 4G (${after.root})`);
    assert.ok(after.overlay > 3.5 * G, `the overlay disk grew too (${after.overlay})`);
    const log = await e.run(['vm', 'ssh', name, '--', 'journalctl -b -u banger-agent --no-pager']);
    assert.match(log.stdout, /grew \/root from \d+ to \d+ bytes/);
  });

  test('a 10 MiB line from the guest on the agent channel: channel dropped, daemon responsive, memory bounded', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    const st = await e.json<{ pid: number }>(['daemon', 'status']);
    const rss = (): number =>
      Number(/^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${st.pid}/status`, 'utf8'))![1]) *
      1024;
    // The host is attached to the channel (stats ask the agent).
    assert.equal((await e.run(['vm', 'stats', name])).code, 0);
    const rssBefore = rss();
    // As root in the guest: take the agent's port and write one 10 MiB line, in
    // the background (the writer blocks once the host has dropped the channel).
    const flood = await e.run([
      'vm',
      'ssh',
      name,
      '--',
      'systemctl stop banger-agent; ' +
        'setsid sh -c \'(head -c 10485760 /dev/zero | tr "\\0" a; echo) > /dev/virtio-ports/banger.agent\' ' +
        '</dev/null >/dev/null 2>&1 & echo started',
    ]);
    assert.equal(flood.code, 0, flood.stderr);
    assert.match(flood.stdout, /started/);
    // the host reads the first 64 KiB and drops the channel
    const deadline = Date.now() + 60_000;
    let logs = '';
    while (Date.now() < deadline) {
      logs = (await e.run(['daemon', 'logs'])).stdout;
      if (/guest agent channel dropped: a line from the agent exceeded 65536 bytes/.test(logs))
        break;
      await e.run(['vm', 'stats', name]); // keeps the host attached
      await sleep(1000);
    }
    assert.match(logs, /guest agent channel dropped: a line from the agent exceeded 65536 bytes/);
    let peak = rss();
    for (let i = 0; i < 10; i++) {
      const list = await e.run(['vm', 'list'], { timeoutMs: 30_000 });
      assert.equal(list.code, 0, `the daemon answers vm list: ${list.stderr}`);
      const show = await e.run(['vm', 'show', name], { timeoutMs: 30_000 });
      assert.equal(show.code, 0, `the daemon answers vm show: ${show.stderr}`);
      peak = Math.max(peak, rss());
      await sleep(200);
    }
    assert.ok(
      peak - rssBefore < 48 * 1024 ** 2,
      `daemon RSS grew by ${peak - rssBefore} bytes (from ${rssBefore})`,
    );
    // The writer goes, the agent comes back, and the channel works again.
    const back = await e.run([
      'vm',
      'ssh',
      name,
      '--',
      'pkill -x head; pkill -x tr; systemctl start banger-agent',
    ]);
    assert.equal(back.code, 0, back.stderr);
    const stats = await e.run(['vm', 'stats', name, '--json']);
    assert.equal(stats.code, 0, stats.stderr);
  });
});
