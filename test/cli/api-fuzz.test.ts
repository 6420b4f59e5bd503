import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { endpoints, MAX_BODY_BYTES, type Endpoint, type RouteId } from '../../src/api/endpoints.js';
import { routes } from '../../src/api/routes.js';
import { needs } from '../helpers/ci.js';
import { testNetnsName } from '../helpers/owner.js';
import { isAlive, makeSandbox, runProcess, type Sandbox } from '../helpers/sandbox.js';

/**
 * Fuzzing the daemon API: every route of src/api/endpoints.ts gets random and
 * mutated requests (bodies, methods, content types, path parameters, query
 * strings, version headers) against one real daemon with a temp state dir.
 * The daemon runs in a network namespace of the test's (nothing reaches the
 * internet; a request that happens to start a VM builds its bridge there).
 * Properties: every request is answered, every error is JSON with a code and
 * a message, a 5xx always has a message, a stream ends in one result or error
 * event, and the same daemon process keeps serving. Seeded and bounded: each
 * route gets RUNS requests (BANGER_FUZZ_SEED / BANGER_FUZZ_RUNS to vary them).
 */
const SEED = Number(process.env.BANGER_FUZZ_SEED ?? 1604);
const RUNS = Number(process.env.BANGER_FUZZ_RUNS ?? 60);
/** A request that has not finished its headers by then counts as unanswered. */
const ANSWER_MS = 15_000;
/** A stream is read this long at most, then the client leaves (the daemon cancels). */
const STREAM_MS = 400;

const isRoot = process.getuid?.() === 0;
const FIXTURE_VMS = ['fz-a', 'fz-b'];

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The client gave up reading a stream that was still going. */
  cut: boolean;
}

interface Req {
  method: string;
  path: string;
  body?: string | Buffer;
  headers: Record<string, string>;
  /** The daemon may close the connection before it read the whole body. */
  allowCut?: boolean;
}

