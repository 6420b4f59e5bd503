import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AGENT_MAX_REQUEST_BYTES,
  AGENT_OPS,
  AgentRequestSchema,
  AgentResultSchemas,
  HelloResultSchema,
  PortsResultSchema,
  ReadyEventSchema,
  StatsResultSchema,
  encodeAgentRequest,
  parseAgentLine,
  parseHostKey,
} from '../../src/guest/agentProtocol.js';

// Lines as the C agent prints them (copied from a real run).
const HELLO_LINE =
  '{"id":1,"ok":true,"result":{"protocol":1,"agentVersion":"0.1.0","hostname":"vm","bootId":"6af14607-0be4-41ad-897e-1b8a07653611","uptimeMs":1470394,"ready":false,"transport":"unix","ops":["hello","wait-ready","ports","stats","sync","poweroff","reboot"]}}';
const STATS_RESULT = {
  uptimeMs: 1470407,
  load1: 0.75,
  load5: 1.31,
  load15: 1.21,
  memTotalKib: 24684084,
  memAvailableKib: 23022452,
  memFreeKib: 22068912,
  cpus: 2,
  clockTicksPerSec: 100,
  cpuTicks: {
    user: 88834,
    nice: 0,
    system: 52265,
    idle: 145680,
    iowait: 3761,
    irq: 0,
    softirq: 1009,
    steal: 219,
    guest: 0,
    guestNice: 0,
  },
  disks: [
    { mount: '/', totalBytes: 270553174016, freeBytes: 241724653568, availBytes: 80115773440 },
  ],
  sshSessions: 1,
};

describe('agent protocol', () => {
  test('requests encode as one JSON line with id and op', () => {
    assert.equal(encodeAgentRequest(7, 'hello', {}), '{"id":7,"op":"hello"}\n');
    assert.equal(
      encodeAgentRequest(8, 'wait-ready', { timeoutMs: 500 }),
      '{"id":8,"op":"wait-ready","timeoutMs":500}\n',
    );
    assert.equal(encodeAgentRequest(9, 'wait-ready', {}), '{"id":9,"op":"wait-ready"}\n');
    assert.throws(() => encodeAgentRequest(1.5, 'hello', {}));
    assert.throws(() => encodeAgentRequest(-1, 'ports', {}));
    assert.throws(() => encodeAgentRequest(1, 'wait-ready', { timeoutMs: -3 }));
    assert.ok(AGENT_MAX_REQUEST_BYTES === 65536);
    assert.equal(AgentRequestSchema.safeParse({ id: 1, op: 'format-disk' }).success, false);
  });

  test('every op has a result schema', () => {
    assert.deepEqual(Object.keys(AgentResultSchemas).sort(), [...AGENT_OPS].sort());
  });

  test('parses responses, errors and events', () => {
    const hello = parseAgentLine(HELLO_LINE);
    assert.equal(hello.kind, 'response');
    if (hello.kind === 'response' && hello.response.ok) {
      assert.equal(HelloResultSchema.parse(hello.response.result).hostname, 'vm');
    } else assert.fail('expected an ok response');

    const err = parseAgentLine(
      '{"id":null,"ok":false,"error":"invalid JSON at byte 0: expected an object","code":"bad_request"}',
    );
    assert.deepEqual(err, {
      kind: 'response',
      response: {
        id: null,
        ok: false,
        error: 'invalid JSON at byte 0: expected an object',
        code: 'bad_request',
      },
    });

    const ev = parseAgentLine(
      '{"event":"ready","hostKeys":["ssh-ed25519 AAAA k"],"readyAtMs":3100,"sshPort":22}',
    );
    assert.equal(ev.kind, 'event');
    if (ev.kind === 'event') {
      assert.deepEqual(ReadyEventSchema.parse(ev.event), {
        event: 'ready',
        hostKeys: ['ssh-ed25519 AAAA k'],
        readyAtMs: 3100,
        sshPort: 22,
      });
    }
    const future = parseAgentLine('{"event":"oom","victim":"cc1"}');
    assert.deepEqual(future, { kind: 'event', event: { event: 'oom', victim: 'cc1' } });

    assert.throws(() => parseAgentLine('nope'), /not JSON/);
    assert.throws(() => parseAgentLine('{"id":1,"ok":"yes"}'), /invalid response/);
    assert.throws(() => parseAgentLine('[1,2]'), /invalid response/);
  });

  test('result schemas accept what the agent sends, and tolerate new fields', () => {
    assert.deepEqual(StatsResultSchema.parse(STATS_RESULT), STATS_RESULT);
    assert.equal(StatsResultSchema.safeParse({ ...STATS_RESULT, cpuTicks: null }).success, true);
    // An older agent sends no sshSessions: the host reads it as unknown.
    const { sshSessions: _, ...older } = STATS_RESULT;
    assert.equal(StatsResultSchema.parse(older).sshSessions, null);
    assert.equal(StatsResultSchema.safeParse({ ...STATS_RESULT, memTotalKib: -1 }).success, false);
    const ports = {
      ports: [
        {
          proto: 'tcp',
          address: '0.0.0.0',
          port: 22,
          pid: 500,
          process: 'sshd',
          cmdline: 'sshd -D',
        },
        { proto: 'udp6', address: '::', port: 5353, pid: null, process: null, cmdline: null },
      ],
      truncated: false,
    };
    assert.deepEqual(PortsResultSchema.parse({ ...ports, somethingNew: 1 }), ports);
    // An older agent sends no cmdline: read as null.
    const old = { proto: 'tcp', address: '::', port: 80, pid: 7, process: 'httpd' };
    assert.deepEqual(PortsResultSchema.parse({ ports: [old], truncated: false }).ports, [
      { ...old, cmdline: null },
    ]);
    assert.equal(
      PortsResultSchema.safeParse({ ports: [{ ...ports.ports[0], port: 70000 }], truncated: false })
        .success,
      false,
    );
  });

  test('host key lines', () => {
    assert.deepEqual(parseHostKey('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG+/x= root@vm\n'), {
      type: 'ssh-ed25519',
      key: 'AAAAC3NzaC1lZDI1NTE5AAAAIG+/x=',
      comment: 'root@vm',
    });
    assert.deepEqual(parseHostKey('ecdsa-sha2-nistp256 AAAAE2Vj'), {
      type: 'ecdsa-sha2-nistp256',
      key: 'AAAAE2Vj',
    });
    assert.equal(parseHostKey('-----BEGIN OPENSSH PRIVATE KEY-----'), undefined);
    assert.equal(parseHostKey('ssh-rsa not*base64'), undefined);
  });
});
