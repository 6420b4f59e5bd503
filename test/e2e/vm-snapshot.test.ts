import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';

/**
 * Snapshots, restore and fork on real QEMU microVMs (TCG here), in a network
 * namespace made by the test: one VM is booted, everything else is restored
 * from its snapshots. Each restored VM must be its own machine: address,
 * host key (checked by `vm ssh` against the managed known_hosts, no
 * trust-on-first-use), machine-id, random stream and a clock set from the host.
 */

interface Vm {
  id: string;
  name: string;
  state: string;
  ip: string | null;
  mac: string | null;
  origin?: string | null;
}

interface Snapshot {
  name: string;
  dir: string;
  sourceVm: string;
  files: { state: string; mem: string; overlay: string; work: string };
}

describe('snapshots, restore and fork (qemu, real VMs)', { timeout: 30 * 60_000 }, () => {
  let env: VmEnv | undefined;
  const snapshots: string[] = [];
  let parent = '';

  before(async () => {
    if (!isRoot()) return;
    env = await vmEnv('snap', { config: 'vmm = "qemu"\n' });
  });
  after(async () => {
    if (env) {
      for (const s of snapshots) await env.run(['snapshot', 'delete', s]).catch(() => undefined);
    }
    await env?.cleanup();
  });

  const e = (): VmEnv => env!;
  const show = (ref: string): Promise<Vm> => e().json<Vm>(['vm', 'show', ref]);
  const ssh = async (ref: string, cmd: string): Promise<string> => {
    const r = await e().run(['vm', 'ssh', ref, '--', cmd]);
    assert.equal(r.code, 0, `vm ssh ${ref} -- ${cmd}: ${r.stderr}`);
    return r.stdout;
  };
  const knownHosts = (): string => fs.readFileSync(e().sb.paths.knownHosts, 'utf8');
  const hostKeyOf = (name: string): string => {
    const lines = knownHosts()
      .split('\n')
      .filter((l) => l.startsWith(`${name}.vm `));
    assert.equal(lines.length, 1, `one known_hosts line for ${name}.vm:\n${knownHosts()}`);
    return lines[0]!.split(' ').slice(1).join(' ');
  };

  test('a file written before vm snapshot is in the restored VM, one written after is not; the snapshot is its own', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    parent = e().name('snp');
    const c = await e().run(['vm', 'create', '--name', parent, '--memory', '512M', '--vcpu', '1']);
    assert.equal(c.code, 0, c.stderr);
    await ssh(parent, 'echo written-before > /root/before.txt && sync');

    const snap = `${parent}-s1`;
    snapshots.push(snap);
    const s = await e().run(['vm', 'snapshot', parent, '--name', snap]);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(s.stdout.trim(), snap);
    assert.equal((await show(parent)).state, 'running');
    await ssh(parent, 'echo written-after > /root/after.txt && sync');

    const view = await e().json<Snapshot>(['snapshot', 'show', snap]);
    assert.equal(view.sourceVm, parent);
    for (const f of Object.values(view.files)) assert.ok(fs.existsSync(f), f);
    const list = await e().json<Snapshot[]>(['snapshot', 'list']);
    assert.ok(list.some((x) => x.name === snap));

    const restored = e().name('rst');
    const r = await e().run(['vm', 'restore', snap, '--name', restored]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^spec: name=${restored} .* from=snapshot_${snap}_of_${parent}$`, 'm'),
    );
    const rv = await show(restored);
    assert.equal(rv.state, 'running');
    assert.equal(rv.origin, `snapshot ${snap} of ${parent}`);
    assert.equal(await ssh(restored, 'cat /root/before.txt'), 'written-before\n');
    assert.equal(
      await ssh(restored, 'test -e /root/after.txt && echo present || echo absent'),
      'absent\n',
    );
    assert.equal(await ssh(restored, 'hostname'), `${restored}\n`);
    assert.equal(await ssh(parent, 'cat /root/after.txt'), 'written-after\n');
    const del = await e().run(['vm', 'delete', '--force', restored]);
    assert.equal(del.code, 0, del.stderr);

    // Its memory file cut short (a copy that did not finish): refused in one line, nothing made.
    fs.truncateSync(view.files.mem, 4096);
    const shmBefore = fs.readdirSync('/dev/shm').filter((n) => n.startsWith('banger-'));
    const bad = e().name('bad');
    const cut = await e().run(['vm', 'restore', snap, '--name', bad]);
    assert.notEqual(cut.code, 0, 'a truncated snapshot is not restored');
    const errs = cut.stderr.split('\n').filter((l) => l.startsWith('error: '));
    assert.equal(errs.length, 1, cut.stderr);
    const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    assert.match(
      errs[0]!,
      new RegExp(
        `^error: snapshot '${snap}': its saved memory \\(${esc(view.files.mem)}\\) is truncated: 4 KiB of \\d+(\\.\\d)? MiB: it cannot be restored; delete it: banger snapshot delete ${snap}$`,
      ),
    );
    const vms = await e().json<{ name: string }[]>(['vm', 'list']);
    assert.ok(!vms.some((v) => v.name === bad), 'no VM was made');
    assert.deepEqual(
      fs.readdirSync('/dev/shm').filter((n) => n.startsWith('banger-')),
      shmBefore,
      'nothing left on /dev/shm',
    );

    // a snapshot no VM uses: delete removes its files
    const d = await e().run(['snapshot', 'delete', snap]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(fs.existsSync(view.dir), false, `${view.dir} is gone`);
    const after = await e().json<Snapshot[]>(['snapshot', 'list']);
    assert.ok(!after.some((x) => x.name === snap));
  });

  test('vm fork -n 2: two children at their own addresses with their own host keys, machine-ids, random bytes and the host clock; the parent runs on', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    assert.ok(parent, 'the parent VM of the first test');
    const base = `${parent}-f`;
    const kids = [`${base}-1`, `${base}-2`];
    for (const k of kids) e().adopt(k);
    const t0 = Date.now();
    const f = await e().run(['vm', 'fork', parent, '-n', '2', '--name', base]);
    assert.equal(f.code, 0, f.stderr);
    await ssh(kids[0]!, 'true');
    console.log(`# vm fork -n 2 to the first child's vm ssh -- true: ${Date.now() - t0} ms`);
    for (const l of f.stderr.split('\n').filter((x) => /^done: /.test(x))) console.log(`#   ${l}`);
    assert.deepEqual(f.stdout.trim().split('\n'), kids);

    const p = await show(parent);
    assert.equal(p.state, 'running');
    const facts = [];
    for (const k of kids) {
      const v = await show(k);
      assert.equal(v.state, 'running');
      assert.equal(v.origin, `fork of ${parent}`);
      const before = Date.now();
      const out = await ssh(
        k,
        'hostname; cat /etc/machine-id; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s%3N; ip -4 -o addr show eth0; cat /sys/class/net/eth0/address',
      );
      const afterMs = Date.now();
      const [host, mid, rnd, clock, addr, mac] = out.trim().split('\n');
      assert.equal(host, k);
      assert.match(mid!, /^[0-9a-f]{32}$/);
      assert.match(rnd!, /^[0-9a-f]{64}$/);
      const guestMs = Number(clock);
      assert.ok(
        guestMs >= before - 2000 && guestMs <= afterMs + 2000,
        `${k}: guest clock ${guestMs} not within 2 s of the host's [${before}, ${afterMs}]`,
      );
      assert.match(addr!, new RegExp(` inet ${v.ip!.replace(/\./g, '\\.')}/\\d+ `));
      assert.equal(mac, v.mac);
      facts.push({ ip: v.ip, mid, rnd, key: hostKeyOf(k) });
    }
    const [a, b] = facts;
    assert.notEqual(a!.ip, b!.ip);
    assert.notEqual(a!.ip, p.ip);
    assert.notEqual(b!.ip, p.ip);
    assert.notEqual(a!.key, b!.key);
    assert.notEqual(a!.key, hostKeyOf(parent));
    assert.notEqual(b!.key, hostKeyOf(parent));
    assert.notEqual(a!.mid, b!.mid);
    const parentMid = (await ssh(parent, 'cat /etc/machine-id')).trim();
    assert.notEqual(a!.mid, parentMid);
    assert.notEqual(b!.mid, parentMid);
    assert.notEqual(a!.rnd, b!.rnd);

    // the parent keeps its own state and identity
    assert.equal(await ssh(parent, 'hostname'), `${parent}\n`);
    assert.equal(await ssh(parent, 'cat /root/after.txt'), 'written-after\n');
    // the temporary snapshot of the fork is gone
    const left = await e().json<Snapshot[]>(['snapshot', 'list']);
    assert.ok(!left.some((x) => x.sourceVm === parent), JSON.stringify(left));
  });
});
