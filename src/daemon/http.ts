import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { z } from 'zod';
import { ErrorShapeSchema, NDJSON, type ProgressSink, type StreamEvent } from '../api/events.js';
import { matchPath, type RouteDef } from '../api/route.js';
import { API_VERSION, MAX_BODY_BYTES, VERSION_HEADER } from '../api/routes.js';
import { BangerError, schemaError, toBangerError } from '../errors.js';
import type { Logger } from '../util/log.js';

/**
 * The daemon's HTTP transport over a Unix socket: routing, body limits, JSON
 * parsing, schema validation, the version handshake, NDJSON streaming and
 * typed JSON errors. Handlers receive validated input and know nothing of HTTP.
 */

export interface RequestInput<D extends RouteDef> {
  params: z.output<D['params']>;
  query: z.output<D['query']>;
  body: z.output<D['body']>;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
}

export type JsonHandler<D extends RouteDef> = (
  input: RequestInput<D>,
) => Promise<z.input<D['response']>> | z.input<D['response']>;
export type StreamHandler<D extends RouteDef> = (
  input: RequestInput<D>,
  emit: ProgressSink,
) => Promise<z.input<D['response']>>;
/**
 * A watch route: `send` validates one event against the route's response
 * schema and writes it as an NDJSON line; the handler resolves once
 * `input.signal` aborts (the client left).
 */
export type WatchHandler<D extends RouteDef> = (
  input: RequestInput<D>,
  send: (event: z.input<D['response']>) => void,
) => Promise<void>;
export type TextHandler<D extends RouteDef> = (
  input: RequestInput<D>,
  write: (chunk: string) => boolean,
) => Promise<void>;
export type UpgradeHandler<D extends RouteDef> = (
  input: RequestInput<D>,
  socket: Duplex,
  head: Buffer,
) => Promise<void>;

interface Registered {
  def: RouteDef;
  handler: (...args: never[]) => unknown;
}

export interface ServerHooks {
  version: string;
  logger: Logger;
  /** Called around requests that count as operations (for graceful shutdown). */
  track<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** True once shutdown began: new operations are refused. */
  isShuttingDown(): boolean;
  /** Operations currently in flight (reported on version mismatch). */
  inflight(): number;
}

export class ApiServer {
  private readonly registered: Registered[] = [];
  readonly server: http.Server;

