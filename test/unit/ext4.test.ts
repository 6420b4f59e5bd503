import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { dq, parseLsLine, parseLsListings } from '../../src/storage/debugfs.js';
import {
  chooseSize,
  cloneSparse,
  createSparseExt4,
  dirBlocks,
  ext4Usage,
  growExt4,
  listExt4,
  mkfsArgs,
  parseDumpe2fs,
  writeFilesExt4,
  type Ext4Entry,
} from '../../src/storage/ext4.js';
import { tarToExt4 } from '../../src/image/tree/toExt4.js';
import { chunked, gzip, makeTar, type TarSpec } from '../helpers/tarWriter.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-ext4-'));
fs.chmodSync(tmp, 0o755);
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const sh = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 28 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const dbg = (img: string, req: string) => sh('debugfs', ['-R', req, img]).out;
const fsck = (img: string) => {
  const r = sh('e2fsck', ['-fn', img]);
  assert.equal(r.code, 0, `e2fsck: ${r.out}${r.err}`);
};
const catFile = (img: string, p: string) =>
  spawnSync('debugfs', ['-R', `cat ${dq(p)}`, img], { maxBuffer: 1 << 28 }).stdout;

const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');
// system.posix_acl_access in the xattr (VFS) format: user::rwx group::r-x other::r-x
const ACL = Buffer.from('0200000001000700ffffffff04000500ffffffff20000500ffffffff', 'hex');

