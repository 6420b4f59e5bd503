import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_CONFIG } from '../../src/config/schema.js';
import type { CheckContext, Probe } from '../../src/doctor/checks.js';
import { BangerError } from '../../src/errors.js';
import { networkChecks } from '../../src/doctor/network.js';
import { HostNetwork, type NetRunner } from '../../src/network/index.js';
import { netFailure } from '../../src/network/runner.js';
import type { RunResult } from '../../src/util/exec.js';

/** The edge's decisions against a scripted runner (no privileges needed). */

type Handler = (args: string[], input?: string) => Partial<RunResult> | undefined;

function fakeRunner(handlers: Record<string, Handler>) {
  const calls: { line: string; input?: string }[] = [];
  const run: NetRunner = async (cmd, args, opts) => {
    const line = [cmd, ...args].join(' ');
    calls.push({ line, input: opts?.input });
    const key = Object.keys(handlers)
      .filter((k) => line.startsWith(k))
      .sort((a, b) => b.length - a.length)[0];
    const r = key ? handlers[key]!(args, opts?.input) : undefined;
    return { code: 0, signal: null, stdout: '', stderr: '', ...r };
  };
  return { run, calls, lines: () => calls.map((c) => c.line) };
}

const has =
  (...cmds: string[]) =>
  (c: string) =>
    cmds.includes(c) ? `/usr/sbin/${c}` : undefined;
const XT = ['iptables', 'ip6tables', 'ebtables'].flatMap((t) => [t, `${t}-restore`, `${t}-save`]);
const ALL_TOOLS = has(...XT, 'nft', 'sysctl', 'ip');
const cfg = { bridgeName: 'banger0', bridgeIp: '172.16.0.1', cidr: '172.16.0.0/24' };

const bridgeJson = (addrs: string[], flags = ['UP'], kind = 'bridge') =>
  JSON.stringify([
    {
      ifname: 'banger0',
      flags,
      address: '02:aa:bb:cc:dd:ee',
      linkinfo: { info_kind: kind },
      addr_info: addrs.map((a) => ({
        family: 'inet',
        local: a.split('/')[0],
        prefixlen: Number(a.split('/')[1]),
      })),
    },
  ]);

const missing = { code: 1, stderr: 'Device "banger0" does not exist.\n' };
const res = (code: number, stderr = '', stdout = ''): RunResult => ({
  code,
  signal: null,
  stdout,
  stderr,
});

describe('network: failures become one-line errors with hints', () => {
  test('missing privileges', () => {
    const e = netFailure(
      'creating bridge banger0',
      'ip',
      [],
      res(2, 'RTNETLINK answers: Operation not permitted\n'),
      { hint: 'context hint loses to the privilege hint' },
    );
    assert.equal(e.code, 'permission');
    assert.equal(
      e.message,
      'creating bridge banger0 failed: RTNETLINK answers: Operation not permitted',
    );
    assert.match(
      e.hint!,
      /run bangerd as root, or give bangerd alone cap_net_admin through a systemd unit/,
    );
    const ipt = netFailure(
      'x',
      'iptables',
      [],
      res(
        4,
        'iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n',
      ),
    );
    assert.equal(ipt.code, 'permission');
  });

  test('a tool missing inside `ip netns exec` names the package', () => {
    const e = netFailure(
      'installing rules',
      'ip',
      [],
      res(255, 'exec of "iptables-restore" failed: No such file or directory\n'),
    );
    assert.equal(e.code, 'tool_missing');
    assert.match(e.hint!, /install iptables/);
  });

  test('tun, busy, generic', () => {
    assert.match(
      netFailure(
        'creating tap bgr1',
        'ip',
        [],
        res(1, 'open: No such file or directory\nioctl(TUNSETIFF): No such device\n'),
      ).hint!,
      /modprobe tun/,
    );
    assert.equal(
      netFailure('t', 'ip', [], res(1, 'ioctl(TUNSETIFF): Device or resource busy')).code,
      'conflict',
    );
    const g = netFailure('doing x', 'ip', [], res(3, ''), { hint: 'do y' });
    assert.equal(g.line, 'doing x failed: exit 3: do y');
    assert.equal(g.code, 'network');
    assert.deepEqual(g.details?.code, 3);
  });
});

