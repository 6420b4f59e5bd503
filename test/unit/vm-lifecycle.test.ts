import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { StreamEvent } from '../../src/api/events.js';
import type { Paths } from '../../src/config/paths.js';
import { DEFAULT_CONFIG, type Config } from '../../src/config/schema.js';
import { BangerError } from '../../src/errors.js';
import { openStore, type Store } from '../../src/store/index.js';
import { parseFaults, setFaults } from '../../src/util/fault.js';
import { isProcessAlive } from '../../src/util/proc.js';
import { sleep } from '../../src/util/sleep.js';
import { vmLayout } from '../../src/vm/layout.js';
import type { VmService } from '../../src/vm/service.js';
import type { LaunchSpec } from '../../src/vmm/driver.js';
import type { ImageRecord } from '../../src/store/images.js';
import { FakeDisks, FakeDriver, FakeNetwork, fakeImage, HOST_KEY } from '../helpers/fake-vmm.js';
import { fakeVmService, tempPaths } from '../helpers/vm-rig.js';

/**
 * The VM lifecycle (src/vm) against a fake VMM driver, network and disks: the
 * services' own decisions — states, cleanup after failures, locking,
 * adoption — with real SQLite, real processes standing in for VMMs and a
 * real agent socket. The real drivers and network run in test/e2e/vm-*.
 */

interface Rig {
  root: string;
  paths: Paths;
  store: Store;
  driver: FakeDriver;
  network: FakeNetwork;
  disks: FakeDisks;
  image: ImageRecord;
  svc: VmService;
  events: StreamEvent[];
  emit: (e: StreamEvent) => void;
  /** A second daemon over the same state (adoption). */
  restart(): VmService;
}

let rig: Rig;
const services: VmService[] = [];

function service(r: Omit<Rig, 'svc' | 'restart'>): VmService {
  // Boots only: warm start (boot snapshots) has its own tests, test/unit/warm-start.test.ts.
  const config: Config = { ...DEFAULT_CONFIG, vmm: 'qemu', accel: 'tcg', warmStart: false };
  const svc = fakeVmService({ ...r, config, image: () => r.image });
  services.push(svc);
  return svc;
}

beforeEach(() => {
  const { root, paths } = tempPaths('bgt-vmlife-');
  const store = openStore(paths.db);
  const image = store.images.insert(fakeImage(path.join(root, 'image')));
  const events: StreamEvent[] = [];
  const base = {
    root,
    paths,
    store,
    driver: new FakeDriver(),
    network: new FakeNetwork(),
    disks: new FakeDisks(),
    image,
    events,
    emit: (e: StreamEvent) => events.push(e),
  };
  rig = { ...base, svc: service(base), restart: () => service(base) };
});

afterEach(async () => {
  for (const s of services.splice(0)) s.shutdown();
  await rig.driver.cleanup();
  rig.store.close();
  fs.rmSync(rig.root, { recursive: true, force: true });
});

const create = (name: string, start = true) =>
  rig.svc.create({ name, nat: false, start }, rig.emit);
const knownHosts = (): string =>
  fs.existsSync(rig.paths.knownHosts) ? fs.readFileSync(rig.paths.knownHosts, 'utf8') : '';
const rejectsWith = (p: Promise<unknown>, code: string, msg: RegExp) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof BangerError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, msg);
    return true;
  });

