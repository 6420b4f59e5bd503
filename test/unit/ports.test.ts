import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import type { VmPorts } from '../../src/api/schemas/ports.js';
import { formatPorts, hyperlink } from '../../src/cli/commands/ports.js';
import { BangerError } from '../../src/errors.js';
import type { ListeningSocket, PortsResult } from '../../src/guest/agentProtocol.js';
import type { VmRecord } from '../../src/store/vms.js';
import {
  classifyListeners,
  listenerScope,
  PortsService,
  portUrl,
  probeHttp,
} from '../../src/vm/ports.js';

const sock = (over: Partial<ListeningSocket>): ListeningSocket => ({
  proto: 'tcp',
  address: '0.0.0.0',
  port: 80,
  pid: 10,
  process: 'srv',
  cmdline: 'srv --flag',
  ...over,
});

describe('vm ports: what the host can reach (pure)', () => {
  test('scope of each bound address', () => {
    const cases: [string, string][] = [
      ['0.0.0.0', 'any'],
      ['::', 'any'],
      ['172.16.0.5', 'vm'],
      ['::ffff:172.16.0.5', 'vm'],
      ['127.0.0.1', 'loopback'],
      ['127.0.0.53', 'loopback'],
      ['::1', 'loopback'],
      ['::ffff:127.0.0.1', 'loopback'],
      ['10.9.0.1', 'other'],
      ['fe80::1', 'other'],
    ];
    for (const [a, want] of cases) assert.equal(listenerScope(a, '172.16.0.5'), want, a);
  });

  test('only wildcard and VM-address listeners are reachable; cmdline missing → null', () => {
    const out = classifyListeners(
      [
        sock({ address: '0.0.0.0', port: 22 }),
        sock({ address: '127.0.0.1', port: 5432 }),
        sock({ proto: 'udp', address: '172.16.0.5', port: 68, cmdline: undefined as never }),
      ],
      '172.16.0.5',
    );
    assert.deepEqual(
      out.map((l) => [l.port, l.scope, l.reachable, l.http, l.url, l.cmdline]),
      [
        [22, 'any', true, null, null, 'srv --flag'],
        [5432, 'loopback', false, null, null, 'srv --flag'],
        [68, 'vm', true, null, null, null],
      ],
    );
  });

  test('the URL uses the <name>.vm DNS name', () => {
    assert.equal(portUrl('dev', 8080), 'http://dev.vm:8080/');
  });
});

describe('vm ports: the HTTP probe (real sockets on loopback)', () => {
  const servers: net.Server[] = [];
  after(() => servers.forEach((s) => s.close()));
  const listen = async (s: net.Server): Promise<number> => {
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return (s.address() as net.AddressInfo).port;
  };

  test('an HTTP server is HTTP, whatever its status code; the Host header names the VM', async () => {
    let host = '';
    const port = await listen(
      http.createServer((req, res) => {
        host = req.headers.host ?? '';
        res.writeHead(404).end('nope');
      }),
    );
    assert.equal(await probeHttp('127.0.0.1', port, `dev.vm:${port}`), true);
    assert.equal(host, `dev.vm:${port}`);
  });

  test('a server that speaks first with something else is not HTTP', async () => {
    const port = await listen(net.createServer((s) => s.end('SSH-2.0-OpenSSH_9.2\r\n')));
    assert.equal(await probeHttp('127.0.0.1', port, 'x'), false);
  });

  test('a silent port is given up within the deadline', async () => {
    const held: net.Socket[] = [];
    const port = await listen(net.createServer((s) => held.push(s)));
    const t0 = Date.now();
    assert.equal(await probeHttp('127.0.0.1', port, 'x', 300), false);
    const ms = Date.now() - t0;
    assert.ok(ms >= 250 && ms < 2000, `gave up after ${ms} ms`);
    held.forEach((s) => s.destroy());
  });

  test('a closed port is not HTTP', async () => {
    const port = await listen(net.createServer());
    servers.pop()!.close();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await probeHttp('127.0.0.1', port, 'x'), false);
  });
});

const vmRec = (name: string, id: string, state: VmRecord['state'], ip: string | null): VmRecord =>
  ({ id, name, state, ip }) as VmRecord;