describe('network: HostNetwork decisions', () => {
  test('an existing, correct bridge costs one read', async () => {
    const f = fakeRunner({
      'ip -j -d addr show': () => ({ stdout: bridgeJson(['172.16.0.1/24']) }),
    });
    const net = HostNetwork.fromConfig(cfg, { run: f.run, which: ALL_TOOLS });
    assert.deepEqual(await net.ensureBridge(), { created: false, changes: [] });
    assert.equal(f.calls.length, 1);
  });

  test('a missing bridge is created with a fixed MAC, the address and up', async () => {
    const f = fakeRunner({ 'ip -j -d addr show': () => missing });
    const net = HostNetwork.fromConfig(cfg, { run: f.run, which: ALL_TOOLS });
    assert.deepEqual(await net.ensureBridge(), { created: true, changes: [] });
    const lines = f.lines();
    assert.equal(lines.length, 4);
    assert.match(lines[1]!, /^ip link add name banger0 address 02(:[0-9a-f]{2}){5} type bridge$/);
    assert.equal(lines[2], 'ip addr add 172.16.0.1/24 brd + dev banger0');
    assert.equal(lines[3], 'ip link set dev banger0 up');
  });

  test('bad config is refused before any command runs', () => {
    assert.throws(
      () => HostNetwork.fromConfig({ ...cfg, bridgeIp: '10.0.0.1' }),
      (e: unknown) =>
        e instanceof BangerError && e.code === 'config_invalid' && /bridge_ip/.test(e.message),
    );
    assert.throws(
      () => HostNetwork.fromConfig({ ...cfg, bridgeName: 'way-too-long-bridge' }),
      /bridge_name/,
    );
  });

  test('no firewall tool: starting any VM is an error (no isolation), an empty set a no-op', async () => {
    const f = fakeRunner({});
    const net = HostNetwork.fromConfig(cfg, { run: f.run, which: has('ip', 'sysctl', 'iptables') });
    for (const nat of [true, false]) {
      const e = await net.applyNat([{ id: 'v1', ip: '172.16.0.2', nat }]).then(
        () => undefined,
        (x: unknown) => x,
      );
      assert.ok(e instanceof BangerError);
      assert.equal(e.code, 'tool_missing');
      assert.match(
        e.message,
        /^isolating VM v1 needs a firewall tool: auto: nft not found, and the iptables backend lacks iptables-restore, /,
      );
    }
    assert.deepEqual(await net.applyNat([]), {
      backend: undefined,
      natVms: 0,
      vms: 0,
      ipForward: 'untouched',
    });
    assert.equal(f.calls.length, 0);
  });

  test('two VMs coming up at once: the running list is read under the firewall lock, so the last rule set holds both', async () => {
    const f = fakeRunner({ 'sysctl -n': () => ({ stdout: '1\n' }) });
    const net = HostNetwork.fromConfig(cfg, { run: f.run, which: ALL_TOOLS, firewall: 'auto' });
    const up: { id: string; ip: string; nat: boolean }[] = [];
    const reads: number[] = [];
    const list = () => {
      reads.push(up.length);
      return [...up];
    };
    // A is in the table when both calls are made, B only after; both reads come later.
    up.push({ id: 'a', ip: '172.16.0.2', nat: true });
    const first = net.applyNat(list);
    const second = net.applyNat(list);
    up.push({ id: 'b', ip: '172.16.0.3', nat: true });
    const [r1, r2] = await Promise.all([first, second]);
    assert.deepEqual(reads, [2, 2]);
    assert.equal(r1.vms, 2);
    assert.equal(r2.vms, 2);
  });

  test('iptables apply: per tool one listing and one restore; the jumps go in only when missing', async () => {
    let present = false;
    const saves: Record<string, string> = {
      'iptables-save':
        '*nat\n-A POSTROUTING -m comment --comment banger -j BANGER-POSTROUTING\nCOMMIT\n' +
        '*mangle\n-A INPUT -m comment --comment banger -j BANGER-INPUT\n-A FORWARD -m comment --comment banger -j BANGER-GUARD\nCOMMIT\n' +
        '*filter\n-A FORWARD -m comment --comment banger -j BANGER-FORWARD\nCOMMIT\n',
      'ip6tables-save':
        '*mangle\n-A INPUT -m comment --comment banger -j BANGER-INPUT\n-A FORWARD -m comment --comment banger -j BANGER-GUARD\nCOMMIT\n',
      'ebtables-save': '*filter\n-A FORWARD -j BANGER-G2G\n*nat\n-A PREROUTING -j BANGER-GUESTS\n',
    };
    const f = fakeRunner({
      ...Object.fromEntries(
        Object.entries(saves).map(([k, v]) => [k, () => ({ stdout: present ? v : '' })]),
      ),
      'sysctl -n': () => ({ stdout: '1\n' }),
    });
    const net = HostNetwork.fromConfig(cfg, { run: f.run, which: ALL_TOOLS, firewall: 'auto' });
    const vms = [{ id: 'v1', ip: '172.16.0.2', nat: true, tap: 'bgrv1', mac: '02:00:00:00:00:01' }];
    assert.equal((await net.applyNat(vms)).ipForward, 'already');
    const tools = Object.keys(saves);
    assert.deepEqual(f.lines(), [
      ...tools, // the ip_forward record, read once
      'sysctl -n net.ipv4.ip_forward',
      ...tools,
      'iptables-restore -w --noflush',
      'ip6tables-restore -w --noflush',
      'ebtables-restore --noflush',
    ]);
    const input = (cmd: string): string => f.calls.find((c) => c.line === cmd)!.input!;
    const v4 = input('iptables-restore -w --noflush');
    assert.match(v4, /^\*nat\n:BANGER-POSTROUTING - \[0:0\]\n/);
    assert.match(
      v4,
      /-A POSTROUTING -m comment --comment banger -j BANGER-POSTROUTING\nCOMMIT\n\*mangle/,
    );
    assert.match(v4, /-A FORWARD -m comment --comment banger -j BANGER-FORWARD\nCOMMIT\n$/);
    assert.match(
      input('ip6tables-restore -w --noflush'),
      /^\*mangle\n[^]*-A INPUT -m comment --comment banger -j BANGER-INPUT\n-A FORWARD /m,
    );
    const ebt = input('ebtables-restore --noflush');
    assert.match(ebt, /-i bgrv1 -j DROP\n/);
    assert.match(ebt, /-A PREROUTING -j BANGER-GUESTS\nCOMMIT\n\*filter/);
    present = true;
    f.calls.length = 0;
    await net.applyNat(vms);
    const restores = f.calls.filter((c) => c.line.includes('-restore')).map((c) => c.input!);
    assert.equal(restores.length, 3);
    assert.ok(
      !restores.some((r) => /^-A (POSTROUTING|INPUT|FORWARD|PREROUTING) /m.test(r)),
      'no duplicate jumps',
    );
  });

  test('an unreadable table is an error, not a blind append', async () => {
    const f = fakeRunner({
      'iptables-save': () => ({ code: 4, stderr: 'iptables-save: Permission denied' }),
    });
    const net = HostNetwork.fromConfig(cfg, { run: f.run, which: ALL_TOOLS });
    await assert.rejects(
      net.applyNat([{ id: 'v1', ip: '172.16.0.2', nat: true }]),
      /reading the iptables tables failed/,
    );
    assert.ok(!f.lines().some((l) => l.startsWith('iptables-restore')));
  });

  test('ip_forward: on only while a NAT VM runs, put back to 0 when banger turned it on', async () => {
    let recorded = false;
    const f = fakeRunner({
      'sysctl -n': () => ({ stdout: '0\n' }),
      'nft list table inet banger': () => ({
        stdout: recorded ? 'table inet banger {\n\tchain ip_forward_was_0 {\n\t}\n}\n' : '',
      }),
    });
    const net = HostNetwork.fromConfig(cfg, { run: f.run, which: ALL_TOOLS, firewall: 'nft' });
    assert.equal(
      (await net.applyNat([{ id: 'a', ip: '172.16.0.2', nat: false }])).ipForward,
      'untouched',
    );
    assert.ok(!f.lines().some((l) => l.startsWith('sysctl')));
    assert.equal(
      (await net.applyNat([{ id: 'a', ip: '172.16.0.2', nat: true }])).ipForward,
      'enabled',
    );
    assert.ok(f.lines().includes('sysctl -q -w net.ipv4.ip_forward=1'));
    const applies = f.calls.filter((c) => c.line === 'nft -f -');
    assert.equal(applies.length, 2);
    assert.match(applies[1]!.input!, /chain ip_forward_was_0 \{/, 'recorded in the rules');
    assert.equal(
      (await net.applyNat([{ id: 'a', ip: '172.16.0.2', nat: false }])).ipForward,
      'restored',
    );
    assert.ok(f.lines().includes('sysctl -q -w net.ipv4.ip_forward=0'));

    // A daemon restart reads the record back from the rules.
    recorded = true;
    f.calls.length = 0;
    const restarted = HostNetwork.fromConfig(cfg, {
      run: f.run,
      which: ALL_TOOLS,
      firewall: 'nft',
    });
    assert.equal((await restarted.applyNat([])).ipForward, 'restored');
    assert.deepEqual(f.lines(), [
      'nft list table inet banger',
      'nft list table bridge banger',
      'sysctl -q -w net.ipv4.ip_forward=0',
      'nft -f -',
    ]);
    // Forwarding that was already on is never turned off.
    recorded = false;
    f.calls.length = 0;
    const on = fakeRunner({ 'sysctl -n': () => ({ stdout: '1\n' }) });
    const other = HostNetwork.fromConfig(cfg, { run: on.run, which: ALL_TOOLS, firewall: 'nft' });
    assert.equal(
      (await other.applyNat([{ id: 'a', ip: '172.16.0.2', nat: true }])).ipForward,
      'already',
    );
    assert.equal((await other.applyNat([])).ipForward, 'untouched');
    assert.ok(!on.lines().some((l) => l.startsWith('sysctl -q -w')));
  });

  test('concurrent applies are serialised; the last call wins', async () => {
    const inputs: string[] = [];
    let active = 0;
    let maxActive = 0;
    const run: NetRunner = async (cmd, _args, opts) => {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setTimeout(r, 5));
      active--;
      if (cmd === 'nft' && opts?.input) inputs.push(opts.input);
      return res(0, '', cmd === 'sysctl' ? '1' : '');
    };
    const net = HostNetwork.fromConfig(cfg, { run, which: ALL_TOOLS, firewall: 'nft' });
    await Promise.all([
      net.applyNat([{ id: 'a', ip: '172.16.0.2', nat: true }]),
      net.applyNat([{ id: 'b', ip: '172.16.0.3', nat: true }]),
    ]);
    assert.equal(maxActive, 1);
    assert.match(inputs.at(-1)!, /banger vm b/);
  });
});