async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('VM lifecycle services (fake driver, network and disks)', () => {
  test('create → running: disks, a tap, the VMM, readiness and the host key', async () => {
    const { vm, spec } = await create('a1');
    assert.equal(vm.state, 'running');
    assert.equal(spec.vmm.value, 'qemu');
    assert.equal(spec.accel.value, 'tcg');
    assert.ok(vm.pid && isProcessAlive(vm.pid), 'the VMM runs');
    assert.equal(vm.tap, 'bgrtest0');
    assert.deepEqual([...rig.network.taps], ['bgrtest0']);
    assert.ok(fs.existsSync(path.join(vm.dir, 'work.ext4')));
    assert.equal(knownHosts(), `a1.vm ${HOST_KEY}\n`);
    assert.deepEqual(rig.driver.calls, ['preflight a1', 'preflight a1', 'start a1']);
    const steps = rig.events.filter((e) => e.type === 'step').map((e) => `${e.id}:${e.state}`);
    assert.deepEqual(steps, [
      'disks:start',
      'disks:done',
      'net:start',
      'net:done',
      'boot:start',
      'boot:done',
    ]);
    const kinds = rig.store.events.list().map((e) => e.kind);
    assert.deepEqual(kinds.reverse(), ['vm.created', 'vm.starting', 'vm.running']);
  });

  test('stop asks the guest, releases the tap; start again; kill; delete removes everything', async () => {
    const { vm } = await create('a2');
    const stopped = await rig.svc.stop('a2', 5000, rig.emit);
    assert.equal(stopped.state, 'stopped');
    assert.equal(stopped.tap, null);
    assert.equal(rig.driver.poweroffs, 1, 'the agent was asked to power off');
    assert.equal(isProcessAlive(vm.pid!), false);
    assert.deepEqual([...rig.network.taps], []);

    const again = await rig.svc.start('a2', rig.emit);
    assert.equal(again.state, 'running');
    assert.notEqual(again.pid, vm.pid);

    const killed = await rig.svc.kill('a2', 'KILL');
    assert.equal(killed.state, 'stopped', 'a kill that was asked for is not a crash');
    assert.equal(isProcessAlive(again.pid!), false);
    await rejectsWith(rig.svc.kill('a2', 'SIGKILL'), 'precondition', /is not running \(stopped\)/);

    await rig.svc.start('a2', rig.emit);
    await rejectsWith(rig.svc.delete('a2', false, rig.emit), 'precondition', /is running/);
    const gone = await rig.svc.delete('a2', true, rig.emit);
    assert.equal(gone.state, 'stopped');
    assert.equal(rig.store.vms.byName('a2'), undefined);
    assert.equal(fs.existsSync(vm.dir), false);
    assert.equal(knownHosts(), '');
    assert.deepEqual([...rig.network.taps], []);
    await until(() => rig.driver.running.size === 0, 'no VMM left');
  });

  test('a VMM that dies behind the daemon is noticed: crashed, tap released', async () => {
    const { vm } = await create('a3');
    process.kill(vm.pid!, 'SIGKILL');
    await until(() => !isProcessAlive(vm.pid!), 'the VMM to die');
    const [v] = rig.svc.list();
    assert.equal(v!.state, 'crashed');
    assert.match(v!.lastError ?? '', /exited unexpectedly/);
    await until(() => rig.network.taps.size === 0, 'the tap to be released');
  });

  test('set: vcpu/memory only while stopped, disks only grow (online while running), NAT at any time', async () => {
    await create('a4');
    await rejectsWith(rig.svc.set('a4', { vcpu: 2 }), 'precondition', /is running/);
    // a running VM's disks grow through its VMM and agent, never the host's disk tools
    await rejectsWith(
      rig.svc.set('a4', { diskSize: 12 * 1024 ** 3 }),
      'not_implemented',
      /cannot resize a disk while the VM runs/,
    );
    assert.deepEqual(rig.disks.grown, [], 'no host-side growth of a running VM');
    const nat = await rig.svc.set('a4', { nat: true });
    assert.equal(nat.nat, true);
    assert.ok(rig.network.calls.includes('applyNat'));
    await rig.svc.stop('a4', 5000, rig.emit);
    const big = await rig.svc.set('a4', { diskSize: 16 * 1024 ** 3, vcpu: 3 });
    assert.equal(big.vcpu, 3);
    assert.deepEqual(rig.disks.grown, [16 * 1024 ** 3]);
    await rejectsWith(rig.svc.set('a4', { diskSize: 1024 ** 3 }), 'usage', /disks only grow/);
  });

  test('a delete racing a create waits for its disks instead of pulling them away', async () => {
    rig.disks.makeDelayMs = 300;
    try {
      const creating = create('race1', false);
      await until(() => rig.svc.list().some((v) => v.name === 'race1'), 'the row to appear');
      const deleting = rig.svc.delete('race1', true, rig.emit);
      const made = await creating;
      assert.equal(made.vm.name, 'race1', 'the create finished with its disks');
      await deleting;
      assert.equal(
        rig.svc.list().some((v) => v.name === 'race1'),
        false,
        'then deleted',
      );
      assert.equal(fs.existsSync(made.vm.dir), false);
    } finally {
      rig.disks.makeDelayMs = 0;
    }
  });

  test('stats: VMM process and guest figures', async () => {
    await create('a5');
    const [s] = await rig.svc.stats(['a5']);
    assert.equal(s!.name, 'a5');
    assert.ok(s!.rssBytes! > 0);
    assert.notEqual(s!.cpuPercent, null);
    assert.equal(s!.guest?.memTotalBytes, 1024 * 1024);
  });
});

