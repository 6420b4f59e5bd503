import http from 'node:http';
import type net from 'node:net';
import type { z } from 'zod';
import { BangerError, isErrno, type ErrorShape } from '../errors.js';
import { ErrorShapeSchema, StreamEventSchema, type StreamEvent } from './events.js';
import { buildPath, type CallInput, type Response, type RouteDef } from './route.js';
import { VERSION_HEADER } from './routes.js';

/**
 * The one HTTP helper for talking to bangerd over its Unix socket. Validates
 * inputs before sending and responses after receiving, with the same schemas
 * the daemon uses; turns transport failures and error bodies into BangerErrors.
 */
export interface ClientOptions {
  socketPath: string;
  /** Our build identity, sent so the daemon can detect a version mismatch. */
  version: string;
  /** Connect/response timeout for JSON calls (ms). Streams have none. */
  timeoutMs?: number;
}

export class ApiClient {
  constructor(readonly opts: ClientOptions) {}

  async call<D extends RouteDef>(def: D, input: CallInput<D> = {}): Promise<Response<D>> {
    const res = await this.request(def, input, { timeoutMs: this.opts.timeoutMs ?? 30_000 });
    const body = await readBody(res);
    return parseResponse(def, body, this.opts.socketPath);
  }

  /** Call a streaming route: events are passed to onEvent; resolves with the final result. */
  async stream<D extends RouteDef>(
    def: D,
    input: CallInput<D>,
    onEvent: (e: StreamEvent) => void,
    signal?: AbortSignal,
  ): Promise<Response<D>> {
    const res = await this.request(def, input, { signal });
    let buf = '';
    let final: { result?: unknown; error?: ErrorShape } | undefined;
    res.setEncoding('utf8');
    const handleLine = (line: string): void => {
      if (!line.trim()) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        throw new BangerError(
          'internal',
          `daemon sent an invalid progress line: ${line.slice(0, 80)}`,
        );
      }
      const ev = StreamEventSchema.parse(parsed);
      if (ev.type === 'result') final = { result: ev.data };
      else if (ev.type === 'error') final = { error: ev.error as ErrorShape };
      else onEvent(ev);
    };
    await new Promise<void>((resolve, reject) => {
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        try {
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            handleLine(line);
          }
        } catch (e) {
          res.destroy();
          reject(e);
        }
      });
      res.on('end', () => {
        try {
          handleLine(buf);
          resolve();
        } catch (e) {
          reject(e);
        }
      });
      res.on('error', (e) =>
        reject(
          signal?.aborted
            ? new BangerError('cancelled', `${def.method} ${def.path} was cancelled`)
            : e,
        ),
      );
      res.on('aborted', () =>
        reject(
          signal?.aborted
            ? new BangerError('cancelled', `${def.method} ${def.path} was cancelled`)
            : new BangerError(
                'daemon_unavailable',
                'the daemon closed the connection mid-operation',
                {
                  hint: 'see `banger daemon logs`',
                },
              ),
        ),
      );
    });
    if (!final) {
      throw new BangerError(
        'daemon_unavailable',
        `the daemon ended ${def.method} ${def.path} without a result`,
        {
          hint: 'see `banger daemon logs`',
        },
      );
    }
    if (final.error) throw BangerError.fromJSON(final.error);
    return def.response.parse(final.result) as Response<D>;
  }

  /** Call a raw text route (logs); chunks are passed as they arrive. */
  async text<D extends RouteDef>(
    def: D,
    input: CallInput<D>,
    onChunk: (s: string) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    const res = await this.request(def, input, { signal });
    res.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      res.on('data', onChunk);
      res.on('end', resolve);
      res.on('error', (e) => (signal?.aborted ? resolve() : reject(e)));
      res.on('aborted', () => resolve());
    });
  }

  /** Open an upgraded connection (a byte tunnel, e.g. to a guest's sshd). */
  async upgrade<D extends RouteDef>(def: D, input: CallInput<D> = {}): Promise<net.Socket> {
    const path = this.url(def, input);
    return new Promise((resolve, reject) => {
      const req = http.request({
        socketPath: this.opts.socketPath,
        method: def.method,
        path,
        headers: {
          connection: 'Upgrade',
          upgrade: 'banger-tunnel',
          [VERSION_HEADER]: this.opts.version,
        },
      });
      req.on('upgrade', (_res, socket, head) => {
        if (head.length) socket.unshift(head);
        resolve(socket);
      });
      req.on('response', (res) => {
        readBody(res)
          .then((body) => reject(errorFromBody(res.statusCode ?? 500, body, def)))
          .catch(reject);
      });
      req.on('error', (e) => reject(transportError(e, this.opts.socketPath)));
      req.end();
    });
  }

  private url<D extends RouteDef>(def: D, input: CallInput<D>): string {
    const params = def.params.parse(input.params ?? {}) as Record<string, unknown>;
    let path = buildPath(def.path, params);
    if (input.query) {
      def.query.parse(input.query);
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(input.query as Record<string, unknown>)) {
        if (v !== undefined) qs.set(k, String(v));
      }
      const s = qs.toString();
      if (s) path += `?${s}`;
    }
    return path;
  }

  private request<D extends RouteDef>(
    def: D,
    input: CallInput<D>,
    opts: { timeoutMs?: number; signal?: AbortSignal },
  ): Promise<http.IncomingMessage> {
    const path = this.url(def, input);
    let payload: string | undefined;
    if (def.method !== 'GET' && def.method !== 'DELETE') {
      payload = JSON.stringify(def.body.parse(input.body ?? {}));
    } else if (input.body !== undefined) {
      payload = JSON.stringify(def.body.parse(input.body));
    }
    return new Promise((resolve, reject) => {
      const req = http.request({
        socketPath: this.opts.socketPath,
        method: def.method,
        path,
        signal: opts.signal,
        headers: {
          [VERSION_HEADER]: this.opts.version,
          accept: 'application/json, application/x-ndjson',
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        },
      });
      if (opts.timeoutMs) {
        req.setTimeout(opts.timeoutMs, () =>
          req.destroy(
            new BangerError(
              'timeout',
              `the daemon did not answer ${def.method} ${def.path} within ${opts.timeoutMs} ms`,
              {
                hint: 'see `banger daemon logs`',
              },
            ),
          ),
        );
      }
      req.on('response', (res) => {
        const status = res.statusCode ?? 500;
        if (status >= 200 && status < 300) {
          resolve(res);
          return;
        }
        readBody(res)
          .then((body) => reject(errorFromBody(status, body, def)))
          .catch(reject);
      });
      req.on('error', (e) =>
        reject(e instanceof BangerError ? e : transportError(e, this.opts.socketPath)),
      );
      req.end(payload);
    });
  }
}