  constructor(private readonly hooks: ServerHooks) {
    this.server = http.createServer((req, res) => {
      void this.onRequest(req, res);
    });
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.onUpgrade(req, socket, head);
    });
    // Bytes that are not HTTP get the API's error shape too, then the connection closes.
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable) return;
      const tooBig = err.code === 'HPE_HEADER_OVERFLOW';
      const body = JSON.stringify({
        error: new BangerError(
          'invalid_request',
          `malformed HTTP request (${err.code ?? err.message})`,
          { hint: 'talk to bangerd through the banger CLI' },
        ).toJSON(),
      });
      socket.end(
        `HTTP/1.1 ${tooBig ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    });
    // Streams and log follows may idle for a long time.
    this.server.requestTimeout = 0;
    this.server.headersTimeout = 10_000;
    this.server.keepAliveTimeout = 5_000;
  }

  json<D extends RouteDef>(def: D, handler: JsonHandler<D>): void {
    this.add(def, 'json', handler);
  }
  stream<D extends RouteDef>(def: D, handler: StreamHandler<D>): void {
    this.add(def, 'stream', handler);
  }
  watch<D extends RouteDef>(def: D, handler: WatchHandler<D>): void {
    this.add(def, 'watch', handler);
  }
  text<D extends RouteDef>(def: D, handler: TextHandler<D>): void {
    this.add(def, 'text', handler);
  }
  upgrade<D extends RouteDef>(def: D, handler: UpgradeHandler<D>): void {
    this.add(def, 'upgrade', handler);
  }

  private add(def: RouteDef, kind: RouteDef['kind'], handler: Registered['handler']): void {
    if (def.kind !== kind) throw new Error(`route ${def.id} is ${def.kind}, registered as ${kind}`);
    this.registered.push({ def, handler });
  }

  private find(
    method: string,
    pathname: string,
  ): { reg: Registered; params: Record<string, string> } {
    const m = /^\/(v\d+)\//.exec(pathname);
    if (!m) {
      throw new BangerError('route_not_found', `no API route ${pathname}`, {
        hint: `API paths start with /${API_VERSION}/`,
      });
    }
    if (m[1] !== API_VERSION) {
      throw new BangerError(
        'api_version_unsupported',
        `API version ${m[1]} is not supported by this daemon (it speaks ${API_VERSION})`,
        {
          hint: 'use a banger CLI of the same version as the daemon',
        },
      );
    }
    // Literal segments win over parameters: /v1/images/catalog before /v1/images/:name.
    let best: { reg: Registered; params: Record<string, string> } | undefined;
    let methodMismatch = false;
    for (const reg of this.registered) {
      const params = matchPath(reg.def.path, pathname);
      if (!params) continue;
      if (reg.def.method !== method) {
        methodMismatch = true;
        continue;
      }
      if (!best || Object.keys(params).length < Object.keys(best.params).length)
        best = { reg, params };
    }
    if (best) return best;
    if (methodMismatch)
      throw new BangerError('method_not_allowed', `${method} is not allowed on ${pathname}`);
    throw new BangerError('route_not_found', `no API route ${method} ${pathname}`, {
      hint: 'check the CLI and daemon versions',
    });
  }

  private async readInput(
    req: http.IncomingMessage,
    def: RouteDef,
    params: Record<string, string>,
    url: URL,
    signal: AbortSignal,
  ): Promise<RequestInput<RouteDef>> {
    const clientVersion = req.headers[VERSION_HEADER];
    if (
      typeof clientVersion === 'string' &&
      clientVersion !== this.hooks.version &&
      !def.versionExempt
    ) {
      throw new BangerError(
        'version_mismatch',
        `bangerd is version ${this.hooks.version}, this CLI is ${clientVersion}`,
        {
          hint: 'restart the daemon with `banger daemon stop`',
          details: {
            daemon: this.hooks.version,
            client: clientVersion,
            inflight: this.hooks.inflight(),
          },
        },
      );
    }
    const raw = await readBody(req);
    let body: unknown = {};
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw);
      } catch (e) {
        throw new BangerError(
          'bad_json',
          `request body of ${def.method} ${def.path} is not valid JSON: ${(e as Error).message}`,
        );
      }
    }
    const query = Object.fromEntries(url.searchParams.entries());
    return {
      params: validate(def.params, params, 'path parameters', def),
      query: validate(def.query, query, 'query', def),
      body: validate(def.body, body, 'body', def),
      signal,
    };
  }

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = Date.now();
    const ac = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) ac.abort();
    });
    res.setHeader(VERSION_HEADER, this.hooks.version);
    let routeId = '?';
    try {
      const url = new URL(req.url ?? '/', 'http://bangerd');
      const { reg, params } = this.find(req.method ?? 'GET', url.pathname);
      routeId = reg.def.id;
      if (reg.def.kind === 'upgrade') {
        throw new BangerError('invalid_request', `${url.pathname} needs a connection upgrade`);
      }
      const input = await this.readInput(req, reg.def, params, url, ac.signal);
      const tracked = !reg.def.versionExempt && reg.def.method !== 'GET';
      if (tracked && this.hooks.isShuttingDown()) {
        throw new BangerError('shutting_down', 'bangerd is shutting down', {
          hint: 'retry in a moment',
        });
      }
      const run = (): Promise<void> => this.dispatch(reg, input, res);
      await (tracked ? this.hooks.track(reg.def.id, run) : run());
      this.hooks.logger.debug({ route: routeId, ms: Date.now() - started }, 'request');
    } catch (e) {
      const err = toBangerError(e);
      if (err.code === 'internal')
        this.hooks.logger.error({ route: routeId, err: e }, 'request failed');
      else
        this.hooks.logger.debug(
          { route: routeId, code: err.code, msg: err.message },
          'request refused',
        );
      if (!res.headersSent) {
        sendJson(res, err.httpStatus, { error: err.toJSON() });
      } else if (res.getHeader('content-type') === NDJSON) {
        writeEvent(res, { type: 'error', error: ErrorShapeSchema.parse(err.toJSON()) });
        res.end();
      } else {
        res.destroy();
      }
    }
  }

  private async dispatch(
    reg: Registered,
    input: RequestInput<RouteDef>,
    res: http.ServerResponse,
  ): Promise<void> {
    const def = reg.def;
    switch (def.kind) {
      case 'json': {
        const out = await (reg.handler as JsonHandler<RouteDef>)(input);
        sendJson(res, 200, def.response.parse(out));
        return;
      }
      case 'stream': {
        res.writeHead(200, { 'content-type': NDJSON, 'cache-control': 'no-cache' });
        res.flushHeaders();
        const emit: ProgressSink = (ev) => {
          if (!res.writableEnded && !res.destroyed) writeEvent(res, ev);
        };
        try {
          const out = await (reg.handler as StreamHandler<RouteDef>)(input, emit);
          writeEvent(res, { type: 'result', data: def.response.parse(out) });
        } catch (e) {
          const err = toBangerError(e);
          if (err.code === 'internal')
            this.hooks.logger.error({ route: def.id, err: e }, 'operation failed');
          writeEvent(res, { type: 'error', error: ErrorShapeSchema.parse(err.toJSON()) });
        }
        res.end();
        return;
      }
      case 'watch': {
        res.writeHead(200, { 'content-type': NDJSON, 'cache-control': 'no-cache' });
        res.flushHeaders();
        const send = (ev: unknown): void => {
          if (!res.writableEnded && !res.destroyed)
            res.write(`${JSON.stringify(def.response.parse(ev))}\n`);
        };
        await (reg.handler as WatchHandler<RouteDef>)(input, send);
        res.end();
        return;
      }
      case 'text': {
        res.writeHead(200, {
          'content-type': 'text/plain; charset=utf-8',
          'cache-control': 'no-cache',
        });
        res.flushHeaders();
        await (reg.handler as TextHandler<RouteDef>)(input, (chunk) => res.write(chunk));
        res.end();
        return;
      }
      default:
        throw new BangerError('internal', `route ${def.id} has unknown kind ${def.kind}`);
    }
  }

  private async onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const ac = new AbortController();
    socket.on('close', () => ac.abort());
    try {
      const url = new URL(req.url ?? '/', 'http://bangerd');
      const { reg, params } = this.find(req.method ?? 'GET', url.pathname);
      if (reg.def.kind !== 'upgrade')
        throw new BangerError('invalid_request', `${url.pathname} cannot be upgraded`);
      const input = await this.readInput(req, reg.def, params, url, ac.signal);
      await (reg.handler as UpgradeHandler<RouteDef>)(input, socket, head);
    } catch (e) {
      const err = toBangerError(e);
      const body = JSON.stringify({ error: err.toJSON() });
      if (socket.writable) {
        socket.end(
          `HTTP/1.1 ${err.httpStatus} ${http.STATUS_CODES[err.httpStatus] ?? 'Error'}\r\n` +
            `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n` +
            // an answer to HEAD has no body (HTTP/1.1)
            (req.method === 'HEAD' ? '' : body),
        );
      }
    }
  }
}

/** Reply 101 and hand the raw socket over (used by upgrade handlers). */
export function acceptUpgrade(socket: Duplex): void {
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: banger-tunnel\r\n\r\n',
  );
}

function validate<T extends z.ZodType>(
  schema: T,
  value: unknown,
  what: string,
  def: RouteDef,
): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw schemaError(r.error.issues, {
    data: value,
    where: `in the ${what} of ${def.method} ${def.path}`,
  });
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_BODY_BYTES) {
      req.resume();
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.resume();
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const tooLarge = (): BangerError =>
  new BangerError('body_too_large', `request body exceeds ${MAX_BODY_BYTES} bytes`, {
    hint: 'send a smaller request',
  });

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function writeEvent(res: http.ServerResponse, ev: StreamEvent): void {
  res.write(`${JSON.stringify(ev)}\n`);
}