describe('vm ports: one VM failing does not hide the others', () => {
  const vms = [
    vmRec('web', 'aaaa000000000000', 'running', '172.16.0.2'),
    vmRec('mute', 'bbbb000000000000', 'running', '172.16.0.3'),
    vmRec('off', 'cccc000000000000', 'stopped', '172.16.0.4'),
  ];
  const lookup = {
    list: () => vms,
    byName: (n: string) => vms.find((v) => v.name === n),
    byIdPrefix: (p: string) => vms.filter((v) => v.id.startsWith(p)),
  };
  const agents: Record<string, () => Promise<PortsResult>> = {
    web: async () => ({
      ports: [
        sock({ address: '0.0.0.0', port: 8080 }),
        sock({ proto: 'tcp6', address: '::', port: 8080 }),
        sock({ address: '0.0.0.0', port: 22 }),
        sock({ address: '127.0.0.1', port: 9000 }),
        sock({ proto: 'udp', address: '0.0.0.0', port: 68 }),
      ],
      truncated: false,
    }),
    mute: () =>
      Promise.reject(
        new BangerError('timeout', "vm 'mute': guest agent did not answer ports within 5s"),
      ),
  };
  const probed: string[] = [];
  const svc = new PortsService({
    vms: lookup,
    agent: (vm) => ({ ports: agents[vm.name]! }),
    probe: async (host, port, hostHeader) => {
      probed.push(`${host}:${port} ${hostHeader}`);
      return port === 8080;
    },
  });

  test('all running VMs; probes once per reachable TCP port; per-VM errors', async () => {
    const out = await svc.list([]);
    assert.deepEqual(
      out.map((v) => [v.ref, v.ok]),
      [
        ['web', true],
        ['mute', false],
      ],
    );
    assert.deepEqual(probed.sort(), ['172.16.0.2:22 web.vm:22', '172.16.0.2:8080 web.vm:8080']);
    const web = out[0]!;
    assert.deepEqual(
      web.ports.map((p) => [p.proto, p.port, p.reachable, p.http, p.url]),
      [
        ['tcp', 8080, true, true, 'http://web.vm:8080/'],
        ['tcp6', 8080, true, true, 'http://web.vm:8080/'],
        ['tcp', 22, true, false, null],
        ['tcp', 9000, false, null, null],
        ['udp', 68, true, null, null],
      ],
    );
    assert.equal(out[1]!.error?.message, "vm 'mute': guest agent did not answer ports within 5s");
    assert.match(out[1]!.error?.hint ?? '', /banger vm logs mute/);
  });

  test('named VMs: unknown and stopped ones are errors of their own', async () => {
    const out = await svc.list(['off', 'ghost', 'aaaa']);
    assert.deepEqual(
      out.map((v) => [v.ref, v.ok, v.error?.message ?? v.name]),
      [
        ['off', false, "vm 'off' is stopped, not running"],
        ['ghost', false, "VM 'ghost' not found"],
        ['aaaa', true, 'web'],
      ],
    );
  });

  test('the table: URL for HTTP ports, loopback marked; OSC 8 links keep the columns aligned', async () => {
    const out: VmPorts[] = await svc.list(['web']);
    const plain = formatPorts(out, { links: false });
    const lines = plain.split('\n');
    assert.match(lines[0]!, /^VM\s+PROTO\s+ADDRESS\s+PORT\s+PROCESS\s+URL\s+COMMAND$/);
    assert.match(
      lines[1]!,
      /^web\s+tcp\s+0\.0\.0\.0\s+8080\s+srv\[10\]\s+http:\/\/web\.vm:8080\/\s+srv --flag$/,
    );
    assert.match(plain, /9000\s+srv\[10\]\s+guest loopback only: not reachable from the host/);
    assert.match(lines[3]!, /\b22\s+srv\[10\]\s+-\s+srv --flag$/);
    const linked = formatPorts(out, { links: true });
    assert.ok(linked.includes(hyperlink('http://web.vm:8080/')));
    // Without the escape sequences the linked table is the plain one.
    // eslint-disable-next-line no-control-regex
    assert.equal(linked.replace(/\u001b\]8;;[^\u001b]*\u001b\\/g, ''), plain);
  });
});
