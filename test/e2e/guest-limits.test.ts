import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { sleep } from '../helpers/sandbox.js';

/**
 * Isolation (issue 19): the VMM of a root daemon runs as the unprivileged
 * banger-vmm user under QEMU's seccomp sandbox, and a guest that
 * floods its serial console cannot grow the console log past `log_max_size`
 * (one older copy is kept as `.1`), and the daemon stays responsive. Real QEMU
 * guest in a network namespace made by the test.
 */

const CAP = 1024 ** 2;

describe('a guest is confined and its output capped on the host', { timeout: 15 * 60_000 }, () => {
  let env: VmEnv | undefined;

  before(async () => {
    if (!isRoot()) return;
    env = await vmEnv('vml', { config: 'vmm = "qemu"\nlog_max_size = "1M"\n' });
  });
  after(async () => {
    await env?.cleanup();
  });

  test('the VMM runs as banger-vmm under seccomp; 6 MiB written to the console stay under the log cap', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    const name = e.name('flood');
    const c = await e.run(['vm', 'create', '--name', name], { timeoutMs: 10 * 60_000 });
    assert.equal(c.code, 0, c.stderr);
    const vm = await e.json<{ dir: string; pid: number; tap: string; confinement: string }>([
      'vm',
      'show',
      name,
    ]);
    const dir = vm.dir;

    // The VMM is not root and runs under QEMU's seccomp sandbox (issue 19).
    const status = fs.readFileSync(`/proc/${vm.pid}/status`, 'utf8');
    const field = (k: string): string =>
      new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)![1]!.trim();
    const vmmUid = Number(field('Uid').split(/\s+/)[0]);
    assert.notEqual(vmmUid, 0, 'QEMU does not run as root');
    assert.equal(field('Uid'), [vmmUid, vmmUid, vmmUid, vmmUid].join('\t'), 'no saved root uid');
    assert.equal(field('CapEff'), '0000000000000000');
    assert.equal(field('Seccomp'), '2');
    assert.equal(field('NoNewPrivs'), '1');
    assert.equal(vm.confinement, `uid ${vmmUid} (banger-vmm), seccomp filter, no_new_privs`);
    // Its tap belongs to that user, so the VMM could open it without privileges.
    const owner = await e.sh(['cat', `/sys/class/net/${vm.tap}/owner`]);
    assert.equal(owner.stdout.trim(), String(vmmUid), owner.stderr);

    const consoleLog = path.join(dir, 'console.log');
    assert.ok(fs.existsSync(consoleLog), `${consoleLog} exists`);

    // Flood in the background, sampling the log size on the host meanwhile.
    const flood = e.run(
      [
        'vm',
        'ssh',
        name,
        '--',
        'for i in $(seq 96); do head -c 65536 /dev/zero | tr "\\0" x > /dev/ttyS0; done; echo flooded',
      ],
      { timeoutMs: 10 * 60_000 },
    );
    let biggest = 0;
    let done = false;
    void flood.finally(() => (done = true));
    while (!done) {
      biggest = Math.max(biggest, fs.statSync(consoleLog).size);
      await sleep(100);
    }
    const r = await flood;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /flooded/);
    await sleep(1500); // one more monitor tick
    biggest = Math.max(biggest, fs.statSync(consoleLog).size);
    // The monitor runs once a second: the log may pass the cap by at most what
    // the guest writes in that second, never by the 6 MiB written in all.
    assert.ok(biggest < 3 * CAP, `the console log reached ${biggest} bytes`);
    assert.ok(fs.statSync(consoleLog).size <= CAP, 'back under the cap');
    const older = fs.statSync(`${consoleLog}.1`).size;
    assert.ok(older > CAP && older < 3 * CAP, `the .1 copy holds ${older} bytes`);

    const logs = await e.run(['vm', 'logs', name]);
    assert.equal(logs.code, 0, logs.stderr);
    const st = await e.run(['vm', 'list']);
    assert.equal(st.code, 0, 'the daemon still answers');
  });
});