describe('a failure part-way leaves nothing behind', () => {
  test('preflight refuses: no row, no directory, no tap', async () => {
    rig.driver.failPreflight = new BangerError('precondition', 'fake VMM needs KVM');
    await rejectsWith(create('f1'), 'precondition', /needs KVM/);
    assert.deepEqual(rig.store.vms.list(), []);
    assert.deepEqual(fs.existsSync(rig.paths.vmsDir) ? fs.readdirSync(rig.paths.vmsDir) : [], []);
    assert.deepEqual(rig.network.calls, []);
  });

  test('making the disks fails: no row, no directory, no tap', async () => {
    rig.disks.fail = new BangerError('tool_failed', 'mkfs.ext4 failed');
    await rejectsWith(create('f2'), 'tool_failed', /mkfs/);
    assert.deepEqual(rig.store.vms.list(), []);
    assert.deepEqual(fs.existsSync(rig.paths.vmsDir) ? fs.readdirSync(rig.paths.vmsDir) : [], []);
    assert.deepEqual(rig.network.calls, []);
  });

  test('a create hook that fails (e.g. a workspace copy) undoes the create', async () => {
    const seen: string[] = [];
    await rejectsWith(
      rig.svc.create({ name: 'f2b', nat: false, start: true }, rig.emit, undefined, {
        populateWorkDisk: async (disk) => {
          seen.push(path.basename(disk));
          throw new BangerError('tool_failed', 'copying the workspace failed');
        },
      }),
      'tool_failed',
      /workspace/,
    );
    assert.deepEqual(seen, ['work.ext4']);
    assert.deepEqual(rig.store.vms.list(), []);
    assert.deepEqual(fs.readdirSync(rig.paths.vmsDir), []);
    assert.deepEqual(rig.network.calls, []);
  });

  test('the VMM fails to start: the VM is in error, its tap released, no process', async () => {
    rig.driver.failStart = new BangerError('vmm_failed', 'QEMU exited while starting');
    await rejectsWith(create('f3'), 'vmm_failed', /QEMU exited/);
    const vm = rig.store.vms.byName('f3')!;
    assert.equal(vm.state, 'error');
    assert.equal(vm.tap, null);
    assert.match(vm.lastError!, /QEMU exited/);
    assert.deepEqual([...rig.network.taps], []);
    await until(() => rig.driver.running.size === 0, 'no VMM left');
  });

  test('the guest dies while booting: error with the reason, VMM gone, tap released', async () => {
    rig.driver.guests.set('f4', { readyAfterMs: 'never', dieAfterMs: 100 });
    await rejectsWith(create('f4'), 'boot_failed', /the VMM exited during boot/);
    const vm = rig.store.vms.byName('f4')!;
    assert.equal(vm.state, 'error');
    assert.equal(vm.pid, null);
    assert.deepEqual([...rig.network.taps], []);
  });

  test('network rules fail after the VMM started: the VMM is killed, the tap released', async () => {
    rig.network.failStarted = new BangerError('network', 'iptables-restore failed');
    await rejectsWith(create('f5'), 'network', /iptables/);
    const vm = rig.store.vms.byName('f5')!;
    assert.equal(vm.state, 'error');
    await until(() => rig.driver.running.size === 0, 'the VMM to be killed');
    assert.deepEqual([...rig.network.taps], []);
  });

  test('a cancelled start kills the VMM and releases the tap', async () => {
    await create('f6', false);
    rig.driver.guests.set('f6', { readyAfterMs: 'never' });
    const ac = new AbortController();
    const p = rig.svc.start('f6', rig.emit, ac.signal);
    await until(() => rig.driver.running.size === 1, 'the VMM to start');
    ac.abort();
    await rejectsWith(p, 'cancelled', /cancelled/);
    assert.equal(rig.store.vms.byName('f6')!.state, 'error');
    await until(() => rig.driver.running.size === 0, 'the VMM to be killed');
    assert.deepEqual([...rig.network.taps], []);
  });
});

