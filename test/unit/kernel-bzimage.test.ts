import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import {
  detectCompression,
  parseBzImageHeader,
  parseElfHeader,
  parseNotes,
  payloadStream,
  payloadUncompressedSize,
  vmlinuxProblem,
} from '../../src/image/kernel/bzimage.js';
import { elfFacts, extractVmlinux } from '../../src/image/kernel/extract.js';
import { which } from '../../src/util/exec.js';
import { skipUnless } from '../helpers/ci.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-kbz-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const need = (tool: string): { skip?: string } =>
  skipUnless(which(tool), `${tool} is not installed`);

/** A minimal x86-64 ELF executable with one PT_NOTE segment (optionally the PVH note). */
function makeElf(
  opts: { pvh?: boolean; machine?: number; cls?: number; pad?: number } = {},
): Buffer {
  const note = (name: string, type: number, desc: Buffer): Buffer => {
    const n = Buffer.from(`${name}\0`);
    const h = Buffer.alloc(12);
    h.writeUInt32LE(n.length, 0);
    h.writeUInt32LE(desc.length, 4);
    h.writeUInt32LE(type, 8);
    const padN = Buffer.alloc((4 - (n.length % 4)) % 4);
    const padD = Buffer.alloc((4 - (desc.length % 4)) % 4);
    return Buffer.concat([h, n, padN, desc, padD]);
  };
  const notes = Buffer.concat([
    note('GNU', 3, Buffer.alloc(20, 0xab)),
    ...(opts.pvh ? [note('Xen', 0x12, Buffer.from([0, 0, 0, 1]))] : []),
  ]);
  const eh = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46]).copy(eh, 0);
  eh[4] = opts.cls ?? 2;
  eh[5] = 1;
  eh[6] = 1;
  eh.writeUInt16LE(2, 16); // ET_EXEC
  eh.writeUInt16LE(opts.machine ?? 0x3e, 18);
  eh.writeUInt32LE(1, 20);
  eh.writeBigUInt64LE(0x1000000n, 24); // entry
  eh.writeBigUInt64LE(64n, 32); // phoff
  eh.writeUInt16LE(64, 52);
  eh.writeUInt16LE(56, 54); // phentsize
  eh.writeUInt16LE(1, 56); // phnum
  const ph = Buffer.alloc(56);
  ph.writeUInt32LE(4, 0); // PT_NOTE
  ph.writeBigUInt64LE(BigInt(64 + 56), 8);
  ph.writeBigUInt64LE(BigInt(notes.length), 32);
  return Buffer.concat([eh, ph, notes, Buffer.alloc(opts.pad ?? 4096, 0x90)]);
}

/** A synthetic bzImage: setup sectors with the boot header, then the payload. */
function makeBzImage(
  payload: Buffer,
  opts: { setupSects?: number; payloadOffset?: number; protocol?: number } = {},
): Buffer {
  const setupSects = opts.setupSects ?? 3;
  const pm = ((setupSects || 4) + 1) * 512;
  const off = opts.payloadOffset ?? 0x2cc;
  const img = Buffer.alloc(pm + off + payload.length + 64);
  img[0x1f1] = setupSects;
  img.write('HdrS', 0x202, 'latin1');
  img.writeUInt16LE(opts.protocol ?? 0x20f, 0x206);
  img.writeUInt32LE(off, 0x248);
  img.writeUInt32LE(payload.length, 0x24c);
  payload.copy(img, pm + off);
  return img;
}

const sizeTrailer = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

