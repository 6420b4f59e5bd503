import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import type { ProgressSink } from '../../src/api/events.js';
import { BangerError } from '../../src/errors.js';
import { RootfsTree, type TreeEntry } from '../../src/image/tree/rootfsTree.js';
import { classifyWhiteout, entryPathParts } from '../../src/image/tree/rules.js';
import { chunked, gzip, makeTar, zstd, type TarSpec } from '../helpers/tarWriter.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-tree-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** A fresh work dir with a sentinel sibling that must stay empty. */
function workDir(): { dir: string; sentinel: string } {
  const base = path.join(tmp, `w${++n}`);
  const sentinel = path.join(base, 'sentinel');
  fs.mkdirSync(sentinel, { recursive: true });
  return { dir: path.join(base, 'work', 'tree'), sentinel };
}

const assertUntouched = (sentinel: string) => {
  assert.deepEqual(fs.readdirSync(sentinel), [], 'nothing written next to the work dir');
  for (const p of ['/tmp/pwned', path.join(tmp, 'pwned')]) assert.ok(!fs.existsSync(p), p);
};

async function treeFrom(layers: TarSpec[][], opts: Parameters<RootfsTree['applyLayer']>[1] = {}) {
  const { dir, sentinel } = workDir();
  const tree = await RootfsTree.create(dir);
  for (const [i, l] of layers.entries()) {
    await tree.applyLayer(chunked(gzip(makeTar(l)), 1000), { label: `layer L${i}`, ...opts });
  }
  return { tree, sentinel };
}

const byPath = (tree: RootfsTree): Map<string, TreeEntry> =>
  new Map([...tree.entries()].map((e) => [e.path, e]));

describe('entry names and whiteouts (pure)', () => {
  test('paths', () => {
    assert.deepEqual(entryPathParts('./a//b/./c/', 4096), { ok: true, parts: ['a', 'b', 'c'] });
    assert.deepEqual(entryPathParts('./', 4096), { ok: true, parts: [] });
    assert.equal(entryPathParts('/etc/passwd', 4096).ok, false);
    assert.equal(entryPathParts('a/../../b', 4096).ok, false);
    assert.equal(entryPathParts('..', 4096).ok, false);
    assert.equal(entryPathParts('a/' + 'x'.repeat(256), 4096).ok, false);
    assert.equal(entryPathParts('a/b/c', 4).ok, false);
  });
  test('whiteouts', () => {
    assert.deepEqual(classifyWhiteout('.wh.foo'), { kind: 'delete', name: 'foo' });
    assert.deepEqual(classifyWhiteout('.wh..wh..opq'), { kind: 'opaque' });
    assert.deepEqual(classifyWhiteout('.wh..wh.plnk'), { kind: 'meta' });
    assert.deepEqual(classifyWhiteout('foo.wh.'), { kind: 'none' });
    assert.deepEqual(classifyWhiteout('.wh..'), { kind: 'meta' });
  });
});

