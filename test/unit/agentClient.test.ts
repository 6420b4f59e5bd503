import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Duplex } from 'node:stream';
import { after, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import {
  AgentClient,
  agentError,
  GUEST_PROTOCOL_FAULT,
  isRetryableDialError,
} from '../../src/guest/agentClient.js';
import type { AgentEvent, ReadyEvent } from '../../src/guest/agentProtocol.js';

/**
 * AgentClient against a scripted fake agent: a real Unix socket server that
 * answers request lines however each test says.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-agentclient-test-'));
const servers = new Set<FakeAgent>();
after(async () => {
  for (const s of servers) await s.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let seq = 0;
const sockPath = (): string => path.join(tmp, `a${++seq}.sock`);

type Req = { id: number; op: string; [k: string]: unknown };
type Handler = (req: Req, reply: (obj: unknown) => void, sock: net.Socket) => void;

const HELLO = {
  protocol: 1,
  agentVersion: '0.1.0',
  hostname: 'guest',
  bootId: 'b00t',
  uptimeMs: 1234,
  ready: false,
  transport: 'virtio-serial',
  ops: ['hello'],
};

const okHello: Handler = (req, reply) => reply({ id: req.id, ok: true, result: HELLO });

interface FakeAgent {
  path: string;
  /** Raw bytes received per connection. */
  received: string[];
  sockets: net.Socket[];
  close(): Promise<void>;
}