/** A rootfs exercising every kind of entry the converter must carry over. */
function richRootfs(): TarSpec[] {
  const flat: TarSpec[] = [];
  for (let i = 0; i < 3000; i++) flat.push({ name: `./flat/entry-${i}`, content: `${i}` });
  return [
    { name: './', type: 'dir', mode: 0o755 },
    { name: './etc/', type: 'dir' },
    { name: './etc/shadow', content: 'root:*:19000::::::\n', mode: 0o640, gid: 42 },
    { name: './usr/bin/sudo', content: Buffer.alloc(70_000, 1), mode: 0o4755 },
    { name: './usr/bin/wall', content: 'x', mode: 0o2755, gid: 5 },
    { name: './usr/bin/ping', content: 'ping', xattrs: { 'security.capability': CAP } },
    { name: './usr/bin/sudoedit', type: 'hardlink', linkname: './usr/bin/sudo' },
    {
      name: './var/log/journal/',
      type: 'dir',
      mode: 0o2755,
      xattrs: { 'system.posix_acl_access': ACL },
    },
    { name: './home/dev/', type: 'dir', uid: 1000, gid: 1000, mode: 0o700 },
    { name: './home/dev/.profile', content: 'PATH=x', uid: 1000, gid: 1000, mode: 0o600 },
    { name: './srv/big-uid', content: 'b', uid: 100_000, gid: 200_000, mode: 0o444 },
    { name: './tmp/', type: 'dir', mode: 0o1777 },
    { name: './bin', type: 'symlink', linkname: 'usr/bin' },
    { name: './long-link', type: 'symlink', linkname: `/usr/${'l'.repeat(100)}/target` },
    { name: './dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
    { name: './dev/sda', type: 'block', devMajor: 8, devMinor: 0, mode: 0o660, gid: 6 },
    { name: './run/initctl', type: 'fifo', mode: 0o600 },
    { name: './weird/with space', content: 's' },
    { name: './weird/with "quotes"', content: 'q' },
    { name: './weird/-leading-dash', content: 'd' },
    { name: './weird/ünïcödé', content: 'u' },
    { name: './weird/<12>', content: 'looks like an inode spec' },
    { name: './empty', content: '' },
    ...flat,
  ];
}

function expectRich(img: string, list: Ext4Entry[]) {
  const m = new Map(list.map((e) => [e.path, e]));
  const mode = (p: string) => m.get(p)!.mode.toString(8);
  assert.equal(mode('/'), '40755');
  assert.equal(mode('/etc/shadow'), '100640');
  assert.equal(m.get('/etc/shadow')!.gid, 42);
  assert.equal(mode('/usr/bin/sudo'), '104755');
  assert.equal(mode('/usr/bin/wall'), '102755');
  assert.equal(m.get('/usr/bin/sudoedit')!.ino, m.get('/usr/bin/sudo')!.ino, 'hard link kept');
  assert.equal(mode('/var/log/journal'), '42755');
  assert.deepEqual(
    [m.get('/home/dev')!.uid, m.get('/home/dev')!.gid, mode('/home/dev')],
    [1000, 1000, '40700'],
  );
  assert.deepEqual([m.get('/srv/big-uid')!.uid, m.get('/srv/big-uid')!.gid], [100_000, 200_000]);
  assert.equal(mode('/srv/big-uid'), '100444');
  assert.equal(mode('/tmp'), '41777');
  assert.equal(mode('/bin'), '120777');
  assert.equal(mode('/dev/null'), '20666');
  assert.equal(mode('/dev/sda'), '60660');
  assert.equal(m.get('/dev/sda')!.gid, 6);
  assert.equal(mode('/run/initctl'), '10600');
  for (const n of ['with space', 'with "quotes"', '-leading-dash', 'ünïcödé', '<12>'])
    assert.ok(m.has(`/weird/${n}`), n);
  assert.equal(list.filter((e) => e.path.startsWith('/flat/')).length, 3000);
  // contents, link targets, devices, xattrs, times
  assert.equal(catFile(img, '/weird/<12>').toString(), 'looks like an inode spec');
  assert.equal(catFile(img, '/usr/bin/sudo').length, 70_000);
  assert.equal(catFile(img, '/flat/entry-2999').toString(), '2999');
  assert.match(dbg(img, 'stat /dev/null'), /Device major\/minor number: 01:03/);
  assert.match(dbg(img, 'stat /dev/sda'), /Device major\/minor number: 08:00/);
  assert.match(dbg(img, 'stat /long-link'), /Type: symlink.*\n(.*\n)*.*Size: 112/);
  assert.match(dbg(img, 'stat /bin'), /Fast link dest: "usr\/bin"/);
  assert.match(
    dbg(img, 'ea_list /usr/bin/ping'),
    /security\.capability \(20\) = 01 00 00 02 00 20 00 00/,
  );
  assert.match(dbg(img, 'ea_list /var/log/journal'), /system\.posix_acl_access/);
  for (const p of ['/etc/shadow', '/dev/null', '/run/initctl', '/bin'])
    assert.match(dbg(img, `stat ${p}`), /mtime: 0x6553f100/, `mtime of ${p}`);
  fsck(img);
}

describe('debugfs scripting (pure)', () => {
  test('quoting', () => {
    assert.equal(dq('a b'), '"a b"');
    assert.equal(dq('say "hi"'), '"say ""hi"""');
    assert.throws(() => dq('a\nb'), /line break/);
  });
  test('ls -p lines and listings', () => {
    assert.deepEqual(parseLsLine('/12/100644/1000/42/with space/3/'), {
      ino: 12,
      mode: 0o100644,
      uid: 1000,
      gid: 42,
      name: 'with space',
      size: 3,
    });
    assert.deepEqual(parseLsLine('/2/040755/0/0/.//'), {
      ino: 2,
      mode: 0o40755,
      uid: 0,
      gid: 0,
      name: '.',
    });
    const out = [
      'debugfs: cd "/a"',
      'debugfs: mknod "x" p',
      'Allocated inode: 14',
      'debugfs: ls -p "/a"',
      '/12/040755/0/0/.//',
      '/2/040755/0/0/..//',
      '/13/100644/0/0/f/3/',
      '',
      'debugfs: ls -p "/missing"',
      'debugfs: ls -p "/"',
      '/2/040755/0/0/.//',
      '',
    ].join('\n');
    const l = parseLsListings(out);
    assert.equal(l.length, 3);
    assert.equal(l[0]!.length, 3);
    assert.equal(l[1], null);
    assert.equal(l[2]![0]!.ino, 2);
  });
  test('mkfs arguments pin features and never pass a size', () => {
    const a = mkfsArgs('/x.img', {
      label: 'banger-root',
      journal: false,
      inodes: 5000,
      root: '/stage',
    });
    assert.deepEqual(a.slice(0, 10), [
      '-q',
      '-F',
      '-t',
      'ext4',
      '-T',
      'default',
      '-b',
      '4096',
      '-I',
      '256',
    ]);
    assert.ok(a.includes('^has_journal'));
    assert.deepEqual(a.slice(-3), ['-d', '/stage', '/x.img']);
    assert.ok(!mkfsArgs('/x', { label: 'l', journal: true }).includes('^has_journal'));
    assert.throws(
      () => mkfsArgs('/x', { label: 'a-label-that-is-too-long', journal: false }),
      /16 bytes/,
    );
  });
  test('sizing', () => {
    assert.equal(dirBlocks([10, 10]), 1);
    assert.ok(dirBlocks(new Array(20000).fill(20)) > 100);
    const s = chooseSize(
      { blocks: 100_000, inodes: 9000 },
      { headroom: 0.1, extraBytes: 0, journal: false },
    );
    assert.equal(s.sizeBytes % (1024 * 1024), 0);
    assert.ok(
      s.sizeBytes > 100_000 * 4096 * 1.1 && s.sizeBytes < 100_000 * 4096 * 1.25,
      String(s.sizeBytes),
    );
    assert.ok(s.inodes >= 9900);
    const j = chooseSize(
      { blocks: 100_000, inodes: 9000 },
      { headroom: 0.1, extraBytes: 0, journal: true },
    );
    assert.ok(j.sizeBytes > s.sizeBytes);
  });
  test('dumpe2fs parsing', () => {
    const u = parseDumpe2fs(
      'Inode count:              16384\nBlock count:              65536\nFree blocks:              60000\nFree inodes:              16370\nBlock size:               4096\n',
    );
    assert.deepEqual(u, {
      blockSize: 4096,
      totalBytes: 65536 * 4096,
      usedBytes: 5536 * 4096,
      freeBytes: 60000 * 4096,
      inodes: 16384,
      freeInodes: 16370,
    });
  });
});

describe('tar → ext4', () => {
  const tarFile = path.join(tmp, 'rich.tar');
  fs.writeFileSync(tarFile, makeTar(richRootfs()));
  fs.chmodSync(tarFile, 0o644);

  test('carries owners, modes, setuid, hard links, devices, fifos, xattrs, odd names', async () => {
    const out = path.join(tmp, 'rich.ext4');
    const events: string[] = [];
    const r = await tarToExt4(chunked(gzip(fs.readFileSync(tarFile)), 65536), out, {
      workDir: tmp,
      emit: (e) => e.type === 'step' && events.push(`${e.id}:${e.state}`),
    });
    assert.equal(r.entries, richRootfs().length + 10, 'entries incl. implicit parent dirs');
    assert.ok(r.allocatedBytes < r.sizeBytes, 'sparse');
    assert.deepEqual(events, [
      'ext4:extract:start',
      'ext4:extract:done',
      'ext4:mkfs:start',
      'ext4:mkfs:done',
      'ext4:fixup:start',
      'ext4:fixup:done',
    ]);
    expectRich(out, await listExt4(out));
    const feat = sh('dumpe2fs', ['-h', out]).out;
    assert.match(feat, /Filesystem volume name:\s+banger-root/);
    assert.match(feat, /features:.*extent.*flex_bg.*metadata_csum/);
    assert.doesNotMatch(feat, /has_journal/);
    assert.match(feat, /Block size:\s+4096/);
    const u = await ext4Usage(out);
    assert.ok(u.freeBytes > 0.05 * u.usedBytes, 'has headroom');
    assert.deepEqual(
      fs.readdirSync(tmp).filter((f) => f.includes('.build-') || f.startsWith('tree-')),
      [],
    );
  });

  test('the rootless path: run as an unprivileged user, same image', async (t) => {
    const child = path.join(
      path.dirname(fileURLToPath(import.meta.url)),
      '..',
      'helpers',
      'ext4Child.js',
    );
    const dir = path.join(tmp, 'unpriv');
    fs.mkdirSync(dir);
    const isRoot = process.getuid?.() === 0;
    if (isRoot) fs.chownSync(dir, 65534, 65534);
    const out = path.join(dir, 'rootfs.ext4');
    const cmd = isRoot
      ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, child]
      : [process.execPath, child];
    const r = spawnSync(cmd[0]!, [...cmd.slice(1), tarFile, out, dir], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
    });
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { uid: number; fixups: number };
    assert.notEqual(res.uid, 0, 'really unprivileged');
    assert.ok(res.fixups > 3000, 'every entry needed its owner fixed');
    assert.equal(fs.statSync(out).uid, isRoot ? 65534 : process.getuid?.());
    const list = await listExt4(out);
    expectRich(out, list);
    const asRoot = await listExt4(path.join(tmp, 'rich.ext4'));
    const key = (e: Ext4Entry) => `${e.path} ${e.mode} ${e.uid} ${e.gid} ${e.size}`;
    assert.deepEqual(list.map(key), asRoot.map(key));
    if (!isRoot) t.diagnostic('not root: ran in-process as the current user');
  });

  test('names debugfs cannot express are refused clearly', async () => {
    await assert.rejects(
      tarToExt4(
        chunked(makeTar([{ name: 'bad\nname', content: 'x' }])),
        path.join(tmp, 'nl.ext4'),
        { workDir: tmp },
      ),
      /entry "\/bad\\nname" has a line break/,
    );
    assert.ok(!fs.existsSync(path.join(tmp, 'nl.ext4')));
  });

  test('a size estimate that misses is retried larger', async () => {
    const out = path.join(tmp, 'retry.ext4');
    const events: string[] = [];
    const r = await tarToExt4(
      chunked(makeTar([{ name: 'big', content: Buffer.alloc(64 << 20, 1) }]), 1 << 20),
      out,
      {
        workDir: tmp,
        headroom: -0.7,
        emit: (e) => e.type === 'log' && events.push(e.message),
      },
    );
    assert.ok(
      events.some((m) => /estimate too small/.test(m)),
      'retried',
    );
    assert.ok(r.sizeBytes > 64 << 20);
    fsck(out);
    fs.rmSync(out);
  });

  test('an explicit size that is too small fails without leaving files', async () => {
    const out = path.join(tmp, 'small.ext4');
    await assert.rejects(
      tarToExt4(chunked(makeTar([{ name: 'big', content: Buffer.alloc(8 << 20, 1) }])), out, {
        workDir: tmp,
        sizeBytes: 4 << 20,
      }),
      /mkfs/,
    );
    assert.deepEqual(
      fs.readdirSync(tmp).filter((f) => f.startsWith('small')),
      [],
    );
  });
});