describe('RootfsTree', () => {
  test('layers: whiteouts, opaque dirs, hard links, symlinks, owners, setuid, xattrs', async () => {
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const { tree, sentinel } = await treeFrom([
      [
        { name: './', type: 'dir', mode: 0o755 },
        { name: 'etc/', type: 'dir' },
        { name: 'etc/shadow', content: 'root:*:', mode: 0o640, gid: 42 },
        { name: 'etc/gone', content: 'bye' },
        { name: 'opq/', type: 'dir' },
        { name: 'opq/old1', content: '1' },
        { name: 'opq/sub/old2', content: '2' },
        { name: 'usr/bin/sudo', content: 'ELF', mode: 0o4755 },
        { name: 'usr/bin/ping', content: 'ELF', xattrs: { 'security.capability': cap } },
        { name: 'usr/lib/libc.so', content: 'libc' },
        { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
        { name: 'home/u/', type: 'dir', uid: 1000, gid: 1000, mode: 0o700 },
        { name: 'home/u/f', content: 'mine', uid: 1000, gid: 1000, mode: 0o600 },
        { name: 'tmp/', type: 'dir', mode: 0o1777 },
      ],
      [
        { name: 'etc/.wh.gone', content: '' },
        { name: 'opq/', type: 'dir', mode: 0o750 },
        { name: 'opq/.wh..wh..opq', content: '' },
        { name: 'opq/new', content: 'n' },
        { name: 'usr/bin/sudo2', type: 'hardlink', linkname: 'usr/bin/sudo' },
        // written through the in-tree symlink lib -> usr/lib
        { name: 'lib/libz.so', content: 'z' },
        { name: 'abs', type: 'symlink', linkname: '/etc/shadow' },
      ],
    ]);
    const m = byPath(tree);
    assert.ok(!m.has('/etc/gone'), 'whiteout deleted the file');
    assert.deepEqual(tree.list('/opq'), ['new'], 'opaque dir hides lower content');
    assert.equal(m.get('/opq')!.mode, 0o750);
    assert.equal(m.get('/etc/shadow')!.gid, 42);
    assert.equal(m.get('/etc/shadow')!.mode, 0o640);
    assert.equal(m.get('/usr/bin/sudo')!.mode, 0o4755);
    assert.equal(m.get('/usr/bin/sudo2')!.hardlinkTo, '/usr/bin/sudo');
    assert.equal(m.get('/usr/bin/sudo2')!.inode, m.get('/usr/bin/sudo')!.inode);
    assert.equal(m.get('/usr/bin/sudo')!.nlink, 2);
    assert.deepEqual(m.get('/usr/bin/ping')!.xattrs?.get('security.capability'), cap);
    assert.equal(m.get('/lib')!.linkTarget, 'usr/lib');
    assert.equal(m.get('/usr/lib/libz.so')!.type, 'file');
    assert.equal(m.get('/home/u/f')!.uid, 1000);
    assert.equal(m.get('/tmp')!.mode, 0o1777);
    assert.equal(
      tree.readFile('/abs').toString(),
      'root:*:',
      'absolute symlinks resolve in the tree',
    );
    assert.equal(tree.readFile('/lib/libc.so').toString(), 'libc');
    // staging holds real hard links and the symlink as-is
    const st = fs.statSync(tree.stagingPath('/usr/bin/sudo2'));
    assert.equal(st.ino, fs.statSync(tree.stagingPath('/usr/bin/sudo')).ino);
    assert.equal(fs.readlinkSync(tree.stagingPath('/lib')), 'usr/lib');
    assert.equal(
      fs.statSync(tree.stagingPath('/usr/bin/sudo')).mode & 0o7777,
      0o755,
      'no setuid on the host copy',
    );
    const s = tree.stats();
    assert.equal(s.entries, [...tree.entries()].length);
    assert.equal(s.inodes, s.entries - 1);
    assertUntouched(sentinel);
    await tree.dispose();
    assert.ok(!fs.existsSync(tree.dir));
  });

  test('replacing entries across types', async () => {
    const { tree } = await treeFrom([
      [
        { name: 'a/x', content: 'x' },
        { name: 'b', content: 'file' },
        { name: 'c', type: 'symlink', linkname: 'b' },
      ],
      [
        { name: 'a', content: 'now a file' },
        { name: 'b/', type: 'dir' },
        { name: 'b/y', content: 'y' },
        { name: 'c', content: 'replaces the symlink, not its target' },
      ],
    ]);
    assert.equal(tree.readFile('/a').toString(), 'now a file');
    assert.deepEqual(tree.list('/b'), ['y']);
    assert.equal(tree.get('/c')!.type, 'file');
    assert.equal(tree.readFile('/b/y').toString(), 'y');
    await tree.dispose();
  });

  test('device nodes: skipped with one warning, or kept', async () => {
    const events: Parameters<ProgressSink>[0][] = [];
    const layer: TarSpec[] = [
      { name: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
      { name: 'dev/sda', type: 'block', devMajor: 8, devMinor: 0 },
      { name: 'dev/null2', type: 'hardlink', linkname: 'dev/null' },
      { name: 'run/fifo', type: 'fifo' },
    ];
    const { tree, sentinel } = await treeFrom([layer], { emit: (e) => events.push(e) });
    assert.deepEqual(tree.list('/dev'), []);
    assert.equal(tree.get('/run/fifo')!.type, 'fifo');
    const warns = events.filter((e) => e.type === 'log' && e.level === 'warn');
    assert.equal(warns.length, 1);
    assert.match(JSON.stringify(warns[0]), /layer L0: skipped 3 device nodes/);
    assertUntouched(sentinel);
    const kept = await treeFrom([layer], { devices: 'keep' });
    const null_ = kept.tree.get('/dev/null')!;
    assert.deepEqual(
      [null_.type, null_.devMajor, null_.devMinor, null_.mode],
      ['char', 1, 3, 0o666],
    );
    assert.equal(byPath(kept.tree).get('/dev/null2')!.hardlinkTo, '/dev/null');
    await tree.dispose();
    await kept.tree.dispose();
  });

  const hostile: [string, TarSpec[], RegExp][] = [
    ['dot-dot path', [{ name: '../pwned', content: 'x' }], /entry '..\/pwned' contains '..'/],
    ['nested dot-dot', [{ name: 'a/../../pwned', content: 'x' }], /contains '..'/],
    [
      'absolute path',
      [{ name: '/tmp/pwned', content: 'x' }],
      /entry '\/tmp\/pwned' is an absolute path/,
    ],
    [
      'write through a symlink escaping the root',
      [
        { name: 'evil', type: 'symlink', linkname: '../../../../../../sentinel' },
        { name: 'evil/pwned', content: 'x' },
      ],
      /entry 'evil\/pwned' is written through symlink '\/evil', which points outside the image root/,
    ],
    [
      'write through a relative symlink chain escaping the root',
      [
        { name: 'a/b', type: 'symlink', linkname: '../..' },
        { name: 'a/b/pwned', content: 'x' },
      ],
      /outside the image root/,
    ],
    [
      'hard link out of the tree',
      [{ name: 'h', type: 'hardlink', linkname: '../../../../etc/passwd' }],
      /hard link whose target '..\/..\/..\/..\/etc\/passwd' contains '..'/,
    ],
    [
      'absolute hard link',
      [{ name: 'h', type: 'hardlink', linkname: '/etc/passwd' }],
      /hard link whose target '\/etc\/passwd' is an absolute path/,
    ],
    [
      'hard link through an escaping symlink',
      [
        { name: 'evil', type: 'symlink', linkname: '../../..' },
        { name: 'h', type: 'hardlink', linkname: 'evil/etc/passwd' },
      ],
      /outside the image root/,
    ],
    [
      'hard link to a missing file',
      [{ name: 'h', type: 'hardlink', linkname: 'nope' }],
      /hard link to 'nope', which is not in the image/,
    ],
    [
      'symlink loop',
      [
        { name: 'l1', type: 'symlink', linkname: 'l2' },
        { name: 'l2', type: 'symlink', linkname: 'l1' },
        { name: 'l1/x', content: 'x' },
      ],
      /too many levels of symbolic links/,
    ],
    [
      'file as a parent',
      [
        { name: 'f', content: '' },
        { name: 'f/x', content: '' },
      ],
      /needs '\/f' to be a directory/,
    ],
    ['root replaced', [{ name: './', type: 'symlink', linkname: '/' }], /replaces the root/],
  ];
  for (const [what, layer, re] of hostile) {
    test(`hostile: ${what}`, async () => {
      const { dir, sentinel } = workDir();
      const tree = await RootfsTree.create(dir);
      await assert.rejects(
        tree.applyLayer(chunked(makeTar(layer)), { label: 'layer sha256:0123abcd' }),
        (e: unknown) => {
          assert.ok(e instanceof BangerError, String(e));
          assert.equal(e.code, 'image_invalid');
          assert.match(e.message, /^layer sha256:0123abcd: /);
          assert.match(e.message, re);
          return true;
        },
      );
      assertUntouched(sentinel);
      await tree.dispose();
    });
  }

  test('limits: entries, file size, total bytes, decompression ratio, path length', async () => {
    const cases: [Partial<RootfsTree['limits']>, Buffer, RegExp][] = [
      [
        { maxEntries: 2 },
        makeTar([{ name: 'a' }, { name: 'b' }, { name: 'c' }]),
        /more than 2 entries/,
      ],
      [
        { maxFileBytes: 100 },
        makeTar([{ name: 'a', content: Buffer.alloc(101) }]),
        /file 'a' of 101 bytes exceeds/,
      ],
      [
        { maxTotalBytes: 100_000 },
        makeTar([{ name: 'a', content: Buffer.alloc(200_000) }]),
        /uncompressed size exceeds the limit of 100000/,
      ],
      [
        { maxRatio: 50, ratioGraceBytes: 1 << 20 },
        gzip(makeTar([{ name: 'zeros', content: Buffer.alloc(8 << 20) }]), 9),
        /expands more than 50x .*decompression bomb/,
      ],
      [
        { maxRatio: 50, ratioGraceBytes: 1 << 20 },
        zstd(makeTar([{ name: 'zeros', content: Buffer.alloc(8 << 20) }])),
        /decompression bomb/,
      ],
      [
        { maxPathBytes: 20 },
        makeTar([{ name: 'a/'.repeat(15) + 'f' }]),
        /path longer than 20 bytes/,
      ],
    ];
    for (const [limits, data, re] of cases) {
      const { dir, sentinel } = workDir();
      const tree = await RootfsTree.create(dir, { limits });
      await assert.rejects(tree.applyLayer(chunked(data, 65536), { label: 'layer X' }), re);
      assertUntouched(sentinel);
      await tree.dispose();
    }
  });

  test('limits add up across layers', async () => {
    const { dir } = workDir();
    const tree = await RootfsTree.create(dir, { limits: { maxEntries: 3 } });
    await tree.applyLayer(chunked(makeTar([{ name: 'a' }, { name: 'b' }])));
    await assert.rejects(
      tree.applyLayer(chunked(makeTar([{ name: 'c' }, { name: 'd' }]))),
      /more than 3/,
    );
    await tree.dispose();
  });

  test('edits for prepare hooks stay inside the tree', async () => {
    const { tree, sentinel } = await treeFrom([
      [
        { name: 'etc/', type: 'dir' },
        { name: 'usr/lib/os-release', content: 'ID=debian\n' },
        { name: 'etc/os-release', type: 'symlink', linkname: '../usr/lib/os-release' },
        { name: 'escape', type: 'symlink', linkname: '../../../../../..' },
      ],
    ]);
    assert.equal(tree.readFile('/etc/os-release').toString(), 'ID=debian\n');
    tree.writeFile('/root/.ssh/authorized_keys', 'ssh-ed25519 AAAA', { mode: 0o600 });
    tree.mkdir('/root/.ssh', { mode: 0o700 });
    tree.symlink('/sbin/init2', '/lib/systemd/systemd');
    tree.setMeta('/etc', { mode: 0o750 });
    assert.equal(tree.get('/root/.ssh')!.mode, 0o700);
    assert.equal(tree.get('/root/.ssh/authorized_keys')!.size, 16);
    assert.equal(tree.get('/etc')!.mode, 0o750);
    // the escaping symlink resolves clamped at the tree root for reads…
    assert.equal(tree.exists('/escape/etc/os-release', { follow: true }), true);
    // …and writes through it are refused
    assert.throws(() => tree.writeFile('/escape/pwned', 'x'), /outside the image root/);
    assert.ok(tree.remove('/usr'));
    assert.equal(tree.exists('/etc/os-release', { follow: true }), false);
    assertUntouched(sentinel);
    tree.finalize();
    await tree.dispose();
  });

  test('a tmpfs budget stops the tree with a recognisable error', async () => {
    const { dir } = workDir();
    const tree = await RootfsTree.create(dir, { budgetBytes: 100_000 });
    await assert.rejects(
      tree.applyLayer(chunked(makeTar([{ name: 'a', content: Buffer.alloc(200_000) }]))),
      (e: unknown) =>
        e instanceof BangerError && e.details?.stagingFull === true && /outgrew/.test(e.message),
    );
    await tree.dispose();
  });

  test('staging dir must be new', async () => {
    const { dir } = workDir();
    fs.mkdirSync(dir, { recursive: true });
    await assert.rejects(RootfsTree.create(dir), /already exists/);
  });
});
