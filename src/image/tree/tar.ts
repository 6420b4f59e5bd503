/**
 * A streaming tar reader (ustar, GNU long names, PAX) that keeps PAX values as
 * raw bytes. Binary xattrs such as `security.capability` or POSIX ACLs travel in
 * PAX records and must reach the image byte for byte, which a string-decoding
 * parser cannot do; names must be valid UTF-8 (they become host file names).
 *
 * Pull-based: `next()` returns the next entry's header; the caller then reads its
 * body with `body()` or lets `next()` skip it.
 */

export type TarEntryType =
  'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo' | 'unsupported';

export interface TarHeader {
  name: string;
  type: TarEntryType;
  /** The raw typeflag character, for messages about unsupported entries. */
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch (may carry a fraction from PAX). */
  mtime: number;
  linkname: string;
  devMajor: number;
  devMinor: number;
  /** Extended attributes from PAX `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*`, raw values. */
  xattrs: Map<string, Buffer>;
  /** Offset of this entry's header in the uncompressed stream. */
  offset: number;
}

export class TarFormatError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
    this.name = 'TarFormatError';
  }
}

const BLOCK = 512;
const MAX_META_BYTES = 1024 * 1024;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Buffered reader over an async byte source; counts every byte it consumes. */
class ByteReader {
  private chunks: Buffer[] = [];
  private head = 0;
  private avail = 0;
  private ended = false;
  /** Bytes handed out or skipped so far. */
  consumed = 0;

  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async pull(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.source.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    const c = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array);
    if (c.length) {
      this.chunks.push(c);
      this.avail += c.length;
    }
    return true;
  }

  /** Exactly n bytes, or fewer only at end of input. */
  async read(n: number): Promise<Buffer> {
    while (this.avail < n && (await this.pull()));
    return this.take(Math.min(n, this.avail));
  }

  /** Up to n bytes from what is buffered (pulling once when empty); empty at end. */
  async readSome(n: number): Promise<Buffer> {
    if (this.avail === 0 && !(await this.pull())) return Buffer.alloc(0);
    while (this.avail === 0 && (await this.pull()));
    return this.take(Math.min(n, this.avail));
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length - this.head >= n) {
      out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      while (off < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length - this.head, n - off);
        c.copy(out, off, this.head, this.head + k);
        off += k;
        this.head += k;
        if (this.head === c.length) {
          this.chunks.shift();
          this.head = 0;
        }
      }
    }
    this.avail -= n;
    this.consumed += n;
    return out;
  }

  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const b = await this.readSome(Math.min(left, 1 << 20));
      if (b.length === 0) break;
      left -= b.length;
    }
    return n - left;
  }
}

export interface TarReaderOptions {
  /** Called after every chunk of input is consumed, with the running byte count (limits). */
  onBytes?: (consumed: number) => void;
}

export class TarReader {
  private readonly r: ByteReader;
  /** Body bytes of the current entry not read yet (plus its padding). */
  private pendingBody = 0;
  private pendingPad = 0;
  private done = false;
  private global = new Map<string, Buffer>();

  constructor(
    source: AsyncIterable<Buffer> | AsyncIterator<Buffer>,
    private readonly opts: TarReaderOptions = {},
  ) {
    const it =
      Symbol.asyncIterator in source
        ? (source as AsyncIterable<Buffer>)[Symbol.asyncIterator]()
        : (source as AsyncIterator<Buffer>);
    this.r = new ByteReader(it);
  }

  /** Bytes of the (uncompressed) tar stream consumed so far. */
  get bytesRead(): number {
    return this.r.consumed;
  }

  private tick(): void {
    this.opts.onBytes?.(this.r.consumed);
  }

