import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StreamEvent } from '../../src/api/events.js';
import { BangerError } from '../../src/errors.js';
import { pullOci, pullOciToExt4, type PullOciOptions } from '../../src/image/oci/pull.js';
import { listExt4 } from '../../src/storage/ext4.js';
import {
  pushImage,
  pushIndex,
  startProxy,
  startRegistry,
  startTokenServer,
  TEST_PASSWORD,
  TEST_USER,
  type Registry,
  type TokenServer,
} from '../helpers/registry.js';
import { gzip, makeTar, zstd, type TarSpec } from '../helpers/tarWriter.js';
import { needs } from '../helpers/ci.js';

/**
 * OCI pull against a real registry (Debian's docker-registry on 127.0.0.1) with
 * images the tests push themselves. Nothing here talks to anything but loopback.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-oci-'));
let reg: Registry;
before(async () => {
  reg = await startRegistry();
});
after(async () => {
  await reg?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

let caseNo = 0;
/** A case dir: cache, work dir, and a sentinel dir beside the work dir that must stay empty. */
function caseDirs() {
  const base = path.join(tmp, `c${++caseNo}`);
  const dirs = {
    base,
    cache: path.join(base, 'cache', 'oci'),
    work: path.join(base, 'work'),
    sentinel: path.join(base, 'sentinel'),
  };
  fs.mkdirSync(dirs.sentinel, { recursive: true });
  fs.mkdirSync(dirs.work, { recursive: true });
  return dirs;
}

function opts(d: ReturnType<typeof caseDirs>, extra: Partial<PullOciOptions> = {}): PullOciOptions {
  return {
    cacheDir: d.cache,
    workDir: d.work,
    dockerConfigPath: null,
    staging: 'disk',
    http: { backoffMs: 5, timeoutMs: 10_000 },
    ...extra,
  };
}

function assertClean(d: ReturnType<typeof caseDirs>) {
  assert.deepEqual(fs.readdirSync(d.sentinel), [], 'nothing written beside the work dir');
  assert.deepEqual(fs.readdirSync(d.work), [], 'no staging tree left in the work dir');
  const blobs = path.join(d.cache, 'blobs', 'sha256');
  if (fs.existsSync(blobs)) {
    assert.deepEqual(
      fs.readdirSync(blobs).filter((f) => f.endsWith('.partial')),
      [],
      'no partial downloads',
    );
  }
}

const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');

