import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { StreamEvent } from '../../src/api/events.js';
import type { Paths } from '../../src/config/paths.js';
import { DEFAULT_CONFIG, type Config } from '../../src/config/schema.js';
import { BangerError } from '../../src/errors.js';
import { ed25519HostKey } from '../../src/guest/hostKey.js';
import { openStore, type Store } from '../../src/store/index.js';
import { isProcessAlive } from '../../src/util/proc.js';
import { parseFaults, setFaults } from '../../src/util/fault.js';
import { sleep } from '../../src/util/sleep.js';
import {
  formatSnapshot,
  formatSnapshotTable,
  parseForkCount,
} from '../../src/cli/commands/snapshot.js';
import { formatSpec } from '../../src/cli/commands/vm.js';
import { forkNames } from '../../src/vm/fork.js';
import { vmLayout } from '../../src/vm/layout.js';
import type { VmService } from '../../src/vm/service.js';
import {
  FakeDisks,
  FakeDriver,
  FakeNetwork,
  fakeImage,
  HOST_KEY,
  identityHostKey,
} from '../helpers/fake-vmm.js';
import { fakeVmService, tempPaths } from '../helpers/vm-rig.js';

/**
 * Snapshots, restore and fork in the VM service (src/vm/snapshots.ts,
 * restore.ts, fork.ts) against the fake driver with save/restore, a fake
 * network and plain-file disks, real SQLite and real processes standing in
 * for VMMs with real agent sockets. The real QEMU path runs in
 * test/e2e/vm-snapshot.test.ts.
 */

interface Rig {
  root: string;
  paths: Paths;
  store: Store;
  driver: FakeDriver;
  network: FakeNetwork;
  svc: VmService;
  /** Another service over the same state (a new daemon). */
  make(): VmService;
  events: StreamEvent[];
  emit: (e: StreamEvent) => void;
}

let rig: Rig;

beforeEach(() => {
  const { root, paths } = tempPaths('bgt-snap-');
  const store = openStore(paths.db);
  const image = store.images.insert(fakeImage(path.join(root, 'image')));
  const driver = new FakeDriver().enableSnapshots();
  const network = new FakeNetwork();
  // Warm start (boot snapshots) has its own tests: test/unit/warm-start.test.ts.
  const config: Config = { ...DEFAULT_CONFIG, vmm: 'qemu', accel: 'tcg', warmStart: false };
  const events: StreamEvent[] = [];
  const make = (): VmService =>
    fakeVmService({
      paths,
      store,
      config,
      image: () => image,
      driver,
      network,
      disks: new FakeDisks(),
    });
  const svc = make();
  rig = { root, paths, store, driver, network, svc, make, events, emit: (e) => events.push(e) };
});

const extra: VmService[] = [];

afterEach(async () => {
  for (const s of extra.splice(0)) s.shutdown();
  rig.svc.shutdown();
  await rig.driver.cleanup();
  rig.store.close();
  fs.rmSync(rig.root, { recursive: true, force: true });
});

const create = (name: string) =>
  rig.svc.create({ name, nat: false, start: true, vcpu: 2, memoryMib: 512 }, rig.emit);
const knownHosts = (): string =>
  fs.existsSync(rig.paths.knownHosts) ? fs.readFileSync(rig.paths.knownHosts, 'utf8') : '';
const snapshotDirs = (): string[] =>
  fs.existsSync(rig.paths.snapshotsDir) ? fs.readdirSync(rig.paths.snapshotsDir) : [];
const rejectsWith = (p: Promise<unknown>, code: string, msg: RegExp) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof BangerError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, msg);
    return true;
  });
/** VMMs of the fake driver that still run (its map is updated on the child's exit event, a turn later). */
const liveVmms = () =>
  [...rig.driver.running.values()].filter((r) => isProcessAlive(r.pid, r.pidStartTime)).length;
const alive = (name: string): boolean => {
  const vm = rig.store.vms.byName(name)!;
  return isProcessAlive(vm.pid!, vm.pidStartTime!);
};

