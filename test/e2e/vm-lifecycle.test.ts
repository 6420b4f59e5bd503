import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { which } from '../../src/util/exec.js';
import { isAlive } from '../helpers/sandbox.js';
import { isRoot, needs, vmEnv, type VmEnv } from '../helpers/e2e.js';

/**
 * The VM lifecycle on real QEMU microVMs (TCG here), inside a network
 * namespace made by the test. Boots are expensive under TCG, so each VM is
 * used for several checks.
 */

interface Vm {
  id: string;
  name: string;
  state: string;
  ip: string | null;
  tap: string | null;
  pid: number | null;
  dir: string;
  memoryMib: number;
  nat: boolean;
}

/** The same cases for every VMM: QEMU always, Firecracker where its binary exists. */
const VMMS = ['qemu', 'firecracker'] as const;

for (const vmm of VMMS) {
  const available = vmm === 'qemu' || which('firecracker') !== undefined;
  if (!available) {
    describe(`vm lifecycle (${vmm})`, () => {
      test('the whole suite', (t) => {
        const why = `${vmm} is not on PATH: the ${vmm} cases were not run (they run unchanged where it is installed)`;
        console.log(`# NOTE: ${why}`);
        t.skip(why);
      });
    });
    continue;
  }
  lifecycleSuite(vmm);
}

