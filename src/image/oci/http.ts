import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { BangerError } from '../../errors.js';
import { sleep } from '../../util/sleep.js';

/**
 * The one HTTP helper for outbound requests: keep-alive agents, a deadline for
 * the response headers and an idle timeout for bodies, redirects (dropping
 * credentials when the origin changes, as registries redirect blobs to storage
 * hosts), retries with backoff for idempotent requests, and errors that name
 * the request. Streams bodies; never buffers unless asked.
 */
export interface HttpOptions {
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Until response headers arrive (per attempt). Default 30 s. */
  timeoutMs?: number;
  /** Longest silence while a body streams. Default 60 s. */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  /** Default 5. */
  maxRedirects?: number;
  /** Extra attempts on network errors and 429/5xx. Default 3 for GET/HEAD, else 0. */
  retries?: number;
  /** Skip TLS certificate checks (only for --insecure registries). */
  insecureTls?: boolean;
  /** Base backoff in ms (tests make it small). Default 250. */
  backoffMs?: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Final URL after redirects. */
  url: URL;
  body: IncomingMessage;
  /** Read the whole body (refusing more than `limit` bytes). */
  bytes(limit?: number): Promise<Buffer>;
  text(limit?: number): Promise<string>;
  /** Throw the body away (frees the connection). */
  discard(): void;
}

const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 16 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 16 }),
  insecure: new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: false }),
};

const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const RETRY_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ECONNABORTED',
  'ERR_HTTP_TIMEOUT',
  'UND_ERR_SOCKET',
]);

const DEFAULT_LIMIT = 16 * 1024 * 1024;

export async function httpRequest(
  input: string | URL,
  opts: HttpOptions = {},
): Promise<HttpResponse> {
  const method = opts.method ?? 'GET';
  const idempotent = method === 'GET' || method === 'HEAD';
  const retries = opts.retries ?? (idempotent ? 3 : 0);
  const backoff = opts.backoffMs ?? 250;
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await followRedirects(new URL(input), method, opts);
      if (attempt < retries && RETRY_STATUS.has(res.status)) {
        const wait = retryAfter(res.headers['retry-after']) ?? backoff * 2 ** attempt;
        res.discard();
        await sleep(Math.min(wait, 10_000) + Math.random() * backoff, opts.signal);
        continue;
      }
      return res;
    } catch (e) {
      if (attempt >= retries || !isRetryable(e) || opts.signal?.aborted)
        throw toHttpError(e, method, input);
      await sleep(backoff * 2 ** attempt + Math.random() * backoff, opts.signal);
    }
  }
}

async function followRedirects(url: URL, method: string, opts: HttpOptions): Promise<HttpResponse> {
  const headers = { ...(opts.headers ?? {}) };
  const maxRedirects = opts.maxRedirects ?? 5;
  for (let hops = 0; ; hops++) {
    const res = await once(url, method, headers, opts);
    const loc = res.headers.location;
    if (![301, 302, 303, 307, 308].includes(res.status) || !loc) return res;
    res.discard();
    if (hops >= maxRedirects) {
      throw new BangerError('network', `${method} ${describe(url)}: too many redirects`);
    }
    const next = new URL(loc, url);
    if (next.protocol !== 'https:' && next.protocol !== 'http:') {
      throw new BangerError(
        'network',
        `${method} ${describe(url)}: redirect to unsupported ${next.protocol} URL`,
      );
    }
    if (
      url.protocol === 'https:' &&
      next.protocol === 'http:' &&
      !opts.insecureTls &&
      !isLoopback(next)
    ) {
      throw new BangerError(
        'network',
        `${method} ${describe(url)}: refused redirect from https to ${describe(next)}`,
      );
    }
    if (next.origin !== url.origin) {
      for (const k of Object.keys(headers))
        if (k.toLowerCase() === 'authorization') delete headers[k];
    }
    if (res.status === 303) method = 'GET';
    url = next;
  }
}

function once(
  url: URL,
  method: string,
  headers: Record<string, string>,
  opts: HttpOptions,
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const isHttps = url.protocol === 'https:';
    const mod = isHttps ? https : http;
    const agent = isHttps ? (opts.insecureTls ? agents.insecure : agents.https) : agents.http;
    const body = opts.body === undefined ? undefined : Buffer.from(opts.body);
    const h: Record<string, string> = { 'user-agent': 'banger', ...headers };
    if (body) h['content-length'] = String(body.length);
    const req = mod.request(url, { method, headers: h, agent, signal: opts.signal });
    const deadline = setTimeout(() => {
      req.destroy(
        Object.assign(new Error(`no response within ${opts.timeoutMs ?? 30_000} ms`), {
          code: 'ETIMEDOUT',
        }),
      );
    }, opts.timeoutMs ?? 30_000);
    req.on('error', (e) => {
      clearTimeout(deadline);
      reject(e);
    });
    req.on('response', (res) => {
      clearTimeout(deadline);
      const idle = opts.idleTimeoutMs ?? 60_000;
      res.setTimeout(idle, () => {
        res.destroy(Object.assign(new Error(`body stalled for ${idle} ms`), { code: 'ETIMEDOUT' }));
      });
      resolve(wrapResponse(url, res));
    });
    req.end(body);
  });
}

function wrapResponse(url: URL, res: IncomingMessage): HttpResponse {
  return {
    status: res.statusCode ?? 0,
    headers: res.headers,
    url,
    body: res,
    async bytes(limit = DEFAULT_LIMIT) {
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of res) {
        n += (c as Buffer).length;
        if (n > limit) {
          res.destroy();
          throw new BangerError('network', `${describe(url)}: response larger than ${limit} bytes`);
        }
        chunks.push(c as Buffer);
      }
      return Buffer.concat(chunks);
    },
    async text(limit) {
      return (await this.bytes(limit)).toString('utf8');
    },
    discard() {
      res.resume();
      res.on('error', () => undefined);
    },
  };
}

export const describe = (u: URL): string => `${u.protocol}//${u.host}${u.pathname}`;

export function isLoopback(u: URL): boolean {
  const h = u.hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

function retryAfter(v: string | undefined): number | undefined {
  if (!v) return undefined;
  const s = Number(v);
  if (Number.isFinite(s)) return s * 1000;
  const d = Date.parse(v);
  return Number.isFinite(d) ? Math.max(0, d - Date.now()) : undefined;
}

export function isRetryable(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as NodeJS.ErrnoException).code ?? '';
  return RETRY_CODES.has(code) || /socket hang up/.test(e.message);
}

function toHttpError(e: unknown, method: string, input: string | URL): unknown {
  if (e instanceof BangerError) return e;
  const err = e as NodeJS.ErrnoException;
  const where = `${method} ${describe(new URL(input))}`;
  if (err?.name === 'AbortError') return new BangerError('cancelled', `${where}: cancelled`);
  if (err?.code === 'ETIMEDOUT') {
    return new BangerError('timeout', `${where}: ${err.message}`, {
      hint: 'the server is slow or unreachable; try again',
    });
  }
  return new BangerError('network', `${where}: ${err?.code ?? err?.message ?? String(e)}`, {
    hint: 'check the address and your network connection',
    cause: e,
    details: { code: err?.code },
  });
}
