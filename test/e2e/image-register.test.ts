import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';
import { needs } from '../helpers/ci.js';
import { missingTools } from '../helpers/image-cache.js';

/**
 * register / promote / delete through the real CLI and daemon, with small
 * handmade ext4 files (fast: no Debian build).
 */

interface View {
  id: string;
  name: string;
  managed: boolean;
  rootfsPath: string;
  workSeedPath: string | null;
  kernelPath: string | null;
  kernel: string | null;
  sizeBytes: number;
  allocatedBytes: number;
  source: string;
}

describe('image register, promote, delete (CLI + daemon)', { timeout: 5 * 60_000 }, () => {
  let sb: Sandbox;
  let files: string;
  let ok = false;

  const mkExt4 = (name: string, content: Record<string, string>, label: string): string => {
    const dir = path.join(files, `${name}.d`);
    fs.mkdirSync(dir, { recursive: true });
    for (const [p, c] of Object.entries(content)) {
      fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
      fs.writeFileSync(path.join(dir, p), c);
    }
    const img = path.join(files, name);
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 16 << 20);
    execFileSync('mkfs.ext4', ['-q', '-L', label, '-d', dir, img]);
    return img;
  };
  const json = async <T>(args: string[]): Promise<T> => {
    const r = await sb.run([...args, '--json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as T;
  };

  before(async () => {
    ok = missingTools(['mkfs.ext4', 'e2fsck']).length === 0;
    sb = await makeSandbox();
    files = path.join(sb.root, 'files');
    fs.mkdirSync(files);
  });
  after(async () => {
    await sb.cleanup();
  });

  test('register: unmanaged, validated, re-register updates in place', async (t) => {
    if (!needs(t, ok, 'mkfs.ext4 not installed')) return;
    const rootfs = mkExt4('rootfs.ext4', { 'etc/hostname': 'x\n' }, 'banger-base');
    const seed = mkExt4('seed.ext4', { '.bashrc': '# hi\n' }, 'banger-work');
    const kernel = path.join(files, 'vmlinuz');
    fs.writeFileSync(kernel, 'not really a kernel');
    // relative paths are resolved by the CLI (the daemon has another cwd)
    const r = await sb.run([
      'image',
      'register',
      '--name',
      'hand',
      '--rootfs',
      path.relative(process.cwd(), rootfs),
      '--work-seed',
      seed,
      '--kernel',
      kernel,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^registered hand \([0-9a-f]{12}\): .*rootfs\.ext4, kernel .*vmlinuz \(unmanaged/,
    );
    const v = await json<View>(['image', 'show', 'hand']);
    assert.deepEqual(
      [v.managed, v.rootfsPath, v.workSeedPath, v.kernelPath, v.kernel],
      [false, rootfs, seed, kernel, null],
    );
    assert.equal(v.sizeBytes, 16 << 20);
    assert.ok(v.allocatedBytes < v.sizeBytes, 'sparse: allocated below apparent');

    const list = await sb.run(['image', 'list']);
    assert.equal(list.code, 0);
    assert.match(list.stdout, /^NAME\s+SOURCE\s+KERNEL\s+SIZE\s+CREATED$/m);
    assert.match(list.stdout, /^hand\s+register:\S+rootfs\.ext4\s+vmlinuz\s+16M\/\S+\s+just now$/m);

    const rootfs2 = mkExt4('rootfs2.ext4', { 'etc/hostname': 'y\n' }, 'banger-base');
    const again = await sb.run(['image', 'register', '--name', 'hand', '--rootfs', rootfs2]);
    assert.equal(again.code, 0, again.stderr);
    const v2 = await json<View>(['image', 'show', 'hand']);
    assert.equal(v2.id, v.id, 're-register keeps the image');
    assert.deepEqual(
      [v2.rootfsPath, v2.kernelPath, v2.kernel],
      [rootfs2, null, 'debian-cloud-6.1'],
    );
  });

  test('register refuses what cannot boot, with one line each', async (t) => {
    if (!needs(t, ok, 'mkfs.ext4 not installed')) return;
    const notExt4 = path.join(files, 'vmlinuz');
    const cases: [string[], number, RegExp][] = [
      [
        ['--name', 'bad', '--rootfs', notExt4],
        1,
        /^error: rootfs \S+vmlinuz is not an ext4 file system: /,
      ],
      [
        ['--name', 'bad', '--rootfs', path.join(files, 'nope.ext4')],
        1,
        /^error: rootfs \S+nope\.ext4 does not exist: check the path$/,
      ],
      [['--name', 'bad', '--rootfs', files], 1, /is not a regular file/],
      [
        [
          '--name',
          'bad',
          '--rootfs',
          path.join(files, 'rootfs.ext4'),
          '--kernel',
          notExt4,
          '--kernel-ref',
          'k',
        ],
        2,
        /either --kernel or --kernel-ref/,
      ],
      [
        ['--name', 'bad', '--rootfs', path.join(files, 'rootfs.ext4'), '--kernel-ref', 'nosuch'],
        1,
        /kernel 'nosuch' not found/,
      ],
      [['--name', 'Bad Name', '--rootfs', path.join(files, 'rootfs.ext4')], 2, /name/],
    ];
    for (const [args, code, re] of cases) {
      const r = await sb.run(['image', 'register', ...args]);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.trim(), re);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
    const names = (await json<View[]>(['image', 'list'])).map((i) => i.name);
    assert.deepEqual(names, ['hand'], 'nothing half-registered');
  });

  test('promote copies the files into the state dir (sparse); the originals stay', async (t) => {
    if (!needs(t, ok, 'mkfs.ext4 not installed')) return;
    const before = await json<View>(['image', 'show', 'hand']);
    const r = await sb.run(['image', 'promote', 'hand']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^promoted hand /);
    const v = await json<View>(['image', 'show', 'hand']);
    const dir = path.join(sb.paths.imagesDir, v.id);
    assert.equal(v.managed, true);
    assert.equal(v.rootfsPath, path.join(dir, 'rootfs.ext4'));
    assert.equal(v.workSeedPath, null);
    execFileSync('e2fsck', ['-fn', v.rootfsPath], { stdio: 'ignore' });
    assert.ok(fs.statSync(v.rootfsPath).blocks * 512 < 16 << 20, 'copy is sparse');
    assert.ok(fs.existsSync(before.rootfsPath), 'original kept');
    const again = await sb.run(['image', 'promote', 'hand']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /image hand is already managed by banger/);
    const reg = await sb.run([
      'image',
      'register',
      '--name',
      'hand',
      '--rootfs',
      before.rootfsPath,
    ]);
    assert.equal(reg.code, 1);
    assert.match(reg.stderr, /image hand is managed by banger .*register cannot replace it/);
  });

  test('delete several: managed files removed, unmanaged left, failures reported per image', async (t) => {
    if (!needs(t, ok, 'mkfs.ext4 not installed')) return;
    const seed = path.join(files, 'seed.ext4');
    const reg = await sb.run(['image', 'register', '--name', 'other', '--rootfs', seed]);
    assert.equal(reg.code, 0, reg.stderr);
    const hand = await json<View>(['image', 'show', 'hand']);
    const r = await sb.run(['image', 'delete', 'hand', 'nosuch', 'other']);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^deleted hand$/m);
    assert.match(r.stdout, /^deleted other$/m);
    assert.match(r.stderr, /^error: image 'nosuch' not found: /m);
    assert.ok(!fs.existsSync(path.join(sb.paths.imagesDir, hand.id)), 'managed files removed');
    assert.ok(fs.existsSync(seed), 'unmanaged files kept');
    assert.deepEqual(await json<View[]>(['image', 'list']), []);
    const none = await sb.run(['image', 'list']);
    assert.match(none.stdout, /no images/);
  });

  test('an unreachable registry and a build from a registered image say why not', async (t) => {
    if (!needs(t, ok, 'mkfs.ext4 not installed')) return;
    const oci = await sb.run(['image', 'pull', '127.0.0.1:9/example/tool:1']);
    assert.equal(oci.code, 1);
    assert.match(oci.stderr.trim().split('\n').pop()!, /^error: .*127\.0\.0\.1:9/);
    const reg = await sb.run([
      'image',
      'register',
      '--name',
      'hand',
      '--rootfs',
      path.join(files, 'rootfs.ext4'),
    ]);
    assert.equal(reg.code, 0, reg.stderr);
    const b = await sb.run([
      'image',
      'build',
      '--name',
      'x',
      '--from-image',
      'hand',
      '--packages',
      'make',
    ]);
    assert.equal(b.code, 1);
    assert.match(
      b.stderr,
      /error: image hand \(register:\S+\) has no recipe, so image build cannot extend it yet: /,
    );
    const empty = await sb.run([
      'image',
      'build',
      '--name',
      'x',
      '--from-image',
      'hand',
      '--packages',
      ',',
    ]);
    assert.equal(empty.code, 2);
    assert.deepEqual(fs.readdirSync(sb.paths.tmpDir), [], 'no scratch left');
  });
});