describe('vm snapshot', () => {
  test('pauses, saves, copies both disks while paused, resumes; the row records the VM it came from', async () => {
    await create('dev');
    rig.driver.calls.length = 0;
    const s = await rig.svc.snapshot('dev', undefined, rig.emit);
    assert.deepEqual(rig.driver.calls, ['pause dev', 'save dev', 'resume dev']);
    assert.equal(s.name, 'dev-snap1');
    assert.equal(s.kind, 'user');
    assert.equal(s.sourceVm, 'dev');
    assert.equal(s.image, 'test-image');
    assert.equal(s.vmm, 'qemu');
    assert.equal(s.accel, 'tcg');
    assert.equal(s.vcpu, 2);
    assert.equal(s.memoryMib, 512);
    assert.equal(fs.readFileSync(s.files.overlay, 'utf8'), 'overlay');
    assert.equal(fs.readFileSync(s.files.work, 'utf8'), 'work');
    assert.equal(fs.readFileSync(s.files.mem, 'utf8'), 'guest memory');
    assert.ok(s.sizeBytes > 0);
    assert.equal(path.dirname(s.dir), rig.paths.snapshotsDir);
    assert.equal(rig.svc.show('dev').state, 'running');
    assert.ok(alive('dev'));
    assert.equal(rig.driver.paused.size, 0);

    assert.deepEqual(
      rig.svc.snapshotList().map((x) => x.name),
      ['dev-snap1'],
    );
    assert.equal(rig.svc.snapshotShow('dev-snap1').id, s.id);
    assert.equal(rig.svc.snapshotShow(s.id.slice(0, 6)).name, 'dev-snap1');
    assert.equal((await rig.svc.snapshot('dev', 'second', rig.emit)).name, 'second');
    await rejectsWith(
      rig.svc.snapshot('dev', 'second', rig.emit),
      'conflict',
      /a snapshot named 'second' already exists/,
    );
  });

  test('a failed save resumes the VM and leaves no snapshot, row or files', async () => {
    await create('dev');
    rig.driver.failSave = new BangerError('vmm_failed', 'disk full while saving');
    await rejectsWith(rig.svc.snapshot('dev', 's1', rig.emit), 'vmm_failed', /disk full/);
    assert.ok(rig.driver.calls.includes('resume dev'));
    assert.equal(rig.driver.paused.size, 0);
    assert.equal(rig.svc.show('dev').state, 'running');
    assert.deepEqual(rig.svc.snapshotList(), []);
    assert.deepEqual(snapshotDirs(), []);
  });

  test('a stopped VM, or a VMM without save/restore, is refused with the reason', async () => {
    await rig.svc.create({ name: 'off', nat: false, start: false }, rig.emit);
    await rejectsWith(rig.svc.snapshot('off', undefined, rig.emit), 'precondition', /not running/);
    await create('dev');
    rig.driver.capabilities.snapshot = false;
    await rejectsWith(
      rig.svc.snapshot('dev', undefined, rig.emit),
      'not_implemented',
      /vm 'dev': its VMM \(qemu\) cannot save and restore snapshots/,
    );
    assert.deepEqual(snapshotDirs(), []);
  });
});

