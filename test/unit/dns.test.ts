import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { DEFAULT_CONFIG, type Config } from '../../src/config/schema.js';
import {
  answerQuery,
  buildRecords,
  decodeQuery,
  decodeReply,
  DnsServer,
  DnsService,
  encodeQuery,
  type DnsQuery,
} from '../../src/network/dns/index.js';
import { openStore, type Store } from '../../src/store/index.js';
import { silentLogger } from '../../src/util/log.js';
import { tcpQuery, udpQuery } from '../helpers/dns.js';

const VMS = [
  { id: 'a1b2c3d4e5f60718', name: 'dev', ip: '172.16.0.2' },
  { id: 'a1ffffffffffffff', name: 'web-1', ip: '172.16.0.3' },
  { id: '0123456789abcdef', name: 'noaddr', ip: null },
];

const query = (name: string, type = 'A', extra: Partial<DnsQuery> = {}): DnsQuery => ({
  id: 7,
  opcode: 'QUERY',
  recursionDesired: true,
  questions: [{ name, type, class: 'IN' }],
  edns: false,
  ...extra,
});

describe('dns: the vm zone (pure)', () => {
  const zone = buildRecords(VMS);

  test('A for <name>.vm is the VM address, in any letter case, with or without the final dot', () => {
    for (const name of ['dev.vm', 'DEV.Vm', 'dev.vm.']) {
      const r = answerQuery(zone, query(name));
      assert.equal(r.rcode, 'NOERROR', name);
      assert.deepEqual(
        r.answers.map((a) => [a.name, a.address]),
        [[name, '172.16.0.2']],
      );
      assert.equal(r.authoritative, true);
    }
    assert.equal(answerQuery(zone, query('web-1.vm')).answers[0]?.address, '172.16.0.3');
  });

  test('a unique id prefix resolves; an ambiguous one does not', () => {
    assert.equal(answerQuery(zone, query('a1b2.vm')).answers[0]?.address, '172.16.0.2');
    assert.equal(answerQuery(zone, query('A1B2C3D4E5F60718.vm')).answers[0]?.address, '172.16.0.2');
    assert.equal(answerQuery(zone, query('a1.vm')).rcode, 'NXDOMAIN');
  });

  test('AAAA and other types of a known name: NOERROR without answers', () => {
    for (const t of ['AAAA', 'MX', 'TXT']) {
      const r = answerQuery(zone, query('dev.vm', t));
      assert.equal(r.rcode, 'NOERROR', t);
      assert.deepEqual(r.answers, []);
    }
  });

  test('unknown .vm names and VMs without an address: NXDOMAIN', () => {
    for (const n of ['nope.vm', 'noaddr.vm', 'www.dev.vm', '0123.vm']) {
      assert.equal(answerQuery(zone, query(n)).rcode, 'NXDOMAIN', n);
      assert.equal(answerQuery(zone, query(n, 'AAAA')).rcode, 'NXDOMAIN', n);
    }
  });

  test('other zones are REFUSED, the apex answers empty, odd queries get FORMERR/NOTIMP', () => {
    for (const n of ['example.com', 'vm.example.com', 'devvm', 'dev.vm.local', '.'])
      assert.equal(answerQuery(zone, query(n)).rcode, 'REFUSED', n);
    const apex = answerQuery(zone, query('vm'));
    assert.equal(apex.rcode, 'NOERROR');
    assert.deepEqual(apex.answers, []);
    assert.equal(answerQuery(zone, query('dev.vm', 'A', { questions: [] })).rcode, 'FORMERR');
    assert.equal(answerQuery(zone, query('dev.vm', 'A', { opcode: 'IQUERY' })).rcode, 'NOTIMP');
    assert.equal(
      answerQuery(
        zone,
        query('dev.vm', 'A', { questions: [{ name: 'dev.vm', type: 'A', class: 'CH' }] }),
      ).rcode,
      'REFUSED',
    );
  });

  test('decodeQuery drops responses, garbage, short and oversized packets', () => {
    const ok = encodeQuery('dev.vm', 'A');
    assert.equal(decodeQuery(ok)?.questions[0]?.name, 'dev.vm');
    const response = Buffer.from(ok);
    response[2] = response[2]! | 0x80; // QR bit
    assert.equal(decodeQuery(response), undefined);
    assert.equal(decodeQuery(ok.subarray(0, 11)), undefined);
    assert.equal(decodeQuery(ok.subarray(0, ok.length - 3)), undefined);
    assert.equal(decodeQuery(Buffer.alloc(600)), undefined);
    assert.equal(decodeQuery(Buffer.from('hello, this is not dns at all')), undefined);
  });
});

