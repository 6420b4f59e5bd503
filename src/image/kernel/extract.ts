import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { BangerError } from '../../errors.js';
import {
  decompressorFor,
  detectCompression,
  isPvhNote,
  parseBzImageHeader,
  parseElfHeader,
  parseNotes,
  parseProgramHeaders,
  payloadStream,
  payloadUncompressedSize,
  PT_NOTE_TYPE,
  vmlinuxProblem,
  type Compression,
} from './bzimage.js';

/**
 * bzImage → uncompressed ELF vmlinux (what Firecracker loads, and what QEMU
 * boots fastest through its PVH entry). The file edge around bzimage.ts.
 */

export interface VmlinuxInfo {
  compression: Compression;
  /** Bytes written (equals the size the kernel build recorded). */
  size: number;
  /** The ELF carries a PVH entry note (direct boot without the bzImage stub). */
  pvh: boolean;
  entry: string;
}

/** Run `cmd` with `input` on stdin and stdout into `outFile`. */
function pipeToFile(
  cmd: string,
  args: string[],
  input: Buffer,
  outFile: string,
  opts: { signal?: AbortSignal; pkg: string },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const fd = fs.openSync(outFile, 'w', 0o644);
    const child = spawn(cmd, args, { stdio: ['pipe', fd, 'pipe'], signal: opts.signal });
    fs.closeSync(fd);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdin!.on('error', () => undefined); // EPIPE when the tool dies early; reported on close
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        reject(
          new BangerError('tool_missing', `${cmd} not found (needed to decompress the kernel)`, {
            hint: `install it (Debian/Ubuntu: sudo apt-get install ${opts.pkg})`,
          }),
        );
      } else if (e.name === 'AbortError')
        reject(new BangerError('cancelled', 'kernel extraction was cancelled'));
      else reject(e);
    });
    child.on('close', (code, sig) => {
      if (code === 0) resolve();
      else
        reject(
          new BangerError(
            'tool_failed',
            `decompressing the kernel with ${cmd} failed: ${stderr.trim().split('\n').pop() || (sig ? `killed by ${sig}` : `exit ${code}`)}`,
            { hint: 'the kernel package looks damaged; re-pull it' },
          ),
        );
    });
    child.stdin!.end(input);
  });
}

/** PVH note present in an ELF file (reads only the headers and note segments). */
export async function elfFacts(
  file: string,
): Promise<{ problem?: string; pvh: boolean; entry: string }> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const head = Buffer.alloc(64);
    await fh.read(head, 0, 64, 0);
    const h = parseElfHeader(head);
    const problem = vmlinuxProblem(h);
    if (problem || !h) return { problem, pvh: false, entry: '' };
    const phBuf = Buffer.alloc(h.phnum * h.phentsize);
    await fh.read(phBuf, 0, phBuf.length, h.phoff);
    let pvh = false;
    for (const ph of parseProgramHeaders(phBuf, h)) {
      if (ph.type !== PT_NOTE_TYPE || ph.filesz > 1024 * 1024) continue;
      const nb = Buffer.alloc(ph.filesz);
      await fh.read(nb, 0, nb.length, ph.offset);
      if (parseNotes(nb).some(isPvhNote)) pvh = true;
    }
    return { pvh, entry: `0x${h.entry.toString(16)}` };
  } finally {
    await fh.close();
  }
}

export async function extractVmlinux(
  bzImage: string,
  outFile: string,
  opts: { signal?: AbortSignal } = {},
): Promise<VmlinuxInfo> {
  const buf = await fs.promises.readFile(bzImage);
  const hdr = parseBzImageHeader(buf, buf.length);
  const payload = buf.subarray(hdr.payloadStart, hdr.payloadStart + hdr.payloadLength);
  const compression = detectCompression(payload);
  if (!compression) {
    throw new BangerError(
      'image_invalid',
      `unknown kernel compression (payload starts ${payload.subarray(0, 6).toString('hex')})`,
      { hint: 'use a kernel compressed with gzip, xz, lz4 or zstd' },
    );
  }
  const expected = payloadUncompressedSize(payload);
  const stream = payloadStream(payload, compression);
  const tool = decompressorFor(compression);
  if (tool)
    await pipeToFile(tool.cmd, tool.args, stream, outFile, { signal: opts.signal, pkg: tool.pkg });
  else
    await pipeline(
      Readable.from([stream]),
      zlib.createGunzip(),
      fs.createWriteStream(outFile, { mode: 0o644 }),
      {
        signal: opts.signal,
      },
    );
  const size = (await fs.promises.stat(outFile)).size;
  if (size !== expected) {
    throw new BangerError(
      'image_invalid',
      `extracted vmlinux is ${size} bytes, the kernel header says ${expected}`,
      { hint: 'the kernel package looks damaged; re-pull it' },
    );
  }
  const facts = await elfFacts(outFile);
  if (facts.problem) {
    throw new BangerError('image_invalid', `extracted vmlinux is not bootable: ${facts.problem}`, {
      hint: 'the kernel package looks damaged; re-pull it',
    });
  }
  return { compression, size, pvh: facts.pvh, entry: facts.entry };
}
