import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import type { ProgressSink, StreamEvent } from '../../src/api/events.js';
import { resolvePaths, type Paths } from '../../src/config/paths.js';
import { DEFAULT_CONFIG } from '../../src/config/schema.js';
import { KeyedMutex } from '../../src/util/mutex.js';
import { BangerError } from '../../src/errors.js';
import type { Runner } from '../../src/image/kernel/apt.js';
import {
  initScriptHash,
  KERNEL_LAYOUT_VERSION,
  type BuildContext,
  type KernelMeta,
} from '../../src/image/kernel/build.js';
import { KERNEL_FILES } from '../../src/image/kernel/layout.js';
import { describeUsers, KernelService } from '../../src/image/kernel/service.js';
import { openStore, type Store } from '../../src/store/index.js';
import { parseFaults, setFaults } from '../../src/util/fault.js';
import { silentLogger } from '../../src/util/log.js';

/**
 * The service's decisions with a scripted apt and a fake builder: install,
 * reuse, refresh, single-flight, cancellation, failure cleanup, delete.
 */

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-ksvc-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const NAME = 'debian-cloud-6.1';
const MODS = ['kernel/drivers/virtio/virtio.ko'];

interface Harness {
  svc: KernelService;
  store: Store;
  paths: Paths;
  apt: { version: string; calls: number };
  builds: BuildContext[];
  /** Resolves the pending build(s) when set. */
  gate?: { promise: Promise<void>; open(): void };
  failWith?: Error;
}

/** Wait (on real time, however loaded the host) until the fake build runs. */
async function buildStarted(h: Harness): Promise<void> {
  for (let i = 0; h.builds.length === 0; i++) {
    if (i > 2000) throw new Error('the build never started');
    await new Promise((r) => setTimeout(r, 10));
  }
}

function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

let n = 0;
function harness(): Harness {
  const dir = path.join(root, `h${n++}`);
  const env = {
    BANGER_STATE_DIR: path.join(dir, 'state'),
    BANGER_CACHE_DIR: path.join(dir, 'cache'),
  };
  const paths = resolvePaths({ env, uid: 0, home: dir });
  fs.mkdirSync(paths.stateDir, { recursive: true });
  const store = openStore(paths.db);
  const h = {
    store,
    paths,
    apt: { version: '6.1.192-2', calls: 0 },
    builds: [],
  } as unknown as Harness;
  const runner: Runner = async (cmd, args) => {
    assert.equal(cmd, 'apt-cache');
    h.apt.calls++;
    const v = h.apt.version;
    const rel = v === '6.1.192-2' ? '6.1.0-56' : '6.1.0-57';
    const stdout =
      `Package: linux-image-cloud-amd64\nVersion: ${v}\nDepends: linux-image-${rel}-cloud-amd64 (= ${v})\n\n` +
      `Package: linux-image-${rel}-cloud-amd64\nVersion: ${v}\nArchitecture: amd64\n` +
      `Filename: pool/main/l/linux/linux-image-${rel}-cloud-amd64_${v}_amd64.deb\nSize: 100\nSHA256: ${'a'.repeat(64)}\n\n`;
    assert.ok(args.includes('linux-image-cloud-amd64'));
    return { code: 0, signal: null, stdout, stderr: '' };
  };
  const build = async (ctx: BuildContext): Promise<{ outDir: string; meta: KernelMeta }> => {
    h.builds.push(ctx);
    ctx.emit({ type: 'step', id: 'download', label: 'Downloading', state: 'start' });
    if (h.gate) {
      if (ctx.signal.aborted) throw new BangerError('cancelled', 'aborted');
      await Promise.race([
        h.gate.promise,
        new Promise((_, reject) =>
          ctx.signal.addEventListener(
            'abort',
            () => reject(new BangerError('cancelled', 'aborted')),
            { once: true },
          ),
        ),
      ]);
    }
    ctx.emit({ type: 'progress', id: 'download', current: 100, total: 100, unit: 'bytes' });
    if (h.failWith) throw h.failWith;
    const out = path.join(ctx.workDir, 'out');
    fs.mkdirSync(out);
    for (const f of Object.values(KERNEL_FILES))
      fs.writeFileSync(path.join(out, f), `${f} ${ctx.deb.version}`);
    const release = ctx.deb.package.replace('linux-image-', '');
    const meta = {
      layoutVersion: KERNEL_LAYOUT_VERSION,
      kernelRelease: release,
      package: ctx.deb.package,
      packageVersion: ctx.deb.version,
      initramfs: {
        modules: MODS,
        builtin: [],
        busyboxSha256: 'x',
        scriptHash: initScriptHash(release, MODS),
      },
      sizes: { total: 1234 },
      features: { virtioMmioCmdline: false },
    } as unknown as KernelMeta;
    return { outDir: out, meta };
  };
  h.svc = new KernelService(
    { paths, config: () => DEFAULT_CONFIG, logger: silentLogger(), store, locks: new KeyedMutex() },
    { runner, build },
  );
  return h;
}

