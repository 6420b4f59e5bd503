import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { BangerError } from '../../errors.js';
import { lastLine } from '../../util/exec.js';

/**
 * Layer decompression as an async byte stream. gzip uses node:zlib; zstd (not in
 * Node 20's zlib) runs the `zstd` CLI as a filter. `auto` sniffs the magic bytes.
 * Stopping early (calling `return()` on the iterator) releases everything,
 * including the zstd process.
 */
export type Compression = 'gzip' | 'zstd' | 'none' | 'auto';

export interface DecompressOptions {
  /** Running count of compressed bytes pulled from the input. */
  onInputBytes?: (n: number) => void;
  signal?: AbortSignal;
  /** What is being decompressed, for error messages. */
  label?: string;
  zstdBin?: string;
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export function sniffCompression(head: Uint8Array): 'gzip' | 'zstd' | 'none' {
  const starts = (m: number[]) => m.every((b, i) => head[i] === b);
  if (starts(GZIP_MAGIC)) return 'gzip';
  if (starts(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

export async function* decompress(
  input: AsyncIterable<Uint8Array>,
  compression: Compression,
  opts: DecompressOptions = {},
): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  let count = 0;
  let first: Buffer | undefined;
  if (compression === 'auto') {
    // Collect at least 4 bytes to recognise the format.
    const parts: Buffer[] = [];
    let n = 0;
    while (n < 4) {
      const r = await it.next();
      if (r.done) break;
      const b = Buffer.from(r.value);
      parts.push(b);
      n += b.length;
    }
    first = Buffer.concat(parts);
    compression = sniffCompression(first);
  }
  const counted = async function* (): AsyncGenerator<Buffer> {
    try {
      if (first?.length) {
        count += first.length;
        opts.onInputBytes?.(count);
        yield first;
      }
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
        count += b.length;
        opts.onInputBytes?.(count);
        yield b;
      }
    } finally {
      await it.return?.();
    }
  };
  const what = opts.label ?? 'layer';
  if (compression === 'none') {
    yield* counted();
    return;
  }
  if (compression === 'gzip') {
    // Big output chunks: 16 KiB (the default) makes inflate 3x slower in thread-pool round trips.
    const gunzip = zlib.createGunzip({ chunkSize: 256 * 1024 });
    const src = Readable.from(counted(), { objectMode: false });
    const feeding = pipeline(src, gunzip).catch((e: unknown) => e);
    try {
      for await (const c of gunzip) yield c as Buffer;
      const err = await feeding;
      if (err) throw err;
    } catch (e) {
      throw wrap(e, what, 'gzip');
    } finally {
      src.destroy();
      gunzip.destroy();
    }
    return;
  }
  yield* zstdFilter(counted(), what, opts);
}

async function* zstdFilter(
  src: AsyncGenerator<Buffer>,
  what: string,
  opts: DecompressOptions,
): AsyncGenerator<Buffer> {
  const bin = opts.zstdBin ?? 'zstd';
  const child = spawn(bin, ['-d', '-c', '-q', '--no-progress'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    signal: opts.signal,
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    if (stderr.length < 4096) stderr += c.toString();
  });
  const exited = new Promise<{ code: number | null; error?: Error }>((resolve) => {
    child.on('error', (error) => resolve({ code: null, error }));
    child.on('close', (code) => resolve({ code }));
  });
  const input = Readable.from(src, { objectMode: false });
  // EPIPE when zstd stops early is reported through its exit status instead.
  const feeding = pipeline(input, child.stdin).catch((e: unknown) => e);
  let finished = false;
  try {
    for await (const c of child.stdout) yield c as Buffer;
    const r = await exited;
    if (r.error) {
      if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new BangerError('tool_missing', `zstd not found (needed to decompress ${what})`, {
          hint: 'install the zstd package',
        });
      }
      throw r.error;
    }
    if (r.code !== 0) {
      const fed = await feeding;
      if (fed && !isPipeError(fed)) throw fed;
      throw new BangerError(
        'image_invalid',
        `${what}: zstd data is corrupt: ${lastLine(stderr) || `zstd exit ${r.code}`}`,
        { hint: 'the blob is damaged; pull again' },
      );
    }
    const fed = await feeding;
    if (fed && !isPipeError(fed)) throw fed;
    finished = true;
  } catch (e) {
    throw wrap(e, what, 'zstd');
  } finally {
    if (!finished && child.exitCode === null) child.kill('SIGKILL');
    input.destroy();
    await exited;
  }
}

const isPipeError = (e: unknown): boolean =>
  e instanceof Error &&
  ['EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED'].includes(
    (e as NodeJS.ErrnoException).code ?? '',
  );

function wrap(e: unknown, what: string, format: string): unknown {
  if (e instanceof BangerError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err?.name === 'AbortError') return new BangerError('cancelled', `${what}: cancelled`);
  if (err?.code?.startsWith('Z_')) {
    return new BangerError('image_invalid', `${what}: ${format} data is corrupt: ${err.message}`, {
      hint: 'the blob is damaged; pull again',
    });
  }
  return e;
}
