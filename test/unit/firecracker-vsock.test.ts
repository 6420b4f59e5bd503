import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { connectVsock, listenVsock, vsockListenPath } from '../../src/vmm/firecracker/vsock.js';
import { makeTempRoot, type TempRoot } from '../fixtures/firecracker/harness.js';

/**
 * A fake Firecracker vsock backend: a Unix socket server whose reaction to
 * the `CONNECT <port>\n` line is scripted per test.
 */
interface Peer {
  path: string;
  /** CONNECT lines received. */
  connects: string[];
  /** Bytes received after the CONNECT line. */
  received(): string;
}

const tick = (ms = 15): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Read one full line from a socket that connectVsock handed back, using ordinary 'data' events. */
const readLine = (s: net.Socket): Promise<string> =>
  new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        s.off('data', onData);
        resolve(buf.slice(0, nl));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });

describe('firecracker vsock: host-initiated connections', () => {
  let root: TempRoot;
  let n = 0;
  const servers: (net.Server & { closeAllConnections?: () => void })[] = [];
  const clients: net.Socket[] = [];

  before(() => {
    root = makeTempRoot();
  });
  after(async () => {
    for (const c of clients) c.destroy();
    for (const s of servers) {
      s.closeAllConnections?.();
      await new Promise<void>((r) => s.close(() => r()));
    }
    root.cleanup();
  });

  const peer = async (
    onConnect: (sock: net.Socket, line: string) => void | Promise<void>,
  ): Promise<Peer> => {
    const p = path.join(root.dir, `v${++n}.sock`);
    const connects: string[] = [];
    let after = '';
    const conns = new Set<net.Socket>();
    const server = net.createServer((sock) => {
      conns.add(sock);
      sock.on('close', () => conns.delete(sock));
      sock.on('error', () => undefined);
      let buf = '';
      let done = false;
      sock.on('data', (c: Buffer) => {
        if (done) {
          after += c.toString();
          return;
        }
        buf += c.toString();
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        done = true;
        connects.push(buf.slice(0, nl));
        after += buf.slice(nl + 1);
        void onConnect(sock, buf.slice(0, nl));
      });
    });
    await new Promise<void>((r) => server.listen(p, r));
    servers.push(
      Object.assign(server, { closeAllConnections: () => conns.forEach((c) => c.destroy()) }),
    );
    return { path: p, connects, received: () => after };
  };

  const connect = async (p: string, port = 1024, opts = {}): Promise<net.Socket> => {
    const s = await connectVsock(p, port, { vmName: 'foo', ...opts });
    clients.push(s);
    return s;
  };

  const failsWith = async (p: Promise<unknown>, reason: string, re: RegExp): Promise<void> => {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof BangerError, String(e));
      assert.equal(e.details?.reason, reason, e.message);
      assert.match(e.message, re);
      return true;
    });
  };

  test('OK in one chunk: CONNECT is sent and the stream is handed over', async () => {
    const pr = await peer((s) => {
      s.write('OK 1073741824\n');
      s.on('data', (c: Buffer) => s.write(`echo:${c.toString()}`));
    });
    const s = await connect(pr.path);
    assert.deepEqual(pr.connects, ['CONNECT 1024']);
    s.write('ping\n');
    assert.equal(await readLine(s), 'echo:ping');
  });

  test('OK line split across chunks (one byte at a time)', async () => {
    const pr = await peer(async (s) => {
      for (const ch of 'OK 1073741825\n') {
        s.write(ch);
        await tick(5);
      }
      s.write('hello\n');
    });
    const s = await connect(pr.path);
    assert.equal(await readLine(s), 'hello');
  });

  test('payload in the same chunk as OK is kept for the caller, in order', async () => {
    const pr = await peer((s) => {
      s.write('OK 1073741826\n{"id":0,"ok":true}\n{"id":1,');
      setTimeout(() => s.write('"ok":true}\n'), 20);
    });
    const s = await connect(pr.path);
    // Give the leftover time to sit in the buffer before anyone reads.
    await tick(40);
    let text = '';
    await new Promise<void>((resolve) => {
      s.on('data', (c: Buffer) => {
        text += c.toString();
        if (text.split('\n').length > 2) resolve();
      });
    });
    assert.equal(text, '{"id":0,"ok":true}\n{"id":1,"ok":true}\n');
  });

  test('leftover bytes are also readable with async iteration', async () => {
    const pr = await peer((s) => {
      s.end('OK 7\nall-in-one-chunk');
    });
    const s = await connect(pr.path, 52);
    assert.deepEqual(pr.connects, ['CONNECT 52']);
    let text = '';
    for await (const c of s) text += (c as Buffer).toString();
    assert.equal(text, 'all-in-one-chunk');
  });

  test('bytes written after connecting reach the guest after the CONNECT line', async () => {
    const pr = await peer((s) => void s.write('OK 9\n'));
    const s = await connect(pr.path);
    s.write('{"id":1,"op":"hello"}\n');
    await tick(40);
    assert.equal(pr.received(), '{"id":1,"op":"hello"}\n');
  });

  test('a CRLF reply is accepted', async () => {
    const pr = await peer((s) => void s.write('OK 11\r\nx\n'));
    const s = await connect(pr.path);
    assert.equal(await readLine(s), 'x');
  });

  test('the connection closing before OK (no guest listener) fails as closed', async () => {
    const pr = await peer((s) => void s.end());
    await failsWith(
      connect(pr.path),
      'closed',
      /vsock port 1024 of vm 'foo' closed the connection before 'OK'/,
    );
  });

  test('a reply other than OK fails as bad-reply', async () => {
    const pr = await peer((s) => void s.write('NOK\n'));
    await failsWith(connect(pr.path), 'bad-reply', /answered "NOK" instead of 'OK <port>'/);
    const pr2 = await peer((s) => void s.write('OK\n'));
    await failsWith(connect(pr2.path), 'bad-reply', /answered "OK"/);
    const pr3 = await peer((s) => void s.write('x'.repeat(100)));
    await failsWith(connect(pr3.path), 'bad-reply', /instead of 'OK <port>'/);
  });

  test('no socket, or nobody listening, fails as unreachable', async () => {
    const missing = path.join(root.dir, 'missing.sock');
    await failsWith(connect(missing), 'unreachable', new RegExp(`${missing} does not exist`));
    // A socket file left by a dead process: connect is refused.
    const stale = path.join(root.dir, 'stale.sock');
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(stale, r));
    // Closing would unlink the file; drop the listener without unlinking by copying the inode away first.
    fs.linkSync(stale, `${stale}.keep`);
    await new Promise<void>((r) => srv.close(() => r()));
    fs.renameSync(`${stale}.keep`, stale);
    await failsWith(connect(stale), 'unreachable', /refused the connection/);
  });

  test('a peer that never answers times out', async () => {
    const pr = await peer(() => undefined);
    await assert.rejects(connect(pr.path, 1024, { timeoutMs: 80 }), (e: unknown) => {
      assert.ok(e instanceof BangerError);
      assert.equal(e.code, 'timeout');
      assert.match(e.message, /did not complete the handshake within 80 ms/);
      return true;
    });
  });

  test('an abort cancels the handshake', async () => {
    const pr = await peer(() => undefined);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 20);
    await failsWith(connect(pr.path, 1024, { signal: ac.signal }), 'cancelled', /cancelled/);
  });

  test('ports must be 32-bit unsigned integers', async () => {
    await assert.rejects(connectVsock('/x', -1), /not a 32-bit unsigned integer/);
  });
});

