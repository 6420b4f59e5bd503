import assert from 'node:assert/strict';
import fs from 'node:fs';
import { before, describe, test, type TestContext } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { HostNetwork, macForVm, TapPool } from '../../src/network/index.js';
import { recordingRunner } from '../../src/network/runner.js';
import { which } from '../../src/util/exec.js';
import { needs } from '../helpers/ci.js';
import {
  canUseNetns,
  count,
  iptablesSave,
  netnsLab,
  tcpAsk,
  vethPair,
  whoamiServer,
  type Netns,
  type NetnsLab,
} from './network-helpers.js';

/**
 * The HostNetwork edge against a real kernel. Every command runs inside a
 * namespace the test creates (`ip netns exec bgt-<owner>-net-…`); nothing touches
 * the root namespace. No VMs are started.
 */

const CONFIG = { bridgeName: 'banger0', bridgeIp: '172.16.0.1', cidr: '172.16.0.0/24' };
const rootIpForward = () => fs.readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();

let cannot: string | undefined;
before(async () => {
  cannot = await canUseNetns();
});

/**
 * One namespace + HostNetwork per test, cleaned up even when the test fails.
 * Without network namespaces the test is skipped here and fails in CI.
 */
async function setup(
  t: TestContext,
  opts: {
    firewall?: 'iptables' | 'nft';
    log?: { cmd: string; args: string[]; code: number }[];
  } = {},
): Promise<{ lab: NetnsLab; ns: Netns; net: HostNetwork } | undefined> {
  if (!needs(t, cannot === undefined, cannot ?? '')) return undefined;
  const lab = netnsLab();
  t.after(() => lab.cleanup());
  const ns = await lab.add('h');
  const run = opts.log ? recordingRunner(ns.runner, opts.log) : ns.runner;
  const net = HostNetwork.fromConfig(CONFIG, { run, firewall: opts.firewall });
  return { lab, ns, net };
}

const linkJson = async (ns: Netns, dev: string) =>
  JSON.parse((await ns.must('ip', ['-j', '-d', 'addr', 'show', 'dev', dev])).stdout)[0] as {
    ifindex: number;
    address: string;
    master?: string;
    flags: string[];
    linkinfo: { info_kind: string; info_data?: Record<string, unknown> };
    addr_info: { family: string; local: string; prefixlen: number }[];
  };

const rejectsWith = async (
  p: Promise<unknown>,
  re: RegExp,
  code?: string,
): Promise<BangerError> => {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof BangerError, `expected BangerError, got ${String(e)}`);
    assert.match(e.message, re);
    assert.ok(e.hint, 'error has a hint');
    assert.doesNotMatch(e.message, /\n/, 'one line');
    if (code) assert.equal(e.code, code);
    return e;
  }
  assert.fail(`expected rejection matching ${re}`);
};

