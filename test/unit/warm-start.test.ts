import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { StreamEvent } from '../../src/api/events.js';
import type { VmView } from '../../src/api/schemas/vms.js';
import type { Paths } from '../../src/config/paths.js';
import { DEFAULT_CONFIG, type Config } from '../../src/config/schema.js';
import { BangerError } from '../../src/errors.js';
import { openStore, type Store } from '../../src/store/index.js';
import type { ImageRecord } from '../../src/store/images.js';
import type { SnapshotRecord } from '../../src/store/snapshots.js';
import { formatSpec } from '../../src/cli/commands/vm.js';
import type { CreateHooks, CreateRequest } from '../../src/vm/create.js';
import type { VmService } from '../../src/vm/service.js';
import {
  bootSnapshotFor,
  bootSnapshotName,
  chooseStart,
  fileSyncEntries,
  imageIdentity,
  shapeKey,
  staleBootSnapshots,
  type Shape,
} from '../../src/vm/warmShape.js';
import {
  FakeDisks,
  FakeDriver,
  FakeNetwork,
  fakeImage,
  identityHostKey,
} from '../helpers/fake-vmm.js';
import { fakeVmService, tempPaths } from '../helpers/vm-rig.js';

/**
 * Warm start (src/vm/warmShape.ts, warmStart.ts, service.ts create): the
 * pure decisions, then the VM service against the fake driver (real SQLite,
 * real processes standing in for VMMs, real agent sockets). The real QEMU
 * path runs in test/e2e/vm-warm.test.ts.
 */

// ------------------------------------------------------------------ pure

const SHAPE: Shape = {
  imageId: 'img1',
  image: 'img1|2026-01-01|-|/r@10:1|-|-|-',
  kernelName: 'k',
  kernel: 'k|6.1|t|/k@5:1|-|-',
  vmm: 'qemu',
  accel: 'tcg',
  vcpu: 2,
  memoryMib: 1024,
  nat: false,
  fixedAddresses: true,
  pubKey: 'ssh-ed25519 AAAA banger',
};

const snap = (o: Partial<SnapshotRecord> = {}): SnapshotRecord => ({
  id: 'id1',
  name: 'boot-x',
  kind: 'boot',
  sourceVmId: null,
  sourceVmName: 'src',
  imageId: 'img1',
  kernelName: 'k',
  vmm: 'qemu',
  accel: 'tcg',
  vcpu: 2,
  memoryMib: 1024,
  diskSize: 8 * 1024 ** 3,
  nat: false,
  dir: '/nowhere',
  sizeBytes: 100,
  meta: {},
  createdAt: '2026-01-01T00:00:00.000Z',
  ...o,
});

