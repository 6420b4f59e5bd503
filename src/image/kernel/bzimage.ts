import { BangerError } from '../../errors.js';

/**
 * The x86 boot protocol header of a bzImage and the ELF header of the
 * vmlinux inside it. Pure byte parsing; extract.ts does the file work.
 *
 * bzImage layout: real-mode setup (`setup_sects`+1 sectors of 512 bytes),
 * then the protected-mode part, in which `payload_offset`/`payload_length`
 * locate the compressed vmlinux. The compressor appends the uncompressed size
 * as 4 little-endian bytes to the payload (decompressors reject them as
 * trailing garbage, so they are cut off before decompressing).
 */

export const SETUP_HEADER_MAGIC = 'HdrS';
const OFF_SETUP_SECTS = 0x1f1;
const OFF_MAGIC = 0x202;
const OFF_VERSION = 0x206;
const OFF_KERNEL_VERSION = 0x20e;
const OFF_PAYLOAD_OFFSET = 0x248;
const OFF_PAYLOAD_LENGTH = 0x24c;
/** Bytes of the file parseBzImageHeader needs. */
export const BZIMAGE_HEADER_BYTES = 0x250;

export interface BzImageHeader {
  /** Boot protocol version, e.g. 0x20f. */
  protocol: number;
  setupSects: number;
  /** File offset of the protected-mode kernel. */
  pmStart: number;
  payloadOffset: number;
  payloadLength: number;
  /** File offset of the compressed payload. */
  payloadStart: number;
  /** Offset of the kernel version string (relative to 0x200), when present. */
  kernelVersionOffset: number;
}

export type Compression = 'gzip' | 'xz' | 'lz4' | 'zstd' | 'bzip2' | 'lzma' | 'lzo';

const invalid = (what: string, hint = 'the kernel package looks damaged; re-pull it') =>
  new BangerError('image_invalid', what, { hint });

export function parseBzImageHeader(buf: Buffer, fileSize?: number): BzImageHeader {
  if (buf.length < BZIMAGE_HEADER_BYTES) throw invalid(`not a bzImage: only ${buf.length} bytes`);
  if (buf.toString('latin1', OFF_MAGIC, OFF_MAGIC + 4) !== SETUP_HEADER_MAGIC) {
    throw invalid('not a bzImage: no HdrS boot header at 0x202');
  }
  const protocol = buf.readUInt16LE(OFF_VERSION);
  if (protocol < 0x208) {
    throw invalid(
      `bzImage boot protocol ${protocol.toString(16)} is older than 2.08 (no payload fields)`,
    );
  }
  const setupSects = buf[OFF_SETUP_SECTS] || 4;
  const pmStart = (setupSects + 1) * 512;
  const payloadOffset = buf.readUInt32LE(OFF_PAYLOAD_OFFSET);
  const payloadLength = buf.readUInt32LE(OFF_PAYLOAD_LENGTH);
  const payloadStart = pmStart + payloadOffset;
  if (payloadLength < 8) throw invalid(`bzImage payload is empty (length ${payloadLength})`);
  if (fileSize !== undefined && payloadStart + payloadLength > fileSize) {
    throw invalid(
      `bzImage payload (${payloadStart}+${payloadLength}) runs past the end of the file (${fileSize} bytes)`,
    );
  }
  return {
    protocol,
    setupSects,
    pmStart,
    payloadOffset,
    payloadLength,
    payloadStart,
    kernelVersionOffset: buf.readUInt16LE(OFF_KERNEL_VERSION),
  };
}

const MAGICS: [number[], Compression][] = [
  [[0x1f, 0x8b], 'gzip'],
  [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'xz'],
  [[0x02, 0x21, 0x4c, 0x18], 'lz4'], // legacy frame, what the kernel's lz4 uses
  [[0x28, 0xb5, 0x2f, 0xfd], 'zstd'],
  [[0x42, 0x5a, 0x68], 'bzip2'],
  [[0x5d, 0x00, 0x00], 'lzma'],
  [[0x89, 0x4c, 0x5a, 0x4f], 'lzo'],
];

export function detectCompression(payload: Buffer): Compression | undefined {
  return MAGICS.find(
    ([m]) => payload.length >= m.length && m.every((b, i) => payload[i] === b),
  )?.[1];
}

/**
 * The uncompressed size at the end of the payload: appended by the kernel
 * build for every compressor but gzip, whose own trailer ends with it (ISIZE).
 */
export function payloadUncompressedSize(payload: Buffer): number {
  return payload.readUInt32LE(payload.length - 4);
}

/** The compressed stream alone: without the appended size trailer (gzip has none). */
export function payloadStream(payload: Buffer, c: Compression): Buffer {
  return c === 'gzip' ? payload : payload.subarray(0, payload.length - 4);
}