describe('vm restore', () => {
  test('a new VM with its own id, address, MAC and tap, its own identity and host key, from copies of the disks', async () => {
    const parent = (await create('dev')).vm;
    await rig.svc.snapshot('dev', 's1', rig.emit);
    const before = Date.now();
    const { vm, spec } = await rig.svc.restore('s1', 'copy', rig.emit);
    assert.equal(vm.name, 'copy');
    assert.equal(vm.state, 'running');
    assert.notEqual(vm.id, parent.id);
    assert.notEqual(vm.ip, parent.ip);
    assert.notEqual(vm.mac, parent.mac);
    assert.notEqual(vm.tap, parent.tap);
    assert.equal(vm.vcpu, 2);
    assert.equal(vm.memoryMib, 512);
    assert.equal(vm.origin, 'snapshot s1 of dev');
    assert.equal(spec.origin, 'snapshot s1 of dev');
    assert.equal(spec.sizing.memoryMib.source, 'snapshot');
    assert.ok(rig.driver.calls.includes('restore copy'));
    assert.ok(!rig.driver.calls.includes('start copy'), 'restored, not booted');

    const sent = rig.driver.identities.get(vm.id);
    assert.equal(sent?.length, 1);
    const id = sent![0]!;
    assert.equal(id.hostname, 'copy');
    assert.equal(id.machineId, createHash('md5').update(vm.id).digest('hex'));
    assert.equal(id.ip, vm.ip);
    assert.equal(id.mac, vm.mac);
    assert.equal(id.iface, 'eth0');
    assert.equal(id.prefix, 24);
    assert.equal(id.gateway, '172.16.0.1');
    assert.match(String(id.entropy), /^[0-9a-f]{128}$/);
    assert.ok(Number(id.timeMs) >= before && Number(id.timeMs) <= Date.now());
    // the new ed25519 host key, made on the host: a seed and its public key
    assert.match(String(id.hostKeySeed), /^[0-9a-f]{64}$/);
    assert.equal(
      ed25519HostKey(Buffer.from(String(id.hostKeySeed), 'hex')).publicHex,
      id.hostKeyPublic,
    );

    // known_hosts: the child's new key, never the parent's for the child's alias
    const kh = knownHosts();
    assert.ok(kh.includes(`copy.vm ${identityHostKey('copy')}`), kh);
    assert.ok(kh.includes(`dev.vm ${HOST_KEY.split(' ').slice(0, 2).join(' ')}`), kh);
    assert.ok(!kh.includes(`copy.vm ${HOST_KEY.split(' ').slice(0, 2).join(' ')}`), kh);

    const l = vmLayout(rig.paths.vmsDir, vm.id);
    assert.equal(fs.readFileSync(l.overlayDisk, 'utf8'), 'overlay');
    assert.equal(fs.readFileSync(l.workDisk, 'utf8'), 'work');
    assert.ok(alive('dev') && alive('copy'));
  });

  test('without --name the VM gets a generated name; a taken name is refused before anything is made', async () => {
    await create('dev');
    await rig.svc.snapshot('dev', 's1', rig.emit);
    await rejectsWith(rig.svc.restore('s1', 'dev', rig.emit), 'conflict', /'dev' already exists/);
    assert.equal(rig.store.vms.list().length, 1);
    const { vm } = await rig.svc.restore('s1', undefined, rig.emit);
    assert.match(vm.name, /^[a-z]+-[a-z]+(-\d+)?$/);
  });

  test('a failed restore leaves no VM, directory or tap; the snapshot stays', async () => {
    await create('dev');
    await rig.svc.snapshot('dev', 's1', rig.emit);
    rig.driver.failRestoreOf.add('bad');
    await assert.rejects(rig.svc.restore('s1', 'bad', rig.emit), /fake restore of bad failed/);
    assert.equal(rig.store.vms.byName('bad'), undefined);
    assert.deepEqual(fs.readdirSync(rig.paths.vmsDir).length, 1);
    assert.equal(rig.network.taps.size, 1);
    assert.deepEqual(
      rig.svc.snapshotList().map((s) => s.name),
      ['s1'],
    );
  });
  test('a daemon adopting a VM mid-restore sends its identity again before it is running', async () => {
    await create('dev');
    await rig.svc.snapshot('dev', 's1', rig.emit);
    const { vm } = await rig.svc.restore('s1', 'copy', rig.emit);
    // as if the daemon had died after the VMM was restored, before the identity was applied
    rig.store.vms.update(vm.id, { state: 'starting' });
    rig.svc.shutdown();
    const next = rig.make();
    extra.push(next);
    await next.adopt();
    await next.adopted();
    assert.equal(next.show('copy').state, 'running');
    assert.equal(rig.driver.identities.get(vm.id)?.length, 2, 'the identity was sent again');
    assert.equal(rig.driver.identities.get(rig.store.vms.byName('dev')!.id), undefined);
  });
});