describe('VM disk helpers', () => {
  test('sparse overlay disk, clone, grow, usage', async () => {
    const disk = path.join(tmp, 'overlay.ext4');
    await createSparseExt4(disk, 8 * 1024 ** 3, { label: 'banger-overlay' });
    let u = await ext4Usage(disk);
    assert.equal(u.sizeBytes, 8 * 1024 ** 3);
    assert.ok(u.allocatedBytes < 16 * 1024 ** 2, `allocated ${u.allocatedBytes}`);
    assert.match(sh('dumpe2fs', ['-h', disk]).out, /has_journal/);
    fsck(disk);

    const seed = path.join(tmp, 'seed.ext4');
    await createSparseExt4(seed, 64 * 1024 ** 2, { label: 'banger-work', journal: true });
    await writeFilesExt4(
      seed,
      [
        { path: '/.ssh/authorized_keys', content: 'ssh-ed25519 AAAA key1\n', mode: 0o600 },
        { path: '/.config/app/conf', content: 'a=1', mode: 0o644, uid: 1000, gid: 1000 },
      ],
      [
        { path: '/.ssh', mode: 0o700 },
        { path: '/', mode: 0o700 },
      ],
    );
    const work = path.join(tmp, 'work.ext4');
    await cloneSparse(seed, work);
    assert.ok(fs.statSync(work).blocks * 512 <= fs.statSync(seed).blocks * 512 + 65536);
    await growExt4(work, 2 * 1024 ** 3);
    u = await ext4Usage(work);
    assert.equal(u.sizeBytes, 2 * 1024 ** 3);
    assert.ok(u.totalBytes > 1.9 * 1024 ** 3);
    await assert.rejects(growExt4(work, 1024 ** 3), /cannot shrink/);
    await growExt4(work, 2 * 1024 ** 3); // same size: nothing to do
    fsck(work);
    // a disk a VM has used (mounted after its last check) needs e2fsck before resize2fs
    assert.equal(sh('debugfs', ['-w', '-R', 'ssv mtime 20990101', work]).code, 0);
    assert.match(
      sh('resize2fs', [work, '3G']).err + sh('resize2fs', [work, '3G']).out,
      /e2fsck -f/,
    );
    await growExt4(work, 3 * 1024 ** 3);
    assert.equal((await ext4Usage(work)).sizeBytes, 3 * 1024 ** 3);
    fsck(work);

    // replace a file, add one with a host source, keep the rest
    const host = path.join(tmp, 'hostfile');
    fs.writeFileSync(host, 'from host');
    await writeFilesExt4(work, [
      { path: '/.ssh/authorized_keys', content: 'ssh-ed25519 BBBB key2\n', mode: 0o600 },
      { path: '/notes/from-host.txt', hostPath: host, mode: 0o640, uid: 1000, gid: 1000 },
    ]);
    const m = new Map((await listExt4(work)).map((e) => [e.path, e]));
    assert.equal(m.get('/')!.mode.toString(8), '40700');
    assert.equal(m.get('/.ssh')!.mode.toString(8), '40700');
    assert.equal(m.get('/.ssh/authorized_keys')!.mode.toString(8), '100600');
    assert.equal(m.get('/.config/app/conf')!.uid, 1000);
    assert.equal(m.get('/.config')!.mode.toString(8), '40755');
    assert.equal(m.get('/notes/from-host.txt')!.mode.toString(8), '100640');
    assert.equal(catFile(work, '/.ssh/authorized_keys').toString(), 'ssh-ed25519 BBBB key2\n');
    assert.equal(catFile(work, '/notes/from-host.txt').toString(), 'from host');
    assert.equal(
      catFile(seed, '/.ssh/authorized_keys').toString(),
      'ssh-ed25519 AAAA key1\n',
      'clone is independent',
    );
    fsck(work);
    await assert.rejects(writeFilesExt4(work, [{ path: '/.ssh', content: 'x' }]), /is a directory/);
    await assert.rejects(
      writeFilesExt4(work, [{ path: 'relative', content: 'x' }]),
      /must be absolute/,
    );
    assert.deepEqual(
      fs.readdirSync(tmp).filter((f) => f.includes('.files-') || f.includes('.tmp-')),
      [],
    );
  });
});