const layer1: TarSpec[] = [
  { name: 'etc/', type: 'dir' },
  { name: 'etc/os-release', content: 'ID=test\n' },
  { name: 'etc/shadow', content: 'root:*:', mode: 0o640, gid: 42 },
  { name: 'etc/remove-me', content: 'x' },
  { name: 'opt/app/', type: 'dir' },
  { name: 'opt/app/old-a', content: 'a' },
  { name: 'opt/app/sub/old-b', content: 'b' },
  { name: 'usr/bin/sudo', content: 'ELF sudo', mode: 0o4755 },
  {
    name: 'usr/bin/ping',
    content: 'ELF ping',
    mode: 0o755,
    xattrs: { 'security.capability': CAP },
  },
  { name: 'usr/lib/libc.so.6', content: 'libc' },
  { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
  { name: 'home/dev/', type: 'dir', uid: 1000, gid: 1000, mode: 0o750 },
  { name: 'home/dev/notes', content: 'mine', uid: 1000, gid: 1000, mode: 0o600 },
  { name: 'srv/data', content: 'svc', uid: 70_000, gid: 70_001 },
];
const layer2: TarSpec[] = [
  { name: 'etc/.wh.remove-me', content: '' },
  { name: 'opt/app/', type: 'dir', mode: 0o755 },
  { name: 'opt/app/.wh..wh..opq', content: '' },
  { name: 'opt/app/new', content: 'new' },
  { name: 'usr/bin/sudoedit', type: 'hardlink', linkname: 'usr/bin/sudo' },
  { name: 'bin', type: 'symlink', linkname: '/usr/bin' },
];

/** A layer made by GNU tar (real-world header formats), gzip'd. */
function gnuTarLayer(): Buffer {
  const src = path.join(tmp, 'gnu-src');
  fs.mkdirSync(path.join(src, 'usr', 'share', 'doc', 'x'.repeat(120)), { recursive: true });
  fs.writeFileSync(
    path.join(src, 'usr', 'share', 'doc', 'x'.repeat(120), 'y'.repeat(110)),
    'long names',
  );
  fs.writeFileSync(path.join(src, 'usr', 'share', 'hello'), 'hello from GNU tar\n');
  const out = path.join(tmp, 'gnu.tar.gz');
  const r = spawnSync('tar', [
    '--format=posix',
    '--numeric-owner',
    '--owner=0',
    '--group=0',
    '-C',
    src,
    '-czf',
    out,
    'usr',
  ]);
  assert.equal(r.status, 0, r.stderr.toString());
  return fs.readFileSync(out);
}

describe('OCI pull from a local registry', () => {
  test('multi-layer image: whiteouts, opaque dirs, hard links, setuid, owners, xattrs, symlinks → ext4', async () => {
    const img = await pushImage(
      reg.host,
      'test/multi',
      'v1',
      [{ data: gzip(makeTar(layer1)) }, { data: gzip(makeTar(layer2)) }, { data: gnuTarLayer() }],
      { docker: true, config: { Entrypoint: ['/entry'], User: 'dev', Env: ['A=1'] } },
    );
    const d = caseDirs();
    const events: StreamEvent[] = [];
    const out = path.join(d.base, 'rootfs.ext4');
    const r = await pullOciToExt4(`${reg.host}/test/multi:v1`, out, {
      ...opts(d, { emit: (e) => events.push(e) }),
      prepare: (p) => {
        // the seam for guest injection: the tree before any ext4 exists
        assert.equal(p.tree.readFile('/etc/os-release').toString(), 'ID=test\n');
        p.tree.writeFile('/etc/banger-injected', 'yes\n', { mode: 0o600 });
      },
    });
    assert.equal(r.reference, `${reg.host}/test/multi:v1`);
    assert.equal(r.digest, img.digest);
    assert.deepEqual(
      r.layers.map((l) => l.digest),
      img.layers.map((l) => l.digest),
    );
    assert.equal(
      r.sizeBytes,
      img.layers.reduce((a, l) => a + l.size, 0),
    );
    assert.deepEqual(r.config.Entrypoint, ['/entry']);
    assert.equal(r.config.User, 'dev');
    assert.deepEqual(r.config.Env, ['A=1']);

    // per-layer progress with byte counts
    for (const l of img.layers) {
      const s = l.digest.slice(7, 19);
      assert.ok(
        events.some((e) => e.type === 'step' && e.id === `layer:${s}` && e.state === 'done'),
        `download ${s}`,
      );
      assert.ok(
        events.some(
          (e) =>
            e.type === 'progress' &&
            e.id === `layer:${s}` &&
            e.current === l.size &&
            e.total === l.size,
        ),
      );
      assert.ok(
        events.some((e) => e.type === 'step' && e.id === `extract:${s}` && e.state === 'done'),
      );
    }

    const list = await listExt4(out);
    // Every entry the three layers and the injection leave, nothing more: a puller
    // that dropped or invented an entry fails here, whatever the checks below look at.
    const long = `/usr/share/doc/${'x'.repeat(120)}`;
    assert.deepEqual(
      list.map((e) => e.path).sort(),
      [
        '/',
        '/bin',
        '/etc',
        '/etc/banger-injected',
        '/etc/os-release',
        '/etc/shadow',
        '/home',
        '/home/dev',
        '/home/dev/notes',
        '/lib',
        '/lost+found',
        '/opt',
        '/opt/app',
        '/opt/app/new',
        '/srv',
        '/srv/data',
        '/usr',
        '/usr/bin',
        '/usr/bin/ping',
        '/usr/bin/sudo',
        '/usr/bin/sudoedit',
        '/usr/lib',
        '/usr/lib/libc.so.6',
        '/usr/share',
        '/usr/share/doc',
        long,
        `${long}/${'y'.repeat(110)}`,
        '/usr/share/hello',
      ].sort(),
    );
    const m = new Map(list.map((e) => [e.path, e]));
    const mode = (p: string) => m.get(p)?.mode.toString(8);
    assert.ok(!m.has('/etc/remove-me'), 'whiteout');
    assert.deepEqual(
      list.filter((e) => e.path.startsWith('/opt/app/')).map((e) => e.path),
      ['/opt/app/new'],
      'opaque dir',
    );
    assert.equal(mode('/opt/app'), '40755');
    assert.equal(mode('/usr/bin/sudo'), '104755');
    assert.equal(m.get('/usr/bin/sudoedit')!.ino, m.get('/usr/bin/sudo')!.ino);
    assert.deepEqual([m.get('/etc/shadow')!.gid, mode('/etc/shadow')], [42, '100640']);
    assert.deepEqual(
      [m.get('/home/dev')!.uid, m.get('/home/dev')!.gid, mode('/home/dev')],
      [1000, 1000, '40750'],
    );
    assert.deepEqual([m.get('/srv/data')!.uid, m.get('/srv/data')!.gid], [70_000, 70_001]);
    assert.equal(mode('/lib'), '120777');
    assert.equal(mode('/etc/banger-injected'), '100600');
    assert.ok(m.has(`/usr/share/doc/${'x'.repeat(120)}/${'y'.repeat(110)}`), 'GNU tar long names');
    const dbg = (req: string) =>
      spawnSync('debugfs', ['-R', req, out], { encoding: 'utf8' }).stdout;
    assert.match(dbg('ea_list /usr/bin/ping'), /security\.capability \(20\) = 01 00 00 02 00 20/);
    assert.match(dbg('stat /bin'), /Fast link dest: "\/usr\/bin"/);
    assert.equal(dbg('cat /usr/share/hello'), 'hello from GNU tar\n');
    assert.equal(dbg('cat /opt/app/new'), 'new');
    const fsck = spawnSync('e2fsck', ['-fn', out], { encoding: 'utf8' });
    assert.equal(fsck.status, 0, fsck.stdout);
    assertClean(d);
  });

  test('a warm re-pull makes no blob requests; a digest pull makes none at all', async () => {
    const img = await pushImage(reg.host, 'test/warm', 'latest', [
      { data: gzip(makeTar([{ name: 'a', content: 'a' }])) },
      { data: gzip(makeTar([{ name: 'b', content: 'b' }])) },
    ]);
    const proxy = await startProxy(reg.host);
    try {
      const d = caseDirs();
      const ref = `${proxy.host}/test/warm`;
      const cold = await pullOci(ref, opts(d));
      await cold.tree.dispose();
      const blobGets = () =>
        proxy.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
      assert.equal(blobGets().length, 3, 'two layers and the config');
      proxy.requests.length = 0;
      const events: StreamEvent[] = [];
      const warm = await pullOci(ref, opts(d, { emit: (e) => events.push(e) }));
      assert.deepEqual(blobGets(), [], 'no blob requests when warm');
      assert.deepEqual(
        proxy.requests.map((r) => r.path),
        ['/v2/test/warm/manifests/latest'],
      );
      assert.ok(
        events.some((e) => e.type === 'step' && e.state === 'skip' && e.detail === 'cached'),
      );
      assert.deepEqual(warm.tree.list('/'), ['a', 'b']);
      await warm.tree.dispose();
      proxy.requests.length = 0;
      const byDigest = await pullOci(`${proxy.host}/test/warm@${img.digest}`, opts(d));
      assert.deepEqual(proxy.requests, [], 'fully offline by digest');
      await byDigest.tree.dispose();
      // another image sharing the first layer only fetches what it lacks
      const shared = fs.readFileSync(
        path.join(d.cache, 'blobs', 'sha256', img.layers[0]!.digest.slice(7)),
      );
      const other = await pushImage(reg.host, 'test/warm-other', 'latest', [
        { data: shared },
        { data: gzip(makeTar([{ name: 'c', content: 'c' }])) },
      ]);
      proxy.requests.length = 0;
      const second = await pullOci(`${proxy.host}/test/warm-other`, opts(d));
      assert.deepEqual(
        blobGets()
          .map((r) => r.path.split('/').pop())
          .sort(),
        [other.layers[1]!.digest, other.configDigest].sort(),
        'only the new layer and the config',
      );
      assert.deepEqual(second.tree.list('/'), ['a', 'c']);
      await second.tree.dispose();
      assertClean(d);
    } finally {
      await proxy.stop();
    }
  });

  test('a manifest list picks linux/amd64', async () => {
    const amd = await pushImage(reg.host, 'test/multiarch', 'amd64', [
      { data: gzip(makeTar([{ name: 'arch', content: 'amd64' }])) },
    ]);
    const arm = await pushImage(
      reg.host,
      'test/multiarch',
      'arm64',
      [{ data: gzip(makeTar([{ name: 'arch', content: 'arm64' }])) }],
      {
        arch: 'arm64',
      },
    );
    const idx = await pushIndex(reg.host, 'test/multiarch', 'latest', [
      { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
    ]);
    const d = caseDirs();
    const p = await pullOci(`${reg.host}/test/multiarch:latest`, opts(d));
    assert.equal(p.tree.readFile('/arch').toString(), 'amd64');
    assert.equal(p.digest, amd.digest);
    assert.equal(p.indexDigest, idx);
    await p.tree.dispose();
    // an image only for arm64 is refused by name
    const armOnly = await pushImage(
      reg.host,
      'test/armonly',
      'arm64',
      [{ data: gzip(makeTar([{ name: 'arch', content: 'arm64' }])) }],
      { arch: 'arm64' },
    );
    await pushIndex(reg.host, 'test/armonly', 'latest', [
      { image: armOnly, platform: { os: 'linux', architecture: 'arm64' } },
    ]);
    await assert.rejects(
      pullOci(`${reg.host}/test/armonly`, opts(d)),
      /has no linux\/amd64 image \(it has linux\/arm64\)/,
    );
    // and so is a single-arch arm64 manifest
    await assert.rejects(
      pullOci(`${reg.host}/test/multiarch:arm64`, opts(d)),
      /is a linux\/arm64 image/,
    );
    assertClean(d);
  });

  test('zstd and uncompressed layers', async () => {
    await pushImage(reg.host, 'test/zstd', 'latest', [
      {
        data: zstd(makeTar([{ name: 'z/file', content: 'zstd layer' }])),
        mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd',
      },
      {
        data: makeTar([{ name: 'plain', content: 'plain layer' }]),
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
      },
    ]);
    const d = caseDirs();
    const p = await pullOci(`${reg.host}/test/zstd`, opts(d));
    assert.equal(p.tree.readFile('/z/file').toString(), 'zstd layer');
    assert.equal(p.tree.readFile('/plain').toString(), 'plain layer');
    await p.tree.dispose();
    assertClean(d);
  });

  test('a tree that outgrows its tmpfs staging budget is rebuilt on disk', async (t) => {
    const onTmpfs = fs.existsSync('/dev/shm') && fs.statfsSync('/dev/shm').type === 0x01021994;
    if (!needs(t, onTmpfs, '/dev/shm is not a tmpfs: nothing is staged in memory here')) return;
    await pushImage(reg.host, 'test/grows', 'latest', [
      { data: gzip(makeTar([{ name: 'big', content: Buffer.alloc(2 << 20, 3) }])) },
    ]);
    const d = caseDirs();
    const events: StreamEvent[] = [];
    const p = await pullOci(
      `${reg.host}/test/grows`,
      opts(d, { staging: 'auto', stagingBudgetBytes: 256 * 1024, emit: (e) => events.push(e) }),
    );
    assert.equal(p.tree.get('/big')!.size, 2 << 20);
    assert.ok(p.tree.dir.startsWith(d.work), 'moved to the work dir');
    assert.ok(
      events.some(
        (e) => e.type === 'log' && /larger than expected; unpacking on disk/.test(e.message),
      ),
    );
    await p.tree.dispose();
    assertClean(d);
  });

  test('blob redirects to another origin do not carry credentials', async () => {
    const auth = await startRegistry({ kind: 'htpasswd' });
    const proxy = await startProxy(auth.host, { storageAuth: auth.pushAuth });
    try {
      const img = await pushImage(
        auth.host,
        'test/redirect',
        'latest',
        [{ data: gzip(makeTar([{ name: 'r', content: 'redirected' }])) }],
        {
          auth: auth.pushAuth,
        },
      );
      proxy.tamper.set(img.layers[0]!.digest, 'redirect');
      const d = caseDirs();
      const cfg = path.join(d.base, 'docker.json');
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          auths: {
            [proxy.host]: { auth: Buffer.from(`${TEST_USER}:${TEST_PASSWORD}`).toString('base64') },
          },
        }),
      );
      const p = await pullOci(`${proxy.host}/test/redirect`, opts(d, { dockerConfigPath: cfg }));
      assert.equal(p.tree.readFile('/r').toString(), 'redirected');
      assert.equal(proxy.storage.length, 1, 'the blob came from the storage origin');
      assert.equal(proxy.storage[0]!.auth, false, 'no Authorization header sent to another origin');
      assert.ok(
        proxy.requests.some((r) => r.path.includes('/blobs/') && r.auth),
        'but sent to the registry',
      );
      await p.tree.dispose();
    } finally {
      await proxy.stop();
      await auth.stop();
    }
  });
});