// ---------- the server on loopback ----------

describe('dns: the server on loopback (UDP and TCP)', () => {
  const zone = buildRecords(VMS);
  const server = new DnsServer({ answer: (q) => answerQuery(zone, q), tcpIdleMs: 500 });
  let port = 0;
  after(() => server.close());

  test('binds a free port on both protocols and answers there', async () => {
    const bound = await server.listen('127.0.0.1', 0);
    port = bound.port;
    assert.ok(port > 0);
    for (const send of [udpQuery, tcpQuery]) {
      const r = decodeReply((await send(port, encodeQuery('Dev.vm', 'A', { id: 4242 })))!);
      assert.equal(r.id, 4242);
      assert.equal(r.rcode, 'NOERROR');
      assert.equal(r.authoritative, true);
      assert.deepEqual(r.questions, [{ name: 'Dev.vm', type: 'A', class: 'IN' }]);
      assert.deepEqual(
        r.answers.map((a) => [a.name, a.type, a.data, a.ttl]),
        [['Dev.vm', 'A', '172.16.0.2', 5]],
      );
      assert.equal(
        decodeReply((await send(port, encodeQuery('dev.vm', 'AAAA')))!).rcode,
        'NOERROR',
      );
      assert.equal(decodeReply((await send(port, encodeQuery('gone.vm', 'A')))!).rcode, 'NXDOMAIN');
      assert.equal(
        decodeReply((await send(port, encodeQuery('example.org', 'A')))!).rcode,
        'REFUSED',
      );
    }
  });

  test('EDNS queries (what dig sends) get an EDNS answer', async () => {
    const raw = (await udpQuery(port, encodeQuery('dev.vm', 'A', { edns: true })))!;
    assert.equal(decodeReply(raw).answers.find((a) => a.type === 'A')?.data, '172.16.0.2');
    assert.ok(decodeReply(raw).answers.length >= 1);
  });

  test('TCP: several queries on one connection, split across writes', async () => {
    const q1 = encodeQuery('dev.vm', 'A', { id: 1 });
    const q2 = encodeQuery('web-1.vm', 'A', { id: 2 });
    const frame = (q: Buffer): Buffer => {
      const l = Buffer.alloc(2);
      l.writeUInt16BE(q.length);
      return Buffer.concat([l, q]);
    };
    const bytes = Buffer.concat([frame(q1), frame(q2)]);
    const replies = await new Promise<Buffer[]>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let buf = Buffer.alloc(0);
      const out: Buffer[] = [];
      s.on('connect', async () => {
        // one byte at a time for the first frame's length, then the rest
        s.write(bytes.subarray(0, 1));
        await new Promise((r) => setTimeout(r, 50));
        s.write(bytes.subarray(1));
      });
      s.on('data', (c) => {
        buf = Buffer.concat([buf, c]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          out.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
          buf = buf.subarray(2 + buf.readUInt16BE(0));
        }
        if (out.length === 2) {
          s.destroy();
          resolve(out);
        }
      });
      s.on('error', reject);
    });
    assert.deepEqual(
      replies.map((r) => [decodeReply(r).id, decodeReply(r).answers[0]?.data]),
      [
        [1, '172.16.0.2'],
        [2, '172.16.0.3'],
      ],
    );
  });

  test('TCP: an impossible length closes the connection; a silent one is closed when idle', async () => {
    const closed = (write: Buffer | null): Promise<number> =>
      new Promise((resolve) => {
        const t0 = Date.now();
        const s = net.connect({ host: '127.0.0.1', port });
        s.on('connect', () => write && s.write(write));
        s.on('close', () => resolve(Date.now() - t0));
        s.on('error', () => undefined);
        s.resume();
      });
    const big = Buffer.alloc(2);
    big.writeUInt16BE(60000);
    assert.ok((await closed(big)) < 400, 'oversized frame: closed at once');
    const idle = await closed(null);
    assert.ok(idle >= 400 && idle < 3000, `idle connection closed after ${idle} ms`);
  });

  test('TCP: connections beyond the limit are closed at once; the others keep working', async () => {
    const small = new DnsServer({ answer: (q) => answerQuery(zone, q), maxTcpConnections: 2 });
    const { port: p } = await small.listen('127.0.0.1', 0);
    const open = (): Promise<net.Socket> =>
      new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: p }, () => resolve(s));
        s.on('error', () => undefined);
      });
    const held = [await open(), await open()];
    try {
      await new Promise((r) => setTimeout(r, 50)); // let the server count them
      const extra = await open();
      const closedAt = await new Promise<number>((resolve) => {
        const t0 = Date.now();
        extra.on('close', () => resolve(Date.now() - t0));
        extra.resume();
      });
      assert.ok(closedAt < 1000, `third connection closed after ${closedAt} ms`);
      held[0]!.destroy();
      await new Promise((r) => setTimeout(r, 50));
      const r = decodeReply((await tcpQuery(p, encodeQuery('dev.vm', 'A')))!);
      assert.equal(r.answers[0]?.data, '172.16.0.2', 'a slot freed up is usable again');
    } finally {
      held.forEach((s) => s.destroy());
      await small.close();
    }
  });

  test('a port in use is a one-line error, and nothing stays bound', async () => {
    const other = new DnsServer({ answer: (q) => answerQuery(zone, q) });
    await assert.rejects(other.listen('127.0.0.1', port), (e: Error) => {
      assert.match(
        e.message,
        /^DNS listener on 127\.0\.0\.1:\d+\/udp failed: the port is already in use$/,
      );
      return true;
    });
    assert.equal(other.address, undefined);
    // TCP taken, UDP free: the UDP socket it opened is released again.
    const tcpOnly = net.createServer();
    await new Promise<void>((r) => tcpOnly.listen(0, '127.0.0.1', r));
    const p = (tcpOnly.address() as net.AddressInfo).port;
    await assert.rejects(other.listen('127.0.0.1', p), /\/tcp failed: the port is already in use/);
    const probe = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.bind(p, '127.0.0.1', resolve);
    });
    probe.close();
    tcpOnly.close();
  });
});