describe('snapshot delete', () => {
  test('refused while a VM is being restored from it; afterwards it removes the row and the files', async () => {
    await create('dev');
    const s = await rig.svc.snapshot('dev', 's1', rig.emit);
    let open!: () => void;
    rig.driver.restoreGate = new Promise((r) => (open = r));
    const restoring = rig.svc.restore('s1', 'copy', rig.emit);
    for (let i = 0; i < 500 && rig.svc.snapshotShow('s1').restoring.length === 0; i++)
      await sleep(5);
    assert.deepEqual(rig.svc.snapshotShow('s1').restoring, ['copy']);
    assert.throws(() => rig.svc.snapshotDelete('s1'), /snapshot 's1' is being restored as copy/);
    open();
    await restoring;
    assert.deepEqual(rig.svc.snapshotDelete('s1'), { deleted: ['s1'] });
    assert.equal(fs.existsSync(s.dir), false);
    assert.deepEqual(snapshotDirs(), []);
    assert.deepEqual(rig.svc.snapshotList(), []);
    assert.equal(rig.svc.show('copy').state, 'running', 'a restored VM does not need its snapshot');
  });
});

describe('vm fork', () => {
  test('-n 2: two running children with their own identities; the parent keeps running; the temporary snapshot is gone', async () => {
    const parent = (await create('dev')).vm;
    const r = await rig.svc.fork('dev', { count: 2 }, rig.emit);
    assert.equal(r.parent, 'dev');
    assert.deepEqual(
      r.children.map((c) => c.vm.name),
      ['dev-1', 'dev-2'],
    );
    const [a, b] = r.children.map((c) => c.vm);
    for (const c of [a!, b!]) {
      assert.equal(c.state, 'running');
      assert.equal(c.origin, 'fork of dev');
      assert.notEqual(c.ip, parent.ip);
    }
    assert.notEqual(a!.ip, b!.ip);
    assert.notEqual(a!.mac, b!.mac);
    const ia = rig.driver.identities.get(a!.id)![0]!;
    const ib = rig.driver.identities.get(b!.id)![0]!;
    assert.notEqual(ia.machineId, ib.machineId);
    assert.notEqual(ia.entropy, ib.entropy);
    assert.equal(rig.svc.show('dev').state, 'running');
    assert.ok(alive('dev'));
    assert.deepEqual(rig.svc.snapshotList(), []);
    assert.deepEqual(snapshotDirs(), []);

    const named = await rig.svc.fork('dev', { name: 'exp', count: 1 }, rig.emit);
    assert.deepEqual(
      named.children.map((c) => c.vm.name),
      ['exp'],
    );
  });

  test('one child failing removes the others and the temporary snapshot; the parent runs on', async () => {
    await create('dev');
    rig.driver.failRestoreOf.add('t-2');
    await assert.rejects(
      rig.svc.fork('dev', { name: 't', count: 2 }, rig.emit),
      /fake restore of t-2 failed/,
    );
    assert.deepEqual(
      rig.store.vms.list().map((v) => v.name),
      ['dev'],
    );
    assert.deepEqual(rig.svc.snapshotList(), []);
    assert.deepEqual(snapshotDirs(), []);
    assert.equal(rig.network.taps.size, 1);
    assert.ok(alive('dev'));
  });
});

describe('forkNames', () => {
  test('NAME for one, NAME-1..N for several, <parent>-N skipping taken names; taken or invalid names refused', () => {
    assert.deepEqual(forkNames('dev', 'x', 1, new Set()), ['x']);
    assert.deepEqual(forkNames('dev', 'x', 3, new Set()), ['x-1', 'x-2', 'x-3']);
    assert.deepEqual(forkNames('dev', undefined, 2, new Set(['dev-1'])), ['dev-2', 'dev-3']);
    assert.throws(() => forkNames('dev', 'dev', 1, new Set(['dev'])), /'dev' already exists/);
    assert.throws(() => forkNames('dev', 'Bad_Name', 1, new Set()), /invalid VM name 'Bad_Name'/);
    assert.equal(forkNames('a'.repeat(64), undefined, 1, new Set())[0], `${'a'.repeat(62)}-1`);
  });
});