describe('firecracker vsock: guest-initiated connections', () => {
  let root: TempRoot;
  before(() => {
    root = makeTempRoot();
  });
  after(() => root.cleanup());

  test('listens on <uds_path>_<port> and accepts what firecracker forwards', async () => {
    const uds = path.join(root.dir, 'agent.sock');
    const got: string[] = [];
    const l = await listenVsock(uds, 1025, (sock) => {
      sock.on('data', (c: Buffer) => {
        got.push(c.toString());
        sock.end('ack\n');
      });
    });
    assert.equal(l.path, `${uds}_1025`);
    assert.equal(vsockListenPath(uds, 1025), l.path);
    // Firecracker connects here when the guest connects to host port 1025.
    const c = net.createConnection(l.path);
    const reply = await new Promise<string>((resolve, reject) => {
      let buf = '';
      c.on('data', (d: Buffer) => (buf += d.toString()));
      c.on('end', () => resolve(buf));
      c.on('error', reject);
      c.write('{"event":"ready"}\n');
    });
    c.destroy();
    assert.equal(reply, 'ack\n');
    assert.deepEqual(got, ['{"event":"ready"}\n']);
    await l.close();
    assert.equal(fs.existsSync(l.path), false);
  });

  test('a stale socket file is replaced; a regular file is not touched', async () => {
    const uds = path.join(root.dir, 'agent2.sock');
    const stale = net.createServer();
    await new Promise<void>((r) => stale.listen(`${uds}_1026`, r));
    fs.linkSync(`${uds}_1026`, `${uds}.keep`);
    await new Promise<void>((r) => stale.close(() => r()));
    fs.renameSync(`${uds}.keep`, `${uds}_1026`);
    const l = await listenVsock(uds, 1026, (s) => s.end());
    await l.close();

    fs.writeFileSync(`${uds}_1027`, 'not a socket');
    await assert.rejects(
      listenVsock(uds, 1027, (s) => s.end()),
      /exists and is not a socket/,
    );
    assert.equal(fs.readFileSync(`${uds}_1027`, 'utf8'), 'not a socket');
  });
});