describe('warm start: shapes and decisions', () => {
  test('the shape key is a sha256 that changes with every field and only with them', () => {
    const k = shapeKey(SHAPE);
    assert.match(k, /^[0-9a-f]{64}$/);
    assert.equal(shapeKey({ ...SHAPE }), k);
    const changes: Partial<Shape>[] = [
      { imageId: 'img2' },
      { image: 'img1|2026-01-02|-|/r@10:1|-|-|-' },
      { kernelName: null },
      { kernel: 'k|6.2|t|/k@5:1|-|-' },
      { vmm: 'firecracker' },
      { accel: 'kvm' },
      { vcpu: 4 },
      { memoryMib: 2048 },
      { nat: true },
      { fixedAddresses: !SHAPE.fixedAddresses },
      { pubKey: 'ssh-ed25519 BBBB banger' },
    ];
    const keys = changes.map((c) => shapeKey({ ...SHAPE, ...c }));
    for (const key of keys) assert.notEqual(key, k);
    assert.equal(new Set(keys).size, changes.length);
    assert.equal(bootSnapshotName(k), `boot-${k.slice(0, 16)}`);
  });

  test("an image's identity follows its row and its files' size and mtime", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-warm-id-'));
    try {
      const img = {
        ...fakeImage(dir),
        createdAt: 't0',
        updatedAt: 't0',
      } as ImageRecord;
      const a = imageIdentity(img);
      assert.equal(imageIdentity(img), a);
      assert.notEqual(imageIdentity({ ...img, updatedAt: 't1' }), a);
      assert.notEqual(imageIdentity({ ...img, digest: 'sha256:1' }), a);
      fs.writeFileSync(img.rootfsPath, 'rebuilt');
      assert.notEqual(imageIdentity(img), a, 'the rootfs file changed behind the row');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('restore or boot: warm only when on, started, not --cold, restorable and not smaller', () => {
    const base = {
      warmStart: true,
      start: true,
      cold: false,
      canSnapshot: true,
      canDefer: true,
      diskSize: 8 * 1024 ** 3,
      snapshot: snap(),
    };
    assert.equal(chooseStart(base).start, 'warm');
    assert.equal(chooseStart({ ...base, diskSize: 16 * 1024 ** 3 }).start, 'warm');
    const cold = (o: Partial<typeof base>) => chooseStart({ ...base, ...o });
    assert.deepEqual(cold({ start: false }), { start: 'cold', keep: false, why: 'not started' });
    assert.deepEqual(cold({ warmStart: false }), {
      start: 'cold',
      keep: false,
      why: 'warm_start = false',
    });
    assert.deepEqual(cold({ cold: true }), { start: 'cold', keep: false, why: '--cold' });
    assert.deepEqual(cold({ canSnapshot: false }), {
      start: 'cold',
      keep: false,
      why: 'the VMM cannot restore snapshots',
    });
    assert.deepEqual(cold({ diskSize: 4 * 1024 ** 3 }), {
      start: 'cold',
      keep: false,
      why: "the disk is smaller than the boot snapshot's",
    });
    assert.deepEqual(cold({ snapshot: undefined }), {
      start: 'cold',
      keep: true,
      why: 'no boot snapshot of this shape yet',
    });
    assert.equal(
      (cold({ snapshot: undefined, canDefer: false }) as { keep: boolean }).keep,
      false,
      'content that can only go onto the disk before boot: no boot snapshot of it',
    );
  });

  test('a boot snapshot is used only under its own name with its own full key', () => {
    const key = 'a'.repeat(64);
    const good = snap({ name: bootSnapshotName(key), meta: { shape: key } });
    const lookup = (s: SnapshotRecord) => (n: string) => (n === s.name ? s : undefined);
    assert.equal(bootSnapshotFor(key, lookup(good)), good);
    assert.equal(
      bootSnapshotFor(
        key,
        lookup({ ...good, meta: { shape: `${'a'.repeat(16)}${'b'.repeat(48)}` } }),
      ),
      undefined,
    );
    assert.equal(bootSnapshotFor(key, lookup({ ...good, kind: 'user' })), undefined);
  });

  test('boot snapshots of an older state of the image or kernel are stale; others and user ones are not', () => {
    const now = { imageId: 'img1', image: 'I2', kernelName: 'k', kernel: 'K2' };
    const all = [
      snap({ name: 'old-image', meta: { image: 'I1', kernel: 'K2' } }),
      snap({ name: 'old-kernel', meta: { image: 'I2', kernel: 'K1' } }),
      snap({ name: 'current', meta: { image: 'I2', kernel: 'K2' } }),
      snap({ name: 'other-image', imageId: 'img9', meta: { image: 'X', kernel: 'K1' } }),
      snap({ name: 'user', kind: 'user', meta: {} }),
    ];
    assert.deepEqual(
      staleBootSnapshots(all, now).map((s) => s.name),
      ['old-image', 'old-kernel'],
    );
  });

  test('[[file_sync]] as tar entries under /root: directories first, modes kept', () => {
    const e = fileSyncEntries(
      {
        files: [
          { path: '/.npmrc', hostPath: '/h/.npmrc', mode: 0o600 },
          { path: '/cfg/a/b.toml', hostPath: '/h/cfg/a/b.toml', mode: 0o644 },
        ],
        dirs: [
          { path: '/cfg/a', mode: 0o40755 },
          { path: '/cfg', mode: 0o700 },
        ],
      },
      1000,
    );
    assert.deepEqual(
      e.map((x) => [x.kind, x.path, x.mode.toString(8), x.source ?? null]),
      [
        ['dir', 'cfg', '700', null],
        ['dir', 'cfg/a', '755', null],
        ['file', '.npmrc', '600', '/h/.npmrc'],
        ['file', 'cfg/a/b.toml', '644', '/h/cfg/a/b.toml'],
      ],
    );
  });
});

// ------------------------------------------------------------------ the service

/** FakeDisks that remember what each make() was asked to put on the work disk. */
class RecordingDisks extends FakeDisks {
  readonly made: { dir: string; files: number }[] = [];
  override async make(
    l: { dir: string; overlayDisk: string; workDisk: string },
    o?: { files: unknown[] },
  ): Promise<void> {
    this.made.push({ dir: path.basename(l.dir), files: o?.files.length ?? 0 });
    await super.make(l);
  }
}

interface Rig {
  root: string;
  paths: Paths;
  store: Store;
  driver: FakeDriver;
  disks: RecordingDisks;
  config: Config;
  svc: VmService;
  events: StreamEvent[];
  emit: (e: StreamEvent) => void;
}

let rig: Rig;

beforeEach(() => {
  const { root, paths } = tempPaths('bgt-warm-');
  const store = openStore(paths.db);
  store.images.insert(fakeImage(path.join(root, 'image')));
  const driver = new FakeDriver().enableSnapshots();
  const disks = new RecordingDisks();
  const config: Config = { ...DEFAULT_CONFIG, vmm: 'qemu', accel: 'tcg', warmStart: true };
  const events: StreamEvent[] = [];
  const svc = fakeVmService({
    paths,
    store,
    config,
    // the image as the store has it now (tests change it)
    image: () => store.images.get('img-test')!,
    driver,
    network: new FakeNetwork(),
    disks,
  });
  rig = { root, paths, store, driver, disks, config, svc, events, emit: (e) => events.push(e) };
});

afterEach(async () => {
  rig.svc.shutdown();
  await rig.driver.cleanup();
  rig.store.close();
  fs.rmSync(rig.root, { recursive: true, force: true });
});

const GiB = 1024 ** 3;
const run = (name: string, o: Partial<CreateRequest> = {}, hooks: CreateHooks = {}) =>
  rig.svc.create(
    { name, nat: false, start: true, vcpu: 2, memoryMib: 512, diskSize: 8 * GiB, ...o },
    rig.emit,
    undefined,
    hooks,
  );
const boots = () => rig.svc.snapshotList().filter((s) => s.kind === 'boot');
const warnings = () =>
  rig.events.flatMap((e) => (e.type === 'log' && e.level === 'warn' ? [e.message] : []));
const vmCalls = (name: string) =>
  rig.driver.calls.filter((c) => c.endsWith(` ${name}`) || c.includes(` ${name} `));

describe('warm start in vm create', () => {
  test('the first VM of a shape boots and keeps a boot snapshot at readiness; the next is restored with its own identity', async () => {
    const first = await run('a1');
    assert.equal(first.spec.start, 'cold');
    assert.match(formatSpec(first.spec), / start=cold$/);
    assert.deepEqual(vmCalls('a1'), [
      'preflight a1',
      'preflight a1',
      'start a1',
      'pause a1',
      'save a1',
      'resume a1',
    ]);
    const [b] = boots();
    assert.ok(b, 'a boot snapshot was kept');
    assert.match(b.name, /^boot-[0-9a-f]{16}$/);
    assert.equal(b.sourceVm, 'a1');
    assert.equal(b.diskSize, 8 * GiB);
    assert.equal(rig.svc.show('a1').start, `cold (kept boot snapshot ${b.name})`);
    assert.equal(rig.svc.show('a1').state, 'running');

    const second = await run('a2');
    assert.equal(second.spec.start, 'warm');
    assert.match(formatSpec(second.spec), / start=warm$/);
    assert.equal(
      second.spec.sizing.vcpu.source,
      'flag',
      'the spec is the create’s, not the snapshot’s',
    );
    assert.deepEqual(vmCalls('a2'), ['preflight a2', 'preflight a2', 'restore a2']);
    assert.equal(second.vm.state, 'running');
    assert.equal(second.vm.start, `warm (boot snapshot ${b.name})`);
    assert.equal(second.vm.origin, null);
    const sent = rig.driver.identities.get(second.vm.id)!;
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.hostname, 'a2');
    assert.notEqual(second.vm.ip, first.vm.ip);
    const kh = fs.readFileSync(rig.paths.knownHosts, 'utf8');
    assert.ok(kh.includes(identityHostKey('a2').split(' ').slice(0, 2).join(' ')));
    assert.equal(boots().length, 1, 'no second boot snapshot of the same shape');
    assert.deepEqual(warnings(), []);
  });

  test('--cold boots and keeps nothing; another shape boots and keeps its own; a smaller disk boots', async () => {
    await run('a1');
    await run('c1', { cold: true });
    assert.deepEqual(vmCalls('c1'), ['preflight c1', 'preflight c1', 'start c1']);
    assert.equal(rig.svc.show('c1').start, 'cold');
    assert.equal(boots().length, 1);

    await run('v4', { vcpu: 4 });
    assert.ok(rig.driver.calls.includes('start v4'));
    assert.equal(boots().length, 2, 'a 4-vCPU shape has its own boot snapshot');

    await run('small', { diskSize: 4 * GiB });
    assert.ok(rig.driver.calls.includes('start small'));
    assert.ok(!rig.driver.calls.includes('restore small'));
    assert.equal(boots().length, 2);
  });

  test('warm_start = false and --no-start never restore or keep boot snapshots', async () => {
    rig.config.warmStart = false;
    await run('a1');
    await run('a2');
    assert.ok(!rig.driver.calls.some((c) => c.startsWith('restore') || c.startsWith('save')));
    rig.config.warmStart = true;
    await run('n1', { start: false });
    assert.equal(rig.svc.show('n1').state, 'created');
    assert.equal(rig.svc.show('n1').start, null);
    assert.deepEqual(boots(), []);
  });

  test('a larger disk than the boot snapshot’s is grown online after the restore', async () => {
    rig.driver.enableResize();
    await run('a1');
    const r = await run('big', { diskSize: 12 * GiB });
    assert.equal(r.spec.start, 'warm');
    assert.deepEqual(
      rig.driver.calls.filter((c) => c.startsWith('resize')),
      ['resize big overlay', 'resize big work'],
    );
    assert.equal(r.vm.diskSize, 12 * GiB);
    assert.equal(rig.store.vms.byName('big')!.diskSize, 12 * GiB);
  });

  test('a failed restore falls back to a cold boot with one warning, leaves no half VM and drops the snapshot', async () => {
    await run('a1');
    const bad = boots()[0]!;
    rig.driver.failRestore = new BangerError('vmm_failed', 'incoming migration failed');
    const r = await run('a2');
    assert.equal(r.spec.start, 'cold');
    assert.equal(r.vm.state, 'running');
    assert.deepEqual(vmCalls('a2'), [
      'preflight a2',
      'preflight a2',
      'restore a2',
      'preflight a2',
      'start a2',
    ]);
    const w = warnings();
    assert.equal(w.length, 1);
    assert.match(
      w[0]!,
      new RegExp(
        `^warm start from ${bad.name} failed, booting instead: .*incoming migration failed`,
      ),
    );
    assert.equal(rig.store.vms.list().filter((v) => v.name === 'a2').length, 1);
    assert.ok(!fs.existsSync(bad.dir), 'the snapshot that failed is removed');
    assert.deepEqual(boots(), [], 'the fallback boots as before: content on disk, nothing kept');
    const specs = rig.events.flatMap((e) =>
      e.type === 'item' && (e.data as { kind?: string }).kind === 'spec'
        ? [(e.data as { spec: { start?: string } }).spec.start]
        : [],
    );
    assert.deepEqual(specs.slice(-2), ['warm', 'cold'], 'the spec line is sent again, saying cold');
  });

  test('a corrupt boot snapshot (its memory file gone) falls back the same way', async () => {
    await run('a1');
    fs.rmSync(boots()[0]!.files.mem);
    const r = await run('a2');
    assert.equal(r.vm.state, 'running');
    assert.equal(r.spec.start, 'cold');
    assert.equal(warnings().length, 1);
    // the next VM boots and keeps a fresh one
    await run('a3');
    assert.equal(boots().length, 1);
    assert.equal(boots()[0]!.sourceVm, 'a3');
    assert.equal((await run('a4')).spec.start, 'warm');
  });

  test('an image that changed makes its boot snapshots stale: removed, the next VM boots and keeps a new one', async () => {
    await run('a1');
    const old = boots()[0]!;
    rig.store.images.update('img-test', { digest: 'sha256:rebuilt' });
    const r = await run('a2');
    assert.equal(r.spec.start, 'cold');
    assert.ok(!boots().some((s) => s.id === old.id));
    assert.ok(!fs.existsSync(old.dir));
    assert.equal(boots().length, 1);
    assert.equal(boots()[0]!.sourceVm, 'a2');
    assert.equal((await run('a3')).spec.start, 'warm');
  });

  test('content is never in a boot snapshot: the first VM gets it written after the snapshot, warm ones after the restore', async () => {
    const order: string[] = [];
    const hooks = (tag: string): CreateHooks => ({
      populateWorkDisk: async () => {
        order.push(`${tag}: disk`);
      },
      populateRunning: async (vm: VmView) => {
        order.push(`${tag}: running ${vm.state}, ${rig.driver.calls.at(-1)}`);
      },
    });
    await run('a1', {}, hooks('a1'));
    assert.deepEqual(order, ['a1: running running, resume a1'], 'written after the snapshot');
    assert.equal(rig.disks.made.length, 1);
    assert.equal(rig.disks.made[0]!.files, 0);
    await run('a2', {}, hooks('a2'));
    assert.equal(order[1], 'a2: running running, restore a2');
    await run('c1', { cold: true }, hooks('c1'));
    assert.equal(order[2], 'c1: disk', '--cold writes onto the disk before the boot, as before');
  });

  test('a create hook that can only fill the disk boots and keeps no boot snapshot', async () => {
    let filled = 0;
    await run('w1', {}, { populateWorkDisk: async () => void filled++ });
    assert.equal(filled, 1);
    assert.deepEqual(boots(), []);
  });

  test('content that cannot be written into a warm VM: the VM is removed, the create boots instead', async () => {
    await run('a1');
    let disk = 0;
    const r = await run(
      'a2',
      {},
      {
        populateWorkDisk: async () => void disk++,
        populateRunning: async () => {
          throw new BangerError('network', "cannot reach vm 'a2' over ssh");
        },
      },
    );
    assert.equal(r.spec.start, 'cold');
    assert.equal(disk, 1);
    assert.equal(r.vm.state, 'running');
    assert.equal(rig.store.vms.list().filter((v) => v.name === 'a2').length, 1);
    assert.match(warnings()[0]!, /cannot reach vm 'a2' over ssh/);
  });
});

describe('boot snapshots: prune, list, image and kernel removal', () => {
  test('snapshot prune removes every boot snapshot and its files, says what it freed, keeps user snapshots', async () => {
    await run('a1');
    await run('v4', { vcpu: 4 });
    await rig.svc.snapshot('a1', 'mine', rig.emit);
    const b = boots();
    assert.equal(b.length, 2);
    assert.deepEqual(
      rig.svc
        .snapshotList()
        .map((s) => [s.name, s.kind])
        .sort(),
      [...b.map((s) => [s.name, 'boot']), ['mine', 'user']].sort(),
    );
    const r = rig.svc.snapshotPrune();
    assert.deepEqual(r.pruned.sort(), b.map((s) => s.name).sort());
    assert.equal(r.freedBytes, b[0]!.sizeBytes + b[1]!.sizeBytes);
    assert.ok(r.freedBytes > 0);
    assert.deepEqual(r.kept, []);
    for (const s of b) assert.ok(!fs.existsSync(s.dir));
    assert.deepEqual(
      rig.svc.snapshotList().map((s) => s.name),
      ['mine'],
    );
    assert.deepEqual(rig.svc.snapshotPrune(), { pruned: [], freedBytes: 0, kept: [] });
  });

  test('dropBoot (image and kernel delete) removes boot snapshots with their files, never user ones', async () => {
    await run('a1');
    await rig.svc.snapshot('a1', 'mine', rig.emit);
    const all = rig.store.snapshots.usingImage('img-test');
    assert.equal(all.length, 2);
    const dropped = rig.store.snapshots.dropBoot(all, rig.paths.snapshotsDir);
    assert.deepEqual(
      dropped.map((s) => s.kind),
      ['boot'],
    );
    assert.ok(!fs.existsSync(dropped[0]!.dir));
    assert.deepEqual(
      rig.store.snapshots.usingImage('img-test').map((s) => s.name),
      ['mine'],
    );
    assert.equal(rig.store.snapshots.usingKernel('nope').length, 0);
  });
});