describe('CLI output', () => {
  const snap = {
    id: '0123456789abcdef',
    name: 'dev-snap1',
    kind: 'user' as const,
    sourceVm: 'dev',
    sourceVmId: 'aaaabbbbccccdddd',
    image: 'debian-bookworm',
    imageId: 'img',
    kernel: 'debian-cloud-6.1',
    vmm: 'qemu',
    accel: 'tcg',
    vcpu: 2,
    memoryMib: 1024,
    diskSize: 8 * 1024 ** 3,
    nat: false,
    dir: '/s/snapshots/0123456789abcdef',
    files: {
      state: '/s/snapshots/0123456789abcdef/vmstate',
      mem: '/s/snapshots/0123456789abcdef/memory',
      overlay: '/s/snapshots/0123456789abcdef/overlay.ext4',
      work: '/s/snapshots/0123456789abcdef/work.ext4',
    },
    sizeBytes: 150 * 1024 ** 2,
    createdAt: '2026-12-04T10:00:00Z',
    restoring: [],
  };

  test('snapshot list is a table; -n is checked without the daemon; the spec line says where a VM came from', () => {
    const lines = formatSnapshotTable([snap], Date.parse('2026-12-04T10:05:00Z')).split('\n');
    assert.match(lines[0]!, /^NAME\s+KIND\s+VM\s+IMAGE\s+VMM\s+VCPU\s+MEMORY\s+SIZE\s+CREATED$/);
    assert.match(
      lines[1]!,
      /^dev-snap1\s+user\s+dev\s+debian-bookworm\s+qemu\/tcg\s+2\s+1G\s+150(\.0)? MiB\s+5 minutes ago$/,
    );
    assert.match(formatSnapshot(snap), /^restore:\s+banger vm restore dev-snap1$/m);
    assert.equal(parseForkCount(undefined), 1);
    assert.equal(parseForkCount('16'), 16);
    assert.throws(() => parseForkCount('17'), /invalid -n '17'/);
    const spec = {
      name: { value: 'dev-1', source: 'fork of dev' },
      sizing: {
        vcpu: { value: 2, source: 'snapshot' as const },
        memoryMib: { value: 1024, source: 'snapshot' as const },
        diskSize: { value: 8 * 1024 ** 3, source: 'snapshot' as const },
      },
      image: { value: 'debian-bookworm', source: 'snapshot s' },
      kernel: { value: 'debian-cloud-6.1', source: 'snapshot s' },
      vmm: { value: 'qemu', source: 'snapshot s' },
      accel: { value: 'tcg', source: 'snapshot s' },
      nat: false,
      origin: 'fork of dev',
    };
    assert.match(formatSpec(spec), / nat=off from=fork_of_dev$/);
  });
});

