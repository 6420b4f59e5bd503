import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../../errors.js';
import { isRetryable, type HttpResponse } from './http.js';
import { SHA256_DIGEST } from './reference.js';

/**
 * Content-addressed blob cache shared by all images: `<dir>/blobs/sha256/<hex>`.
 * A blob only gets its final name after its size and digest were checked while
 * it streamed in (temp file beside it + fsync + rename); a bad download leaves
 * nothing behind. Manifests and configs are stored the same way.
 */
export interface BlobRef {
  digest: string;
  size: number;
}

export interface FetchOptions {
  /** Bytes received so far, for progress bars. */
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
  /** Extra attempts when the connection breaks mid-download. Default 2. */
  retries?: number;
  what: string;
}

const STALE_TEMP_MS = 60 * 60 * 1000;

export class BlobCache {
  private readonly inflight = new Map<string, Promise<string>>();
  private swept = false;

  constructor(readonly dir: string) {}

  private get blobDir(): string {
    return path.join(this.dir, 'blobs', 'sha256');
  }

  path(digest: string): string {
    if (!SHA256_DIGEST.test(digest))
      throw new BangerError('image_invalid', `'${digest}' is not a sha256 digest`);
    return path.join(this.blobDir, digest.slice(7));
  }

  /** Whether the blob is cached with the expected size (a wrong size is removed). */
  async has(ref: BlobRef): Promise<boolean> {
    const p = this.path(ref.digest);
    try {
      const st = await fs.promises.stat(p);
      if (st.isFile() && st.size === ref.size) return true;
      await fs.promises.rm(p, { force: true });
      return false;
    } catch {
      return false;
    }
  }

  async read(ref: BlobRef, maxBytes: number): Promise<Buffer | undefined> {
    if (ref.size > maxBytes || !(await this.has(ref))) return undefined;
    return fs.promises.readFile(this.path(ref.digest));
  }

  /** Store bytes already in memory (after checking their digest). */
  async put(digest: string, data: Buffer): Promise<string> {
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== digest)
      throw new BangerError('image_invalid', `blob ${digest}: digest mismatch (got ${actual})`);
    const final = this.path(digest);
    const tmp = await this.tempFor(digest);
    try {
      await fs.promises.writeFile(tmp, data, { flag: 'wx', mode: 0o600 });
      await fs.promises.rename(tmp, final);
    } finally {
      await fs.promises.rm(tmp, { force: true });
    }
    return final;
  }

  /**
   * The cached blob's path, downloading it first when needed. Concurrent
   * requests for the same digest in this process share one download.
   */
  async fetch(ref: BlobRef, open: () => Promise<HttpResponse>, o: FetchOptions): Promise<string> {
    const key = ref.digest;
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.fetchOnce(ref, open, o).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async fetchOnce(
    ref: BlobRef,
    open: () => Promise<HttpResponse>,
    o: FetchOptions,
  ): Promise<string> {
    if (await this.has(ref)) {
      o.onProgress?.(ref.size);
      return this.path(ref.digest);
    }
    const retries = o.retries ?? 2;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.download(ref, open, o);
      } catch (e) {
        const cause = e instanceof BangerError && e.code === 'network' ? e.cause : e;
        if (attempt >= retries || o.signal?.aborted || !(isRetryable(cause) || isRetryable(e)))
          throw e;
      }
    }
  }

  private async download(
    ref: BlobRef,
    open: () => Promise<HttpResponse>,
    o: FetchOptions,
  ): Promise<string> {
    const final = this.path(ref.digest);
    const tmp = await this.tempFor(ref.digest);
    const fh = await fs.promises.open(tmp, 'wx', 0o600);
    let closed = false;
    try {
      const res = await open();
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > ref.size) {
        res.body.destroy();
        throw mismatch(
          o.what,
          `is ${declared} bytes on the registry, the manifest says ${ref.size}`,
        );
      }
      const hash = createHash('sha256');
      let n = 0;
      try {
        for await (const chunk of res.body) {
          const c = chunk as Buffer;
          n += c.length;
          if (n > ref.size)
            throw mismatch(o.what, `is larger than the ${ref.size} bytes the manifest says`);
          hash.update(c);
          await fh.write(c);
          o.onProgress?.(n);
        }
      } catch (e) {
        if (e instanceof BangerError || !isRetryable(e)) throw e;
        const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
        throw new BangerError(
          'network',
          `${o.what} is truncated: got ${n} of ${ref.size} bytes (${code})`,
          {
            hint: 'the connection broke; pull again',
            cause: e,
          },
        );
      } finally {
        if (!res.body.destroyed && !res.body.readableEnded) res.body.destroy();
      }
      if (n < ref.size) throw mismatch(o.what, `is truncated: got ${n} of ${ref.size} bytes`);
      const got = `sha256:${hash.digest('hex')}`;
      if (got !== ref.digest) throw mismatch(o.what, `does not match its digest (got ${got})`);
      await fh.datasync();
      await fh.close();
      closed = true;
      await fs.promises.rename(tmp, final);
      return final;
    } finally {
      if (!closed) await fh.close().catch(() => undefined);
      await fs.promises.rm(tmp, { force: true });
    }
  }

  private async tempFor(digest: string): Promise<string> {
    await fs.promises.mkdir(this.blobDir, { recursive: true, mode: 0o700 });
    if (!this.swept) {
      this.swept = true;
      await this.sweepTemps();
    }
    return path.join(
      this.blobDir,
      `.${digest.slice(7, 19)}-${process.pid}-${randomBytes(4).toString('hex')}.partial`,
    );
  }

  /** Remove partial downloads abandoned by crashed processes. */
  private async sweepTemps(): Promise<void> {
    const now = Date.now();
    for (const name of await fs.promises.readdir(this.blobDir)) {
      if (!name.endsWith('.partial')) continue;
      const p = path.join(this.blobDir, name);
      const st = await fs.promises.stat(p).catch(() => undefined);
      if (st && now - st.mtimeMs > STALE_TEMP_MS) await fs.promises.rm(p, { force: true });
    }
  }
}

const mismatch = (what: string, why: string) =>
  new BangerError('image_invalid', `${what} ${why}`, {
    hint: 'the download was damaged or altered; nothing was kept, pull again',
  });
