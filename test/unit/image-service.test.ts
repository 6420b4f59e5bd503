import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import type { StreamEvent } from '../../src/api/events.js';
import { resolvePaths } from '../../src/config/paths.js';
import { DEFAULT_CONFIG } from '../../src/config/schema.js';
import { KeyedMutex } from '../../src/util/mutex.js';
import { BangerError, isBangerError } from '../../src/errors.js';
import type { BuiltImage } from '../../src/image/debian/build.js';
import { EXT_MAGIC_OFFSET } from '../../src/image/files.js';
import { KernelService } from '../../src/image/kernel/service.js';
import { DEBIAN_BASE_PACKAGES, DEV_PACKAGES } from '../../src/image/recipe.js';
import {
  ImageService,
  type ImageServiceDeps,
  type RecipeBuilder,
} from '../../src/image/service.js';
import type { KernelRecord } from '../../src/store/kernels.js';
import { openStore, type Store } from '../../src/store/index.js';
import { silentLogger } from '../../src/util/log.js';

/**
 * The image service with a fake recipe builder (no mmdebstrap): atomic
 * commits, single-flight, cancellation, kernels, register/promote/delete.
 * The real builder runs in test/e2e/image-default.test.ts.
 */

const ext4Bytes = (): Buffer => {
  const b = Buffer.alloc(64 * 1024);
  b.writeUInt16LE(0xef53, EXT_MAGIC_OFFSET);
  return b;
};

class FakeKernels extends KernelService {
  fail: BangerError | undefined = new BangerError(
    'not_implemented',
    "'kernel pull x' is not implemented yet",
  );
  calls: string[] = [];
  override async ensure(name: string): Promise<KernelRecord> {
    this.calls.push(name);
    if (this.fail) throw this.fail;
    return this.deps.store.kernels.upsert({
      name,
      version: '6.1',
      source: 'test',
      dir: '/k',
      kernelPath: '/k/vmlinuz',
      vmlinuxPath: null,
      initrdPath: null,
      managed: true,
      meta: {},
    });
  }
  override catalog() {
    return [
      { name: 'debian-cloud-6.1', description: '', package: 'x', installed: false, default: true },
    ];
  }
}

interface Rig {
  root: string;
  store: Store;
  deps: ImageServiceDeps;
  kernels: FakeKernels;
  svc: ImageService;
  builds: { name: string; packages: string[]; docker: boolean }[];
  gate?: Promise<void>;
  failWith?: Error;
  events: StreamEvent[];
}

let rig: Rig;

function makeRig(): Rig {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-imgsvc-'));
  const paths = resolvePaths({
    env: {
      BANGER_STATE_DIR: path.join(root, 'state'),
      BANGER_CACHE_DIR: path.join(root, 'cache'),
      BANGER_CONFIG_DIR: path.join(root, 'config'),
      BANGER_RUNTIME_DIR: path.join(root, 'run'),
    },
    uid: 1000,
    home: root,
  });
  const store = openStore(paths.db);
  const deps: ImageServiceDeps = {
    paths,
    config: () => DEFAULT_CONFIG,
    logger: silentLogger(),
    store,
    locks: new KeyedMutex(),
  };
  const kernels = new FakeKernels(deps);
  const agent = path.join(root, 'banger-agent');
  fs.writeFileSync(agent, 'agent');
  const r: Rig = { root, store, deps, kernels, svc: undefined as never, builds: [], events: [] };
  const builder: RecipeBuilder = async (o) => {
    r.builds.push({ name: o.name, packages: o.recipe.packages, docker: o.recipe.docker });
    fs.mkdirSync(o.outDir, { recursive: true });
    fs.writeFileSync(path.join(o.outDir, 'rootfs.ext4'), ext4Bytes());
    fs.writeFileSync(path.join(o.outDir, 'work-seed.ext4'), ext4Bytes());
    fs.writeFileSync(path.join(o.buildDir, 'rootfs.tar'), 'scratch');
    o.emit({ type: 'step', id: 'bootstrap', label: 'bootstrap', state: 'start' });
    if (r.gate) {
      await Promise.race([
        r.gate,
        // a loaded host may reach the builder only after the caller has left
        new Promise((_, reject) => {
          const cancel = () => reject(new BangerError('cancelled', 'build was cancelled'));
          if (o.signal?.aborted) cancel();
          else o.signal?.addEventListener('abort', cancel);
        }),
      ]);
    }
    if (r.failWith) throw r.failWith;
    const size = { sizeBytes: 65536, allocatedBytes: 65536 };
    const built: BuiltImage = {
      rootfsPath: path.join(o.outDir, 'rootfs.ext4'),
      workSeedPath: path.join(o.outDir, 'work-seed.ext4'),
      rootfs: size,
      workSeed: size,
      mode: 'unshare',
      mirror: 'test',
      packages: ['a=1'],
      downloadedBytes: 0,
      tarBytes: 7,
      mise: null,
      contractSha256: 'c',
      ms: { total: 1 },
    };
    return built;
  };
  r.svc = new ImageService(deps, kernels, { agentBinary: agent, buildRecipe: builder });
  return r;
}