describe('crash consistency: a step that fails is completed or rolled back at once (the journal)', () => {
  afterEach(() => setFaults(undefined));
  const suspendFilesOf = (name: string) => {
    const l = vmLayout(rig.paths.vmsDir, rig.store.vms.byName(name)!.id);
    return [l.suspendState, l.suspendMem];
  };
  const injected = (op: string, point: string) => new RegExp(`injected fault at ${op}:${point}`);
  const nothingOpen = (at: string) =>
    assert.deepEqual(rig.store.journal.open(), [], `${at}: no intent left`);

  for (const point of ['after-pause', 'after-save', 'after-disks', 'after-resume', 'after-row']) {
    test(`snapshot:${point}: no snapshot left, the VM runs (not paused)`, async () => {
      await create('dev');
      setFaults(parseFaults(`snapshot:${point}:fail`));
      await assert.rejects(rig.svc.snapshot('dev', 's1', rig.emit), injected('snapshot', point));
      nothingOpen(point);
      // the row (after-row) is a complete snapshot: kept
      assert.deepEqual(
        rig.svc.snapshotList().map((s) => s.name),
        point === 'after-row' ? ['s1'] : [],
      );
      assert.equal(snapshotDirs().length, point === 'after-row' ? 1 : 0);
      assert.equal(rig.driver.paused.size, 0, 'not left paused');
      assert.equal(rig.svc.show('dev').state, 'running');
      assert.ok(alive('dev'));
    });
  }

  for (const point of [
    'after-row',
    'after-disks',
    'after-tap',
    'after-spawn',
    'after-starting',
    'after-net',
  ]) {
    test(`restore:${point}: no VM, directory, VMM or tap left; the snapshot stays`, async () => {
      await create('dev');
      await rig.svc.snapshot('dev', 's1', rig.emit);
      setFaults(parseFaults(`restore:${point}:fail`));
      await assert.rejects(rig.svc.restore('s1', 'copy', rig.emit), injected('restore', point));
      nothingOpen(point);
      assert.equal(rig.store.vms.byName('copy'), undefined);
      assert.equal(fs.readdirSync(rig.paths.vmsDir).length, 1);
      assert.equal(rig.network.taps.size, 1, "only the parent's tap");
      assert.equal(liveVmms(), 1, "only the parent's VMM");
      assert.deepEqual(
        rig.svc.snapshotList().map((s) => s.name),
        ['s1'],
      );
    });
  }

  for (const point of ['after-snapshot', 'after-children']) {
    test(`fork:${point}: no child and no temporary snapshot left; the parent runs`, async () => {
      await create('dev');
      setFaults(parseFaults(`fork:${point}:fail`));
      await assert.rejects(rig.svc.fork('dev', { count: 2 }, rig.emit), injected('fork', point));
      nothingOpen(point);
      assert.deepEqual(
        rig.store.vms.list().map((v) => v.name),
        ['dev'],
      );
      assert.deepEqual(rig.svc.snapshotList(), []);
      assert.deepEqual(snapshotDirs(), []);
      assert.equal(liveVmms(), 1);
      assert.ok(alive('dev'));
    });
  }

  for (const [point, want] of [
    ['after-pause', 'running'],
    ['after-save', 'running'],
    ['after-kill', 'suspended'],
    ['after-row', 'suspended'],
  ] as const) {
    test(`suspend:${point}: ${want === 'running' ? 'undone: running, no files' : 'completed: suspended with both files'}`, async () => {
      await create('dev');
      setFaults(parseFaults(`suspend:${point}:fail`));
      await assert.rejects(rig.svc.suspend('dev', rig.emit), injected('suspend', point));
      nothingOpen(point);
      const v = rig.svc.show('dev');
      assert.equal(v.state, want);
      if (want === 'running') assert.equal(rig.driver.paused.size, 0, 'not left paused');
      for (const f of suspendFilesOf('dev'))
        assert.equal(fs.existsSync(f), want === 'suspended', f);
      if (want === 'running') assert.ok(alive('dev'));
      else assert.deepEqual([...rig.network.taps], [], 'its tap released');
      setFaults(undefined);
      // the retry: a suspend (or a resume of the completed one) works
      if (want === 'running') await rig.svc.suspend('dev', rig.emit);
      assert.equal((await rig.svc.resume('dev', rig.emit)).state, 'running');
    });
  }

  for (const point of ['after-tap', 'after-spawn', 'after-starting', 'after-cont', 'after-ready']) {
    test(`resume:${point}: suspended with its files, no VMM or tap; a retried resume works`, async () => {
      await create('dev');
      await rig.svc.suspend('dev', rig.emit);
      setFaults(parseFaults(`resume:${point}:fail`));
      await assert.rejects(rig.svc.resume('dev', rig.emit), injected('resume', point));
      nothingOpen(point);
      assert.equal(rig.svc.show('dev').state, 'suspended');
      for (const f of suspendFilesOf('dev')) assert.ok(fs.existsSync(f), f);
      assert.equal(liveVmms(), 0, 'no VMM');
      assert.deepEqual([...rig.network.taps], [], 'no tap');
      setFaults(undefined);
      assert.equal((await rig.svc.resume('dev', rig.emit)).state, 'running');
    });
  }
});