describe('bzImage setup header', () => {
  test('payload location from setup_sects and payload_offset (Debian 6.1 layout)', () => {
    const img = makeBzImage(Buffer.from([0x02, 0x21, 0x4c, 0x18, 1, 2, 3, 4, 5, 6]), {
      setupSects: 39,
    });
    const h = parseBzImageHeader(img, img.length);
    assert.equal(h.setupSects, 39);
    assert.equal(h.pmStart, 0x5000);
    assert.equal(h.payloadOffset, 0x2cc);
    assert.equal(h.payloadStart, 0x52cc);
    assert.equal(h.payloadLength, 10);
    assert.equal(h.protocol, 0x20f);
  });

  test('setup_sects 0 means 4', () => {
    const h = parseBzImageHeader(
      makeBzImage(Buffer.alloc(16), { setupSects: 0, payloadOffset: 0 }),
    );
    assert.equal(h.pmStart, 5 * 512);
  });

  test('rejects non-bzImages, old protocols and truncated files with one-line errors', () => {
    const bad = (buf: Buffer, re: RegExp, size?: number): void =>
      assert.throws(
        () => parseBzImageHeader(buf, size),
        (e: unknown) => e instanceof BangerError && re.test(e.message) && !e.message.includes('\n'),
      );
    bad(Buffer.alloc(100), /only 100 bytes/);
    bad(Buffer.alloc(0x300), /no HdrS/);
    bad(makeBzImage(Buffer.alloc(16), { protocol: 0x204 }), /older than 2\.08/);
    const img = makeBzImage(Buffer.alloc(64));
    bad(img, /runs past the end/, 0x300);
  });

  test('compression by magic; size trailer', () => {
    const cases: [number[], string][] = [
      [[0x1f, 0x8b, 8], 'gzip'],
      [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'xz'],
      [[0x02, 0x21, 0x4c, 0x18], 'lz4'],
      [[0x28, 0xb5, 0x2f, 0xfd], 'zstd'],
      [[0x42, 0x5a, 0x68, 0x39], 'bzip2'],
      [[0x5d, 0, 0, 0x80], 'lzma'],
      [[0x89, 0x4c, 0x5a, 0x4f], 'lzo'],
    ];
    for (const [m, c] of cases) assert.equal(detectCompression(Buffer.from([...m, 0, 0, 0, 0])), c);
    assert.equal(detectCompression(Buffer.from('hello world')), undefined);
    const p = Buffer.concat([Buffer.from([0x02, 0x21, 0x4c, 0x18, 9, 9]), sizeTrailer(53243444)]);
    assert.equal(payloadUncompressedSize(p), 53243444);
    assert.equal(payloadStream(p, 'lz4').length, 6);
    assert.equal(payloadStream(p, 'gzip').length, 10, 'gzip keeps its own trailer');
  });
});

describe('ELF checks', () => {
  test('x86-64 executable with the PVH note', async () => {
    const elf = makeElf({ pvh: true });
    const h = parseElfHeader(elf)!;
    assert.equal(vmlinuxProblem(h), undefined);
    assert.equal(h.entry, 0x1000000n);
    const notes = parseNotes(elf.subarray(120));
    assert.deepEqual(
      notes.slice(0, 2).map((n) => [n.name, n.type]),
      [
        ['GNU', 3],
        ['Xen', 0x12],
      ],
    );
    const f = path.join(tmp, 'pvh.elf');
    fs.writeFileSync(f, elf);
    assert.deepEqual(await elfFacts(f), { pvh: true, entry: '0x1000000' });
    fs.writeFileSync(f, makeElf());
    assert.equal((await elfFacts(f)).pvh, false);
  });

  test('problems named', () => {
    assert.equal(vmlinuxProblem(parseElfHeader(Buffer.alloc(64))), 'not an ELF file');
    assert.equal(vmlinuxProblem(parseElfHeader(makeElf({ cls: 1 }))), 'not a 64-bit ELF');
    assert.match(vmlinuxProblem(parseElfHeader(makeElf({ machine: 0xb7 })))!, /0xb7, not x86-64/);
  });
});

describe('extractVmlinux (synthetic bzImages)', () => {
  const elf = makeElf({ pvh: true, pad: 200_000 });
  const check = async (name: string, compressed: Buffer, trailer: boolean): Promise<void> => {
    const payload = trailer ? Buffer.concat([compressed, sizeTrailer(elf.length)]) : compressed;
    const bz = path.join(tmp, `${name}.bzImage`);
    const out = path.join(tmp, `${name}.vmlinux`);
    fs.writeFileSync(bz, makeBzImage(payload));
    const info = await extractVmlinux(bz, out);
    assert.equal(info.size, elf.length);
    assert.equal(info.pvh, true);
    assert.ok(fs.readFileSync(out).equals(elf));
  };

  test('gzip (node:zlib)', () => check('gzip', zlib.gzipSync(elf), false));

  test('lz4 legacy frame with the size trailer (lz4 exits 0 once it is cut off)', need('lz4'), () =>
    check('lz4', execFileSync('lz4', ['-l', '-c', '-q'], { input: elf }), true),
  );

  test('xz with the size trailer', need('xz'), () =>
    check('xz', execFileSync('xz', ['--check=crc32', '-c'], { input: elf }), true),
  );

  test('zstd with the size trailer', need('zstd'), () =>
    check('zstd', execFileSync('zstd', ['-q', '-c'], { input: elf }), true),
  );

  test('a size mismatch or a non-ELF payload is refused', async () => {
    const bz = path.join(tmp, 'bad.bzImage');
    fs.writeFileSync(bz, makeBzImage(zlib.gzipSync(Buffer.alloc(5000, 1))));
    await assert.rejects(
      extractVmlinux(bz, path.join(tmp, 'bad.out')),
      /not bootable: not an ELF file/,
    );
    fs.writeFileSync(bz, makeBzImage(Buffer.from('plain text payload, no magic')));
    await assert.rejects(
      extractVmlinux(bz, path.join(tmp, 'bad.out')),
      /unknown kernel compression/,
    );
  });
});