function send(socketPath: string, r: Req): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      socketPath,
      method: r.method,
      path: r.path,
      headers: r.headers,
      agent: false,
    });
    const noAnswer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer within ${ANSWER_MS} ms`));
    }, ANSWER_MS);
    req.on('response', (res) => {
      clearTimeout(noAnswer);
      let body = '';
      let cut = false;
      const stop = setTimeout(() => {
        cut = true;
        res.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, cut });
      }, STREAM_MS);
      res.on('data', (c: Buffer) => {
        if (body.length < 4 * MAX_BODY_BYTES) body += c.toString();
      });
      res.on('end', () => {
        clearTimeout(stop);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, cut });
      });
      res.on('error', () => undefined);
    });
    req.on('upgrade', (res, socket) => {
      clearTimeout(noAnswer);
      socket.destroy();
      resolve({ status: res.statusCode ?? 101, headers: res.headers, body: '', cut: false });
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(noAnswer);
      // The daemon may answer a body it refuses (too large) before it has all of it
      // and close: the client's write then fails, which is not an unanswered request.
      if (r.allowCut && (e.code === 'EPIPE' || e.code === 'ECONNRESET'))
        resolve({ status: 0, headers: {}, body: '', cut: true });
      else reject(e);
    });
    req.end(r.body);
  });
}

/** What is wrong with an answer, or undefined when it keeps the API's promises. */
function problemWith(r: Req, a: Answer): string | undefined {
  if (a.status === 101) return undefined; // an upgrade the route accepted
  if (r.method === 'HEAD') return a.status >= 100 && a.status < 600 ? undefined : 'bad status';
  if (a.status >= 300) {
    let err: { code?: unknown; message?: unknown } | undefined;
    try {
      err = (JSON.parse(a.body) as { error?: typeof err }).error;
    } catch {
      return `status ${a.status} with a body that is not JSON: ${a.body.slice(0, 120)}`;
    }
    if (typeof err?.code !== 'string' || typeof err.message !== 'string' || !err.message)
      return `status ${a.status} without an error code and message: ${a.body.slice(0, 200)}`;
    if (a.status >= 500 && err.code === 'internal') return `internal error: ${err.message}`;
    return undefined;
  }
  if (a.headers['content-type'] === 'application/x-ndjson' && !a.cut) {
    const lines = a.body.trim().split('\n').filter(Boolean);
    if (r.path.startsWith('/v1/events/')) return undefined;
    const last = lines.at(-1);
    if (!last) return 'a stream that ended without any event';
    let ev: { type?: string; error?: { code?: string; message?: string } };
    try {
      ev = JSON.parse(last) as typeof ev;
    } catch {
      return `a stream whose last line is not JSON: ${last.slice(0, 120)}`;
    }
    if (ev.type === 'result') return undefined;
    if (ev.type !== 'error' || !ev.error?.message)
      return `a stream that ended without a result or error event: ${last.slice(0, 200)}`;
    if (ev.error.code === 'internal') return `internal error in a stream: ${ev.error.message}`;
  }
  return undefined;
}

// ---------- generators ----------

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'] as const;
const CONTENT_TYPES = [
  'application/json',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/json; charset=latin1',
];

const segment = fc.oneof(
  fc.constantFrom(...FIXTURE_VMS, 'tiny', 'nope', '..', '.', '%2e%2e', '%2F', 'a%00b', '%ff'),
  fc.string({ maxLength: 40 }).map(encodeURIComponent),
  fc.stringMatching(/^[a-z0-9-]{1,70}$/),
);

/** A realistic body for a route, so mutations reach past the first schema check. */
const templates: Partial<Record<RouteId, () => Record<string, unknown>>> = {
  shutdown: () => ({ ifIdle: true }),
  kernelPull: () => ({ name: 'debian-cloud-6.1' }),
  imagePull: () => ({ ref: 'registry.invalid/x:1', name: 'fzimg' }),
  imageBuild: () => ({ name: 'fzbuild' }),
  imageRegister: () => ({ name: 'fzreg', rootfs: '/nonexistent/rootfs.ext4' }),
  vmCreate: () => ({ name: 'fz-new', image: 'tiny', start: false, vcpu: 1, memoryMib: 256 }),
  vmAction: () => ({ refs: ['fz-b'], timeoutMs: 1000, force: true }),
  vmSet: () => ({ refs: ['fz-a'], vcpu: 2, memoryMib: 512, nat: false }),
  workspaceRun: () => ({ path: '/nonexistent', name: 'fz-ws', image: 'tiny' }),
  workspacePrepare: () => ({ path: '/nonexistent' }),
};

const anyJson = fc.jsonValue({ maxDepth: 4 });

function mutated(id: RouteId): fc.Arbitrary<unknown> {
  const t = templates[id];
  if (!t) return anyJson;
  const keys = Object.keys(t());
  return fc.oneof(
    fc.constant(t()),
    // one field replaced by anything
    fc.tuple(fc.constantFrom(...keys), anyJson).map(([k, v]) => ({ ...t(), [k]: v })),
    // one field dropped
    fc.constantFrom(...keys).map((k) => {
      const o = t();
      delete o[k];
      return o;
    }),
    // an unknown field added
    fc.tuple(fc.string({ maxLength: 12 }), anyJson).map(([k, v]) => ({ ...t(), [k]: v })),
    // numbers at the edges
    fc
      .tuple(
        fc.constantFrom(...keys),
        fc.constantFrom(-1, 0, 1e308, -0, 2 ** 53, 0.5, Number.MAX_SAFE_INTEGER),
      )
      .map(([k, v]) => ({ ...t(), [k]: v })),
  );
}

function bodyFor(id: RouteId): fc.Arbitrary<string | Buffer | undefined> {
  return fc.oneof(
    { weight: 4, arbitrary: mutated(id).map((v) => JSON.stringify(v)) },
    { weight: 2, arbitrary: anyJson.map((v) => JSON.stringify(v)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)) },
    {
      weight: 1,
      arbitrary: mutated(id).map((v) => {
        // a valid body cut anywhere
        const s = JSON.stringify(v) ?? '';
        return s.slice(0, Math.floor(s.length / 2));
      }),
    },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
}

function pathFor(id: RouteId): fc.Arbitrary<string> {
  const pattern: string = endpoints[id].path;
  const names = [...pattern.matchAll(/:([a-zA-Z]+)/g)].map((m) => m[1]!);
  const query = fc.oneof(
    fc.constant(''),
    fc
      .array(
        fc.tuple(
          fc.constantFrom('follow', 'tail', 'refs', 'port', 'x', ''),
          fc.oneof(fc.constantFrom('1', '0', 'true', '-5', '1e99', 'fz-a,fz-b', ''), fc.string()),
        ),
        { maxLength: 3 },
      )
      .map((kv) => (kv.length ? `?${new URLSearchParams(kv).toString()}` : '')),
  );
  return fc
    .tuple(fc.array(segment, { minLength: names.length, maxLength: names.length }), query)
    .map(([values, q]) => {
      let i = 0;
      return pattern.replace(/:([a-zA-Z]+)/g, () => values[i++]!) + q;
    });
}

function requestFor(id: RouteId): fc.Arbitrary<Req> {
  const e: Endpoint = endpoints[id];
  return fc
    .record({
      method: fc.oneof(
        { weight: 5, arbitrary: fc.constant(e.method) },
        fc.constantFrom(...METHODS),
      ),
      path: pathFor(id),
      body: bodyFor(id),
      contentType: fc.option(fc.constantFrom(...CONTENT_TYPES)),
      version: fc.option(fc.constantFrom('0.0.0 (other)', '', '\u00ff')),
      upgrade: fc.boolean(),
    })
    .map((r) => {
      const headers: Record<string, string> = {};
      if (r.contentType !== null) headers['content-type'] = r.contentType;
      if (r.version !== null) headers['x-banger-version'] = r.version;
      if (r.upgrade && e.kind === 'upgrade') {
        headers.connection = 'Upgrade';
        headers.upgrade = 'banger-tunnel';
      }
      const body = r.method === 'GET' || r.method === 'HEAD' ? undefined : r.body;
      if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
      return { method: r.method, path: r.path, body, headers };
    });
}

/** Never a valid shutdown request: the daemon must stay up for the whole run. */
function harmless(id: RouteId, r: Req): boolean {
  if (id !== 'shutdown' || r.method !== 'POST' || r.path.includes('?')) return true;
  let body: unknown = {};
  try {
    if (r.body !== undefined && r.body.length > 0) body = JSON.parse(String(r.body));
  } catch {
    return true;
  }
  return !routes.shutdown.body.safeParse(body).success;
}

describe('daemon API fuzzing (every route, seeded, bounded)', { timeout: 15 * 60_000 }, () => {
  let sb: Sandbox | undefined;
  let ns = '';
  let pid = 0;
  const wrap = (): string[] => ['ip', 'netns', 'exec', ns];

  before(async () => {
    if (!isRoot) return;
    sb = await makeSandbox();
    ns = testNetnsName('fuzz', randomBytes(3).toString('hex'));
    const add = await runProcess('ip', ['netns', 'add', ns]);
    assert.equal(add.code, 0, add.stderr);
    await runProcess('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // A tiny unmanaged image: an empty ext4 rootfs and a file standing in for the kernel.
    const dir = path.join(sb.root, 'img');
    fs.mkdirSync(dir);
    const rootfs = path.join(dir, 'rootfs.ext4');
    fs.writeFileSync(rootfs, '');
    fs.truncateSync(rootfs, 16 * 1024 * 1024);
    execFileSync('mkfs.ext4', ['-q', '-F', rootfs]);
    fs.writeFileSync(path.join(dir, 'vmlinux'), 'not a kernel');
    const reg = await sb.run(
      [
        'image',
        'register',
        '--name',
        'tiny',
        '--rootfs',
        rootfs,
        '--kernel',
        path.join(dir, 'vmlinux'),
      ],
      { wrap: wrap() },
    );
    assert.equal(reg.code, 0, reg.stderr);
    for (const name of FIXTURE_VMS) {
      const c = await sb.run(['vm', 'create', '--no-start', '--image', 'tiny', '--name', name], {
        wrap: wrap(),
      });
      assert.equal(c.code, 0, c.stderr);
    }
    const st = await sb.run(['daemon', 'status', '--json'], { wrap: wrap() });
    assert.equal(st.code, 0, st.stderr);
    pid = (JSON.parse(st.stdout) as { pid: number }).pid;
  });

  after(async () => {
    if (!sb) return;
    try {
      const list = await sb.run(['vm', 'list', '--json'], { wrap: wrap() });
      const names = (JSON.parse(list.stdout || '[]') as { name: string }[]).map((v) => v.name);
      if (names.length)
        await sb.run(['vm', 'delete', '--force', ...names], { wrap: wrap(), timeoutMs: 120_000 });
      await sb.run(['daemon', 'stop'], { wrap: wrap() });
    } finally {
      await sb.cleanup();
      await runProcess('ip', ['netns', 'del', ns]);
    }
  });

  const routeIds = Object.keys(endpoints) as RouteId[];
  for (const id of routeIds) {
    test(`${endpoints[id].method} ${endpoints[id].path}: random and mutated requests`, async (t) => {
      if (!needs(t, isRoot, 'needs root for the network namespace the daemon runs in')) return;
      const socket = sb!.paths.socket;
      await fc.assert(
        fc.asyncProperty(requestFor(id), async (r) => {
          fc.pre(harmless(id, r));
          const a = await send(socket, r);
          const problem = problemWith(r, a);
          assert.equal(problem, undefined, `${r.method} ${r.path}: ${problem}`);
          assert.ok(isAlive(pid), `the daemon (pid ${pid}) still runs`);
        }),
        { seed: SEED + routeIds.indexOf(id), numRuns: RUNS, endOnFailure: true },
      );
      const status = await send(socket, { method: 'GET', path: '/v1/status', headers: {} });
      assert.equal(status.status, 200, 'the daemon still answers');
    });
  }

  test('oversized (declared and chunked), deeply nested, wide and long bodies on every body route', async (t) => {
    if (!needs(t, isRoot, 'needs root for the network namespace the daemon runs in')) return;
    const socket = sb!.paths.socket;
    const bodies: [string, string][] = [
      ['oversized', `{"name":"${'a'.repeat(MAX_BODY_BYTES)}"}`],
      ['deep arrays', '['.repeat(200_000) + ']'.repeat(200_000)],
      ['deep objects', '{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000)],
      [
        'wide object',
        JSON.stringify(Object.fromEntries(Array.from({ length: 50_000 }, (_, i) => [`k${i}`, i]))),
      ],
      ['long array', JSON.stringify({ refs: Array.from({ length: 100_000 }, (_, i) => `v${i}`) })],
    ];
    for (const id of routeIds) {
      const e = endpoints[id];
      if (e.method === 'GET' || e.path.includes(':')) continue;
      for (const [what, body] of [...bodies, ['oversized, chunked', bodies[0]![1]] as const]) {
        const chunked = what.endsWith('chunked');
        const r: Req = {
          method: e.method,
          path: e.path,
          body,
          headers: {
            'content-type': 'application/json',
            ...(chunked
              ? { 'transfer-encoding': 'chunked' }
              : { 'content-length': String(Buffer.byteLength(body)) }),
          },
          allowCut: what.startsWith('oversized'),
        };
        const a = await send(socket, r);
        assert.equal(problemWith(r, a), undefined, `${id} with a ${what} body`);
        if (!(a.cut && a.status === 0))
          assert.ok(
            a.status >= 400 && a.status < 500,
            `${id} with a ${what} body → 4xx (got ${a.status}: ${a.body.slice(0, 200)})`,
          );
        assert.ok(isAlive(pid), `the daemon survived ${id} with a ${what} body`);
      }
    }
    const status = await send(socket, { method: 'GET', path: '/v1/status', headers: {} });
    assert.equal(status.status, 200, 'the daemon still answers');
  });

  test('bytes that are not HTTP get a JSON error and the daemon keeps serving', async (t) => {
    if (!needs(t, isRoot, 'needs root for the network namespace the daemon runs in')) return;
    const socket = sb!.paths.socket;
    const rawExchange = (bytes: Buffer): Promise<string> =>
      new Promise((resolve) => {
        const c = net.connect(socket);
        let got = '';
        const done = (): void => {
          clearTimeout(timer);
          c.destroy();
          resolve(got);
        };
        const timer = setTimeout(done, 3000);
        c.on('data', (d: Buffer) => (got += d.toString('latin1')));
        c.on('close', done);
        c.on('error', done);
        c.end(bytes);
      });
    const line = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)),
      fc
        .tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 60 }))
        .map(([m, p]) => Buffer.from(`${m} ${p} HTTP/1.1\r\nhost: x\r\n\r\n`)),
      fc
        .string({ maxLength: 40 })
        .map((v) => Buffer.from(`POST /v1/vms HTTP/1.1\r\ncontent-length: ${v}\r\n\r\n{}`)),
      fc.constant(Buffer.from(`GET /v1/vms HTTP/1.1\r\nx: ${'a'.repeat(100_000)}\r\n\r\n`)),
    );
    await fc.assert(
      fc.asyncProperty(line, async (bytes) => {
        const got = await rawExchange(bytes);
        if (got !== '') {
          assert.match(
            got,
            /^HTTP\/1\.1 \d{3} /,
            `an HTTP answer to ${JSON.stringify(bytes.toString('latin1').slice(0, 80))}`,
          );
          const status = Number(got.slice(9, 12));
          if (status >= 400) {
            const body = got.slice(got.indexOf('\r\n\r\n') + 4);
            const err = (JSON.parse(body) as { error: { code: string; message: string } }).error;
            assert.ok(err.code && err.message, `a JSON error: ${body}`);
            assert.ok(status < 500 || err.code !== 'internal', `no internal error: ${body}`);
          }
        }
        assert.ok(isAlive(pid), `the daemon (pid ${pid}) still runs`);
      }),
      { seed: SEED, numRuns: RUNS },
    );
    const status = await send(socket, { method: 'GET', path: '/v1/status', headers: {} });
    assert.equal(status.status, 200, 'the daemon still answers');
  });
});