// ---------- fuzzing ----------

function rand(n: number): number {
  return Math.floor(Math.random() * n);
}

function mutate(b: Buffer): Buffer {
  const out = Buffer.from(b);
  switch (rand(5)) {
    case 0: // flip bytes
      for (let i = 0; i < 1 + rand(4); i++) out[rand(out.length)] = rand(256);
      return out;
    case 1: // truncate
      return out.subarray(0, rand(out.length));
    case 2: // grow with garbage
      return Buffer.concat([out, Buffer.from(Array.from({ length: rand(700) }, () => rand(256)))]);
    case 3: // bogus counts in the header
      out.writeUInt16BE(rand(65536), 4 + 2 * rand(4));
      return out;
    default: // a compression pointer somewhere
      out[12 + rand(Math.max(1, out.length - 13))] = 0xc0;
      return out;
  }
}

describe('dns: fuzzing (bounded time)', () => {
  test('random and mutated packets over UDP and TCP: no crash, no hang, valid queries still answered', async () => {
    const zone = buildRecords(VMS);
    const errors: Error[] = [];
    const server = new DnsServer({
      answer: (q) => answerQuery(zone, q),
      tcpIdleMs: 300,
      onError: (e) => errors.push(e),
    });
    const { port } = await server.listen('127.0.0.1', 0);
    try {
      const seeds = [
        encodeQuery('dev.vm', 'A'),
        encodeQuery('web-1.vm', 'AAAA', { edns: true }),
        encodeQuery('example.com', 'MX'),
      ];
      const deadline = Date.now() + 4000;
      let sent = 0;
      const udp = dgram.createSocket('udp4');
      udp.on('message', () => undefined);
      while (Date.now() < deadline && sent < 20_000) {
        const batch: Promise<unknown>[] = [];
        for (let i = 0; i < 50; i++) {
          const pkt =
            rand(3) === 0
              ? Buffer.from(Array.from({ length: rand(600) }, () => rand(256)))
              : mutate(seeds[rand(seeds.length)]!);
          sent++;
          batch.push(new Promise((r) => udp.send(pkt, port, '127.0.0.1', r)));
        }
        // A few TCP connections with mutated frames, some with wrong lengths.
        for (let i = 0; i < 3; i++) {
          const pkt = mutate(seeds[rand(seeds.length)]!);
          const len = Buffer.alloc(2);
          len.writeUInt16BE(rand(4) === 0 ? rand(65536) : pkt.length);
          batch.push(
            new Promise<void>((resolve) => {
              const s = net.connect({ host: '127.0.0.1', port });
              const t = setTimeout(() => s.destroy(), 200);
              s.on('connect', () => s.end(Buffer.concat([len, pkt])));
              s.on('error', () => undefined);
              s.on('close', () => {
                clearTimeout(t);
                resolve();
              });
              s.resume();
            }),
          );
        }
        await Promise.all(batch);
      }
      udp.close();
      assert.ok(sent >= 150, `sent ${sent} packets`); // a loaded machine sends fewer in the time
      assert.ok(server.counters.dropped > 0, 'some packets were dropped');
      // Still serving, both ways.
      const u = decodeReply((await udpQuery(port, encodeQuery('dev.vm', 'A')))!);
      assert.equal(u.answers[0]?.data, '172.16.0.2');
      const t = decodeReply((await tcpQuery(port, encodeQuery('web-1.vm', 'A')))!);
      assert.equal(t.answers[0]?.data, '172.16.0.3');
      assert.deepEqual(errors, [], 'no internal errors');
    } finally {
      await server.close();
    }
  });
});