describe('network e2e: bridge', () => {
  test('ensureBridge creates the bridge once, with the address and a fixed MAC', async (t) => {
    const log: { cmd: string; args: string[]; code: number }[] = [];
    const s = await setup(t, { log });
    if (!s) return;
    const first = await s.net.ensureBridge();
    assert.deepEqual(first, { created: true, changes: [] });
    const br = await linkJson(s.ns, 'banger0');
    assert.equal(br.linkinfo.info_kind, 'bridge');
    assert.ok(br.flags.includes('UP'));
    assert.deepEqual(
      br.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
      ['172.16.0.1/24'],
    );
    assert.match(br.address, /^02:/);

    log.length = 0;
    const second = await s.net.ensureBridge();
    assert.deepEqual(second, { created: false, changes: [] });
    assert.equal(log.length, 1, `one read, no changes: ${JSON.stringify(log)}`);
    const again = await linkJson(s.ns, 'banger0');
    assert.equal(again.ifindex, br.ifindex, 'same bridge, not recreated');
    assert.equal(again.addr_info.filter((a) => a.family === 'inet').length, 1);

    // Concurrent callers share the work and do not race into "File exists".
    await s.ns.must('ip', ['link', 'del', 'banger0']);
    const both = await Promise.all([s.net.ensureBridge(), s.net.ensureBridge()]);
    assert.deepEqual(
      both.map((b) => b.created),
      [true, false],
    );
  });

  test('a wrong address is fixed when nothing is attached, refused otherwise', async (t) => {
    const s = await setup(t);
    if (!s) return;
    await s.ns.must('ip', ['link', 'add', 'banger0', 'type', 'bridge']);
    await s.ns.must('ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'banger0']);
    const fixed = await s.net.ensureBridge();
    assert.equal(fixed.created, false);
    assert.deepEqual(fixed.changes, [
      'removed address 192.0.2.1/24',
      'added address 172.16.0.1/24',
      'brought it up',
    ]);
    const br = await linkJson(s.ns, 'banger0');
    assert.deepEqual(
      br.addr_info.filter((a) => a.family === 'inet').map((a) => a.local),
      ['172.16.0.1'],
    );

    await s.net.createTap('bgrtest1');
    await s.ns.must('ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'banger0']);
    await rejectsWith(
      s.net.ensureBridge(),
      /bridge banger0 has address 192\.0\.2\.1\/24 but config wants 172\.16\.0\.1\/24/,
      'conflict',
    );
    // Only the prefix changed (cidr widened): fixed even with VMs attached.
    await s.ns.must('ip', ['addr', 'del', '192.0.2.1/24', 'dev', 'banger0']);
    const wide = HostNetwork.fromConfig({ ...CONFIG, cidr: '172.16.0.0/20' }, { run: s.ns.runner });
    assert.deepEqual((await wide.ensureBridge()).changes, [
      'removed address 172.16.0.1/24',
      'added address 172.16.0.1/20',
    ]);
  });

  test('a non-bridge interface with the bridge name is an error, not clobbered', async (t) => {
    const s = await setup(t);
    if (!s) return;
    await s.ns.must('ip', ['link', 'add', 'banger0', 'type', 'veth', 'peer', 'name', 'bgvpeer']);
    const e = await rejectsWith(
      s.net.ensureBridge(),
      /interface banger0 exists but is a veth device/,
      'conflict',
    );
    assert.match(e.hint!, /bridge_name/);
    await rejectsWith(s.net.deleteBridge(), /not a bridge/);
    assert.equal((await linkJson(s.ns, 'banger0')).linkinfo.info_kind, 'veth');
  });
});

describe('network e2e: taps', () => {
  test('create, attach, list (ours only), delete, clean up orphans', async (t) => {
    const s = await setup(t);
    if (!s) return;
    await s.net.ensureBridge();
    const a = 'bgr0123456789ab';
    await s.net.createTap(a);
    await s.net.createTap('bgr-pool1');
    await s.ns.must('ip', ['tuntap', 'add', 'dev', 'tap0', 'mode', 'tap']); // not ours
    await s.ns.must('ip', ['tuntap', 'add', 'dev', 'bgrtun', 'mode', 'tun']); // a tun, not a tap

    const tap = await linkJson(s.ns, a);
    assert.equal(tap.master, 'banger0');
    assert.ok(tap.flags.includes('UP'));
    assert.equal(tap.linkinfo.info_kind, 'tun');
    assert.deepEqual(
      { ...tap.linkinfo.info_data },
      { type: 'tap', pi: false, vnet_hdr: false, multi_queue: false, persist: true },
    );
    const listed = await s.net.listTaps();
    assert.deepEqual(
      listed.map((x) => [x.name, x.master, x.up, x.inUse]),
      [
        ['bgr-pool1', 'banger0', true, false],
        [a, 'banger0', true, false],
      ],
    );

    // Re-creating an idle tap reuses it (idempotent).
    await s.net.createTap(a);
    assert.equal((await linkJson(s.ns, a)).ifindex, tap.ifindex);

    const orphans = await s.net.cleanupOrphans([a]);
    assert.deepEqual(orphans, { deleted: ['bgr-pool1'], inUse: [] });
    assert.equal(await s.net.deleteTap(a), true);
    assert.equal(await s.net.deleteTap(a), false);
    assert.deepEqual(await s.net.listTaps(), []);
    // Others' interfaces were not touched.
    assert.equal((await s.ns.exec('ip', ['link', 'show', 'dev', 'tap0'])).code, 0);
    await assert.rejects(s.net.deleteTap('tap0'), /not a banger tap name/);
    await assert.rejects(s.net.createTap('eth0'), /not a banger tap name/);
  });

  test('a tap cannot be attached without the bridge; nothing is left behind', async (t) => {
    const s = await setup(t);
    if (!s) return;
    const e = await rejectsWith(
      s.net.createTap('bgrnobridge'),
      /attaching tap bgrnobridge to bridge banger0 failed/,
    );
    assert.match(e.hint!, /bridge banger0 is missing/);
    assert.deepEqual(await s.net.listTaps(), []);
  });

  test('QEMU opens a pre-created tap with vnet_hdr=on; an open tap counts as in use', async (t) => {
    const qemu = which('qemu-system-x86_64');
    if (!qemu) return void needs(t, false, 'qemu-system-x86_64 is not installed');
    const s = await setup(t);
    if (!s) return;
    await s.net.ensureBridge();
    const name = 'bgrqemu';
    await s.net.createTap(name);
    // `-M none -S`: no CPU, no guest; QEMU only opens its tap backend.
    const child = s.lab.spawnIn(s.ns, qemu, [
      '-M',
      'none',
      '-S',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-monitor',
      'none',
      '-netdev',
      `tap,id=n0,ifname=${name},script=no,downscript=no,vnet_hdr=on`,
    ]);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = Date.now() + 10_000;
    let info = await s.net.tapInfo(name);
    while (!info?.inUse && Date.now() < deadline && child.exitCode === null) {
      await new Promise((r) => setTimeout(r, 50));
      info = await s.net.tapInfo(name);
    }
    assert.ok(info?.inUse, `QEMU attached to the tap (stderr: ${stderr})`);
    assert.equal(info.vnetHdr, true, 'QEMU turned vnet_hdr on');
    assert.deepEqual(await s.net.cleanupOrphans([]), { deleted: [], inUse: [name] });
    await rejectsWith(s.net.createTap(name), /tap bgrqemu already exists and is in use/);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    assert.equal((await s.net.tapInfo(name))?.inUse, false);
    assert.deepEqual(await s.net.cleanupOrphans([]), { deleted: [name], inUse: [] });
  });

  test('warm pool: fill, take, refill, give back, adopt after restart, drain', async (t) => {
    const s = await setup(t);
    if (!s) return;
    await s.net.ensureBridge();
    const errors: unknown[] = [];
    const pool = new TapPool(s.net, 2, { onError: (e) => errors.push(e) });
    await pool.fill();
    const warm = pool.idleTaps;
    assert.equal(warm.length, 2);
    const took = await pool.take('vm1');
    assert.ok(warm.includes(took));
    await pool.fill(); // the background refill, awaited
    assert.equal(pool.idleTaps.length, 2);
    assert.equal((await s.net.listTaps()).length, 3);
    assert.equal((await linkJson(s.ns, took)).master, 'banger0');

    // Pool full: a returned tap is deleted.
    await pool.give(took);
    assert.equal((await s.net.listTaps()).length, 2);

    // A tap deleted behind the pool's back is skipped, not handed out.
    await s.ns.must('ip', ['link', 'del', pool.idleTaps[0]!]);
    const t2 = await pool.take('vm2');
    assert.ok((await s.net.tapInfo(t2))?.master === 'banger0');

    // "Daemon restart": a new pool adopts idle pool taps, VM taps stay.
    await pool.fill();
    const restarted = new TapPool(s.net, 2);
    const report = await s.net.reconcile([{ id: 'vm2', ip: '172.16.0.2', nat: false, tap: t2 }], {
      pool: restarted,
    });
    assert.equal(report.adoptedTaps.length, 2);
    assert.deepEqual(report.deletedTaps, []);
    assert.deepEqual(new Set(restarted.idleTaps), new Set(pool.idleTaps));

    await restarted.drain();
    assert.deepEqual(
      (await s.net.listTaps()).map((x) => x.name),
      [t2],
    );
    assert.deepEqual(errors, []);
  });
});

const vms3 = [
  { id: 'vma', ip: '172.16.0.2', nat: true },
  { id: 'vmb', ip: '172.16.0.3', nat: true },
  { id: 'vmc', ip: '172.16.0.4', nat: false },
];

describe('network e2e: NAT rules (iptables)', () => {
  test('exact once per NAT VM, stable across re-applies and a daemon restart', async (t) => {
    const s = await setup(t, { firewall: 'iptables' });
    if (!s) return;
    const rootBefore = rootIpForward();
    await s.ns.must('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
    // Someone else's rules must survive everything banger does.
    await s.ns.must('iptables', [
      '-t',
      'nat',
      '-A',
      'POSTROUTING',
      '-s',
      '192.0.2.0/24',
      '-j',
      'MASQUERADE',
    ]);
    await s.ns.must('iptables', ['-A', 'FORWARD', '-i', 'other0', '-j', 'ACCEPT']);
    await s.ns.must('iptables', ['-P', 'FORWARD', 'DROP']);
    await s.net.ensureBridge();

    const r1 = await s.net.applyNat(vms3);
    assert.deepEqual(r1, { backend: 'iptables', natVms: 2, vms: 3, ipForward: 'enabled' });
    const save1 = await iptablesSave(s.ns);
    for (const id of ['vma', 'vmb']) {
      assert.equal(
        count(save1, new RegExp(`-A BANGER-POSTROUTING .*"banger vm ${id}" -j MASQUERADE`)),
        1,
        id,
      );
      assert.equal(
        count(save1, new RegExp(`-A BANGER-FORWARD .*"banger vm ${id}" -j ACCEPT`)),
        1,
        id,
      );
    }
    assert.doesNotMatch(save1, /banger vm vmc/);
    assert.equal(count(save1, /^-A POSTROUTING .*-j BANGER-POSTROUTING$/), 1);
    assert.equal(count(save1, /^-A FORWARD .*-j BANGER-FORWARD$/), 1);
    // The jump is appended after the administrator's rules (still ahead of a DROP policy).
    assert.match(
      save1,
      /:FORWARD DROP[^]*\n-A FORWARD -i other0 -j ACCEPT\n-A FORWARD -m comment --comment banger -j BANGER-FORWARD\n/,
    );
    assert.equal((await s.ns.must('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim(), '1');
    assert.equal(rootIpForward(), rootBefore, 'root namespace ip_forward untouched');

    const r2 = await s.net.applyNat(vms3);
    assert.equal(r2.ipForward, 'already');
    assert.equal(await iptablesSave(s.ns), save1, 'second apply changes nothing');

    // Daemon restart: a fresh instance reconciles to the same rules.
    const restarted = HostNetwork.fromConfig(CONFIG, { run: s.ns.runner, firewall: 'iptables' });
    const rep = await restarted.reconcile(vms3);
    assert.equal(rep.nat.natVms, 2);
    assert.equal(await iptablesSave(s.ns), save1, 'restart reconcile adds no duplicates');
    assert.deepEqual((await restarted.firewallStatus())?.natVmIds, ['vma', 'vmb']);

    // A VM loses NAT, another is deleted.
    await s.net.applyNat([{ ...vms3[0]!, nat: false }, vms3[2]!]);
    const save2 = await iptablesSave(s.ns);
    assert.doesNotMatch(save2, /banger vm/);
    assert.match(save2, /-j DROP/);

    // Last VM gone: nothing of banger's is left; others' rules remain.
    await s.net.applyNat([]);
    const save3 = await iptablesSave(s.ns);
    assert.doesNotMatch(save3, /BANGER|banger/);
    assert.match(save3, /-A POSTROUTING -s 192\.0\.2\.0\/24 -j MASQUERADE/);
    assert.match(save3, /-A FORWARD -i other0 -j ACCEPT/);
    assert.equal((await s.net.firewallStatus())?.installed, false);
    assert.doesNotMatch((await s.ns.must('ip6tables-save', [])).stdout, /BANGER|banger/);
    assert.doesNotMatch((await s.ns.must('ebtables-save', [])).stdout, /BANGER|banger/);
    assert.equal(
      (await s.ns.must('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim(),
      '0',
      'ip_forward put back',
    );
  });

  test('teardown removes jumps (also foreign-spelled ones) and chains; idempotent', async (t) => {
    const s = await setup(t, { firewall: 'iptables' });
    if (!s) return;
    await s.net.applyNat(vms3);
    // An older/hand-made jump without banger's comment must not block -X.
    await s.ns.must('iptables', ['-A', 'FORWARD', '-j', 'BANGER-FORWARD']);
    await s.net.teardownNat();
    assert.doesNotMatch(await iptablesSave(s.ns), /BANGER|banger/);
    await s.net.teardownNat();
    await s.net.applyNat([]);
    assert.doesNotMatch(await iptablesSave(s.ns), /BANGER|banger/);
  });

  test('a removed jump is restored; a stale VM rule disappears at reconcile', async (t) => {
    const s = await setup(t, { firewall: 'iptables' });
    if (!s) return;
    await s.net.applyNat(vms3);
    await s.ns.must('iptables', [
      '-D',
      'FORWARD',
      '-m',
      'comment',
      '--comment',
      'banger',
      '-j',
      'BANGER-FORWARD',
    ]);
    // Daemon was down while vmb was deleted.
    const restarted = HostNetwork.fromConfig(CONFIG, { run: s.ns.runner, firewall: 'iptables' });
    await restarted.reconcile([vms3[0]!, vms3[2]!]);
    const save = await iptablesSave(s.ns);
    assert.equal(count(save, /^-A FORWARD .*-j BANGER-FORWARD$/), 1);
    assert.doesNotMatch(save, /banger vm vmb/);
    assert.equal(count(save, /banger vm vma/), 3, 'masquerade, mangle return, filter accept');
  });
});

describe('network e2e: NAT rules (nft)', () => {
  test('table inet banger is replaced atomically and removed with the last VM', async (t) => {
    if (!needs(t, Boolean(which('nft')), 'nft is not installed')) return;
    const s = await setup(t, { firewall: 'nft' });
    if (!s) return;
    await s.net.applyNat(vms3);
    const list1 = (await s.ns.must('nft', ['list', 'table', 'inet', 'banger'])).stdout;
    await s.net.applyNat(vms3);
    const list2 = (await s.ns.must('nft', ['list', 'table', 'inet', 'banger'])).stdout;
    assert.equal(list2, list1);
    assert.equal(count(list1, /masquerade comment "banger vm vma"/), 1);
    assert.equal(count(list1, /masquerade/), 2);
    const st = await s.net.firewallStatus();
    assert.deepEqual(st?.natVmIds, ['vma', 'vmb']);

    await s.net.applyNat([vms3[1]!]);
    assert.deepEqual((await s.net.firewallStatus())?.natVmIds, ['vmb']);
    await s.net.applyNat([]);
    assert.equal((await s.ns.exec('nft', ['list', 'table', 'inet', 'banger'])).code, 1);
    assert.equal((await s.ns.exec('nft', ['list', 'table', 'bridge', 'banger'])).code, 1);
    await s.net.teardownNat();
  });

  test("switching backends: reconcile removes the other backend's leftovers", async (t) => {
    if (!needs(t, Boolean(which('nft')), 'nft is not installed')) return;
    const s = await setup(t, { firewall: 'iptables' });
    if (!s) return;
    await s.net.applyNat(vms3);
    const viaNft = HostNetwork.fromConfig(CONFIG, { run: s.ns.runner, firewall: 'nft' });
    const rep = await viaNft.reconcile(vms3);
    assert.equal(rep.otherBackendRemoved, 'iptables');
    assert.doesNotMatch(await iptablesSave(s.ns), /BANGER|banger/);
    assert.equal((await viaNft.firewallStatus())?.natVmIds.length, 2);
    const back = await s.net.reconcile(vms3);
    assert.equal(back.otherBackendRemoved, 'nft');
    assert.equal((await s.ns.exec('nft', ['list', 'table', 'inet', 'banger'])).code, 1);
  });
});

describe('network e2e: privileges', () => {
  test('without CAP_NET_ADMIN each step fails with one line naming the object and a hint', async (t) => {
    if (!needs(t, Boolean(which('setpriv')), 'setpriv is not installed')) return;
    const s = await setup(t);
    if (!s) return;
    const drop = ['--inh-caps=-net_admin', '--bounding-set=-net_admin'];
    const weak = HostNetwork.fromConfig(CONFIG, {
      run: (cmd, args, o) => s.ns.runner('setpriv', [...drop, cmd, ...args], o),
      firewall: 'iptables',
    });
    const e1 = await rejectsWith(
      weak.ensureBridge(),
      /^creating bridge banger0 failed: .*Operation not permitted/,
      'permission',
    );
    assert.match(e1.hint!, /cap_net_admin/);
    await s.net.ensureBridge(); // privileged
    await rejectsWith(weak.createTap('bgrweak'), /^creating tap bgrweak failed/, 'permission');
    await rejectsWith(weak.applyNat(vms3), /^reading the iptables tables failed/, 'permission');
  });
});

/**
 * What a namespace's firewall and forwarding look like, for before/after
 * comparisons. The iptables tools' views (iptables-nft leaves empty built-in
 * base chains in nft once a table was used; those are not rules); the whole
 * nft ruleset for the nft backend.
 */
async function firewallSnapshot(ns: Netns, backend: 'iptables' | 'nft'): Promise<string> {
  const parts = [
    `ip_forward=${(await ns.must('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim()}`,
  ];
  for (const tool of ['iptables', 'ip6tables']) {
    for (const table of ['filter', 'nat', 'mangle']) {
      parts.push((await ns.must(tool, ['-w', '-t', table, '-S'])).stdout);
    }
  }
  for (const table of ['filter', 'nat']) {
    parts.push((await ns.must('ebtables', ['-t', table, '-L'])).stdout);
  }
  if (backend === 'nft') parts.push((await ns.must('nft', ['list', 'ruleset'])).stdout);
  return parts.join('\n');
}

for (const backend of ['iptables', 'nft'] as const) {
  describe(`network e2e: isolation through the bridge (${backend})`, () => {
    /**
     * Topology, all namespaces: h (host: bridge banger0 + uplink), g1/g2/g3
     * (guests on veths attached to the bridge as bgr* ports, like taps), inet
     * ("internet" on the uplink, also holding the metadata address
     * 169.254.169.254, no route back to the guests). With iptables, h has
     * FORWARD policy DROP like a host running Docker, and br_netfilter on.
     */
    test('host closed (v4, v6 link-local), NAT only for NAT VMs, no metadata, no spoofing, guest↔guest by key, forwarding put back', async (t) => {
      if (backend === 'nft' && !which('nft')) return t.skip('nft not installed');
      const s = await setup(t, { firewall: backend });
      if (!s) return;
      const { lab, ns: h, net } = s;
      const g1 = await lab.add('g1');
      const g2 = await lab.add('g2');
      const g3 = await lab.add('g3');
      const inet = await lab.add('inet');
      // No DAD wait on the new interfaces (link-local usable at once).
      for (const ns of [h, g1, g2, g3]) {
        await ns.must('sysctl', ['-qw', 'net.ipv6.conf.default.accept_dad=0']);
      }
      await h.must('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
      if (backend === 'iptables') await h.must('iptables', ['-P', 'FORWARD', 'DROP']);
      const brNf =
        (await h.exec('sysctl', ['-qw', 'net.bridge.bridge-nf-call-iptables=1'])).code === 0;
      const before = await firewallSnapshot(h, backend);

      await net.ensureBridge();
      const guests = [
        { ns: g1, id: 'g1', ip: '172.16.0.2', tap: 'bgrg1', nat: true },
        { ns: g2, id: 'g2', ip: '172.16.0.3', tap: 'bgrg2', nat: false },
        { ns: g3, id: 'g3', ip: '172.16.0.4', tap: 'bgrg3', nat: false },
      ];
      for (const g of guests) {
        await vethPair(h, g.tap, g.ns, 'eth0');
        await g.ns.must('ip', ['link', 'set', 'dev', 'eth0', 'address', macForVm(g.id)]);
        await h.must('ip', ['link', 'set', 'dev', g.tap, 'master', 'banger0']);
        await g.ns.must('ip', ['addr', 'add', `${g.ip}/24`, 'dev', 'eth0']);
        await g.ns.must('ip', ['route', 'add', 'default', 'via', '172.16.0.1']);
      }
      const vms = guests.map((g) => ({
        id: g.id,
        ip: g.ip,
        nat: g.nat,
        tap: g.tap,
        mac: macForVm(g.id),
      }));
      await vethPair(h, 'uplink', inet, 'eth0');
      await h.must('ip', ['addr', 'add', '198.51.100.1/24', 'dev', 'uplink']);
      await h.must('ip', ['route', 'add', '169.254.169.254/32', 'via', '198.51.100.2']);
      await inet.must('ip', ['addr', 'add', '198.51.100.2/24', 'dev', 'eth0']);
      await inet.must('ip', ['addr', 'add', '169.254.169.254/32', 'dev', 'eth0']);
      await whoamiServer(lab, inet, 7000);
      await whoamiServer(lab, g2, 7001);
      await whoamiServer(lab, g1, 7003);
      await whoamiServer(lab, h, 7002); // listens on :: (IPv4 and IPv6)
      const brV6 = (
        JSON.parse((await h.must('ip', ['-j', '-6', 'addr', 'show', 'dev', 'banger0'])).stdout) as {
          addr_info: { local: string; scope: string }[];
        }[]
      )[0]!.addr_info.find((a) => a.scope === 'link')!.local;
      const hostV6 = `${brV6}%eth0`;

      // Without banger's rules the listener on the host side is reachable (v4 and v6).
      assert.equal(await tcpAsk(g2, '172.16.0.1', 7002), '172.16.0.3');
      assert.match((await tcpAsk(g2, hostV6, 7002)) ?? '', /^fe80:/);

      const r = await net.applyNat(vms);
      assert.equal(r.ipForward, 'enabled');
      assert.equal((await h.must('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim(), '1');

      assert.equal(await tcpAsk(g1, '198.51.100.2', 7000), '198.51.100.1', 'NAT VM masqueraded');
      assert.equal(await tcpAsk(g2, '198.51.100.2', 7000), undefined, 'no NAT, no way out');
      assert.equal(await tcpAsk(g1, '169.254.169.254', 7000), undefined, 'no metadata address');
      assert.equal(await tcpAsk(g2, '172.16.0.1', 7002), undefined, 'host closed (IPv4)');
      assert.equal(
        await tcpAsk(g1, '198.51.100.1', 7002),
        undefined,
        "host's other address closed",
      );
      assert.equal(await tcpAsk(g2, hostV6, 7002), undefined, 'host closed (IPv6 link-local)');
      assert.equal(await tcpAsk(h, '172.16.0.3', 7001), '172.16.0.1', 'host reaches a guest');
      assert.equal(await tcpAsk(g1, '172.16.0.3', 7001), undefined, 'guest↔guest off by default');

      // g3 (no NAT) takes g1's address, then also its MAC: nothing gets through.
      await g3.must('ip', ['addr', 'flush', 'dev', 'eth0']);
      await g3.must('ip', ['addr', 'add', '172.16.0.2/24', 'dev', 'eth0']);
      await g3.must('ip', ['route', 'add', 'default', 'via', '172.16.0.1']);
      assert.equal(await tcpAsk(g3, '198.51.100.2', 7000), undefined, 'spoofed IP');
      await g3.must('ip', ['link', 'set', 'dev', 'eth0', 'address', macForVm('g1')]);
      assert.equal(await tcpAsk(g3, '198.51.100.2', 7000), undefined, 'spoofed IP and MAC');
      // The spoofed frames did not teach the bridge g1's MAC on g3's port.
      assert.equal(await tcpAsk(h, '172.16.0.2', 7003), '172.16.0.1', 'g1 still reached');
      assert.equal(await tcpAsk(g1, '198.51.100.2', 7000), '198.51.100.1', 'g1 unaffected');

      // guest_to_guest = true
      const open = HostNetwork.fromConfig(CONFIG, {
        run: h.runner,
        firewall: backend,
        guestToGuest: true,
      });
      await open.applyNat(vms);
      assert.equal(await tcpAsk(g1, '172.16.0.3', 7001), '172.16.0.2', 'guest↔guest with the key');
      assert.equal(await tcpAsk(g2, '172.16.0.1', 7002), undefined, 'host still closed');

      // Last VM gone: forwarding and every chain as before.
      assert.equal((await open.applyNat([])).ipForward, 'restored');
      assert.equal(await firewallSnapshot(h, backend), before);
      t.diagnostic(`br_netfilter path exercised: ${brNf}`);
    });
  });
}

describe('network e2e: reconcile', () => {
  test('reattaches known taps, deletes orphans, reports missing ones, re-seeds neighbours', async (t) => {
    const s = await setup(t, { firewall: 'iptables' });
    if (!s) return;
    await s.net.ensureBridge();
    await s.net.createTap('bgrknown');
    await s.net.createTap('bgrorphan');
    await s.ns.must('ip', ['link', 'set', 'dev', 'bgrknown', 'nomaster']);
    await s.net.neighbourSeed('172.16.0.9', macForVm('gone'));
    const vms = [
      { id: 'k', ip: '172.16.0.2', nat: true, tap: 'bgrknown', mac: macForVm('k') },
      { id: 'm', ip: '172.16.0.3', nat: false, tap: 'bgrmissing', mac: macForVm('m') },
    ];
    const rep = await s.net.reconcile(vms, { seedNeighbours: true });
    assert.deepEqual(rep.reattachedTaps, ['bgrknown']);
    assert.deepEqual(rep.missingTaps, ['bgrmissing']);
    assert.deepEqual(rep.deletedTaps, ['bgrorphan']);
    assert.deepEqual(rep.neighbours, { seeded: 2, cleared: ['172.16.0.9'] });
    assert.equal((await linkJson(s.ns, 'bgrknown')).master, 'banger0');
    const neigh = await s.net.permanentNeighbours();
    assert.deepEqual(
      neigh.sort((a, b) => a.ip.localeCompare(b.ip)),
      [
        { ip: '172.16.0.2', mac: macForVm('k') },
        { ip: '172.16.0.3', mac: macForVm('m') },
      ],
    );
    assert.equal(await s.net.neighbourClear('172.16.0.2'), true);
    assert.equal(await s.net.neighbourClear('172.16.0.2'), false);

    // Empty set: everything of banger's except the bridge goes away.
    await s.net.reconcile([], { seedNeighbours: true });
    assert.deepEqual(await s.net.listTaps(), []);
    assert.deepEqual(await s.net.permanentNeighbours(), []);
    assert.doesNotMatch(await iptablesSave(s.ns), /BANGER/);
    assert.equal(await s.net.deleteBridge(), true);
    assert.equal(await s.net.deleteBridge(), false);
  });
});