  /** The next entry, or null at the end of the archive. Skips any unread body. */
  async next(): Promise<TarHeader | null> {
    if (this.done) return null;
    await this.skipBody();
    let longName: string | undefined;
    let longLink: string | undefined;
    let pax: Map<string, Buffer> | undefined;
    for (;;) {
      const offset = this.r.consumed;
      const block = await this.r.read(BLOCK);
      this.tick();
      if (block.length === 0) {
        // No end-of-archive marker: accepted when nothing was pending (like GNU tar).
        if (longName !== undefined || longLink !== undefined || pax) {
          throw new TarFormatError('archive ends inside an extended header', offset);
        }
        this.done = true;
        return null;
      }
      if (block.length < BLOCK) throw new TarFormatError('archive is truncated', offset);
      if (isZero(block)) {
        this.done = true;
        return null;
      }
      verifyChecksum(block, offset);
      const flag = String.fromCharCode(block[156]!);
      const size = readNumber(block, 124, 12, offset, 'size');
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        if (size > MAX_META_BYTES) {
          throw new TarFormatError(`extended header of ${size} bytes is too large`, offset);
        }
        const data = await this.readExact(size, offset);
        await this.skipPad(size);
        if (flag === 'x') {
          pax ??= new Map();
          for (const [k, v] of parsePax(data, offset)) pax.set(k, v);
        } else if (flag === 'g') this.global = mergePax(this.global, parsePax(data, offset));
        else if (flag === 'L') longName = decodeName(cstr(data), offset);
        else longLink = decodeName(cstr(data), offset);
        continue;
      }
      const h = this.decodeHeader(block, flag, size, offset, longName, longLink, pax);
      // Only regular files have contents; any data another entry type declares
      // still occupies the stream and is skipped.
      this.pendingBody = h.size;
      this.pendingPad = padOf(h.size);
      if (h.type !== 'file' && h.type !== 'unsupported') h.size = 0;
      return h;
    }
  }

  private decodeHeader(
    block: Buffer,
    flag: string,
    rawSize: number,
    offset: number,
    longName: string | undefined,
    longLink: string | undefined,
    localPax: Map<string, Buffer> | undefined,
  ): TarHeader {
    const pax = localPax ? mergePax(new Map(this.global), localPax) : this.global;
    const magic = block.toString('latin1', 257, 263);
    let name = decodeName(cstr(block.subarray(0, 100)), offset);
    if (magic === 'ustar\0' && block[345] !== 0) {
      const prefix = decodeName(cstr(block.subarray(345, 500)), offset);
      name = `${prefix}/${name}`;
    }
    if (longName !== undefined) name = longName;
    let linkname = decodeName(cstr(block.subarray(157, 257)), offset);
    if (longLink !== undefined) linkname = longLink;
    const px = (k: string): Buffer | undefined => pax.get(k);
    const pxStr = (k: string): string | undefined => {
      const v = px(k);
      return v === undefined ? undefined : decodeName(v, offset);
    };
    const pxNum = (k: string): number | undefined => {
      const v = px(k);
      if (v === undefined) return undefined;
      const n = Number(v.toString('latin1'));
      if (!Number.isFinite(n) || n < 0) throw new TarFormatError(`bad PAX value for ${k}`, offset);
      return n;
    };
    name = pxStr('path') ?? name;
    linkname = pxStr('linkpath') ?? linkname;
    if (pax.has('GNU.sparse.major') || pax.has('GNU.sparse.size') || flag === 'S') {
      throw new TarFormatError(`'${name}' is a GNU sparse file, which is not supported`, offset);
    }
    const size = pxNum('size') ?? rawSize;
    const xattrs = new Map<string, Buffer>();
    for (const [k, v] of pax) {
      if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), v);
      else if (k.startsWith('LIBARCHIVE.xattr.')) {
        const key = decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length));
        xattrs.set(key, Buffer.from(v.toString('latin1'), 'base64'));
      }
    }
    const type = typeOf(flag);
    let finalType: TarEntryType = type;
    if (type === 'file' && name.endsWith('/')) finalType = 'dir'; // old tars: trailing slash
    return {
      name,
      type: finalType,
      typeflag: flag === '\0' ? '0' : flag,
      mode: readNumber(block, 100, 8, offset, 'mode') & 0o7777,
      uid: pxNum('uid') ?? readNumber(block, 108, 8, offset, 'uid'),
      gid: pxNum('gid') ?? readNumber(block, 116, 8, offset, 'gid'),
      size,
      mtime: pxNum('mtime') ?? readNumber(block, 136, 12, offset, 'mtime'),
      linkname,
      devMajor: pxNum('SCHILY.devmajor') ?? readNumber(block, 329, 8, offset, 'devmajor'),
      devMinor: pxNum('SCHILY.devminor') ?? readNumber(block, 337, 8, offset, 'devminor'),
      xattrs,
      offset,
    };
  }

  private async readExact(n: number, offset: number): Promise<Buffer> {
    const b = await this.r.read(n);
    this.tick();
    if (b.length < n) throw new TarFormatError('archive is truncated', offset);
    return b;
  }

  private async skipPad(size: number): Promise<void> {
    const pad = padOf(size);
    if (pad && (await this.r.skip(pad)) < pad) {
      throw new TarFormatError('archive is truncated', this.r.consumed);
    }
    this.tick();
  }

  /** The current entry's data, in chunks as they arrive. Read it fully or not at all. */
  async *body(): AsyncGenerator<Buffer> {
    while (this.pendingBody > 0) {
      const b = await this.r.readSome(Math.min(this.pendingBody, 1 << 20));
      this.tick();
      if (b.length === 0) throw new TarFormatError('archive is truncated', this.r.consumed);
      this.pendingBody -= b.length;
      yield b;
    }
    await this.finishPad();
  }

  private async finishPad(): Promise<void> {
    if (this.pendingPad) {
      const want = this.pendingPad;
      this.pendingPad = 0;
      if ((await this.r.skip(want)) < want) {
        throw new TarFormatError('archive is truncated', this.r.consumed);
      }
      this.tick();
    }
  }

  private async skipBody(): Promise<void> {
    if (this.pendingBody > 0) {
      const want = this.pendingBody;
      this.pendingBody = 0;
      let left = want;
      while (left > 0) {
        const got = await this.r.skip(Math.min(left, 1 << 20));
        this.tick();
        if (got === 0) throw new TarFormatError('archive is truncated', this.r.consumed);
        left -= got;
      }
    }
    await this.finishPad();
  }
}