// ---------- the service over the real vms table ----------

describe('dns: the service follows the vms table', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-dns-'));
  let store: Store;
  after(() => {
    store?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('create, rename, stop and delete show in the answers at once', async () => {
    store = openStore(path.join(dir, 'banger.db'));
    store.images.insert({
      id: 'img',
      name: 'img',
      source: 'catalog:debian',
      digest: null,
      kernelName: null,
      kernelPath: null,
      initrdPath: null,
      rootfsPath: '/x',
      workSeedPath: null,
      managed: true,
      sizeBytes: 1,
      meta: {},
    });
    const config: Config = { ...DEFAULT_CONFIG, dnsListen: { host: '127.0.0.1', port: 0 } };
    const dns = new DnsService({
      config: () => config,
      vms: store.vms,
      logger: silentLogger(),
      probeResolved: () => ({
        resolvectl: undefined,
        resolvedPid: undefined,
        sameNetns: undefined,
      }),
    });
    await dns.start();
    try {
      const st = await dns.status();
      assert.equal(st.listener.state, 'listening');
      const port = Number(st.listener.address!.split(':')[1]);
      const ask = async (n: string): Promise<string> => {
        const r = decodeReply((await udpQuery(port, encodeQuery(n, 'A')))!);
        return r.rcode === 'NOERROR' ? (r.answers[0]?.data ?? 'empty') : r.rcode;
      };
      const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
      assert.equal(await ask('box.vm'), 'NXDOMAIN');
      store.vms.insert({
        id: 'feedfacefeedface',
        name: 'box',
        imageId: 'img',
        kernelName: null,
        state: 'created',
        vmm: 'qemu',
        accel: 'tcg',
        vcpu: 1,
        memoryMib: 512,
        diskSize: 1,
        nat: false,
        ip: '172.16.0.9',
        mac: null,
        tap: null,
        pid: null,
        pidStartTime: null,
        lastError: null,
        meta: {},
        startedAt: null,
        stoppedAt: null,
      });
      await tick();
      assert.equal(await ask('box.vm'), '172.16.0.9');
      assert.equal(await ask('feed.vm'), '172.16.0.9');
      store.vms.update('feedfacefeedface', { state: 'stopped' });
      await tick();
      assert.equal(await ask('box.vm'), '172.16.0.9', 'a stopped VM keeps its address and record');
      store.vms.update('feedfacefeedface', { name: 'crate' });
      await tick();
      assert.equal(await ask('box.vm'), 'NXDOMAIN');
      assert.equal(await ask('crate.vm'), '172.16.0.9');
      store.vms.delete('feedfacefeedface');
      await tick();
      assert.equal(await ask('crate.vm'), 'NXDOMAIN');
      assert.equal((await dns.status()).listener.names, 0);
      assert.deepEqual((await dns.status()).routing, {
        state: 'not-routed',
        detail: 'systemd-resolved is not running on this host',
      });
    } finally {
      await dns.stop();
    }
  });

  test('a port in use leaves the service running and reports why', async () => {
    const blocker = dgram.createSocket('udp4');
    await new Promise<void>((r) => blocker.bind(0, '127.0.0.1', r));
    const port = blocker.address().port;
    const config: Config = { ...DEFAULT_CONFIG, dnsListen: { host: '127.0.0.1', port } };
    const dns = new DnsService({
      config: () => config,
      vms: store.vms,
      logger: silentLogger(),
    });
    await dns.start();
    try {
      const st = await dns.status();
      assert.equal(st.listener.state, 'failed');
      assert.equal(st.listener.address, null);
      assert.equal(
        st.listener.error,
        `DNS listener on 127.0.0.1:${port}/udp failed: the port is already in use`,
      );
      // dns_listen changed to a free port: the next status binds it.
      config.dnsListen = { host: '127.0.0.1', port: 0 };
      const again = await dns.status();
      assert.equal(again.listener.state, 'listening');
    } finally {
      blocker.close();
      await dns.stop();
    }
  });
});
