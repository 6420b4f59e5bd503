import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { TarReader, parsePax, type TarHeader } from '../../src/image/tree/tar.js';
import { decompress, sniffCompression } from '../../src/image/tree/decompress.js';
import { chunked, gzip, makeTar, zstd } from '../helpers/tarWriter.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-tar-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function readAll(src: AsyncIterable<Buffer>): Promise<{ h: TarHeader; data: Buffer }[]> {
  const r = new TarReader(src);
  const out: { h: TarHeader; data: Buffer }[] = [];
  for (let h = await r.next(); h; h = await r.next()) {
    const parts: Buffer[] = [];
    if (h.type === 'file') for await (const c of r.body()) parts.push(c);
    out.push({ h, data: Buffer.concat(parts) });
  }
  return out;
}

const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');

describe('tar reader', () => {
  const tar = makeTar([
    { name: './', type: 'dir' },
    { name: './etc/', type: 'dir' },
    { name: './etc/hosts', content: '127.0.0.1 localhost\n', uid: 1000, gid: 42, mode: 0o640 },
    {
      name: './usr/bin/ping',
      content: Buffer.alloc(5000, 7),
      mode: 0o4755,
      xattrs: { 'security.capability': CAP },
    },
    { name: './lib', type: 'symlink', linkname: 'usr/lib' },
    { name: './usr/bin/ping2', type: 'hardlink', linkname: './usr/bin/ping' },
    { name: './dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
    { name: `./long/${'x'.repeat(150)}/${'y'.repeat(120)}`, content: 'deep' },
    { name: './ünïcode', content: 'u' },
    { name: './big-uid', content: '', uid: 3_000_000 },
  ]);

  for (const size of [1, 7, 511, 512, 4096, 1 << 20]) {
    test(`parses every entry with ${size}-byte chunks`, async () => {
      const all = await readAll(chunked(tar, size));
      assert.deepEqual(
        all.map((e) => [e.h.name, e.h.type]),
        [
          ['./', 'dir'],
          ['./etc/', 'dir'],
          ['./etc/hosts', 'file'],
          ['./usr/bin/ping', 'file'],
          ['./lib', 'symlink'],
          ['./usr/bin/ping2', 'hardlink'],
          ['./dev/null', 'char'],
          [`./long/${'x'.repeat(150)}/${'y'.repeat(120)}`, 'file'],
          ['./ünïcode', 'file'],
          ['./big-uid', 'file'],
        ],
      );
      const hosts = all[2]!;
      assert.equal(hosts.data.toString(), '127.0.0.1 localhost\n');
      assert.deepEqual([hosts.h.uid, hosts.h.gid, hosts.h.mode], [1000, 42, 0o640]);
      const ping = all[3]!;
      assert.equal(ping.data.length, 5000);
      assert.equal(ping.h.mode, 0o4755);
      assert.deepEqual(
        ping.h.xattrs.get('security.capability'),
        CAP,
        'binary xattr kept byte for byte',
      );
      assert.equal(all[4]!.h.linkname, 'usr/lib');
      assert.equal(all[5]!.h.linkname, './usr/bin/ping');
      assert.deepEqual([all[6]!.h.devMajor, all[6]!.h.devMinor], [1, 3]);
      assert.equal(all[7]!.data.toString(), 'deep');
      assert.equal(all[9]!.h.uid, 3_000_000);
    });
  }

  test('skipping bodies without reading them', async () => {
    const r = new TarReader(chunked(tar, 100));
    const names: string[] = [];
    for (let h = await r.next(); h; h = await r.next()) names.push(h.name);
    assert.equal(names.length, 10);
    assert.equal(r.bytesRead, tar.length - 1024 + 512);
  });

  test('reads what GNU tar writes (posix with xattrs, gnu long names)', async () => {
    const src = path.join(tmp, 'src');
    fs.mkdirSync(path.join(src, 'd'.repeat(120)), { recursive: true });
    fs.writeFileSync(path.join(src, 'd'.repeat(120), 'f'.repeat(110)), 'long');
    fs.writeFileSync(path.join(src, 'a'), 'A');
    fs.symlinkSync('a', path.join(src, 'l'));
    fs.linkSync(path.join(src, 'a'), path.join(src, 'h'));
    spawnSync('setfattr', ['-n', 'user.k', '-v', '0x00ff10', path.join(src, 'a')]);
    for (const format of ['posix', 'gnu']) {
      const out = path.join(tmp, `${format}.tar`);
      const r = spawnSync('tar', [`--format=${format}`, '--xattrs', '-C', src, '-cf', out, '.']);
      assert.equal(r.status, 0, r.stderr.toString());
      const all = await readAll(chunked(fs.readFileSync(out), 1000));
      const byName = new Map(all.map((e) => [e.h.name.replace(/\/$/, ''), e]));
      assert.equal(byName.get(`./${'d'.repeat(120)}/${'f'.repeat(110)}`)?.data.toString(), 'long');
      assert.equal(byName.get('./l')?.h.type, 'symlink');
      const linked = [byName.get('./a')!, byName.get('./h')!].map((e) => e.h.type).sort();
      assert.deepEqual(linked, ['file', 'hardlink']);
      const x =
        byName.get('./a')!.h.xattrs.get('user.k') ?? byName.get('./h')!.h.xattrs.get('user.k');
      if (format === 'posix' && x) assert.deepEqual(x, Buffer.from([0, 0xff, 0x10]));
    }
  });

  test('bad input fails clearly', async () => {
    const good = makeTar([{ name: 'a', content: 'x'.repeat(2000) }]);
    await assert.rejects(readAll(chunked(good.subarray(0, 1200))), /truncated/);
    const corrupt = Buffer.from(good);
    corrupt[10] = 0x41;
    await assert.rejects(readAll(chunked(corrupt)), /checksum/);
    await assert.rejects(readAll(chunked(Buffer.alloc(700, 0x61))), /checksum/);
    const nonUtf8 = makeTar([{ name: 'ok', content: '' }]);
    nonUtf8[0] = 0xff;
    let sum = 0;
    nonUtf8.fill(0x20, 148, 156);
    for (let i = 0; i < 512; i++) sum += nonUtf8[i]!;
    nonUtf8.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
    await assert.rejects(readAll(chunked(nonUtf8)), /UTF-8/);
  });

  test('PAX records keep binary values and honour lengths', () => {
    const rec = Buffer.concat([
      Buffer.from('28 SCHILY.xattr.user.a='),
      Buffer.from([0, 10, 255, 1]),
      Buffer.from('\n'),
    ]);
    const m = parsePax(Buffer.concat([rec, Buffer.from('12 path=a/b\n')]));
    assert.deepEqual(m.get('SCHILY.xattr.user.a'), Buffer.from([0, 10, 255, 1]));
    assert.equal(m.get('path')!.toString(), 'a/b');
    assert.throws(() => parsePax(Buffer.from('99 path=x\n')), /length/);
  });
});

describe('decompression', () => {
  const tar = makeTar([{ name: 'f', content: 'hello '.repeat(1000) }]);
  test('sniffs formats', () => {
    assert.equal(sniffCompression(gzip(tar)), 'gzip');
    assert.equal(sniffCompression(zstd(tar)), 'zstd');
    assert.equal(sniffCompression(tar), 'none');
  });
  for (const [name, data] of [
    ['gzip', gzip(tar)],
    ['zstd', zstd(tar)],
    ['none', tar],
  ] as const) {
    test(`${name} round trip (auto)`, async () => {
      let input = 0;
      const parts: Buffer[] = [];
      for await (const c of decompress(chunked(data, 300), 'auto', {
        onInputBytes: (n) => (input = n),
      }))
        parts.push(c);
      assert.deepEqual(Buffer.concat(parts), tar);
      assert.equal(input, data.length);
    });
  }
  test('corrupt gzip and zstd are errors naming the layer', async () => {
    const bad = gzip(tar);
    bad[bad.length - 6] ^= 0xff;
    const drain = async (s: AsyncIterable<Buffer>) => {
      for await (const _ of s);
    };
    await assert.rejects(
      drain(decompress(chunked(bad), 'gzip', { label: 'layer L1' })),
      /layer L1: gzip/,
    );
    const z = zstd(tar);
    await assert.rejects(
      drain(decompress(chunked(z.subarray(0, z.length - 10)), 'zstd', { label: 'layer L2' })),
      /layer L2: zstd data is corrupt/,
    );
  });
  test('stopping early ends the zstd process', async () => {
    const big = zstd(Buffer.alloc(32 << 20));
    const it = decompress(chunked(big), 'zstd');
    const first = await it.next();
    assert.ok(!first.done);
    await it.return(undefined);
  });
});
