import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { httpRequest } from '../../src/image/oci/http.js';

/** The one HTTP helper against a scripted server on 127.0.0.1. */
let server: http.Server;
let base = '';
const hits = new Map<string, number>();
const seen: { path: string; auth?: string }[] = [];

before(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    const n = (hits.get(url.pathname) ?? 0) + 1;
    hits.set(url.pathname, n);
    seen.push({ path: url.pathname, auth: req.headers.authorization });
    switch (url.pathname) {
      case '/flaky': // two 503s, then OK
        if (n <= 2) {
          res.writeHead(503, { 'retry-after': '0' });
          return res.end('busy');
        }
        return res.end('ok');
      case '/always-503':
        res.writeHead(503);
        return res.end();
      case '/slow-headers':
        return void setTimeout(() => res.end('late'), 2000).unref();
      case '/stall':
        res.writeHead(200, { 'content-length': '100' });
        res.write('x'.repeat(10));
        return; // never finishes
      case '/redirect-same':
        res.writeHead(302, { location: '/target' });
        return res.end();
      case '/redirect-other':
        res.writeHead(307, {
          location: `http://localhost:${(server.address() as AddressInfo).port}/target`,
        });
        return res.end();
      case '/loop':
        res.writeHead(302, { location: '/loop' });
        return res.end();
      case '/reset':
        return req.socket.destroy();
      case '/big':
        return res.end(Buffer.alloc(2048));
      default:
        return res.end(`hello ${url.pathname}`);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

describe('http helper', () => {
  test('retries 5xx with backoff, then succeeds', async () => {
    const r = await httpRequest(`${base}/flaky`, { backoffMs: 1 });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'ok');
    assert.equal(hits.get('/flaky'), 3);
  });

  test('gives up after the retries and returns the last answer', async () => {
    const r = await httpRequest(`${base}/always-503`, { backoffMs: 1, retries: 2 });
    assert.equal(r.status, 503);
    r.discard();
    assert.equal(hits.get('/always-503'), 3);
  });

  test('a deadline for response headers', async () => {
    await assert.rejects(
      httpRequest(`${base}/slow-headers`, { timeoutMs: 100, retries: 0 }),
      (e: unknown) =>
        e instanceof BangerError &&
        e.code === 'timeout' &&
        /GET http:\/\/127\.0\.0\.1:\d+\/slow-headers/.test(e.message),
    );
  });

  test('an idle timeout while a body streams', async () => {
    const r = await httpRequest(`${base}/stall`, { idleTimeoutMs: 150, retries: 0 });
    await assert.rejects(r.bytes(), /stalled|aborted|ETIMEDOUT/);
  });

  test('network errors are retried, then named', async () => {
    await assert.rejects(
      httpRequest(`${base}/reset`, { backoffMs: 1, retries: 2 }),
      (e: unknown) =>
        e instanceof BangerError && e.code === 'network' && /GET .*\/reset: /.test(e.message),
    );
    assert.equal(hits.get('/reset'), 3);
    const port = (server.address() as AddressInfo).port;
    await assert.rejects(httpRequest(`http://127.0.0.1:1/x`, { retries: 0 }), /ECONNREFUSED/);
    assert.ok(port > 0);
  });

  test('redirects: followed, credentials kept only on the same origin', async () => {
    seen.length = 0;
    const same = await httpRequest(`${base}/redirect-same`, {
      headers: { authorization: 'Bearer t' },
    });
    assert.equal(await same.text(), 'hello /target');
    assert.equal(same.url.pathname, '/target');
    const other = await httpRequest(`${base}/redirect-other`, {
      headers: { Authorization: 'Bearer t' },
    });
    assert.equal(await other.text(), 'hello /target');
    assert.equal(other.url.hostname, 'localhost');
    assert.deepEqual(
      seen.map((s) => [s.path, s.auth]),
      [
        ['/redirect-same', 'Bearer t'],
        ['/target', 'Bearer t'],
        ['/redirect-other', 'Bearer t'],
        ['/target', undefined],
      ],
    );
    await assert.rejects(httpRequest(`${base}/loop`, { maxRedirects: 3 }), /too many redirects/);
  });

  test('body size limit and cancellation', async () => {
    const r = await httpRequest(`${base}/big`);
    await assert.rejects(r.bytes(1024), /larger than 1024 bytes/);
    const ac = new AbortController();
    const p = httpRequest(`${base}/slow-headers`, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, (e: unknown) => e instanceof BangerError && e.code === 'cancelled');
  });
});
