import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { which } from '../../src/util/exec.js';
import { isAlive } from '../helpers/sandbox.js';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';

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
  accel: string;
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
    const daemonPid = async (): Promise<number> =>
      (await e().json<{ pid: number }>(['daemon', 'status'])).pid;

    /** The guest's serial console: QEMU writes it to console.log, Firecracker to its own log. */
    const consoleOf = (v: Vm): string =>
      path.join(v.dir, vmm === 'qemu' ? 'console.log' : 'vmm.log');
    /** Where each VM's console ends now: what a stop adds is read from there. */
    const consoleEnds = (vms: Vm[]): Map<string, number> =>
      new Map(vms.map((v) => [v.name, fs.statSync(consoleOf(v)).size]));

    /**
     * `vm stop` powered the guest off in order: the CLI reports it, the console
     * shows the guest's own shutdown to the end (systemd's shutdown initramfs
     * unmounted everything, then the kernel powered off), and both writable
     * disks were left clean — a VMM killed mid-flight leaves a journal to
     * replay on each and no power-down line.
     */
    const assertStoppedGracefully = (v: Vm, stopStderr: string, consoleFrom: number): void => {
      assert.match(
        stopStderr,
        new RegExp(`^done: Stopping ${v.name} \\(guest powered off, `, 'm'),
        `${v.name}: stop was not graceful:\n${stopStderr}`,
      );
      const fd = fs.openSync(consoleOf(v), 'r');
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(size - consoleFrom);
      fs.readSync(fd, buf, 0, buf.length, consoleFrom);
      fs.closeSync(fd);
      const shutdown = buf.toString('utf8');
      assert.match(shutdown, /reboot: Power down/, `${v.name} console:\n${shutdown.slice(-2000)}`);
      assert.doesNotMatch(shutdown, /banger-shutdown: still mounted/, `${v.name} console`);
      for (const disk of ['overlay.ext4', 'work.ext4']) {
        const file = path.join(v.dir, disk);
        const sb = spawnSync('dumpe2fs', ['-h', file], { encoding: 'utf8' });
        assert.equal(sb.status, 0, `dumpe2fs ${file}: ${sb.stderr}`);
        assert.match(sb.stdout, /^Filesystem state:\s+clean$/m, `${v.name} ${disk} state`);
        assert.doesNotMatch(sb.stdout, /needs_recovery/, `${v.name} ${disk}: journal to replay`);
        const fsck = spawnSync('e2fsck', ['-fn', file], { encoding: 'utf8' });
        assert.equal(fsck.status, 0, `e2fsck -fn ${v.name} ${disk}:\n${fsck.stdout}${fsck.stderr}`);
      }
    };

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
        'echo hello-from-a > /root/a.txt && dpkg --purge --force-depends less >/dev/null && echo marker > /etc/a-marker',
      );
      assert.equal(w.code, 0, w.stderr);
      const seenByB = await ssh(
        b,
        'ls /root/a.txt /etc/a-marker 2>/dev/null; dpkg -s less >/dev/null && echo less-installed',
      );
      assert.equal(seenByB.stdout.trim(), 'less-installed', 'B does not see A');

      // An emulated guest runs with fixed user-space addresses (kernelArgs.ts, tcg_aslr), so
      // QEMU reuses translated code across processes; a KVM guest keeps full randomization.
      const aslr = await ssh(b, 'cat /proc/sys/kernel/randomize_va_space');
      assert.equal(aslr.stdout.trim(), vb.accel === 'tcg' ? '0' : '2', aslr.stderr);

      // Sizing is refused while running, with a clear line.
      const set = await e().run(['vm', 'set', a, '--memory', '1G']);
      assert.equal(set.code, 1);
      assert.match(set.stderr, new RegExp(`^error: vm '${a}' is running: .*stop it first`, 'm'));

      // NAT off: rules vanish.
      assert.equal((await e().run(['vm', 'set', a, '--no-nat'])).code, 0);
      assert.doesNotMatch(await rules(), new RegExp(`banger vm ${va.id}`));
    });

    test('vm stop powers the guest off cleanly; start keeps /root and / changes; stopped VMs can be resized', async (t) => {
      if (!needs(t, isRoot(), 'needs root')) return;
      // No sync before the stop: the guest's own shutdown must flush the writes of the last test.
      const running = await show(a);
      const from = consoleEnds([running]);
      const stop = await e().run(['vm', 'stop', a]);
      assert.equal(stop.code, 0, stop.stderr);
      assert.equal((await show(a)).state, 'stopped');
      assert.equal(isAlive(running.pid!), false, 'the VMM is gone');
      assertStoppedGracefully(running, stop.stderr, from.get(a)!);
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
      const before = await Promise.all([a, b].map(show));
      const oldPid = await daemonPid();
      const stop = await e().run(['daemon', 'stop']);
      assert.equal(stop.code, 0, stop.stderr);
      // Not "bangerd is not running": this daemon was asked, and it is gone.
      assert.equal(stop.stdout.trim(), `bangerd stopped (pid ${oldPid})`);
      assert.equal(isAlive(oldPid), false, 'the old daemon exited');
      for (const v of before) assert.ok(isAlive(v.pid!), `${v.name} survived the daemon`);
      const after = await Promise.all([a, b].map(show));
      const newPid = await daemonPid();
      assert.notEqual(newPid, oldPid, 'a new daemon answers');
      for (const [i, v] of after.entries()) {
        assert.equal(v.state, 'running', v.name);
        assert.equal(v.pid, before[i]!.pid, `${v.name}: the same VMM process, adopted`);
      }
      assert.equal((await ssh(a, 'true')).code, 0);
      assert.equal(await daemonPid(), newPid, 'and it keeps serving');
    });

    test('three VMs stopped concurrently by one command; delete leaves nothing', async (t) => {
      if (!needs(t, isRoot(), 'needs root')) return;
      const c = e().name('c');
      assert.equal((await e().run(['vm', 'create', '--name', c])).code, 0);
      // Fresh writes on each, not synced: only an orderly shutdown leaves their disks clean.
      for (const n of [a, b, c])
        assert.equal((await ssh(n, `echo ${n} > /root/last.txt && echo ${n} > /etc/last`)).code, 0);
      const vms = await Promise.all([a, b, c].map(show));
      const from = consoleEnds(vms);
      const r = await e().run(['vm', 'stop', a, b, c]);
      assert.equal(r.code, 0, r.stderr);
      for (const n of [a, b, c]) assert.match(r.stdout, new RegExp(`^${n}: stopped$`, 'm'));
      for (const v of vms) assert.equal(isAlive(v.pid!), false);
      for (const v of vms) assertStoppedGracefully(v, r.stderr, from.get(v.name)!);
      // Concurrently: every stop had begun before the first one ended (the progress
      // lines arrive as the daemon emits them), so the three intervals overlap.
      const lines = r.stderr.split('\n');
      const firstDone = lines.findIndex((l) => l.startsWith('done: Stopping '));
      for (const n of [a, b, c]) {
        const began = lines.indexOf(`Stopping ${n}...`);
        assert.ok(
          began >= 0 && began < firstDone,
          `${n} began before any stop ended:\n${r.stderr}`,
        );
      }
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
