import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import type { Status } from '../../src/api/schemas/daemon.js';
import { decodeReply, encodeQuery } from '../../src/network/dns/index.js';
import { tcpQuery, udpQuery } from '../helpers/dns.js';
import { isAlive, makeSandbox, type Sandbox } from '../helpers/sandbox.js';

describe('the daemon serves DNS for .vm', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await makeSandbox(); // dns_listen 127.0.0.1:0 (a free port)
  });
  after(() => sb.cleanup());

  test('daemon status shows the real listener, which answers over UDP and TCP', async () => {
    const r = await sb.run(['daemon', 'status', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as Status;
    assert.equal(s.dns.listener.state, 'listening');
    assert.equal(s.dns.listener.configured, '127.0.0.1:0');
    assert.match(s.dnsListen, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(s.dnsListen, '127.0.0.1:0');
    assert.equal(s.dns.listener.address, s.dnsListen);
    const port = Number(s.dnsListen.split(':')[1]);
    const u = decodeReply((await udpQuery(port, encodeQuery('nobody.vm', 'A')))!);
    assert.equal(u.rcode, 'NXDOMAIN');
    const t = decodeReply((await tcpQuery(port, encodeQuery('example.com', 'A')))!);
    assert.equal(t.rcode, 'REFUSED');
    const text = await sb.run(['daemon', 'status']);
    assert.match(
      text.stdout,
      new RegExp(`dns:\\s+127\\.0\\.0\\.1:${port} \\(listening, udp\\+tcp, 0 names\\)`),
    );
    assert.match(text.stdout, /\.vm:\s+\S/);
  });

  test('vm ports with no running VM says so; an unknown VM is an error', async () => {
    const none = await sb.run(['vm', 'ports']);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stderr.trim(), 'no running VMs');
    const json = await sb.run(['vm', 'ports', '--json']);
    assert.deepEqual(JSON.parse(json.stdout), []);
    const ghost = await sb.run(['vm', 'ports', 'ghost']);
    assert.equal(ghost.code, 1);
    assert.equal(
      ghost.stderr.trim(),
      "error: VM 'ghost' not found: list VMs with `banger vm list`",
    );
  });
});

describe('a DNS port in use does not stop the daemon', () => {
  let sb: Sandbox;
  let blocker: dgram.Socket;
  let port = 0;
  before(async () => {
    blocker = dgram.createSocket('udp4');
    await new Promise<void>((r) => blocker.bind(0, '127.0.0.1', r));
    port = blocker.address().port;
    sb = await makeSandbox({ env: { BANGER_DNS_LISTEN: `127.0.0.1:${port}` } });
  });
  after(async () => {
    await sb.cleanup();
    blocker.close();
  });

  test('status and doctor give the one-line reason; the daemon keeps serving', async () => {
    const r = await sb.run(['daemon', 'status']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `dns:\\s+127\\.0\\.0\\.1:${port} \\(not listening: DNS listener on 127\\.0\\.0\\.1:${port}/udp failed: the port is already in use\\)`,
      ),
    );
    const d = await sb.run(['doctor', '--json']);
    const checks = (
      JSON.parse(d.stdout) as { checks: { id: string; status: string; detail: string }[] }
    ).checks;
    const dns = checks.find((c) => c.id === 'dns:listener');
    assert.deepEqual(dns && [dns.status, dns.detail], [
      'warn',
      `DNS listener on 127.0.0.1:${port}/udp failed: the port is already in use`,
    ]);
    assert.ok(isAlive(sb.daemonPid()!), 'daemon still running');
    const again = await sb.run(['vm', 'list']);
    assert.equal(again.code, 0, again.stderr);
  });
});