const collect = (): { events: StreamEvent[]; sink: ProgressSink } => {
  const events: StreamEvent[] = [];
  return { events, sink: (e) => events.push(e) };
};

const kernelDirEntries = (h: Harness): string[] =>
  fs.existsSync(h.paths.kernelsDir) ? fs.readdirSync(h.paths.kernelsDir) : [];
const tmpEntries = (h: Harness): string[] =>
  fs.existsSync(h.paths.tmpDir) ? fs.readdirSync(h.paths.tmpDir) : [];

describe('KernelService', () => {
  let h: Harness;
  beforeEach(() => {
    h = harness();
  });

  test('pull installs the kernel directory and the row; list and catalog show it', async () => {
    const { events, sink } = collect();
    const v = await h.svc.pull(NAME, sink);
    assert.equal(v.name, NAME);
    assert.equal(v.version, '6.1.0-56-cloud-amd64');
    assert.equal(v.source, 'debian:linux-image-6.1.0-56-cloud-amd64=6.1.192-2');
    assert.equal(v.kernelPath, path.join(h.paths.kernelsDir, NAME, 'vmlinuz'));
    assert.equal(v.vmlinuxPath, path.join(h.paths.kernelsDir, NAME, 'vmlinux'));
    assert.equal(v.initrdPath, path.join(h.paths.kernelsDir, NAME, 'initrd.img'));
    assert.deepEqual(v.usedBy, { images: [], vms: [] });
    assert.ok(fs.existsSync(path.join(h.paths.kernelsDir, NAME, 'modules.ext4')));
    assert.deepEqual(tmpEntries(h), [], 'work dir removed');
    assert.equal(h.apt.calls, 1, 'metapackage and concrete package in one apt-cache call');
    const steps = events.filter((e) => e.type === 'step').map((e) => `${e.id}:${e.state}`);
    assert.deepEqual(steps, [
      'resolve:start',
      'resolve:done',
      'download:start',
      'install:start',
      'install:done',
    ]);
    assert.ok(events.some((e) => e.type === 'progress' && e.unit === 'bytes'));
    assert.deepEqual(
      h.svc.list().map((k) => k.name),
      [NAME],
    );
    const cat = h.svc.catalog();
    assert.deepEqual(
      cat.map((c) => [c.name, c.installed, c.default]),
      [
        ['debian-cloud-6.1', true, true],
        ['debian-generic-6.1', false, false],
      ],
    );
    const logs = fs.readdirSync(h.paths.imageBuildDir);
    assert.equal(logs.length, 1);
    assert.match(logs[0]!, /^kernel-debian-cloud-6\.1-.*\.log$/);
  });

  test('a second pull of the same package reuses the kernel; a newer package refreshes it', async () => {
    await h.svc.pull(NAME, () => undefined);
    const { events, sink } = collect();
    await h.svc.pull(NAME, sink);
    assert.equal(h.builds.length, 1);
    assert.ok(events.some((e) => e.type === 'log' && /up to date/.test(e.message)));
    h.apt.version = '6.1.200-1';
    const v = await h.svc.pull(NAME, () => undefined);
    assert.equal(h.builds.length, 2);
    assert.equal(v.version, '6.1.0-57-cloud-amd64');
    assert.equal(
      fs.readFileSync(path.join(h.paths.kernelsDir, NAME, 'vmlinux'), 'utf8'),
      'vmlinux 6.1.200-1',
    );
    assert.deepEqual(kernelDirEntries(h), [NAME]);
    assert.deepEqual(tmpEntries(h), [], 'old directory removed');
  });

  test('a stale or damaged kernel is rebuilt on pull and on ensure', async () => {
    await h.svc.pull(NAME, () => undefined);
    fs.rmSync(path.join(h.paths.kernelsDir, NAME, 'initrd.img'));
    assert.equal(h.svc.isCurrent(h.svc.get(NAME)!), false);
    await h.svc.ensure(NAME, () => undefined);
    assert.equal(h.builds.length, 2);
    // an initramfs generated by an older banger (different script hash)
    const k = h.svc.get(NAME)!;
    const meta = k.meta as unknown as KernelMeta;
    h.store.kernels.upsert({
      ...k,
      meta: { ...meta, initramfs: { ...meta.initramfs, scriptHash: 'old' } },
    });
    await h.svc.pull(NAME, () => undefined);
    assert.equal(h.builds.length, 3);
  });

  test('ensure returns an installed kernel without asking apt', async () => {
    await h.svc.pull(NAME, () => undefined);
    const calls = h.apt.calls;
    const k = await h.svc.ensure(NAME, () => undefined);
    assert.equal(k.name, NAME);
    assert.equal(h.apt.calls, calls);
  });

  test('unknown names: not_found with the catalog in the hint', async () => {
    await assert.rejects(
      h.svc.pull('debian-nope', () => undefined),
      (e: unknown) => {
        assert.ok(e instanceof BangerError);
        assert.equal(e.code, 'not_found');
        assert.match(e.message, /kernel 'debian-nope' is not in the catalog/);
        assert.match(e.hint!, /debian-cloud-6\.1, debian-generic-6\.1/);
        return true;
      },
    );
  });

  test('concurrent pulls of one name share one build and both see its progress', async () => {
    h.gate = gate();
    const a = collect();
    const b = collect();
    const pa = h.svc.pull(NAME, a.sink);
    await new Promise((r) => setTimeout(r, 20));
    const pb = h.svc.pull(NAME, b.sink);
    await new Promise((r) => setTimeout(r, 20));
    h.gate.open();
    const [ka, kb] = await Promise.all([pa, pb]);
    assert.equal(h.builds.length, 1);
    assert.equal(h.apt.calls, 1);
    assert.deepEqual(ka, kb);
    assert.ok(b.events.some((e) => e.type === 'log' && /already being pulled/.test(e.message)));
    assert.ok(
      b.events.some((e) => e.type === 'progress'),
      'the joiner sees progress',
    );
    assert.ok(b.events.some((e) => e.type === 'step' && e.id === 'install' && e.state === 'done'));
  });

  test('Ctrl-C of the only waiter cancels the build and leaves nothing behind', async () => {
    h.gate = gate();
    const ac = new AbortController();
    const p = h.svc.pull(NAME, () => undefined, ac.signal);
    await buildStarted(h);
    ac.abort();
    await assert.rejects(p, (e: unknown) => e instanceof BangerError && e.code === 'cancelled');
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(h.builds[0]!.signal.aborted, true);
    assert.equal(h.svc.get(NAME), undefined);
    assert.deepEqual(kernelDirEntries(h), []);
    assert.deepEqual(tmpEntries(h), []);
    // and a later pull works
    h.gate = undefined;
    await h.svc.pull(NAME, () => undefined);
    assert.ok(h.svc.get(NAME));
  });

  test('one of two waiters leaving does not cancel the shared build', async () => {
    h.gate = gate();
    const ac = new AbortController();
    const pa = h.svc.pull(NAME, () => undefined, ac.signal);
    const pb = h.svc.pull(NAME, () => undefined);
    await buildStarted(h);
    ac.abort();
    await assert.rejects(pa, /cancelled/);
    h.gate.open();
    assert.equal((await pb).name, NAME);
    assert.equal(h.builds[0]!.signal.aborted, false);
  });

  test('a failed build leaves no kernel, removes its work dir and points at the build log', async () => {
    h.failWith = new BangerError(
      'tool_failed',
      'building the modules disk: mkfs.ext4 failed: boom',
    );
    await assert.rejects(
      h.svc.pull(NAME, () => undefined),
      (e: unknown) => {
        assert.ok(e instanceof BangerError);
        assert.match(e.message, /mkfs\.ext4 failed: boom/);
        assert.match(e.hint!, /see the build log .*image-build\/kernel-debian-cloud-6\.1-.*\.log/);
        return true;
      },
    );
    assert.equal(h.svc.get(NAME), undefined);
    assert.deepEqual(kernelDirEntries(h), []);
    assert.deepEqual(tmpEntries(h), []);
    const log = fs.readdirSync(h.paths.imageBuildDir)[0]!;
    assert.match(fs.readFileSync(path.join(h.paths.imageBuildDir, log), 'utf8'), /error: .*boom/);
  });

  test('stale work dirs of a crashed daemon are swept before the first pull', async () => {
    fs.mkdirSync(path.join(h.paths.tmpDir, 'kernel-debian-cloud-6.1-XXXX', 'out'), {
      recursive: true,
    });
    fs.mkdirSync(path.join(h.paths.tmpDir, 'image-other'), { recursive: true });
    fs.mkdirSync(path.join(h.paths.debCacheDir, '.download-abc'), { recursive: true });
    fs.writeFileSync(path.join(h.paths.debCacheDir, 'kept.deb'), '');
    await h.svc.pull(NAME, () => undefined);
    assert.deepEqual(tmpEntries(h), ['image-other']);
    assert.deepEqual(fs.readdirSync(h.paths.debCacheDir), ['kept.deb']);
  });

  test('delete: refused while images or VMs use it (naming them), else removes files and row', async () => {
    await h.svc.pull(NAME, () => undefined);
    h.store.images.insert({
      id: 'img1',
      name: 'debian-bookworm',
      source: 'catalog:debian-bookworm',
      digest: null,
      kernelName: NAME,
      kernelPath: null,
      initrdPath: null,
      rootfsPath: '/x',
      workSeedPath: null,
      managed: true,
      sizeBytes: null,
      meta: {},
    });
    for (const [id, name, ip] of [
      ['aaaaaaaaaaaaaaaa', 'a', '172.16.0.2'],
      ['bbbbbbbbbbbbbbbb', 'b', '172.16.0.3'],
    ] as const) {
      h.store.vms.insert({
        id,
        name,
        imageId: 'img1',
        kernelName: NAME,
        state: 'stopped',
        vmm: 'qemu',
        accel: null,
        vcpu: 1,
        memoryMib: 256,
        diskSize: 1,
        nat: false,
        ip,
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
    assert.deepEqual(h.svc.list()[0]!.usedBy, { images: ['debian-bookworm'], vms: ['a', 'b'] });
    await assert.rejects(h.svc.delete(NAME), (e: unknown) => {
      assert.ok(e instanceof BangerError);
      assert.equal(e.code, 'conflict');
      assert.equal(
        e.line,
        "kernel 'debian-cloud-6.1' is used by image 'debian-bookworm' and VMs a, b: delete them first",
      );
      return true;
    });
    h.store.vms.delete('aaaaaaaaaaaaaaaa');
    h.store.vms.delete('bbbbbbbbbbbbbbbb');
    h.store.images.delete('img1');
    assert.deepEqual(await h.svc.delete(NAME), { deleted: [NAME] });
    assert.equal(h.svc.get(NAME), undefined);
    assert.deepEqual(kernelDirEntries(h), []);
    assert.deepEqual(tmpEntries(h), []);
    await assert.rejects(h.svc.delete(NAME), /kernel 'debian-cloud-6\.1' not found/);
  });

  test('delete during a pull is refused', async () => {
    h.gate = gate();
    const p = h.svc.pull(NAME, () => undefined);
    await new Promise((r) => setTimeout(r, 20));
    await assert.rejects(h.svc.delete(NAME), /is being pulled/);
    h.gate.open();
    await p;
  });

  test('describeUsers phrases', () => {
    assert.equal(describeUsers({ images: ['x'], vms: [] }), "image 'x'");
    assert.equal(describeUsers({ images: ['x', 'y'], vms: ['v'] }), "images 'x', 'y' and VM v");
    assert.equal(describeUsers({ images: [], vms: ['a', 'b'] }), 'VMs a, b');
  });
});

describe('KernelService: a pull cut short (docs/reliability.md)', () => {
  let h: Harness;
  const OLD = 'debian:linux-image-6.1.0-56-cloud-amd64=6.1.192-2';
  const NEW = 'debian:linux-image-6.1.0-57-cloud-amd64=6.1.200-1';
  const vmlinux = (): string =>
    fs.readFileSync(path.join(h.paths.kernelsDir, NAME, 'vmlinux'), 'utf8');
  beforeEach(async () => {
    h = harness();
    await h.svc.pull(NAME, () => undefined);
    h.apt.version = '6.1.200-1';
  });
  afterEach(() => setFaults(undefined));

  for (const point of ['after-build', 'after-swap', 'after-install']) {
    test(`a refresh failing at ${point} puts the installed kernel back; a retry installs the new one`, async () => {
      setFaults(parseFaults(`kernel:${point}:fail`));
      await assert.rejects(
        h.svc.pull(NAME, () => undefined),
        /injected fault at kernel:/,
      );
      setFaults(undefined);
      assert.equal(h.store.kernels.get(NAME)!.source, OLD);
      assert.equal(vmlinux(), 'vmlinux 6.1.192-2', 'the old kernel is in place');
      assert.deepEqual(tmpEntries(h), [], 'work dir removed');
      assert.deepEqual(h.store.journal.open(), []);
      assert.equal((await h.svc.pull(NAME, () => undefined)).source, NEW);
      assert.equal(vmlinux(), 'vmlinux 6.1.200-1');
    });
  }

  test('a refresh failing after its row keeps the new kernel', async () => {
    setFaults(parseFaults('kernel:after-row:fail'));
    await assert.rejects(
      h.svc.pull(NAME, () => undefined),
      /injected fault at kernel:after-row/,
    );
    assert.equal(h.store.kernels.get(NAME)!.source, NEW);
    assert.equal(vmlinux(), 'vmlinux 6.1.200-1');
    assert.deepEqual(tmpEntries(h), []);
  });

  test('a daemon that died between moving the old kernel aside and installing the new one: restored at start', async () => {
    // What the dead daemon left: the kernel's directory moved into its work dir, the intent open.
    fs.mkdirSync(h.paths.tmpDir, { recursive: true });
    const workDir = fs.mkdtempSync(path.join(h.paths.tmpDir, `kernel-${NAME}-`));
    const old = path.join(workDir, 'old-x');
    fs.renameSync(path.join(h.paths.kernelsDir, NAME), old);
    fs.mkdirSync(path.join(h.paths.kernelsDir, 'half-written'));
    h.store.journal.begin('kernel', NAME, { workDir, old, source: NEW }).step('after-swap');
    const report = await h.store.journal.recover(() => undefined);
    assert.deepEqual(report.recovered, [{ op: 'kernel', subject: NAME, step: 'after-swap' }]);
    assert.deepEqual(await h.svc.sweep(), ['half-written']);
    assert.equal(vmlinux(), 'vmlinux 6.1.192-2', 'the old kernel is back under its name');
    assert.deepEqual(tmpEntries(h), []);
    assert.deepEqual(kernelDirEntries(h), [NAME]);
  });
});