const emit = (e: Exclude<StreamEvent, { type: 'result' | 'error' }>) => rig.events.push(e);
const scratchLeft = () => {
  const tmp = rig.deps.paths.tmpDir;
  return fs.existsSync(tmp) ? fs.readdirSync(tmp) : [];
};
const imageDirs = () => {
  const d = rig.deps.paths.imagesDir;
  return fs.existsSync(d) ? fs.readdirSync(d) : [];
};
async function rejects(p: Promise<unknown>, code: string, re?: RegExp): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    assert.ok(isBangerError(e), String(e));
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.line, re);
    return e;
  }
  assert.fail(`expected a ${code} error`);
}

describe('ImageService', () => {
  beforeEach(() => {
    rig = makeRig();
  });
  afterEach(() => {
    rig.store.close();
    fs.rmSync(rig.root, { recursive: true, force: true });
  });

  test('pull debian-bookworm: built once, moved to images/<id>, row with recipe and kernel', async () => {
    const v = await rig.svc.pull({ ref: 'debian-bookworm' }, emit);
    assert.equal(v.name, 'debian-bookworm');
    assert.equal(v.source, 'catalog:debian-bookworm');
    assert.equal(v.managed, true);
    assert.equal(v.rootfsPath, path.join(rig.deps.paths.imagesDir, v.id, 'rootfs.ext4'));
    assert.equal(v.workSeedPath, path.join(rig.deps.paths.imagesDir, v.id, 'work-seed.ext4'));
    assert.equal(v.kernel, 'debian-cloud-6.1', 'recorded even before the kernel exists');
    assert.equal(
      rig.store.images.byName('debian-bookworm')?.kernelName,
      null,
      'FK column only once installed',
    );
    assert.deepEqual(
      (v.meta.recipe as { packages: string[] }).packages,
      [...DEBIAN_BASE_PACKAGES, ...DEV_PACKAGES],
      'the default image is the dev box',
    );
    assert.match(
      String((v.meta.build as { log: string }).log),
      /image-build\/debian-bookworm-.*\.log$/,
    );
    assert.deepEqual(rig.kernels.calls, ['debian-cloud-6.1']);
    assert.ok(
      rig.events.some(
        (e) => e.type === 'log' && e.level === 'warn' && /kernel debian-cloud-6\.1/.test(e.message),
      ),
    );
    assert.deepEqual(scratchLeft(), [], 'scratch removed');
    assert.deepEqual(imageDirs(), [v.id]);
    assert.deepEqual(fs.readdirSync(path.join(rig.deps.paths.imagesDir, v.id)).sort(), [
      'rootfs.ext4',
      'work-seed.ext4',
    ]);
    // a second pull returns the same image without building
    const again = await rig.svc.pull({ ref: 'debian-bookworm' }, emit);
    assert.equal(again.id, v.id);
    assert.equal(rig.builds.length, 1);
  });

  test('the kernel column is set when the kernel pull succeeds', async () => {
    rig.kernels.fail = undefined;
    await rig.svc.pull({ ref: 'debian-bookworm' }, emit);
    assert.equal(rig.store.images.byName('debian-bookworm')?.kernelName, 'debian-cloud-6.1');
  });

  test('concurrent pulls of one name share one build and both get the image', async () => {
    let open!: () => void;
    rig.gate = new Promise((r) => (open = r));
    const a = rig.svc.pull({ ref: 'debian-bookworm' }, emit);
    const seen: StreamEvent[] = [];
    const b = rig.svc.pull({ ref: 'debian-bookworm' }, (e) => seen.push(e));
    await new Promise((r) => setTimeout(r, 20));
    open();
    const [va, vb] = await Promise.all([a, b]);
    assert.equal(va.id, vb.id);
    assert.equal(rig.builds.length, 1);
    assert.ok(seen.some((e) => e.type === 'log' && /already being created/.test(e.message)));
    assert.equal(rig.store.images.list().length, 1);
  });

  test('ensure (vm create): builds a missing catalog image, then installs and records its kernel', async () => {
    rig.kernels.fail = undefined;
    const img = await rig.svc.ensure('debian-bookworm', emit);
    assert.equal(img.kernelName, 'debian-cloud-6.1');
    assert.equal((await rig.svc.ensure('debian-bookworm', emit)).id, img.id);
    assert.equal(rig.builds.length, 1);
    await rejects(rig.svc.ensure('nosuch', emit), 'not_found', /image 'nosuch' not found/);
  });

  test('ensure fails when the kernel cannot be had; the image stays', async () => {
    await rejects(rig.svc.ensure('debian-bookworm', emit), 'not_implemented');
    assert.ok(rig.svc.get('debian-bookworm'));
  });

  test('a failed build leaves no row, no image dir, no scratch', async () => {
    rig.failWith = new BangerError(
      'tool_failed',
      'building image debian-bookworm: mmdebstrap failed: E: boom',
    );
    await rejects(rig.svc.pull({ ref: 'debian-bookworm' }, emit), 'tool_failed');
    assert.equal(rig.store.images.list().length, 0);
    assert.deepEqual(imageDirs(), []);
    assert.deepEqual(scratchLeft(), []);
    const logs = fs.readdirSync(rig.deps.paths.imageBuildDir);
    assert.equal(logs.length, 1);
    assert.match(
      fs.readFileSync(path.join(rig.deps.paths.imageBuildDir, logs[0]!), 'utf8'),
      /failed: .*boom/,
    );
  });

  test('Ctrl-C: cancelling the only caller cancels the build and leaves nothing', async () => {
    rig.gate = new Promise(() => undefined);
    const ac = new AbortController();
    const p = rig.svc.pull({ ref: 'debian-bookworm' }, emit, ac.signal);
    await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    await rejects(p, 'cancelled');
    assert.equal(rig.store.images.list().length, 0);
    assert.deepEqual(imageDirs(), []);
    assert.deepEqual(scratchLeft(), []);
  });

  test('one of two callers leaving does not cancel the shared build', async () => {
    let open!: () => void;
    rig.gate = new Promise((r) => (open = r));
    const ac = new AbortController();
    const a = rig.svc.pull({ ref: 'debian-bookworm' }, emit, ac.signal);
    const b = rig.svc.pull({ ref: 'debian-bookworm' }, () => undefined);
    await new Promise((r) => setTimeout(r, 20));
    ac.abort();
    const left = rejects(a, 'cancelled'); // the caller that left is told so at once
    open();
    const vb = await b;
    assert.equal(vb.name, 'debian-bookworm');
    await left;
  });

  test('image build extends the recipe; images without one are refused with a reason', async () => {
    await rig.svc.pull({ ref: 'debian-bookworm-slim' }, emit);
    const v = await rig.svc.build(
      { name: 'dev', fromImage: 'debian-bookworm-slim', packages: ['make'], docker: true },
      emit,
    );
    assert.equal(v.source, 'build:debian-bookworm-slim');
    assert.deepEqual(rig.builds[1], {
      name: 'dev',
      packages: [...DEBIAN_BASE_PACKAGES, 'make'],
      docker: true,
    });
    assert.equal((v.meta.recipe as { docker: boolean }).docker, true);
    await rejects(
      rig.svc.build(
        { name: 'dev', fromImage: 'debian-bookworm-slim', packages: [], docker: false },
        emit,
      ),
      'conflict',
      /image dev already exists/,
    );
    const ext4 = path.join(rig.root, 'r.ext4');
    fs.writeFileSync(ext4, ext4Bytes());
    await rig.svc.register({ name: 'handmade', rootfs: ext4 });
    await rejects(
      rig.svc.build({ name: 'x', fromImage: 'handmade', packages: ['make'], docker: false }, emit),
      'precondition',
      /image handmade \(register:.*\) has no recipe.*--from-image debian-bookworm/,
    );
    await rejects(
      rig.svc.build({ name: 'x', fromImage: 'nope', packages: [], docker: false }, emit),
      'not_found',
    );
  });

  test('OCI references go to the OCI puller; a failed pull leaves nothing', async () => {
    const e = await rejects(rig.svc.pull({ ref: '127.0.0.1:9/none/tool:1' }, emit), 'network');
    assert.match(e.message, /127\.0\.0\.1:9/);
    assert.deepEqual(scratchLeft(), []);
    assert.deepEqual(imageDirs(), []);
    assert.equal(rig.store.images.list().length, 0);
  });

  test('register: validates files, unmanaged, re-register updates in place, managed names refused', async () => {
    const rootfs = path.join(rig.root, 'r.ext4');
    fs.writeFileSync(rootfs, ext4Bytes());
    const kernel = path.join(rig.root, 'vmlinuz');
    fs.writeFileSync(kernel, 'k');
    const v = await rig.svc.register({ name: 'mine', rootfs, kernel });
    assert.equal(v.managed, false);
    assert.equal(v.kernelPath, kernel);
    assert.equal(v.kernel, null);
    assert.equal(v.rootfsPath, rootfs);
    const rootfs2 = path.join(rig.root, 'r2.ext4');
    fs.writeFileSync(rootfs2, ext4Bytes());
    const v2 = await rig.svc.register({ name: 'mine', rootfs: rootfs2 });
    assert.equal(v2.id, v.id, 'same image, updated');
    assert.equal(v2.rootfsPath, rootfs2);
    assert.equal(v2.kernel, 'debian-cloud-6.1', 'default kernel recorded');
    await rejects(
      rig.svc.register({ name: 'x', rootfs: kernel }),
      'image_invalid',
      /not an ext4 file system/,
    );
    await rejects(
      rig.svc.register({ name: 'x', rootfs, workSeed: path.join(rig.root, 'nope') }),
      'not_found',
    );
    await rejects(rig.svc.register({ name: 'x', rootfs, kernel, kernelRef: 'k' }), 'usage');
    await rejects(
      rig.svc.register({ name: 'x', rootfs, kernelRef: 'nosuchkernel' }),
      'not_found',
      /kernel 'nosuchkernel'/,
    );
    await rig.svc.pull({ ref: 'debian-bookworm' }, emit);
    await rejects(rig.svc.register({ name: 'debian-bookworm', rootfs }), 'conflict', /managed/);
    assert.equal(rig.store.images.list().length, 2);
  });

  test('promote copies files under images/<id>, keeps the originals; delete then removes only managed files', async () => {
    const rootfs = path.join(rig.root, 'r.ext4');
    fs.writeFileSync(rootfs, ext4Bytes());
    const seed = path.join(rig.root, 's.ext4');
    fs.writeFileSync(seed, ext4Bytes());
    const v = await rig.svc.register({ name: 'mine', rootfs, workSeed: seed });
    const p = await rig.svc.promote('mine', emit);
    assert.equal(p.managed, true);
    assert.equal(p.rootfsPath, path.join(rig.deps.paths.imagesDir, v.id, 'rootfs.ext4'));
    assert.equal(p.workSeedPath, path.join(rig.deps.paths.imagesDir, v.id, 'work-seed.ext4'));
    assert.deepEqual(fs.readFileSync(p.rootfsPath), ext4Bytes());
    await rejects(rig.svc.promote('mine', emit), 'conflict', /already managed/);
    await rig.svc.delete('mine');
    assert.ok(!fs.existsSync(path.join(rig.deps.paths.imagesDir, v.id)));
    assert.ok(fs.existsSync(rootfs) && fs.existsSync(seed), 'registered originals untouched');
    // unmanaged delete leaves the files
    await rig.svc.register({ name: 'mine2', rootfs });
    await rig.svc.delete('mine2');
    assert.ok(fs.existsSync(rootfs));
    assert.deepEqual(scratchLeft(), []);
  });

  test('delete is refused while VMs use the image, naming them', async () => {
    const v = await rig.svc.pull({ ref: 'debian-bookworm' }, emit);
    for (const name of ['dev', 'ci']) {
      rig.store.vms.insert({
        id: `${name}0123456789abcdef`.slice(0, 16),
        name,
        imageId: v.id,
        kernelName: null,
        state: 'stopped',
        vmm: 'qemu',
        accel: 'tcg',
        vcpu: 1,
        memoryMib: 512,
        diskSize: 1,
        nat: false,
        ip: null,
        mac: null,
        tap: null,
        pid: null,
        pidStartTime: null,
        lastError: null,
        meta: {},
        startedAt: null,
        stoppedAt: null,
      });
    }
    await rejects(
      rig.svc.delete('debian-bookworm'),
      'conflict',
      /used by VMs dev, ci: delete them first: banger vm delete dev ci/,
    );
    assert.deepEqual(rig.svc.show('debian-bookworm').usedBy?.sort(), ['ci', 'dev']);
    assert.ok(fs.existsSync(v.rootfsPath));
  });

  test('list and show: apparent and allocated sizes, catalog status and sizes', async () => {
    const before = rig.svc.catalog();
    assert.deepEqual(
      before.map((c) => [c.name, c.installed, c.default, c.estimated, c.docker]),
      [
        ['debian-bookworm', false, true, true, true],
        ['debian-bookworm-slim', false, false, true, false],
      ],
    );
    // before a build: the sizes a build measured, the dev box the bigger one
    assert.ok(before[0]!.sizeBytes > before[1]!.sizeBytes && before[1]!.sizeBytes > 100e6);
    assert.match(
      before[0]!.description,
      /^Debian 12 dev box: systemd, OpenSSH, Docker \(socket-activated\), build-essential, /,
    );
    await rig.svc.pull({ ref: 'debian-bookworm' }, emit);
    const [v] = rig.svc.list();
    assert.equal(v!.sizeBytes, 65536);
    assert.ok(v!.allocatedBytes !== null && v!.allocatedBytes >= 0);
    const after = rig.svc.catalog()[0]!;
    // the fake builder's rootfs is 64 KiB: the real file's size, no estimate
    assert.deepEqual(
      [after.installed, after.estimated, after.sizeBytes, after.allocatedBytes],
      [true, false, 65536, v!.allocatedBytes],
    );
    await rejects(
      Promise.resolve().then(() => rig.svc.show('nope')),
      'not_found',
    );
  });

  test('stale scratch dirs of dead daemons are swept', async () => {
    fs.mkdirSync(path.join(rig.deps.paths.tmpDir, 'img-999999999-abcd'), { recursive: true });
    fs.mkdirSync(path.join(rig.deps.paths.tmpDir, 'other'), { recursive: true });
    await rig.svc.pull({ ref: 'debian-bookworm' }, emit);
    assert.deepEqual(scratchLeft(), ['other']);
  });
});