async function fakeAgent(handler: Handler, p = sockPath()): Promise<FakeAgent> {
  const received: string[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    const idx = received.push('') - 1;
    sockets.push(sock);
    let buf = '';
    sock.on('error', () => {});
    sock.on('data', (c: Buffer) => {
      received[idx] += c.toString();
      buf += c.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        handler(JSON.parse(line) as Req, (obj) => sock.write(JSON.stringify(obj) + '\n'), sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(p, r));
  const fa: FakeAgent = {
    path: p,
    received,
    sockets,
    close: async () => {
      servers.delete(fa);
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  servers.add(fa);
  return fa;
}

async function rejection(p: Promise<unknown>): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof BangerError, `expected a BangerError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected a rejection');
}

describe('AgentClient', () => {
  test('dials until the socket appears, resyncs with a blank line, validates results', async () => {
    const p = sockPath();
    const client = AgentClient.unix(p, { label: 'vm a', retryIntervalMs: 20 });
    try {
      const connecting = client.connect({ timeoutMs: 5000 });
      await sleep(150);
      const agent = await fakeAgent(okHello, p);
      await connecting;
      assert.equal(client.connected, true);
      assert.deepEqual(await client.hello(), HELLO);
      assert.ok(
        agent.received[0]!.startsWith('\n{"id":1,"op":"hello"}\n'),
        JSON.stringify(agent.received[0]),
      );
    } finally {
      client.close();
    }
  });

  test('connect gives up at the deadline with a timeout naming the VM and the last error', async () => {
    const client = AgentClient.unix(sockPath(), { label: 'vm gone', retryIntervalMs: 20 });
    const err = await rejection(client.connect({ timeoutMs: 200 }));
    assert.equal(err.code, 'timeout');
    assert.match(
      err.message,
      /^vm gone: could not reach the guest agent within 200ms: connect ENOENT/,
    );
    client.close();
  });

  test('a request that gets no answer times out; a late answer is ignored', async () => {
    let late: (() => void) | undefined;
    const agent = await fakeAgent((req, reply) => {
      late = () => reply({ id: req.id, ok: true, result: HELLO });
    });
    const client = AgentClient.unix(agent.path, { label: 'vm mute' });
    try {
      const err = await rejection(client.hello({ timeoutMs: 150 }));
      assert.equal(err.code, 'timeout');
      assert.equal(err.message, 'vm mute: guest agent did not answer hello within 150ms');
      late!();
      await sleep(50);
      assert.equal(client.connected, true);
    } finally {
      client.close();
    }
  });

  test('abort signal cancels a request', async () => {
    const agent = await fakeAgent(() => {});
    const client = AgentClient.unix(agent.path, { label: 'vm x' });
    try {
      const ac = new AbortController();
      const p = client.waitReady({ timeoutMs: 60_000, signal: ac.signal });
      await sleep(50);
      ac.abort();
      const err = await rejection(p);
      assert.equal(err.code, 'cancelled');
      assert.equal(err.message, 'vm x: wait-ready was cancelled');
      const pre = new AbortController();
      pre.abort();
      assert.equal((await rejection(client.hello({ signal: pre.signal }))).code, 'cancelled');
    } finally {
      client.close();
    }
  });

  test('waitReady passes its budget to the agent and returns the host keys', async () => {
    const seen: Req[] = [];
    const agent = await fakeAgent((req, reply) => {
      seen.push(req);
      setTimeout(
        () =>
          reply({
            id: req.id,
            ok: true,
            result: { hostKeys: ['ssh-ed25519 AAAA x'], readyAtMs: 900, sshPort: 22 },
          }),
        50,
      );
    });
    const client = AgentClient.unix(agent.path);
    try {
      const r = await client.waitReady({ timeoutMs: 5000 });
      assert.deepEqual(r, { hostKeys: ['ssh-ed25519 AAAA x'], readyAtMs: 900, sshPort: 22 });
      assert.equal(seen[0]!.op, 'wait-ready');
      const t = seen[0]!.timeoutMs as number;
      assert.ok(Number.isInteger(t) && t > 4000 && t <= 5000, `timeoutMs ${t}`);
    } finally {
      client.close();
    }
  });

  test('answers are matched by id, in any order', async () => {
    const held: Array<() => void> = [];
    const agent = await fakeAgent((req, reply) => {
      held.push(() =>
        reply({
          id: req.id,
          ok: true,
          result: req.op === 'hello' ? HELLO : { ports: [], truncated: false },
        }),
      );
      if (held.length === 2) for (const f of held.reverse()) f();
    });
    const client = AgentClient.unix(agent.path);
    try {
      const [h, p] = await Promise.all([client.hello(), client.ports()]);
      assert.equal(h.hostname, 'guest');
      assert.deepEqual(p, { ports: [], truncated: false });
    } finally {
      client.close();
    }
  });

  test('agent errors and invalid results become BangerErrors', async () => {
    const agent = await fakeAgent((req, reply) => {
      if (req.op === 'wait-ready')
        reply({
          id: req.id,
          ok: false,
          code: 'timeout',
          error: 'sshd is not listening on port 22 after 5 ms',
        });
      else if (req.op === 'stats')
        reply({ id: req.id, ok: false, code: 'unknown_op', error: 'unknown op "stats"' });
      else if (req.op === 'ports')
        reply({ id: req.id, ok: true, result: { ports: [{ proto: 'sctp' }] } });
      else reply({ id: req.id, ok: false, error: 'disk on fire' });
    });
    const client = AgentClient.unix(agent.path, { label: 'vm e' });
    try {
      const t = await rejection(client.waitReady({ timeoutMs: 5 }));
      assert.equal(t.code, 'timeout');
      assert.equal(t.message, 'vm e: sshd is not listening on port 22 after 5 ms');
      const u = await rejection(client.stats());
      assert.equal(u.code, 'not_implemented');
      assert.match(u.hint ?? '', /older agent/);
      const v = await rejection(client.ports());
      assert.equal(v.code, 'internal');
      assert.match(
        v.message,
        /^vm e: guest agent sent an invalid ports result \(ports\.0\.proto: /,
      );
      const w = await rejection(client.sync());
      assert.equal(w.code, 'vmm_failed');
      assert.equal(w.message, 'vm e: guest agent sync failed: disk on fire');
    } finally {
      client.close();
    }
  });

  test('events are emitted; junk lines are reported and skipped', async () => {
    const agent = await fakeAgent(okHello);
    const client = AgentClient.unix(agent.path);
    const events: AgentEvent[] = [];
    const ready: ReadyEvent[] = [];
    const warnings: string[] = [];
    client.on('event', (e) => events.push(e));
    client.on('ready', (e) => ready.push(e));
    client.on('warning', (w) => warnings.push(w));
    try {
      await client.connect();
      const s = agent.sockets[0]!;
      s.write('garbage\n');
      s.write('{"event":"ready","hostKeys":["ssh-ed25519 AAAA"],"readyAtMs":5,"sshPort":22}\n');
      s.write('{"event":"something-new","x":1}\n');
      s.write('{"event":"ready","hostKeys":"nope"}\n');
      s.write(
        '{"id":null,"ok":false,"error":"invalid JSON at byte 0: expected an object","code":"bad_request"}\n',
      );
      assert.equal((await client.hello()).hostname, 'guest');
      assert.deepEqual(ready, [
        { event: 'ready', hostKeys: ['ssh-ed25519 AAAA'], readyAtMs: 5, sshPort: 22 },
      ]);
      assert.deepEqual(
        events.map((e) => e.event),
        ['ready', 'something-new', 'ready'],
      );
      assert.equal(warnings.length, 3);
      assert.match(warnings[0]!, /ignoring a line from the guest agent \(not JSON: garbage\)/);
      assert.match(warnings[1]!, /malformed ready event/);
      assert.match(warnings[2]!, /guest agent error: invalid JSON/);
    } finally {
      client.close();
    }
  });

  test('an unreadable line after the first drops the channel; pending requests fail', async () => {
    const agent = await fakeAgent((req, reply, sock) => {
      if (req.op === 'ports') sock.write('{"id":' + String(req.id) + ',"ok":tru\n');
      else reply({ id: req.id, ok: true, result: HELLO });
    });
    const client = AgentClient.unix(agent.path, { label: 'vm g' });
    const gone: (Error | undefined)[] = [];
    client.on('disconnect', (e) => gone.push(e));
    try {
      assert.equal((await client.hello()).hostname, 'guest');
      const err = await rejection(client.ports());
      assert.equal(err.code, 'vmm_failed');
      assert.match(
        err.message,
        /^vm g: guest agent channel closed: the guest agent sent an unreadable line/,
      );
      assert.equal(gone.length, 1);
      assert.equal((gone[0] as NodeJS.ErrnoException).code, GUEST_PROTOCOL_FAULT, 'a guest fault');
      // the next request dials a fresh connection
      assert.equal((await client.hello()).hostname, 'guest');
      assert.equal(agent.received.length, 2);
    } finally {
      client.close();
    }
  });

  test('a line over 64 KiB (here 10 MiB, sent in pieces) drops the channel without buffering it', async () => {
    const agent = await fakeAgent((req, reply, sock) => {
      if (req.op !== 'ports') return reply({ id: req.id, ok: true, result: HELLO });
      const piece = Buffer.alloc(256 * 1024, 0x61);
      for (let i = 0; i < 40; i++) sock.write(piece);
    });
    const client = AgentClient.unix(agent.path, { label: 'vm big' });
    const gone: (Error | undefined)[] = [];
    client.on('disconnect', (e) => gone.push(e));
    try {
      await client.hello();
      const err = await rejection(client.ports());
      assert.equal(
        err.message,
        'vm big: guest agent channel closed: a line from the agent exceeded 65536 bytes',
      );
      assert.equal((gone[0] as NodeJS.ErrnoException).code, GUEST_PROTOCOL_FAULT, 'a guest fault');
      assert.equal((await client.hello()).hostname, 'guest', 'the client recovers');
    } finally {
      client.close();
    }
  });

  test('a dropped connection fails pending requests, then the client dials again', async () => {
    let drop = true;
    const agent = await fakeAgent((req, reply, sock) => {
      if (drop) {
        drop = false;
        sock.destroy();
      } else reply({ id: req.id, ok: true, result: HELLO });
    });
    const client = AgentClient.unix(agent.path, { label: 'vm d' });
    let disconnects = 0;
    client.on('disconnect', () => disconnects++);
    try {
      const err = await rejection(client.hello());
      assert.equal(err.code, 'vmm_failed');
      assert.equal(err.message, 'vm d: guest agent channel closed');
      assert.equal(disconnects, 1);
      assert.equal((await client.hello()).hostname, 'guest');
      assert.equal(agent.received.length, 2);
    } finally {
      client.close();
    }
  });

  test('close() rejects what is pending and stops dialing', async () => {
    const agent = await fakeAgent(() => {});
    const client = AgentClient.unix(agent.path, { label: 'vm c' });
    const p = client.hello({ timeoutMs: 60_000 });
    await sleep(50);
    client.close();
    const err = await rejection(p);
    assert.equal(err.code, 'cancelled');
    assert.equal((await rejection(client.hello())).code, 'cancelled');
  });

  test('fromStream works over any duplex and reports when it ends', async () => {
    const toAgent = new PassThrough();
    const fromAgent = new PassThrough();
    const stream = Duplex.from({ readable: fromAgent, writable: toAgent });
    let sent = '';
    toAgent.on('data', (c: Buffer) => {
      sent += c.toString();
      for (const line of sent.split('\n').slice(0, -1)) {
        if (!line) continue;
        const req = JSON.parse(line) as Req;
        // answer in two chunks, split inside a multi-byte character
        const out = Buffer.from(
          JSON.stringify({ id: req.id, ok: true, result: { ...HELLO, hostname: 'gäst' } }) + '\n',
        );
        const cut = out.indexOf(Buffer.from('ä')) + 1;
        fromAgent.write(out.subarray(0, cut));
        setTimeout(() => fromAgent.write(out.subarray(cut)), 10);
      }
      sent = sent.slice(sent.lastIndexOf('\n') + 1);
    });
    const client = AgentClient.fromStream(stream, { label: 'vm fc' });
    assert.equal((await client.hello()).hostname, 'gäst');
    const gone = new Promise((r) => client.once('disconnect', r));
    fromAgent.end();
    await gone;
    assert.equal(client.connected, false);
    const err = await rejection(client.hello());
    assert.equal(err.code, 'vmm_failed');
    assert.equal(err.message, 'vm fc: guest agent channel is closed');
    client.close();
  });

  test('fromDialer retries dialer failures that say "not up yet"', async () => {
    const agent = await fakeAgent(okHello);
    let attempts = 0;
    const client = AgentClient.fromDialer(
      async () => {
        attempts++;
        if (attempts < 3) {
          throw new BangerError('vmm_failed', 'vsock port 1024 closed', {
            details: { reason: 'closed' },
          });
        }
        return net.connect({ path: agent.path });
      },
      { retryIntervalMs: 10 },
    );
    try {
      assert.equal((await client.hello()).hostname, 'guest');
      assert.equal(attempts, 3);
    } finally {
      client.close();
    }
    const hard = AgentClient.fromDialer(async () => {
      throw new BangerError('permission', 'no access to the vsock socket');
    });
    assert.equal((await rejection(hard.hello())).code, 'permission');
    hard.close();
  });

  test('error helpers', () => {
    assert.equal(
      isRetryableDialError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })),
      true,
    );
    assert.equal(isRetryableDialError(Object.assign(new Error('x'), { code: 'EACCES' })), false);
    assert.equal(agentError('vm z', 'stats', 'busy now', 'busy').code, 'conflict');
    assert.equal(
      agentError('vm z', 'stats', 'bad', 'bad_request').message,
      'vm z: guest agent rejected stats: bad',
    );
  });
});