function lifecycleSuite(vmm: (typeof VMMS)[number]): void {
  describe(`vm lifecycle (${vmm}, real VMs)`, { timeout: 20 * 60_000 }, () => {
    let env: VmEnv | undefined;

    before(async () => {
      if (!isRoot()) return;
      env = await vmEnv(vmm === 'qemu' ? 'vmq' : 'vmf', { config: `vmm = "${vmm}"\n` });
    });
    after(async () => {
      await env?.cleanup();
    });

    const e = (): VmEnv => env!;
    const show = (ref: string): Promise<Vm> => e().json<Vm>(['vm', 'show', ref]);
    const rules = async (): Promise<string> => (await e().sh(['iptables-save'])).stdout;
    const taps = async (): Promise<string[]> =>
      (await e().sh(['ip', '-o', 'link', 'show'])).stdout
        .split('\n')
        .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
        .filter((n): n is string => Boolean(n?.startsWith('bgr')));
    const ssh = (ref: string, cmd: string) => e().run(['vm', 'ssh', ref, '--', cmd]);

    test('vm run -- CMD passes the exit status through; --rm leaves nothing behind', async (t) => {
      if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
      const name = e().name('run');
      const ok = await e().run(['vm', 'run', '--rm', '--name', name, '--', 'uname', '-a']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /^Linux \S+ 6\.1\.\S+ .* x86_64 GNU\/Linux$/m);
      assert.match(
        ok.stderr,
        new RegExp(
          `^spec: name=run-\\w+ vcpu=\\d+ \\(\\w+\\) memory=\\S+ \\(\\w+\\) disk=\\S+ \\(\\w+\\) image=debian-bookworm .*vmm=${vmm} .*accel=(tcg|kvm)`,
          'm',
        ),
      );
      const list = await e().json<Vm[]>(['vm', 'list']);
      assert.equal(list.filter((v) => v.name === name).length, 0, '--rm deleted the VM');
      assert.deepEqual(await taps(), [], 'no tap left');
      assert.doesNotMatch(await rules(), /banger vm /, 'no per-VM rule left');

      const fail = await e().run(['vm', 'run', '--rm', '--name', e().name('false'), '--', 'false']);
      assert.equal(fail.code, 1, fail.stderr);
      const status = await e().run([
        'vm',
        'run',
        '--rm',
        '--name',
        e().name('exit'),
        '--',
        'exit 42',
      ]);
      assert.equal(status.code, 42);
    });

    let a = '';
    let b = '';
    test('two VMs from one image: NAT rules, isolated writes, refused resize while running', async (t) => {
      if (!needs(t, isRoot(), 'needs root')) return;
      a = e().name('a');
      b = e().name('b');
      const [ca, cb] = await Promise.all([
        e().run(['vm', 'create', '--name', a, '--nat']),
        e().run(['vm', 'create', '--name', b]),
      ]);
      assert.equal(ca.code, 0, ca.stderr);
      assert.equal(cb.code, 0, cb.stderr);
      const va = await show(a);
      const vb = await show(b);
      assert.equal(va.state, 'running');
      assert.notEqual(va.ip, vb.ip);

      // --nat: rules for A only, exactly once.
      const r = await rules();
      assert.equal(
        r.split('\n').filter((l) => l.includes(`banger vm ${va.id}`) && l.includes('MASQUERADE'))
          .length,
        1,
      );
      assert.doesNotMatch(r, new RegExp(`banger vm ${vb.id}`));

      // Writes in A: a file in /root (work disk) and a package-level change in / (overlay).
      const w = await ssh(
        a,
        'echo hello-from-a > /root/a.txt && dpkg --purge --force-depends less >/dev/null && echo marker > /etc/a-marker && sync',
      );
      assert.equal(w.code, 0, w.stderr);
      const seenByB = await ssh(
        b,
        'ls /root/a.txt /etc/a-marker 2>/dev/null; dpkg -s less >/dev/null && echo less-installed',
      );
      assert.equal(seenByB.stdout.trim(), 'less-installed', 'B does not see A');

      // Sizing is refused while running, with a clear line.
      const set = await e().run(['vm', 'set', a, '--memory', '1G']);
      assert.equal(set.code, 1);
      assert.match(set.stderr, new RegExp(`^error: vm '${a}' is running: .*stop it first`, 'm'));

      // NAT off: rules vanish.
      assert.equal((await e().run(['vm', 'set', a, '--no-nat'])).code, 0);
      assert.doesNotMatch(await rules(), new RegExp(`banger vm ${va.id}`));
    });

    test('stop and start keep /root and / changes; stopped VMs can be resized', async (t) => {
      if (!needs(t, isRoot(), 'needs root')) return;
      const stop = await e().run(['vm', 'stop', a]);
      assert.equal(stop.code, 0, stop.stderr);
      assert.equal((await show(a)).state, 'stopped');
      assert.equal(
        (await e().run(['vm', 'set', a, '--memory', '1G', '--disk-size', '9G'])).code,
        0,
      );
      const start = await e().run(['vm', 'start', a]);
      assert.equal(start.code, 0, start.stderr);
      const v = await show(a);
      assert.equal(v.memoryMib, 1024);
      const r = await ssh(
        a,
        'cat /root/a.txt /etc/a-marker; dpkg -s less >/dev/null 2>&1 || echo less-gone; df -B1 --output=size /root | tail -1',
      );
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.deepEqual(lines.slice(0, 3), ['hello-from-a', 'marker', 'less-gone']);
      assert.ok(Number(lines[3]) > 8.5 * 1024 ** 3, `work disk grew: ${lines[3]}`);
      const logs = await e().run(['vm', 'logs', a]);
      assert.match(logs.stdout, /banger-agent: started/);
      // The guest reached multi-user with nothing failed, and sshd is key-only.
      const sys = await ssh(
        a,
        'systemctl is-active multi-user.target; systemctl --failed --no-legend | wc -l; sshd -T | grep -E "^(passwordauthentication|permitrootlogin|kbdinteractiveauthentication) " | sort',
      );
      assert.deepEqual(sys.stdout.trim().split('\n'), [
        'active',
        '0',
        'kbdinteractiveauthentication no',
        'passwordauthentication no',
        'permitrootlogin without-password',
      ]);
      const stats = await e().json<
        { name: string; cpuPercent: number | null; guest: { memTotalBytes: number } | null }[]
      >(['vm', 'stats', a]);
      assert.equal(stats[0]!.name, a);
      assert.ok(stats[0]!.guest && stats[0]!.guest.memTotalBytes > 500 * 1024 ** 2);
    });

    test('a VMM killed with -9 is noticed; the VM starts again', async (t) => {
      if (!needs(t, isRoot(), 'needs root')) return;
      const v = await show(b);
      assert.ok(v.pid && isAlive(v.pid));
      process.kill(v.pid, 'SIGKILL');
      let state = '';
      for (let i = 0; i < 50 && state !== 'crashed'; i++) {
        await new Promise((r) => setTimeout(r, 200));
        state = (await e().json<Vm[]>(['vm', 'list'])).find((x) => x.name === b)?.state ?? '';
      }
      assert.equal(state, 'crashed');
      assert.ok(!(await taps()).includes(v.tap!), 'the tap of the dead VM is released');
      const start = await e().run(['vm', 'start', b]);
      assert.equal(start.code, 0, start.stderr);
      assert.equal((await ssh(b, 'true')).code, 0);
    });

    test('the daemon restarts without killing VMs and adopts them', async (t) => {
      if (!needs(t, isRoot(), 'needs root')) return;
      const before = await show(a);
      assert.equal((await e().run(['daemon', 'stop'])).code, 0);
      assert.ok(isAlive(before.pid!), 'VM survived the daemon');
      const after = await show(a);
      assert.equal(after.state, 'running');
      assert.equal(after.pid, before.pid);
      assert.equal((await ssh(a, 'true')).code, 0);
    });

    test('three VMs stopped concurrently by one command; delete leaves nothing', async (t) => {
      if (!needs(t, isRoot(), 'needs root')) return;
      const c = e().name('c');
      assert.equal((await e().run(['vm', 'create', '--name', c])).code, 0);
      const vms = await Promise.all([a, b, c].map(show));
      const started = Date.now();
      const r = await e().run(['vm', 'stop', a, b, c]);
      assert.equal(r.code, 0, r.stderr);
      for (const n of [a, b, c]) assert.match(r.stdout, new RegExp(`^${n}: stopped$`, 'm'));
      for (const v of vms) assert.equal(isAlive(v.pid!), false);
      assert.ok(Date.now() - started < 60_000);
      assert.deepEqual(await taps(), []);

      const d = await e().run(['vm', 'delete', a, b, c]);
      assert.equal(d.code, 0, d.stderr);
      for (const v of vms) assert.equal(fs.existsSync(v.dir), false, `${v.dir} removed`);
      assert.doesNotMatch(await rules(), /banger vm /);
      const missing = await e().run(['vm', 'show', a]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, new RegExp(`error: VM '${a}' not found`));
    });
  });
}