function readBody(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}

function parseResponse<D extends RouteDef>(def: D, body: string, socket: string): Response<D> {
  let json: unknown;
  try {
    json = body.length ? JSON.parse(body) : undefined;
  } catch {
    throw new BangerError('internal', `the daemon at ${socket} sent invalid JSON for ${def.path}`);
  }
  const r = (def.response as z.ZodType).safeParse(json);
  if (!r.success) {
    throw new BangerError(
      'version_mismatch',
      `the daemon's answer to ${def.path} does not match this CLI`,
      {
        hint: 'restart it with `banger daemon stop`',
      },
    );
  }
  return r.data as Response<D>;
}

function errorFromBody(status: number, body: string, def: RouteDef): BangerError {
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    const shape = ErrorShapeSchema.safeParse(parsed.error);
    if (shape.success) return BangerError.fromJSON(shape.data as ErrorShape);
  } catch {
    // fall through
  }
  return new BangerError(
    'internal',
    `daemon answered ${def.method} ${def.path} with HTTP ${status}`,
    {
      hint: 'see `banger daemon logs`',
    },
  );
}

export function transportError(e: unknown, socket: string): BangerError {
  if (isErrno(e, 'ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE')) {
    return new BangerError(
      'daemon_unavailable',
      `cannot reach bangerd at ${socket} (${(e as NodeJS.ErrnoException).code})`,
      {
        hint: 'start it with `banger daemon status` and see `banger daemon logs`',
        cause: e,
      },
    );
  }
  if (isErrno(e, 'EACCES')) {
    return new BangerError('permission', `cannot connect to ${socket}: permission denied`, {
      hint: 'the socket belongs to another user; set BANGER_RUNTIME_DIR to your own directory',
      cause: e,
    });
  }
  if (e instanceof Error && e.name === 'AbortError') {
    return new BangerError('cancelled', 'cancelled', { cause: e });
  }
  return new BangerError(
    'daemon_unavailable',
    `talking to bangerd at ${socket} failed: ${(e as Error).message}`,
    {
      hint: 'see `banger daemon logs`',
      cause: e,
    },
  );
}