describe('saved state that cannot be used: one line, nothing made', () => {
  test('vm restore of a snapshot whose memory or device state is truncated', async () => {
    await create('dev');
    const s = await rig.svc.snapshot('dev', 's1', rig.emit);
    fs.truncateSync(s.files.mem, 3);
    await rejectsWith(
      rig.svc.restore('s1', 'copy', rig.emit),
      'precondition',
      /^snapshot 's1': its saved memory \(.*\/memory\) is truncated: 3 B of 12 B$/,
    );
    fs.writeFileSync(s.files.mem, 'guest memory');
    fs.truncateSync(s.files.state, 0);
    await rejectsWith(
      rig.svc.restore('s1', 'copy', rig.emit),
      'precondition',
      /^snapshot 's1': its saved device state \(.*\/vmstate\) is truncated: 0 B of /,
    );
    assert.equal(rig.store.vms.byName('copy'), undefined);
    assert.equal(fs.readdirSync(rig.paths.vmsDir).length, 1);
    assert.equal(rig.network.taps.size, 1);
    assert.ok(!rig.driver.calls.some((c) => c.startsWith('restore')), 'the driver was not asked');
  });

  test('vm restore of a snapshot whose image was replaced (image register over its name)', async () => {
    await create('dev');
    await rig.svc.snapshot('dev', 's1', rig.emit);
    const img = rig.store.images.list()[0]!;
    fs.writeFileSync(img.rootfsPath, 'another root filesystem');
    await rejectsWith(
      rig.svc.restore('s1', 'copy', rig.emit),
      'precondition',
      /^snapshot 's1': image 'test-image' was replaced after the save; its saved memory does not match the new root filesystem$/,
    );
    assert.equal(rig.store.vms.byName('copy'), undefined);
    assert.equal(rig.network.taps.size, 1);
  });

  test('vm resume with a truncated suspend.mem, or after its image was replaced: still suspended, no VMM or tap', async () => {
    const { vm } = await create('dev');
    await rig.svc.suspend('dev', rig.emit);
    const l = vmLayout(rig.paths.vmsDir, vm.id);
    fs.truncateSync(l.suspendMem, 5);
    await rejectsWith(
      rig.svc.resume('dev', rig.emit),
      'precondition',
      /^vm 'dev': its saved memory \(.*suspend\.mem\) is truncated: 5 B of 12 B$/,
    );
    fs.writeFileSync(l.suspendMem, 'guest memory');
    fs.writeFileSync(rig.store.images.list()[0]!.rootfsPath, 'replaced');
    await rejectsWith(
      rig.svc.resume('dev', rig.emit),
      'precondition',
      /^vm 'dev': image 'test-image' was replaced after the save/,
    );
    assert.equal(rig.svc.show('dev').state, 'suspended');
    assert.equal(liveVmms(), 0);
    assert.deepEqual([...rig.network.taps], []);
    assert.deepEqual(rig.store.journal.open(), []);
  });
});

describe('daemon start: what a VMM spawn or restore cut short left on /dev/shm', () => {
  test("a VM's guest RAM file left on /dev/shm is removed (at start no VMM is being spawned)", async () => {
    const { vm } = await rig.svc.create({ name: 'dev', nat: false, start: false }, rig.emit);
    const ram = `/dev/shm/banger-${vm.id}.ram`;
    fs.writeFileSync(ram, 'left by a restore cut short');
    try {
      rig.svc.shutdown();
      const next = rig.make();
      extra.push(next);
      await next.adopt();
      assert.equal(fs.existsSync(ram), false);
    } finally {
      fs.rmSync(ram, { force: true });
    }
  });
});