describe('network: doctor checks', () => {
  const hostProbe = (netAdmin: boolean): Probe =>
    ({ hasNetAdmin: () => netAdmin }) as unknown as Probe;
  const ctx = (netAdmin = true): CheckContext => ({
    config: DEFAULT_CONFIG,
    stateDir: '/s',
    runtimeDir: '/r',
    probe: hostProbe(netAdmin),
  });
  const checksWith = (
    files: Record<string, string>,
    handlers: Record<string, Handler>,
    tools = ALL_TOOLS,
    firewall?: 'nft',
  ) =>
    Object.fromEntries(
      networkChecks(
        { readFile: (f) => files[f], which: tools, run: fakeRunner(handlers).run },
        { firewall },
      ).map((c) => [c.id, c]),
    );

  test('a fresh host passes (bridge created later, forwarding turned on later)', async () => {
    const c = checksWith(
      { '/proc/sys/net/ipv4/ip_forward': '0\n' },
      {
        'ip -j -d addr show': () => missing,
        'iptables-save': () => ({ stdout: '*nat\nCOMMIT\n' }),
      },
    );
    for (const id of Object.keys(c)) {
      const r = await c[id]!.run(ctx());
      assert.equal(r.status, 'pass', `${id}: ${r.detail}`);
    }
    assert.match((await c['net:bridge']!.run(ctx())).detail, /does not exist yet/);
  });

  test('problems are warnings/failures with hints', async () => {
    const c = checksWith(
      {
        '/proc/sys/net/ipv4/ip_forward': '0\n',
        '/proc/sys/net/bridge/bridge-nf-call-iptables': '1\n',
      },
      {
        'ip -j -d addr show': () => ({ stdout: bridgeJson(['192.0.2.1/24']) }),
        'ip -j link show master': () => ({ stdout: '[]' }),
      },
      has('nft'),
      'nft',
    );
    const fwd = await c['net:ip-forward']!.run(ctx(false));
    assert.equal(fwd.status, 'warn');
    assert.match(fwd.hint!, /sysctl -w net\.ipv4\.ip_forward=1/);
    const br = await c['net:bridge']!.run(ctx());
    assert.equal(br.status, 'warn');
    assert.match(br.detail, /has 192\.0\.2\.1\/24, config wants 172\.16\.0\.1\/24/);
    // guest↔guest is off by default: nothing for br_netfilter to break; with it on, a warning
    assert.equal((await c['net:br-netfilter']!.run(ctx())).status, 'pass');
    const nf = await c['net:br-netfilter']!.run({
      ...ctx(),
      config: { ...DEFAULT_CONFIG, guestToGuest: true },
    });
    assert.equal(nf.status, 'warn');
    assert.match(nf.hint!, /firewall = "iptables"/);
    assert.equal((await c['net:sysctl']!.run(ctx())).status, 'fail');
    const none = checksWith({}, {}, has('ip'));
    const fw = await none['net:firewall']!.run(ctx());
    assert.equal(fw.status, 'fail');
    assert.match(fw.detail, /VMs cannot start \(their isolation and NAT are firewall rules\)$/);
  });
});