describe('a step that fails is recovered at once (the journal, docs/reliability.md)', () => {
  afterEach(() => setFaults(undefined));

  test('start failing right after its VMM was spawned: the VMM is killed, the tap released', async () => {
    await create('j1', false);
    setFaults(parseFaults('start:after-spawn:fail'));
    await rejectsWith(
      rig.svc.start('j1', rig.emit),
      'internal',
      /injected fault at start:after-spawn/,
    );
    const vm = rig.store.vms.byName('j1')!;
    assert.equal(vm.state, 'error');
    assert.equal(vm.pid, null);
    await until(() => rig.driver.running.size === 0, 'the spawned VMM to be killed');
    assert.deepEqual([...rig.network.taps], []);
    assert.deepEqual(rig.store.journal.open(), []);
  });

  test('start failing after the row records the VMM: killed, stopped, tap released', async () => {
    await create('j2', false);
    setFaults(parseFaults('start:after-net:fail'));
    await rejectsWith(
      rig.svc.start('j2', rig.emit),
      'internal',
      /injected fault at start:after-net/,
    );
    const vm = rig.store.vms.byName('j2')!;
    assert.equal(vm.state, 'stopped');
    assert.equal(vm.pid, null);
    assert.equal(vm.tap, null);
    await until(() => rig.driver.running.size === 0, 'the VMM to be killed');
    assert.deepEqual([...rig.network.taps], []);
    setFaults(undefined);
    assert.equal((await rig.svc.start('j2', rig.emit)).state, 'running', 'a retried start works');
  });

  test('delete failing after the files went is completed: no row, no directory', async () => {
    const { vm } = await create('j3', false);
    setFaults(parseFaults('delete:after-files:fail'));
    await rejectsWith(rig.svc.delete('j3', false, rig.emit), 'internal', /delete:after-files/);
    assert.equal(rig.store.vms.byName('j3'), undefined);
    assert.equal(fs.existsSync(vm.dir), false);
  });

  test('at daemon start: a VM directory without a row and a process on its files are swept', async () => {
    const orphan = path.join(rig.paths.vmsDir, 'abcdef0123456789');
    fs.mkdirSync(orphan, { recursive: true });
    const proc = spawn('tail', ['-f', '/dev/null', path.join(orphan, 'qmp.sock')], {
      detached: true,
      stdio: 'ignore',
    });
    proc.unref();
    await until(() => isProcessAlive(proc.pid!), 'the orphan process');
    await rig.restart().adopt();
    assert.equal(fs.existsSync(orphan), false, 'directory removed');
    await until(() => !isProcessAlive(proc.pid!), 'the orphan process to be killed');
  });

  test('at daemon start: a jail without a running VM and a jailed firecracker no row records are swept', async () => {
    const id = 'fedcba9876543210';
    const jail = path.join(rig.paths.stateDir, 'jailer', 'firecracker', id);
    fs.mkdirSync(path.join(jail, 'root'), { recursive: true });
    fs.writeFileSync(path.join(jail, 'root', 'overlay.img'), '');
    // What a jailed Firecracker's command line looks like after the jailer's exec: a shell
    // that keeps running with those words as its arguments (tail would reject --id and exit).
    const proc = spawn(
      'sh',
      ['-c', 'while :; do sleep 1; done', 'firecracker', `--id=${id}`, '--api-sock', '/fc.sock'],
      {
        detached: true,
        stdio: 'ignore',
      },
    );
    proc.unref();
    await until(() => isProcessAlive(proc.pid!), 'the jailed process');
    await rig.restart().adopt();
    assert.equal(fs.existsSync(jail), false, 'jail removed');
    await until(() => !isProcessAlive(proc.pid!), 'the jailed process to be killed');
  });
});

