import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';

interface Raw {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

function raw(
  socketPath: string,
  method: string,
  path: string,
  body?: string | Buffer,
  headers: Record<string, string> = {},
): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path,
        headers: {
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...headers,
        },
      },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: data, headers: res.headers }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('daemon API robustness', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await makeSandbox();
    const r = await sb.run(['daemon', 'status']);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await sb.cleanup();
  });

  const errorOf = (r: Raw): { code: string; message: string } =>
    (JSON.parse(r.body) as { error: { code: string; message: string } }).error;

  test('malformed JSON body → 400 bad_json', async () => {
    const r = await raw(sb.paths.socket, 'POST', '/v1/daemon/shutdown', '{"ifIdle": tru');
    assert.equal(r.status, 400);
    assert.equal(errorOf(r).code, 'bad_json');
    assert.match(errorOf(r).message, /not valid JSON/);
  });

  test('body failing the schema → 400 invalid_request naming the field', async () => {
    const r = await raw(sb.paths.socket, 'POST', '/v1/daemon/shutdown', '{"ifIdle": "yes"}');
    assert.equal(r.status, 400);
    assert.equal(errorOf(r).code, 'invalid_request');
    assert.match(errorOf(r).message, /ifIdle/);
    const extra = await raw(sb.paths.socket, 'POST', '/v1/daemon/shutdown', '{"bogus": 1}');
    assert.equal(extra.status, 400);
  });

  test('unknown route → 404 route_not_found', async () => {
    const r = await raw(sb.paths.socket, 'GET', '/v1/nope');
    assert.equal(r.status, 404);
    assert.equal(errorOf(r).code, 'route_not_found');
  });

  test('wrong method → 405', async () => {
    const r = await raw(sb.paths.socket, 'DELETE', '/v1/status');
    assert.equal(r.status, 405);
    assert.equal(errorOf(r).code, 'method_not_allowed');
  });

  test('wrong API version → clear error', async () => {
    const r = await raw(sb.paths.socket, 'GET', '/v2/status');
    assert.equal(r.status, 404);
    assert.equal(errorOf(r).code, 'api_version_unsupported');
    assert.match(errorOf(r).message, /API version v2 is not supported .* speaks v1/);
  });

  test('oversized body → 413 body_too_large', async () => {
    const big = `{"ifIdle": true, "pad": "${'x'.repeat(2 * 1024 * 1024)}"}`;
    const r = await raw(sb.paths.socket, 'POST', '/v1/daemon/shutdown', big).catch((e: Error) => ({
      status: -1,
      body: e.message,
      headers: {},
    }));
    // The daemon refuses from the declared length without reading it all.
    assert.equal(r.status, 413, r.body);
    assert.equal(errorOf(r as Raw).code, 'body_too_large');
  });

  test('garbage on the socket does not kill the daemon', async () => {
    const net = await import('node:net');
    await new Promise<void>((resolve) => {
      const s = net.connect(sb.paths.socket, () => s.end('NOT HTTP AT ALL\r\n\r\n'));
      s.on('close', () => resolve());
      s.on('error', () => resolve());
      s.resume();
    });
    const after = await raw(sb.paths.socket, 'GET', '/v1/status');
    assert.equal(after.status, 200, after.body);
  });

  test('version mismatch is reported with the daemon version', async () => {
    const r = await raw(sb.paths.socket, 'POST', '/v1/doctor', '{}', {
      'x-banger-version': '0.0.0+other',
    });
    assert.equal(r.status, 409);
    assert.equal(errorOf(r).code, 'version_mismatch');
  });

  test('doctor streams NDJSON progress events and ends with one result', async () => {
    const r = await raw(sb.paths.socket, 'POST', '/v1/doctor', '{}');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/x-ndjson');
    const events = r.body
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; data?: unknown; state?: string });
    assert.equal(events[0]!.type, 'step');
    assert.equal(events[0]!.state, 'start');
    assert.ok(events.filter((e) => e.type === 'item').length >= 10, 'one item per check');
    assert.ok(events.some((e) => e.type === 'progress'));
    const last = events[events.length - 1]!;
    assert.equal(last.type, 'result');
    assert.equal(events.filter((e) => e.type === 'result' || e.type === 'error').length, 1);
  });

  test('after all of that the daemon still serves', async () => {
    const r = await sb.run(['daemon', 'status', '--json']);
    assert.equal(r.code, 0, r.stderr);
  });
});