function typeOf(flag: string): TarEntryType {
  switch (flag) {
    case '0':
    case '\0':
    case '7':
      return 'file';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '3':
      return 'char';
    case '4':
      return 'block';
    case '5':
      return 'dir';
    case '6':
      return 'fifo';
    default:
      return 'unsupported';
  }
}

const padOf = (n: number): number => (BLOCK - (n % BLOCK)) % BLOCK;

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function cstr(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z === -1 ? b : b.subarray(0, z);
}

function decodeName(b: Buffer, offset: number): string {
  try {
    return utf8.decode(b);
  } catch {
    throw new TarFormatError(
      `a name is not valid UTF-8 (${JSON.stringify(b.toString('latin1'))})`,
      offset,
    );
  }
}

function verifyChecksum(block: Buffer, offset: number): void {
  const stored = readNumber(block, 148, 8, offset, 'checksum');
  let unsigned = 8 * 32;
  let signed = 8 * 32;
  for (let i = 0; i < BLOCK; i++) {
    if (i >= 148 && i < 156) continue;
    unsigned += block[i]!;
    signed += (block[i]! << 24) >> 24;
  }
  if (stored !== unsigned && stored !== signed) {
    throw new TarFormatError('not a tar archive (bad header checksum)', offset);
  }
}

/** Octal (NUL/space padded) or base-256 (high bit set) numeric field. */
function readNumber(b: Buffer, off: number, len: number, offset: number, what: string): number {
  const f = b.subarray(off, off + len);
  if (f[0]! & 0x80) {
    if (f[0] === 0xff) throw new TarFormatError(`negative ${what} field`, offset);
    let n = f[0]! & 0x7f;
    for (let i = 1; i < f.length; i++) n = n * 256 + f[i]!;
    if (!Number.isSafeInteger(n)) throw new TarFormatError(`${what} field is too large`, offset);
    return n;
  }
  let s = f.toString('latin1');
  const z = s.indexOf('\0');
  if (z !== -1) s = s.slice(0, z);
  s = s.trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarFormatError(`bad ${what} field`, offset);
  return parseInt(s, 8);
}

/** PAX records `<len> <key>=<value>\n`; values stay raw bytes. */
export function parsePax(data: Buffer, offset = 0): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding
    const sp = data.indexOf(0x20, pos);
    if (sp === -1) throw new TarFormatError('bad PAX record', offset);
    const len = Number(data.toString('latin1', pos, sp));
    if (!Number.isSafeInteger(len) || len <= sp - pos + 1 || pos + len > data.length) {
      throw new TarFormatError('bad PAX record length', offset);
    }
    const rec = data.subarray(sp + 1, pos + len);
    if (rec[rec.length - 1] !== 0x0a) throw new TarFormatError('bad PAX record end', offset);
    const eq = rec.indexOf(0x3d);
    if (eq === -1) throw new TarFormatError('bad PAX record (no =)', offset);
    const key = rec.toString('utf8', 0, eq);
    out.set(key, Buffer.from(rec.subarray(eq + 1, rec.length - 1)));
    pos += len;
  }
  return out;
}

function mergePax(base: Map<string, Buffer> | undefined, add: Map<string, Buffer>) {
  const m = base ?? new Map<string, Buffer>();
  for (const [k, v] of add) {
    // An empty value deletes a global keyword (POSIX); for local ones it is "unset" too.
    if (v.length === 0) m.delete(k);
    else m.set(k, v);
  }
  return m;
}