describe('OCI pull with authentication', () => {
  test('htpasswd registry (Basic challenge): without, with and with wrong credentials', async () => {
    const auth = await startRegistry({ kind: 'htpasswd' });
    try {
      await pushImage(
        auth.host,
        'private/app',
        'latest',
        [{ data: gzip(makeTar([{ name: 'secret', content: 's3' }])) }],
        {
          auth: auth.pushAuth,
        },
      );
      const d = caseDirs();
      const ref = `${auth.host}/private/app`;
      await assert.rejects(pullOci(ref, opts(d)), (e: unknown) => {
        assert.ok(e instanceof BangerError);
        assert.equal(e.code, 'permission');
        assert.match(
          e.message,
          new RegExp(`registry ${auth.host} requires a login to pull private/app`),
        );
        assert.match(e.hint!, /docker login/);
        return true;
      });
      const cfgDir = path.join(d.base, 'docker');
      fs.mkdirSync(cfgDir);
      const cfg = path.join(cfgDir, 'config.json');
      const write = (pw: string) =>
        fs.writeFileSync(
          cfg,
          JSON.stringify({
            auths: {
              [`http://${auth.host}`]: {
                auth: Buffer.from(`${TEST_USER}:${pw}`).toString('base64'),
              },
            },
          }),
        );
      write('wrong');
      await assert.rejects(
        pullOci(ref, opts(d, { dockerConfigPath: cfg })),
        /refused the credentials for private\/app/,
      );
      write(TEST_PASSWORD);
      const p = await pullOci(ref, opts(d, { dockerConfigPath: cfg }));
      assert.equal(p.tree.readFile('/secret').toString(), 's3');
      await p.tree.dispose();
      assertClean(d);
    } finally {
      await auth.stop();
    }
  });

  test('token registry (Bearer challenge, realm/service/scope)', async () => {
    let ts: TokenServer | undefined;
    let treg: Registry | undefined;
    try {
      ({ ts, treg } = await startTokenRegistry(true));
      await pushImage(
        treg.host,
        'team/tool',
        '1.0',
        [{ data: gzip(makeTar([{ name: 'tool', content: 'v1' }])) }],
        {
          auth: ts.token('repository:team/tool:pull,push'),
        },
      );
      const d = caseDirs();
      const ref = `${treg.host}/team/tool:1.0`;
      await assert.rejects(pullOci(ref, opts(d)), /requires a login to pull team\/tool/);
      const cfg = path.join(d.base, 'config.json');
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          auths: { [treg.host]: { username: TEST_USER, password: TEST_PASSWORD } },
        }),
      );
      ts.requests.length = 0;
      const p = await pullOci(ref, opts(d, { dockerConfigPath: cfg }));
      assert.equal(p.tree.readFile('/tool').toString(), 'v1');
      await p.tree.dispose();
      assert.equal(ts.requests.length, 1, 'one token for the whole pull');
      assert.deepEqual(ts.requests[0], {
        scope: 'repository:team/tool:pull',
        service: ts.service,
        authorized: true,
      });
      assertClean(d);
    } finally {
      await treg?.stop();
      await ts?.stop();
    }
  });

  test('anonymous token flow', async () => {
    let ts: TokenServer | undefined;
    let treg: Registry | undefined;
    try {
      ({ ts, treg } = await startTokenRegistry(false));
      await pushImage(
        treg.host,
        'library/pub',
        'latest',
        [{ data: gzip(makeTar([{ name: 'pub', content: 'p' }])) }],
        {
          auth: ts.token('repository:library/pub:pull,push'),
        },
      );
      const d = caseDirs();
      const p = await pullOci(`${treg.host}/library/pub`, opts(d));
      assert.equal(p.tree.readFile('/pub').toString(), 'p');
      await p.tree.dispose();
      assert.deepEqual(
        ts.requests.map((r) => r.authorized),
        [false],
      );
    } finally {
      await treg?.stop();
      await ts?.stop();
    }
  });
});