/** The command that decompresses a payload of this kind from stdin to stdout (gzip uses node:zlib). */
export function decompressorFor(
  c: Compression,
): { cmd: string; args: string[]; pkg: string } | undefined {
  switch (c) {
    case 'lz4':
      return { cmd: 'lz4', args: ['-dc'], pkg: 'lz4' };
    case 'xz':
      return { cmd: 'xz', args: ['-dc'], pkg: 'xz-utils' };
    case 'lzma':
      return { cmd: 'xz', args: ['--format=lzma', '-dc'], pkg: 'xz-utils' };
    case 'zstd':
      return { cmd: 'zstd', args: ['-dc'], pkg: 'zstd' };
    case 'bzip2':
      return { cmd: 'bzip2', args: ['-dc'], pkg: 'bzip2' };
    case 'lzo':
      return { cmd: 'lzop', args: ['-dc'], pkg: 'lzop' };
    case 'gzip':
      return undefined;
  }
}

// ---- ELF --------------------------------------------------------------------

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
export const EM_X86_64 = 0x3e;
export const ET_EXEC = 2;
const PT_NOTE = 4;
/** XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point note (name "Xen"). */
export const XEN_ELFNOTE_PHYS32_ENTRY = 0x12;

export interface ElfHeader {
  class64: boolean;
  littleEndian: boolean;
  type: number;
  machine: number;
  entry: bigint;
  phoff: number;
  phentsize: number;
  phnum: number;
}

export interface ElfProgramHeader {
  type: number;
  offset: number;
  filesz: number;
}

export function parseElfHeader(buf: Buffer): ElfHeader | undefined {
  if (buf.length < 64 || !ELF_MAGIC.every((b, i) => buf[i] === b)) return undefined;
  const class64 = buf[4] === 2;
  const littleEndian = buf[5] === 1;
  if (!class64 || !littleEndian) {
    return {
      class64,
      littleEndian,
      type: 0,
      machine: 0,
      entry: 0n,
      phoff: 0,
      phentsize: 0,
      phnum: 0,
    };
  }
  return {
    class64,
    littleEndian,
    type: buf.readUInt16LE(16),
    machine: buf.readUInt16LE(18),
    entry: buf.readBigUInt64LE(24),
    phoff: Number(buf.readBigUInt64LE(32)),
    phentsize: buf.readUInt16LE(54),
    phnum: buf.readUInt16LE(56),
  };
}

/** Program headers from the bytes at `phoff` (phnum × phentsize). */
export function parseProgramHeaders(buf: Buffer, h: ElfHeader): ElfProgramHeader[] {
  const out: ElfProgramHeader[] = [];
  for (let i = 0; i < h.phnum; i++) {
    const o = i * h.phentsize;
    if (o + 56 > buf.length) break;
    out.push({
      type: buf.readUInt32LE(o),
      offset: Number(buf.readBigUInt64LE(o + 8)),
      filesz: Number(buf.readBigUInt64LE(o + 32)),
    });
  }
  return out;
}

export interface ElfNote {
  name: string;
  type: number;
  desc: Buffer;
}

/** Notes of one PT_NOTE segment. */
export function parseNotes(buf: Buffer): ElfNote[] {
  const out: ElfNote[] = [];
  const align4 = (n: number): number => Math.ceil(n / 4) * 4;
  let o = 0;
  while (o + 12 <= buf.length) {
    const namesz = buf.readUInt32LE(o);
    const descsz = buf.readUInt32LE(o + 4);
    const type = buf.readUInt32LE(o + 8);
    const nameStart = o + 12;
    const descStart = nameStart + align4(namesz);
    if (descStart + descsz > buf.length) break; // padding or garbage: stop
    out.push({
      name: buf.toString('latin1', nameStart, nameStart + namesz).replace(/\0+$/, ''),
      type,
      desc: buf.subarray(descStart, descStart + descsz),
    });
    o = descStart + align4(descsz);
  }
  return out;
}

export const isPvhNote = (n: ElfNote): boolean =>
  n.name === 'Xen' && n.type === XEN_ELFNOTE_PHYS32_ENTRY;

export const PT_NOTE_TYPE = PT_NOTE;

/** One-line reason an ELF header is not a bootable x86-64 kernel, or undefined when it is. */
export function vmlinuxProblem(h: ElfHeader | undefined): string | undefined {
  if (!h) return 'not an ELF file';
  if (!h.class64) return 'not a 64-bit ELF';
  if (!h.littleEndian) return 'not a little-endian ELF';
  if (h.machine !== EM_X86_64) return `ELF machine is 0x${h.machine.toString(16)}, not x86-64`;
  if (h.type !== ET_EXEC) return `ELF type ${h.type} is not an executable`;
  return undefined;
}