describe('one VM, one operation at a time', () => {
  test('concurrent start/stop/start/kill on one VM never overlap in the driver', async () => {
    await create('c1', false);
    const results = await Promise.allSettled([
      rig.svc.start('c1', rig.emit),
      rig.svc.start('c1', rig.emit),
      rig.svc.stop('c1', 5000, rig.emit),
      rig.svc.start('c1', rig.emit),
      rig.svc.kill('c1', 'SIGKILL'),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'],
    );
    assert.equal(rig.driver.maxInFlight, 1);
    // In arrival order: the second start finds it running; stop; start; kill.
    assert.deepEqual(
      rig.driver.calls.filter((c) => !c.startsWith('preflight')),
      ['start c1', 'stop c1', 'start c1', 'kill c1 SIGKILL'],
    );
    assert.equal(rig.store.vms.byName('c1')!.state, 'stopped');
    assert.deepEqual([...rig.network.taps], []);
  });

  test('different VMs start in parallel', async () => {
    await create('p1', false);
    await create('p2', false);
    rig.driver.startDelayMs = 200;
    await Promise.all([rig.svc.start('p1', rig.emit), rig.svc.start('p2', rig.emit)]);
    assert.equal(rig.driver.maxInFlightAll, 2, 'both VMMs were starting at the same time');
  });
});

describe('adoption by a new daemon', () => {
  test('a running VM is adopted and keeps running; a vanished one is stopped and its tap freed', async () => {
    const { vm: keep } = await create('d1');
    const { vm: lost } = await create('d2');
    const second = rig.restart();
    process.kill(lost.pid!, 'SIGKILL');
    await until(() => !isProcessAlive(lost.pid!), 'd2 to die');
    fs.rmSync(rig.paths.knownHosts);
    await second.adopt();
    await second.adopted();
    assert.equal(second.show('d1').state, 'running');
    assert.equal(second.show('d1').pid, keep.pid);
    assert.equal(second.show('d2').state, 'stopped');
    assert.deepEqual([...rig.network.taps], [keep.tap]);
    assert.equal(knownHosts(), `d1.vm ${HOST_KEY}\n`, 'the ready steps were applied again');
  });

  test('a VM adopted while booting becomes running with its host key (issue 20)', async () => {
    // What a daemon killed during a boot leaves behind: a `starting` row and a VMM whose
    // guest is not ready yet.
    await create('d3', false);
    let open!: () => void;
    rig.driver.guests.set('d3', { gate: new Promise<void>((r) => (open = r)) });
    const rec = rig.store.vms.byName('d3')!;
    const l = vmLayout(rig.paths.vmsDir, rec.id);
    const h = await rig.driver.start({
      vmId: rec.id,
      name: 'd3',
      dir: l.dir,
      agentSocket: l.agentSocket,
    } as LaunchSpec);
    rig.store.vms.update(rec.id, {
      state: 'starting',
      pid: h.pid,
      pidStartTime: h.pidStartTime,
      tap: 'bgrtest9',
      startedAt: new Date().toISOString(),
      meta: { controlSocket: h.controlSocket, consoleStart: 0 },
    });
    rig.network.taps.add('bgrtest9');
    const second = rig.restart();
    await second.adopt();
    assert.equal(second.show('d3').state, 'starting', 'booting until the guest is ready');
    assert.equal(knownHosts(), '');
    open();
    await second.adopted();
    const vm = second.show('d3');
    assert.equal(vm.state, 'running');
    assert.equal(vm.pid, h.pid);
    assert.equal(knownHosts(), `d3.vm ${HOST_KEY}\n`, 'host key asked from the agent again');
    assert.deepEqual([...rig.network.taps], ['bgrtest9']);
  });

  test('a VM adopted while booting whose guest dies ends in error, not running', async () => {
    await create('d4', false);
    rig.driver.guests.set('d4', { readyAfterMs: 'never', dieAfterMs: 300 });
    const rec = rig.store.vms.byName('d4')!;
    const l = vmLayout(rig.paths.vmsDir, rec.id);
    const h = await rig.driver.start({
      vmId: rec.id,
      name: 'd4',
      dir: l.dir,
      agentSocket: l.agentSocket,
    } as LaunchSpec);
    rig.store.vms.update(rec.id, {
      state: 'starting',
      pid: h.pid,
      pidStartTime: h.pidStartTime,
      tap: 'bgrtest8',
      startedAt: new Date().toISOString(),
      meta: { controlSocket: h.controlSocket, consoleStart: 0 },
    });
    rig.network.taps.add('bgrtest8');
    const second = rig.restart();
    await second.adopt();
    await second.adopted();
    const vm = second.show('d4');
    assert.equal(vm.state, 'error');
    assert.match(vm.lastError ?? '', /the VMM exited during boot/);
    assert.deepEqual([...rig.network.taps], []);
  });

  test('idle auto-stop: vm set --auto-stop is kept, a sampling round stops the idle VM and its view says why', async () => {
    const { vm } = await create('i1');
    await rig.svc.set('i1', { autoStopMs: 250 });
    assert.deepEqual(rig.svc.show('i1').autoStop, { afterMs: 250, source: 'vm' });
    await rig.svc.sampleNow(); // first seen running: the idle clock starts
    const seen = rig.svc.show('i1');
    assert.equal(seen.state, 'running');
    assert.equal(seen.activity?.activeReason, null);
    assert.equal(seen.sample?.guest?.load1, 0.5);
    await sleep(300);
    await rig.svc.sampleNow();
    const stopped = rig.svc.show('i1');
    assert.equal(stopped.state, 'stopped');
    assert.ok(stopped.idleStop && stopped.idleStop.idleMs >= 250, JSON.stringify(stopped));
    assert.equal(rig.driver.poweroffs, 1, 'stopped gracefully through the agent');
    const kinds = rig.store.events.list({ subjectId: vm.id }).map((e) => e.kind);
    assert.ok(kinds.includes('vm.idle_stop'), kinds.join(','));
    // Started again, the VM no longer shows an idle stop; `default` follows the config (0 = never).
    await rig.svc.start('i1', rig.emit);
    await rig.svc.set('i1', { autoStopMs: null });
    const again = rig.svc.show('i1');
    assert.equal(again.idleStop, null);
    assert.deepEqual(again.autoStop, { afterMs: 0, source: 'config' });
    await rig.svc.sampleNow();
    await sleep(300);
    await rig.svc.sampleNow();
    assert.equal(rig.svc.show('i1').state, 'running');
  });
});

describe('vm suspend / resume (fake driver with save and restore)', () => {
  const files = (dir: string) => [path.join(dir, 'suspend.state'), path.join(dir, 'suspend.mem')];

  test('suspend: saved, VMM gone, tap released, address kept; resume: restored paused, network, then run, clock stepped', async () => {
    const { vm } = await create('s1');
    rig.driver.calls.length = 0;
    const sus = await rig.svc.suspend('s1', rig.emit);
    assert.equal(sus.state, 'suspended');
    assert.equal(sus.pid, null);
    assert.equal(sus.tap, null);
    assert.equal(sus.ip, vm.ip, 'the address is kept');
    assert.equal(isProcessAlive(vm.pid!), false, 'the VMM is gone');
    assert.deepEqual([...rig.network.taps], [], 'its tap released');
    for (const f of files(vm.dir)) assert.ok(fs.existsSync(f), `${f} saved`);
    assert.deepEqual(rig.driver.calls, ['pause s1', 'save s1', 'kill s1 SIGKILL']);
    assert.equal(rig.svc.show('s1').state, 'suspended', 'liveness leaves it suspended');

    rig.driver.calls.length = 0;
    const res = await rig.svc.resume('s1', rig.emit);
    assert.equal(res.state, 'running');
    assert.equal(res.ip, vm.ip);
    assert.equal(res.mac, vm.mac);
    assert.ok(res.pid && res.pid !== vm.pid && isProcessAlive(res.pid), 'a new VMM runs');
    assert.equal(res.tap, 'bgrtest1', 'a new tap');
    assert.deepEqual(rig.driver.calls, ['preflight s1', 'restore s1 paused', 'resume s1']);
    assert.ok(
      rig.network.calls.indexOf('started') < rig.network.calls.length,
      'network rules applied',
    );
    assert.equal(rig.driver.setTimes, 1, 'the guest clock was stepped once');
    for (const f of files(vm.dir)) assert.equal(fs.existsSync(f), false, `${f} removed`);
    assert.equal(knownHosts(), `s1.vm ${HOST_KEY}\n`);
    const kinds = rig.store.events.list().map((e) => e.kind);
    assert.ok(kinds.includes('vm.suspended') && kinds.includes('vm.resumed'));
  });

  test('a save that fails leaves the VM running, no files, one line', async () => {
    const { vm } = await create('s2');
    rig.driver.failSave = new BangerError('vmm_failed', "QEMU's migration failed: disk full");
    await rejectsWith(
      rig.svc.suspend('s2', rig.emit),
      'vmm_failed',
      /^suspending vm 's2' failed: QEMU's migration failed: disk full$/,
    );
    const v = rig.svc.show('s2');
    assert.equal(v.state, 'running');
    assert.equal(v.pid, vm.pid);
    assert.ok(isProcessAlive(vm.pid!));
    assert.ok(rig.driver.calls.includes('resume s2'), 'the paused VM was let run again');
    for (const f of files(vm.dir)) assert.equal(fs.existsSync(f), false);
  });

  test('a restore that fails leaves it suspended with the reason, its files kept; a second try works', async () => {
    const { vm } = await create('s3');
    await rig.svc.suspend('s3', rig.emit);
    rig.driver.failRestore = new BangerError('vmm_failed', 'QEMU exited while starting');
    await rejectsWith(rig.svc.resume('s3', rig.emit), 'vmm_failed', /QEMU exited while starting/);
    const v = rig.svc.show('s3');
    assert.equal(v.state, 'suspended');
    assert.equal(v.lastError, 'QEMU exited while starting');
    assert.equal(v.tap, null);
    assert.deepEqual([...rig.network.taps], []);
    for (const f of files(vm.dir)) assert.ok(fs.existsSync(f));
    rig.driver.failRestore = undefined;
    assert.equal((await rig.svc.resume('s3', rig.emit)).state, 'running');
  });

  test('a resumed guest that dies before it is ready: error, its stale saved state discarded', async () => {
    const { vm } = await create('s4');
    await rig.svc.suspend('s4', rig.emit);
    rig.driver.guests.set('s4', { readyAfterMs: 'never', dieAfterMs: 100 });
    // The agent channel or the process watch notices first: either way one line.
    await assert.rejects(rig.svc.resume('s4', rig.emit), {
      message: /^resuming vm 's4' failed: .*; its saved state was discarded \(the VMM is gone\)$/,
    });
    const v = rig.svc.show('s4');
    assert.equal(v.state, 'error');
    assert.equal(v.tap, null);
    for (const f of files(vm.dir)) assert.equal(fs.existsSync(f), false);
  });

  test('vm start resumes, vm stop discards, sizing is refused, a daemon restart keeps it suspended', async () => {
    const { vm } = await create('s5');
    await rig.svc.suspend('s5', rig.emit);
    await rejectsWith(rig.svc.set('s5', { memoryMib: 2048 }), 'precondition', /is suspended/);
    await rejectsWith(rig.svc.suspend('s6-missing', rig.emit), 'not_found', /s6-missing/);

    const second = rig.restart();
    await second.adopt();
    assert.equal(second.show('s5').state, 'suspended');

    rig.driver.calls.length = 0;
    const started = await rig.svc.start('s5', rig.emit);
    assert.equal(started.state, 'running');
    assert.ok(rig.driver.calls.includes('restore s5 paused'), 'vm start restored it');
    assert.ok(!rig.driver.calls.includes('start s5'), 'and did not boot it');

    await rig.svc.suspend('s5', rig.emit);
    const stopped = await rig.svc.stop('s5', 5000, rig.emit);
    assert.equal(stopped.state, 'stopped');
    for (const f of files(vm.dir)) assert.equal(fs.existsSync(f), false);
    await rejectsWith(
      rig.svc.resume('s5', rig.emit),
      'precondition',
      /is not suspended \(stopped\)/,
    );
    await rejectsWith(
      rig.svc.suspend('s5', rig.emit),
      'precondition',
      /is not running \(stopped\)/,
    );
  });
});
