import http from 'node:http';
import net from 'node:net';
import { BangerError, isErrno, schemaError, type ErrorShape } from '../errors.js';
import {
  buildPath,
  endpoints,
  hasBody,
  VERSION_HEADER,
  type Endpoint,
  type RouteId,
} from './endpoints.js';
import type { StreamEvent } from './events.js';
import type { CallInput, Response } from './route.js';
import type { Routes } from './routes.js';

/**
 * The one HTTP helper for talking to bangerd over its Unix socket. Routes are
 * named by id (endpoints.ts); turns transport failures and error bodies into
 * BangerErrors.
 *
 * Validation: the client validates the bodies it sends with the route's zod
 * schemas, loaded on first use, so reads (`vm list`, completion) never pay
 * for zod. It does not re-validate answers: the daemon validates every answer
 * against the same schema before sending it, and the version header makes sure
 * both run the same build (callers of version-exempt routes read their answers
 * defensively).
 */
export interface ClientOptions {
  socketPath: string;
  /** Our build identity, sent so the daemon can detect a version mismatch. */
  version: string;
  /** Connect/response timeout for JSON calls (ms). Streams have none. */
  timeoutMs?: number;
}

type Input<K extends RouteId> = CallInput<Routes[K]>;
type Output<K extends RouteId> = Response<Routes[K]>;

export class ApiClient {
  constructor(readonly opts: ClientOptions) {}

  async call<K extends RouteId>(id: K, input: Input<K> = {}): Promise<Output<K>> {
    const res = await this.request(id, input, { timeoutMs: this.opts.timeoutMs ?? 30_000 });
    const body = await readBody(res);
    return parseJson(id, body, this.opts.socketPath) as Output<K>;
  }

  /** Call a streaming route: events are passed to onEvent; resolves with the final result. */
  async stream<K extends RouteId>(
    id: K,
    input: Input<K>,
    onEvent: (e: StreamEvent) => void,
    signal?: AbortSignal,
  ): Promise<Output<K>> {
    const def: Endpoint = endpoints[id];
    const res = await this.request(id, input, { signal });
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
      const ev = parsed as StreamEvent;
      if (typeof ev?.type !== 'string') {
        throw new BangerError(
          'internal',
          `daemon sent a progress line without a type: ${line.slice(0, 80)}`,
        );
      }
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
    return final.result as Output<K>;
  }

  /**
   * Follow a watch route: each event line is passed to onEvent as it arrives.
   * Resolves when the signal aborts; rejects when the daemon ends the stream
   * or the connection breaks (a watcher reconnects).
   */
  async watch<K extends RouteId>(
    id: K,
    input: Input<K>,
    onEvent: (event: Output<K>) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    const def: Endpoint = endpoints[id];
    const res = await this.request(id, input, { signal });
    res.setEncoding('utf8');
    let buf = '';
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const finish = (e?: unknown): void => {
        if (settled) return;
        settled = true;
        if (signal?.aborted) resolve();
        else
          reject(
            e ??
              new BangerError('daemon_unavailable', `the daemon ended ${def.method} ${def.path}`, {
                hint: 'see `banger daemon logs`',
              }),
          );
      };
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line.trim()) continue;
          try {
            const ev = JSON.parse(line) as { type?: unknown; error?: ErrorShape };
            // A failure after the stream began arrives as one error event.
            if (ev.type === 'error' && ev.error) throw BangerError.fromJSON(ev.error);
            onEvent(ev as Output<K>);
          } catch (e) {
            res.destroy();
            finish(
              e instanceof SyntaxError
                ? new BangerError('internal', `daemon sent an invalid event: ${line.slice(0, 80)}`)
                : e,
            );
            return;
          }
        }
      });
      res.on('end', () => finish());
      res.on('error', () => finish());
      res.on('aborted', () => finish());
      res.on('close', () => finish());
    });
  }

  /** Call a raw text route (logs); chunks are passed as they arrive. */
  async text<K extends RouteId>(
    id: K,
    input: Input<K>,
    onChunk: (s: string) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    const res = await this.request(id, input, { signal });
    res.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      res.on('data', onChunk);
      res.on('end', resolve);
      res.on('error', (e) => (signal?.aborted ? resolve() : reject(e)));
      res.on('aborted', () => resolve());
    });
  }

  /** Open an upgraded connection (a byte tunnel, e.g. to a guest's sshd). */
  async upgrade<K extends RouteId>(id: K, input: Input<K> = {}): Promise<net.Socket> {
    const def: Endpoint = endpoints[id];
    const path = this.url(def, input);
    return new Promise((resolve, reject) => {
      const req = http.request({
        // Straight to the socket, no Agent: one request per connection, and Node's agent
        // would test the host name as an IP address (a costly regex) on every call.
        createConnection: () => net.connect(this.opts.socketPath),
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

  private url(def: Endpoint, input: { params?: unknown; query?: unknown }): string {
    let path = buildPath(def.path, (input.params ?? {}) as Record<string, unknown>);
    if (input.query) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(input.query as Record<string, unknown>)) {
        if (v !== undefined) qs.set(k, String(v));
      }
      const s = qs.toString();
      if (s) path += `?${s}`;
    }
    return path;
  }

  private async request<K extends RouteId>(
    id: K,
    input: Input<K>,
    opts: { timeoutMs?: number; signal?: AbortSignal },
  ): Promise<http.IncomingMessage> {
    const def: Endpoint = endpoints[id];
    const path = this.url(def, input);
    const payload = hasBody(def) ? JSON.stringify(await validBody(id, input.body)) : undefined;
    return new Promise((resolve, reject) => {
      const req = http.request({
        // Straight to the socket, no Agent: one request per connection, and Node's agent
        // would test the host name as an IP address (a costly regex) on every call.
        createConnection: () => net.connect(this.opts.socketPath),
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

function parseJson(id: RouteId, body: string, socket: string): unknown {
  try {
    return body.length ? JSON.parse(body) : undefined;
  } catch {
    throw new BangerError(
      'internal',
      `the daemon at ${socket} sent invalid JSON for ${endpoints[id].path}`,
    );
  }
}

/** Field names in the user's words, where the wire name is not. */
const BODY_LABELS: Partial<Record<RouteId, Record<string, string>>> = {
  vmCreate: { name: 'VM name' },
  imagePull: { name: 'image name' },
  imageBuild: { name: 'image name' },
  imageRegister: { name: 'image name' },
};

/** The body as the daemon will read it (defaults applied), or a usage error naming the field. */
async function validBody(id: RouteId, body: unknown): Promise<unknown> {
  const { routes } = await import('./routes.js');
  const data = body ?? {};
  const r = routes[id].body.safeParse(data);
  if (!r.success)
    throw schemaError(r.error.issues, { code: 'usage', data, labels: BODY_LABELS[id] });
  return r.data;
}

function errorFromBody(status: number, body: string, def: Endpoint): BangerError {
  try {
    const { error } = JSON.parse(body) as { error?: Partial<ErrorShape> };
    if (typeof error?.code === 'string' && typeof error.message === 'string')
      return BangerError.fromJSON(error as ErrorShape);
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