describe('hostile images are refused and nothing escapes the work dir', () => {
  const hostileLayer = async (name: string, entries: TarSpec[]) => {
    await pushImage(reg.host, `hostile/${name}`, 'latest', [
      { data: gzip(makeTar([{ name: 'ok', content: 'first layer' }])) },
      { data: gzip(makeTar(entries)) },
    ]);
    return `${reg.host}/hostile/${name}`;
  };
  const refuse = async (
    ref: string,
    re: RegExp,
    extra: Partial<PullOciOptions> = {},
    code = 'image_invalid',
  ) => {
    const d = caseDirs();
    await assert.rejects(pullOci(ref, opts(d, extra)), (e: unknown) => {
      assert.ok(e instanceof BangerError, String(e));
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    });
    assertClean(d);
    return d;
  };

  test('.. in a path', async () => {
    const ref = await hostileLayer('dotdot', [{ name: '../../sentinel/pwned', content: 'x' }]);
    await refuse(
      ref,
      /^layer sha256:[0-9a-f]{12} of .*hostile\/dotdot:latest: entry '..\/..\/sentinel\/pwned' contains '..'/,
    );
  });

  test('absolute path', async () => {
    const ref = await hostileLayer('absolute', [{ name: `/${tmp.slice(1)}/pwned`, content: 'x' }]);
    await refuse(ref, /entry '\/.*\/pwned' is an absolute path/);
    assert.ok(!fs.existsSync(path.join(tmp, 'pwned')));
  });

  test('symlink escaping the root, then a file written through it', async () => {
    const ref = await hostileLayer('symlink', [
      { name: 'escape', type: 'symlink', linkname: '../../../../../../../../sentinel' },
      { name: 'escape/pwned', content: 'x' },
    ]);
    await refuse(
      ref,
      /entry 'escape\/pwned' is written through symlink '\/escape', which points outside the image root/,
    );
  });

  test('symlink in one layer, write through it in the next', async () => {
    await pushImage(reg.host, 'hostile/symlink2', 'latest', [
      { data: gzip(makeTar([{ name: 'etc', type: 'symlink', linkname: '../../..' }])) },
      { data: gzip(makeTar([{ name: 'etc/passwd', content: 'x' }])) },
    ]);
    await refuse(`${reg.host}/hostile/symlink2`, /written through symlink '\/etc'/);
  });

  test('hard link pointing outside the tree', async () => {
    const ref = await hostileLayer('hardlink', [
      { name: 'passwd', type: 'hardlink', linkname: '../../../../etc/passwd' },
    ]);
    await refuse(
      ref,
      /entry 'passwd' is a hard link whose target '..\/..\/..\/..\/etc\/passwd' contains '..'/,
    );
  });

  test('device nodes are skipped with a warning (the pull succeeds)', async () => {
    const ref = await hostileLayer('devices', [
      { name: 'dev/sda', type: 'block', devMajor: 8, devMinor: 0 },
      { name: 'dev/mem', type: 'char', devMajor: 1, devMinor: 1 },
      { name: 'dev/keep-me', content: 'regular' },
    ]);
    const d = caseDirs();
    const events: StreamEvent[] = [];
    const p = await pullOci(ref, opts(d, { emit: (e) => events.push(e) }));
    assert.deepEqual(p.tree.list('/dev'), ['keep-me']);
    const warns = events
      .filter((e) => e.type === 'log' && e.level === 'warn')
      .map((e) => (e as { message: string }).message);
    assert.equal(warns.length, 1);
    assert.match(warns[0]!, /skipped 2 device nodes \(dev\/sda, dev\/mem\)/);
    await p.tree.dispose();
    assertClean(d);
  });

  test('decompression bomb over the limits', async () => {
    const ref = await hostileLayer('bomb', [{ name: 'zeros', content: Buffer.alloc(48 << 20) }]);
    await refuse(ref, /expands more than 100x .*decompression bomb/, {
      limits: { maxRatio: 100, ratioGraceBytes: 8 << 20 },
    });
    await refuse(ref, /uncompressed size exceeds the limit of 16777216 bytes/, {
      limits: { maxTotalBytes: 16 << 20 },
    });
  });

  test('digest mismatch (a proxy alters the blob): error, bad temp file removed', async () => {
    const img = await pushImage(reg.host, 'hostile/mismatch', 'latest', [
      { data: gzip(makeTar([{ name: 'f', content: 'x'.repeat(10000) }])) },
    ]);
    const proxy = await startProxy(reg.host);
    try {
      proxy.tamper.set(img.layers[0]!.digest, 'corrupt');
      const d = await refuse(
        `${proxy.host}/hostile/mismatch`,
        /layer sha256:[0-9a-f]{64} of .* does not match its digest \(got sha256:/,
      );
      assert.ok(
        !fs.existsSync(path.join(d.cache, 'blobs', 'sha256', img.layers[0]!.digest.slice(7))),
      );
    } finally {
      await proxy.stop();
    }
  });

  test('truncated blob (short body, and a connection cut mid-way)', async () => {
    const img = await pushImage(reg.host, 'hostile/truncated', 'latest', [
      {
        data: gzip(
          makeTar([
            { name: 'f', content: Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251)) },
          ]),
        ),
      },
    ]);
    const proxy = await startProxy(reg.host);
    try {
      proxy.tamper.set(img.layers[0]!.digest, 'short');
      await refuse(`${proxy.host}/hostile/truncated`, /is truncated: got \d+ of \d+ bytes/);
      proxy.tamper.set(img.layers[0]!.digest, 'cut');
      proxy.requests.length = 0;
      await refuse(
        `${proxy.host}/hostile/truncated`,
        /is truncated: got \d+ of \d+ bytes/,
        {},
        'network',
      );
      const gets = proxy.requests.filter((r) => r.path.endsWith(img.layers[0]!.digest));
      assert.equal(gets.length, 3, 'a broken connection is retried twice');
    } finally {
      await proxy.stop();
    }
  });

  test('declared size smaller than the blob', async () => {
    await pushImage(
      reg.host,
      'hostile/size',
      'latest',
      [{ data: gzip(makeTar([{ name: 'f', content: 'y'.repeat(5000) }])) }],
      {
        lie: (l) => ({ size: l.size - 10 }),
      },
    );
    await refuse(
      `${reg.host}/hostile/size`,
      /is \d+ bytes on the registry, the manifest says \d+|larger than the \d+ bytes/,
    );
  });

  test('unknown layer media type', async () => {
    await pushImage(reg.host, 'hostile/mediatype', 'latest', [
      {
        data: gzip(makeTar([{ name: 'f', content: 'x' }])),
        mediaType: 'application/x-bzip2-layer',
      },
    ]);
    const d = caseDirs();
    const proxy = await startProxy(reg.host);
    try {
      await assert.rejects(
        pullOci(`${proxy.host}/hostile/mediatype`, opts(d)),
        /layer sha256:[0-9a-f]{64} has media type 'application\/x-bzip2-layer', which banger cannot unpack/,
      );
      assert.deepEqual(
        proxy.requests.filter((r) => r.path.includes('/blobs/')),
        [],
        'refused before downloading anything',
      );
    } finally {
      await proxy.stop();
    }
    assertClean(d);
  });

  test('missing image and missing tag', async () => {
    await refuse(
      `${reg.host}/nobody/here:1`,
      /nobody\/here:1 not found in registry 127\.0\.0\.1:\d+$/,
      {},
      'not_found',
    );
    // A repository that exists, asked for a tag it does not have.
    await pushImage(reg.host, 'test/tagged', 'v1', [
      { data: gzip(makeTar([{ name: 'f', content: 'tagged v1' }])) },
    ]);
    const d = caseDirs();
    const p = await pullOci(`${reg.host}/test/tagged:v1`, opts(d));
    assert.equal(p.tree.readFile('/f').toString(), 'tagged v1', 'the repository is there');
    await p.tree.dispose();
    assertClean(d);
    await refuse(
      `${reg.host}/test/tagged:v2`,
      /test\/tagged:v2 not found in registry 127\.0\.0\.1:\d+$/,
      {},
      'not_found',
    );
  });

  test('cancellation stops the pull and cleans up', async () => {
    const ref = await hostileLayer('slow', [{ name: 'big', content: Buffer.alloc(4 << 20, 7) }]);
    const d = caseDirs();
    const ac = new AbortController();
    const p = pullOci(
      ref,
      opts(d, {
        signal: ac.signal,
        emit: (e) => e.type === 'step' && e.id.startsWith('extract:') && ac.abort(),
      }),
    );
    await assert.rejects(p, (e: unknown) => e instanceof BangerError && e.code === 'cancelled');
    assertClean(d);
  });
});

/** A token server and a registry that trusts it (Bearer challenge with realm/service/scope). */
async function startTokenRegistry(
  requireLogin: boolean,
): Promise<{ ts: TokenServer; treg: Registry }> {
  const ts = await startTokenServer({ requireLogin });
  try {
    const treg = await startRegistry({
      kind: 'token',
      realm: ts.realm,
      service: ts.service,
      issuer: ts.issuer,
      certFile: ts.certFile,
    });
    return { ts, treg };
  } catch (e) {
    await ts.stop();
    throw e;
  }
}
