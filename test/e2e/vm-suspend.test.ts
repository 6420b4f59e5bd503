import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { processConfinement, processStartTime } from '../../src/util/proc.js';
import { lookupUser } from '../../src/util/users.js';
import { QemuDriver } from '../../src/vmm/qemu/driver.js';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { isAlive, sleep } from '../helpers/sandbox.js';

/**
 * `vm suspend` / `vm resume` on a real QEMU guest (TCG here) in a network
 * namespace made by the test: a process started before the suspend runs on
 * after the resume, the VMM and its memory are gone while suspended, the VM
 * keeps its address and answers `vm ssh`, and its clock is the host's.
 */

interface Vm {
  id: string;
  name: string;
  state: string;
  ip: string | null;
  mac: string | null;
  pid: number | null;
  dir: string;
  lastError: string | null;
}

/** VmRSS of a process in bytes (from /proc: independent of banger's own stats). */
function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

/** The guest's counter: a shell loop started before the suspend, writing to /root every 200 ms. */
const COUNTER =
  "setsid sh -c 'echo $$ > /root/counter.pid; i=0; while :; do i=$((i+1)); echo $i > /root/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1 &";

describe('vm suspend / resume (qemu, real VM)', { timeout: 20 * 60_000 }, () => {
  let env: VmEnv | undefined;

  before(async () => {
    if (!isRoot()) return;
    env = await vmEnv('vms', { config: 'vmm = "qemu"\n' });
  });
  after(async () => {
    await env?.cleanup();
  });

  test('a suspended VM frees its VMM and memory and resumes where it was, with its address and a current clock', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    const name = e.name('susp');
    const show = (): Promise<Vm> => e.json<Vm>(['vm', 'show', name]);
    const ssh = (cmd: string) => e.run(['vm', 'ssh', name, '--', cmd], { timeoutMs: 120_000 });

    const created = await e.run(['vm', 'create', '--name', name, '--memory', '1G', '--vcpu', '1'], {
      timeoutMs: 10 * 60_000,
    });
    assert.equal(created.code, 0, created.stderr);
    assert.equal((await ssh(COUNTER)).code, 0);
    await sleep(1000);
    const pidBefore = (await ssh('cat /root/counter.pid')).stdout.trim();
    assert.match(pidBefore, /^\d+$/);
    const v0 = await show();
    assert.equal(v0.state, 'running');
    const ramFile = `/dev/shm/banger-${v0.id}.ram`;
    assert.equal(fs.existsSync(ramFile), false, 'the RAM file is unlinked once QEMU runs');
    const rss = rssBytes(v0.pid!);
    assert.ok(rss > 100 * 1024 * 1024, `a booted VMM holds >100 MiB (${rss})`);

    const sus = await e.run(['vm', 'suspend', name]);
    assert.equal(sus.code, 0, sus.stderr);
    assert.equal(sus.stdout.trim(), `${name}: suspended`);
    const suspendedAt = Date.now();
    const v1 = await show();
    assert.equal(v1.state, 'suspended');
    assert.equal(v1.pid, null);
    assert.equal(v1.ip, v0.ip, 'the address is kept');
    assert.equal(isAlive(v0.pid!), false, 'the VMM process is gone (its memory with it)');
    assert.equal(fs.existsSync(ramFile), false, 'no RAM file left on /dev/shm');
    assert.ok(fs.existsSync(path.join(v0.dir, 'suspend.state')));
    assert.ok(fs.statSync(path.join(v0.dir, 'suspend.mem')).size === 1024 * 1024 * 1024);
    const listed = await e.json<Vm[]>(['vm', 'list']);
    assert.equal(listed.find((v) => v.name === name)?.state, 'suspended');

    // The daemon killed (no shutdown) while the VM is suspended: the next daemon (started by
    // the next command) re-adopts it as it was — suspended, its saved state kept, nothing running.
    const daemon = e.sb.daemonPid();
    assert.ok(daemon && isAlive(daemon), 'a daemon runs');
    process.kill(daemon, 'SIGKILL');
    for (let i = 0; i < 100 && isAlive(daemon); i++) await sleep(50);
    const readopted = await show();
    assert.notEqual(e.sb.daemonPid(), daemon, 'a new daemon answered');
    assert.equal(readopted.state, 'suspended', 'still suspended under the new daemon');
    assert.equal(readopted.pid, null);
    assert.equal(readopted.ip, v0.ip);
    assert.ok(fs.existsSync(path.join(v0.dir, 'suspend.state')), 'its saved state kept');
    assert.ok(fs.existsSync(path.join(v0.dir, 'suspend.mem')));
    // A graceful daemon restart too.
    assert.equal((await e.run(['daemon', 'stop'])).code, 0);
    assert.equal((await show()).state, 'suspended');

    // Suspended for at least 8 s: a guest clock that was not stepped would be that far behind.
    await sleep(Math.max(0, 8000 - (Date.now() - suspendedAt)));
    const res = await e.run(['vm', 'resume', name]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.trim(), `${name}: resumed`);
    const v2 = await show();
    assert.equal(v2.state, 'running');
    assert.equal(v2.ip, v0.ip);
    assert.equal(v2.mac, v0.mac);
    assert.notEqual(v2.pid, v0.pid, 'a new VMM');
    assert.equal(fs.existsSync(path.join(v0.dir, 'suspend.state')), false, 'saved state removed');
    assert.equal(fs.existsSync(path.join(v0.dir, 'suspend.mem')), false);

    const hostBefore = Date.now() / 1000;
    const r = await ssh(
      'date +%s.%N; kill -0 $(cat /root/counter.pid) && echo alive $(cat /root/counter.pid); a=$(cat /root/counter); sleep 1; echo $a $(cat /root/counter)',
    );
    const hostAfter = Date.now() / 1000;
    assert.equal(r.code, 0, r.stderr);
    const [date, alive, counts] = r.stdout.trim().split('\n');
    const guestNow = Number(date);
    assert.ok(
      guestNow >= hostBefore - 2 && guestNow <= hostAfter + 2,
      `guest clock ${guestNow} within 2 s of the host's [${hostBefore}, ${hostAfter}]`,
    );
    assert.equal(alive, `alive ${pidBefore}`, 'the process started before the suspend still runs');
    const [a, b] = counts!.split(' ').map(Number);
    assert.ok(b! > a!, `the counter goes on after the resume (${a} → ${b})`);
  });

  test('vm start resumes a suspended VM; vm stop discards the saved state', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    const name = e.name('susp');
    const show = (): Promise<Vm> => e.json<Vm>(['vm', 'show', name]);
    const created = await e.run(['vm', 'create', '--name', name, '--memory', '1G', '--vcpu', '1'], {
      timeoutMs: 10 * 60_000,
    });
    assert.equal(created.code, 0, created.stderr);
    assert.equal((await e.run(['vm', 'ssh', name, '--', COUNTER])).code, 0);
    const pidBefore = (await e.run(['vm', 'ssh', name, '--', 'cat /root/counter.pid'])).stdout;

    assert.equal((await e.run(['vm', 'suspend', name])).code, 0);
    const start = await e.run(['vm', 'start', name]);
    assert.equal(start.code, 0, start.stderr);
    assert.equal((await show()).state, 'running');
    const alive = await e.run([
      'vm',
      'ssh',
      name,
      '--',
      'kill -0 $(cat /root/counter.pid) && cat /root/counter.pid',
    ]);
    assert.equal(alive.stdout, pidBefore, 'vm start continued the suspended guest');

    // Nothing to resume: one line.
    const again = await e.run(['vm', 'resume', name]);
    assert.equal(again.code, 1);
    assert.equal(
      again.stderr.trim(),
      `error: vm '${name}' is not suspended (running): it is already running`,
    );

    assert.equal((await e.run(['vm', 'suspend', name])).code, 0);
    const dir = (await show()).dir;
    const stop = await e.run(['vm', 'stop', name]);
    assert.equal(stop.code, 0, stop.stderr);
    const v = await show();
    assert.equal(v.state, 'stopped');
    assert.equal(fs.existsSync(path.join(dir, 'suspend.state')), false);
    assert.equal(fs.existsSync(path.join(dir, 'suspend.mem')), false);
    const del = await e.run(['vm', 'delete', name]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(fs.existsSync(dir), false);
  });

  test('after a completed save, QMP cont runs the guest on with writable disks (-runas, seccomp)', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    const name = e.name('cont');
    const created = await e.run(['vm', 'create', '--name', name, '--memory', '1G', '--vcpu', '1'], {
      timeoutMs: 10 * 60_000,
    });
    assert.equal(created.code, 0, created.stderr);
    const v = await e.json<Vm>(['vm', 'show', name]);
    const handle = {
      pid: v.pid!,
      pidStartTime: processStartTime(v.pid!)!,
      controlSocket: path.join(v.dir, 'qmp.sock'),
    };
    if (lookupUser('banger-vmm'))
      assert.notEqual(processConfinement(v.pid!)?.uid, 0, 'QEMU runs as the VMM user (-runas)');
    const driver = new QemuDriver();
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-cont-'));
    try {
      await driver.pause(handle);
      await driver.save(handle, {
        statePath: path.join(tmp, 'state'),
        memPath: path.join(tmp, 'mem'),
      });
      assert.equal(await driver.status(handle), 'paused');
      await driver.resume(handle);
      assert.equal(await driver.status(handle), 'running');
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    const w = await e.run(
      ['vm', 'ssh', name, '--', 'echo written-after-cont > /root/after && sync && cat /root/after'],
      { timeoutMs: 120_000 },
    );
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.stdout, 'written-after-cont\n');
    assert.ok(isAlive(v.pid!), 'the same VMM runs on');
  });
});
