import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  planRouting,
  probeResolved,
  resolvedCommands,
  ResolvedRouting,
  type ResolvedFacts,
} from '../../src/network/dns/index.js';
import type { NetRunner } from '../../src/network/runner.js';

const RESOLVED: ResolvedFacts = {
  resolvectl: '/usr/bin/resolvectl',
  resolvedPid: 321,
  sameNetns: true,
};
const SERVER = { host: '127.0.0.1', port: 42069 };

describe('dns routing through systemd-resolved', () => {
  test('the commands: per-link server and ~vm routing domain, never a default route', () => {
    assert.deepEqual(resolvedCommands('banger0', SERVER), [
      { cmd: 'resolvectl', args: ['dns', 'banger0', '127.0.0.1:42069'] },
      { cmd: 'resolvectl', args: ['domain', 'banger0', '~vm'] },
      { cmd: 'resolvectl', args: ['default-route', 'banger0', 'false'] },
    ]);
  });

  test('the plan: applies only where resolved runs beside bangerd and DNS listens', () => {
    const plan = (over: Partial<Parameters<typeof planRouting>[0]>) =>
      planRouting({ mode: 'auto', facts: RESOLVED, link: 'br9', server: SERVER, ...over });
    assert.deepEqual(plan({}), { apply: true, commands: resolvedCommands('br9', SERVER) });
    // cannot tell the namespace (not allowed to read it): still applies
    assert.equal(plan({ facts: { ...RESOLVED, sameNetns: undefined } }).apply, true);
    const reasons: [Partial<Parameters<typeof planRouting>[0]>, string][] = [
      [{ mode: 'off' }, 'dns_routing = "off" in config.toml'],
      [
        { facts: { ...RESOLVED, resolvedPid: undefined } },
        'systemd-resolved is not running on this host',
      ],
      [{ facts: { ...RESOLVED, resolvectl: undefined } }, 'resolvectl is not on PATH'],
      [
        { facts: { ...RESOLVED, sameNetns: false } },
        'systemd-resolved runs in another network namespace than bangerd',
      ],
      [{ server: undefined }, "banger's DNS server is not listening"],
    ];
    for (const [over, reason] of reasons) assert.deepEqual(plan(over), { apply: false, reason });
  });

  test('apply runs the commands through the injected runner, once per link and server', async () => {
    const calls: string[] = [];
    const run: NetRunner = async (cmd, args) => {
      calls.push([cmd, ...args].join(' '));
      return { code: 0, stdout: '', stderr: '', signal: null };
    };
    const r = new ResolvedRouting(run, () => RESOLVED);
    const st = await r.apply('auto', 'banger0', SERVER, true);
    assert.equal(st.state, 'applied');
    assert.deepEqual(calls, [
      'resolvectl dns banger0 127.0.0.1:42069',
      'resolvectl domain banger0 ~vm',
      'resolvectl default-route banger0 false',
    ]);
    await r.apply('auto', 'banger0', SERVER, false);
    assert.equal(calls.length, 3, 'same link and server, bridge not recreated: nothing to do');
    await r.apply('auto', 'banger0', SERVER, true);
    assert.equal(calls.length, 6, 'the bridge was recreated: applied again');
    await r.apply('auto', 'banger0', { host: '127.0.0.1', port: 5300 }, false);
    assert.equal(calls[6], 'resolvectl dns banger0 127.0.0.1:5300');
  });

  test('a failing resolvectl is a one-line state, not an exception', async () => {
    const run: NetRunner = async () => ({
      code: 1,
      stdout: '',
      stderr: 'Failed to set DNS configuration: Access denied\n',
      signal: null,
    });
    const st = await new ResolvedRouting(run, () => RESOLVED).apply(
      'auto',
      'banger0',
      SERVER,
      true,
    );
    assert.deepEqual(st, {
      state: 'failed',
      detail:
        'resolvectl dns banger0 127.0.0.1:42069 failed: Failed to set DNS configuration: Access denied',
    });
  });

  test('mode off runs nothing', async () => {
    let ran = false;
    const run: NetRunner = async () => {
      ran = true;
      return { code: 0, stdout: '', stderr: '', signal: null };
    };
    const st = await new ResolvedRouting(run, () => RESOLVED).apply('off', 'banger0', SERVER, true);
    assert.equal(st.state, 'off');
    assert.equal(ran, false);
  });

  test('probeResolved finds systemd-resolved and compares network namespaces in /proc', () => {
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-proc-'));
    try {
      const mk = (pid: string, comm: string, ns: string): void => {
        fs.mkdirSync(path.join(proc, pid, 'ns'), { recursive: true });
        fs.writeFileSync(path.join(proc, pid, 'comm'), `${comm}\n`);
        fs.symlinkSync(ns, path.join(proc, pid, 'ns', 'net'));
      };
      mk('self', 'bangerd', 'net:[4026531840]');
      mk('1', 'systemd', 'net:[4026531840]');
      const which = (c: string): string | undefined =>
        c === 'resolvectl' ? '/bin/resolvectl' : undefined;
      assert.deepEqual(probeResolved(proc, which), {
        resolvectl: '/bin/resolvectl',
        resolvedPid: undefined,
        sameNetns: undefined,
      });
      mk('77', 'systemd-resolve', 'net:[4026531840]');
      assert.deepEqual(probeResolved(proc, which), {
        resolvectl: '/bin/resolvectl',
        resolvedPid: 77,
        sameNetns: true,
      });
      fs.rmSync(path.join(proc, '77', 'ns', 'net'));
      fs.symlinkSync('net:[4026532999]', path.join(proc, '77', 'ns', 'net'));
      assert.equal(probeResolved(proc, which).sameNetns, false);
    } finally {
      fs.rmSync(proc, { recursive: true, force: true });
    }
  });
});
