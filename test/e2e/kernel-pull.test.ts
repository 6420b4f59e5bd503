import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { KernelCatalogEntry, KernelView } from '../../src/api/schemas/images.js';
import type { KernelMeta } from '../../src/image/kernel/build.js';
import { parseModulesDep } from '../../src/image/kernel/modules.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';
import { skipUnless } from '../helpers/ci.js';
import { cannotPull, TEST_CACHE_DIR } from './kernel-helpers.js';

/**
 * `banger kernel pull debian-cloud-6.1` for real, through the CLI and the
 * daemon: apt resolves and downloads the Debian package (cached in
 * TEST_CACHE_DIR across runs), banger extracts vmlinux, builds the modules
 * disk and its initramfs. Then list, re-pull, delete.
 */

const NAME = 'debian-cloud-6.1';
const reason = cannotPull();
const LONG = 10 * 60_000;

describe('kernel pull (real Debian package)', skipUnless(!reason, reason!), () => {
  let sb: Sandbox;
  let view: KernelView;
  let meta: KernelMeta;
  const dir = (): string => path.join(sb.paths.kernelsDir, NAME);

  before(async () => {
    fs.mkdirSync(TEST_CACHE_DIR, { recursive: true });
    sb = await makeSandbox({ env: { BANGER_CACHE_DIR: TEST_CACHE_DIR } });
    const st = await sb.run(['daemon', 'status'], { timeoutMs: 30_000 });
    assert.equal(st.code, 0, st.stderr);
  });
  after(async () => {
    await sb?.cleanup();
  });

  test('two concurrent pulls share one build; both succeed', { timeout: LONG }, async (t) => {
    const started = Date.now();
    const first = sb.run(['kernel', 'pull', NAME], { timeoutMs: LONG });
    // let the first one get going before the second asks
    const deadline = Date.now() + 30_000;
    while (!fs.existsSync(sb.paths.imageBuildDir) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    const second = sb.run(['kernel', 'pull', NAME], { timeoutMs: LONG });
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.code, 0, `first: ${a.stderr}`);
    assert.equal(b.code, 0, `second: ${b.stderr}`);
    assert.match(b.stderr, /already being pulled; waiting for it/);
    for (const r of [a, b]) {
      assert.match(
        r.stdout,
        /^kernel debian-cloud-6\.1: 6\.1\.\d+-\d+-cloud-amd64 \(debian:linux-image-/m,
      );
      assert.match(r.stderr, /done: Building the initramfs/);
    }
    const logs = fs
      .readdirSync(sb.paths.imageBuildDir)
      .filter((f) => f.startsWith(`kernel-${NAME}-`));
    assert.equal(logs.length, 1, 'one build');
    const log = fs.readFileSync(path.join(sb.paths.imageBuildDir, logs[0]!), 'utf8');
    const downloads =
      (log.match(/apt-get .*download/g) ?? []).length +
      (log.match(/reusing verified/g) ?? []).length;
    assert.equal(downloads, 1, 'one download (or one verified cache hit)');
    t.diagnostic(
      `kernel pull: ${((Date.now() - started) / 1000).toFixed(1)} s (${/reusing verified/.test(log) ? 'cached .deb' : 'downloaded'})`,
    );

    const list = await sb.run(['kernel', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    const kernels = JSON.parse(list.stdout) as KernelView[];
    assert.equal(kernels.length, 1);
    view = kernels[0]!;
    meta = view.meta as unknown as KernelMeta;
  });

  test('kernel list --json: paths, release, source, features, sizes', () => {
    assert.equal(view.name, NAME);
    assert.match(view.version, /^6\.1\.\d+-\d+-cloud-amd64$/);
    // The facts, read from the Debian package itself with dpkg-deb, not from banger.
    const deb = path.join(
      TEST_CACHE_DIR,
      'debs',
      `${meta.package}_${meta.packageVersion}_amd64.deb`,
    );
    const field = (f: string): string => execFileSync('dpkg-deb', ['-f', deb, f]).toString().trim();
    const contents = execFileSync('dpkg-deb', ['-c', deb], { maxBuffer: 64 << 20 }).toString();
    const release = /\.\/boot\/vmlinuz-(\S+)$/m.exec(contents)?.[1];
    assert.equal(view.version, release, 'the release the package ships');
    assert.equal(field('Package'), `linux-image-${release}`);
    assert.equal(view.source, `debian:${field('Package')}=${field('Version')}`);
    const vmlinux = fs.readFileSync(path.join(dir(), 'vmlinux'));
    assert.ok(vmlinux.includes(`Linux version ${release} (`), 'vmlinux is that kernel');
    assert.equal(view.kernelPath, path.join(dir(), 'vmlinuz'));
    assert.equal(view.vmlinuxPath, path.join(dir(), 'vmlinux'));
    assert.equal(view.initrdPath, path.join(dir(), 'initrd.img'));
    assert.deepEqual(view.usedBy, { images: [], vms: [] });
    assert.equal(meta.features.virtioMmioCmdline, false);
    assert.equal(meta.features.ipPnp, false);
    assert.equal(meta.features.ext4, 'y');
    assert.equal(meta.features.overlay, 'm');
    assert.equal(meta.features.vsock, 'm');
    assert.equal(meta.debSha256, createHash('sha256').update(fs.readFileSync(deb)).digest('hex'));
    assert.equal(meta.debSize, fs.statSync(deb).size);
    for (const f of ['vmlinuz', 'vmlinux', 'initrd.img', 'modules.ext4', 'config', 'meta.json']) {
      assert.ok(fs.statSync(path.join(dir(), f)).size > 0, f);
    }
    // meta.json on disk: the same facts, and the sizes of the files beside it.
    const onDisk = JSON.parse(fs.readFileSync(path.join(dir(), 'meta.json'), 'utf8')) as KernelMeta;
    assert.deepEqual(
      [onDisk.kernelRelease, onDisk.package, onDisk.packageVersion, onDisk.debSha256],
      [release, field('Package'), field('Version'), meta.debSha256],
    );
    const sizes = onDisk.sizes as unknown as Record<string, number>;
    const files = {
      vmlinuz: 'vmlinuz',
      vmlinux: 'vmlinux',
      initrd: 'initrd.img',
      modulesDisk: 'modules.ext4',
      config: 'config',
    };
    for (const [key, file] of Object.entries(files))
      assert.equal(sizes[key], fs.statSync(path.join(dir(), file)).size, `sizes.${key}`);
    assert.equal(fs.readdirSync(sb.paths.tmpDir).length, 0, 'no work dirs left');
  });

  test('vmlinux is an x86-64 ELF executable with a PVH entry', () => {
    const head = Buffer.alloc(64);
    const fd = fs.openSync(path.join(dir(), 'vmlinux'), 'r');
    fs.readSync(fd, head, 0, 64, 0);
    fs.closeSync(fd);
    assert.deepEqual([...head.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    assert.equal(head[4], 2, 'ELFCLASS64');
    assert.equal(head.readUInt16LE(16), 2, 'ET_EXEC');
    assert.equal(head.readUInt16LE(18), 0x3e, 'EM_X86_64');
    assert.equal(meta.vmlinux.pvh, true);
    assert.equal(meta.vmlinux.compression, 'lz4');
    const file = execFileSync('file', ['-b', path.join(dir(), 'vmlinux')], { encoding: 'utf8' });
    assert.match(file, /^ELF 64-bit LSB executable, x86-64/);
  });

  test('modules disk: clean ext4, labelled, holds the tree with modules.dep, root-owned', () => {
    const img = path.join(dir(), 'modules.ext4');
    execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' });
    assert.equal(execFileSync('e2label', [img], { encoding: 'utf8' }).trim(), 'banger-modules');
    const debugfs = (cmd: string): string =>
      execFileSync('debugfs', ['-R', cmd, img], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        maxBuffer: 64 << 20,
      });
    const root = debugfs('ls -l /');
    for (const f of ['modules.dep', 'modules.dep.bin', 'modules.alias', 'kernel'])
      assert.match(root, new RegExp(` ${f.replace('.', '\\.')}\\s*$`, 'm'), f);
    assert.match(debugfs('stat /kernel/net/bridge/bridge.ko'), /User:\s+0\s+Group:\s+0/);
    assert.equal(meta.modulesDiskRootOwned, true);
  });

  test('initramfs: init, busybox and the guest modules with their dependencies, in load order', () => {
    const list = execFileSync('cpio', ['-it', '--quiet', '-F', path.join(dir(), 'initrd.img')], {
      encoding: 'utf8',
    })
      .trim()
      .split('\n');
    for (const f of [
      'init',
      'shutdown',
      'bin/busybox',
      'bin/sh',
      'bin/insmod',
      'bin/switch_root',
      'dev/console',
    ]) {
      assert.ok(list.includes(f), f);
    }
    const inRamfs = list
      .filter((f) => f.endsWith('.ko'))
      .map((f) => f.replace(/^lib\/modules\//, ''));
    assert.deepEqual([...inRamfs].sort(), [...meta.initramfs.modules].sort());
    const names = meta.initramfs.modules.map((m) => path.basename(m, '.ko'));
    for (const m of [
      'virtio_ring',
      'virtio',
      'virtio_blk',
      'failover',
      'net_failover',
      'virtio_net',
      'virtio_console',
      'overlay',
      'evdev',
      'button',
      'vsock',
      'vmw_vsock_virtio_transport_common',
      'vmw_vsock_virtio_transport',
      'virtio_mmio',
    ]) {
      assert.ok(names.includes(m), m);
    }
    assert.deepEqual(meta.initramfs.builtin, ['ext4']);
    // every dependency modules.dep names is in the initramfs, before its user
    const depText = execFileSync(
      'debugfs',
      ['-R', 'cat /modules.dep', path.join(dir(), 'modules.ext4')],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        maxBuffer: 64 << 20,
      },
    );
    const deps = parseModulesDep(depText);
    meta.initramfs.modules.forEach((m, i) => {
      for (const d of deps.get(m) ?? []) {
        const j = meta.initramfs.modules.indexOf(d);
        assert.ok(j >= 0 && j < i, `${d} before ${m}`);
      }
    });
    const init = execFileSync(
      'cpio',
      ['-i', '--quiet', '--to-stdout', '-F', path.join(dir(), 'initrd.img'), 'init'],
      { encoding: 'utf8' },
    );
    assert.ok(init.startsWith('#!/bin/sh'));
    assert.ok(init.includes(`/newroot/lib/modules/${view.version}`));
  });

  test('kernel list table and --available', async () => {
    const t = await sb.run(['kernel', 'list']);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /^NAME\s+VERSION\s+SOURCE\s+SIZE\s+CREATED\n/);
    assert.match(
      t.stdout,
      /^debian-cloud-6\.1\s+6\.1\.\S+\s+debian:\S+\s+\d+ MiB\s+(just now|\d+ minutes? ago)$/m,
    );
    const av = await sb.run(['kernel', 'list', '--available', '--json']);
    const cat = JSON.parse(av.stdout) as KernelCatalogEntry[];
    assert.deepEqual(
      cat.map((c) => [c.name, c.package, c.installed, c.default]),
      [
        ['debian-cloud-6.1', 'linux-image-cloud-amd64', true, true],
        ['debian-generic-6.1', 'linux-image-amd64', false, false],
      ],
    );
  });

  test('pulling again reuses the installed kernel', { timeout: LONG }, async () => {
    const before = fs.statSync(path.join(dir(), 'vmlinux')).ino;
    const r = await sb.run(['kernel', 'pull', NAME], { timeoutMs: LONG });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /is up to date/);
    assert.equal(fs.statSync(path.join(dir(), 'vmlinux')).ino, before);
  });

  test('delete: unknown names fail with one line each; the kernel goes away', async () => {
    const one = await sb.run(['kernel', 'delete', 'nope']);
    assert.equal(one.code, 1);
    assert.equal(one.stderr, "error: kernel 'nope' not found: see `banger kernel list`\n");
    const two = await sb.run(['kernel', 'delete', NAME, 'nope']);
    assert.equal(two.code, 1);
    assert.equal(two.stdout, `deleted kernel ${NAME}\n`);
    assert.match(two.stderr, /^error: kernel 'nope' not found/m);
    assert.match(two.stderr, /1 of 2 kernels were not deleted/);
    assert.equal(fs.existsSync(dir()), false);
    const list = await sb.run(['kernel', 'list', '--json']);
    assert.deepEqual(JSON.parse(list.stdout), []);
    assert.equal(fs.readdirSync(sb.paths.tmpDir).length, 0);
  });
});
