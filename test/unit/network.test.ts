import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import {
  bangerRulesFromSave,
  jumpDeletions,
  natVmIdsFromRules,
  normalizeSpec,
  splitRuleLine,
} from '../../src/network/firewall/rules.js';
import {
  allocateIp,
  guestDns,
  guestIpArg,
  iptablesRestoreInput,
  isBangerTap,
  isPoolTap,
  macForBridge,
  macForVm,
  nftRuleset,
  parseGuestIpArg,
  parseResolvConf,
  poolTapName,
  prefixToNetmask,
  readHostDns,
  resolveFirewall,
  resolveGuestDns,
  subnet,
  tapNameForVm,
} from '../../src/network/index.js';

const throwsBanger = (fn: () => unknown, re: RegExp, code?: string): BangerError => {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof BangerError, `expected a BangerError, got ${String(caught)}`);
  assert.match(caught.message, re);
  assert.ok(caught.hint, 'has a hint');
  if (code) assert.equal(caught.code, code);
  return caught;
};

describe('network: address allocation', () => {
  const base = { cidr: '172.16.0.0/24', bridgeIp: '172.16.0.1' };

  test('first free host address, skipping network, bridge and used ones', () => {
    assert.equal(allocateIp({ ...base, used: [] }), '172.16.0.2');
    assert.equal(allocateIp({ ...base, used: ['172.16.0.2', '172.16.0.4'] }), '172.16.0.3');
    // Bridge at the start of the range is skipped, wherever it sits.
    assert.equal(allocateIp({ cidr: '10.9.0.0/24', bridgeIp: '10.9.0.2', used: [] }), '10.9.0.1');
    assert.equal(
      allocateIp({ cidr: '10.9.0.0/24', bridgeIp: '10.9.0.1', used: ['10.9.0.2'] }),
      '10.9.0.3',
    );
  });

  test('addresses outside the cidr in `used` are ignored', () => {
    assert.equal(allocateIp({ ...base, used: ['10.0.0.2', 'garbage'] }), '172.16.0.2');
  });

  test('preferred is kept when free, ignored when taken or invalid', () => {
    assert.equal(allocateIp({ ...base, used: [], preferred: '172.16.0.77' }), '172.16.0.77');
    assert.equal(
      allocateIp({ ...base, used: ['172.16.0.77'], preferred: '172.16.0.77' }),
      '172.16.0.2',
    );
    for (const p of ['172.16.0.0', '172.16.0.255', '172.16.0.1', '10.0.0.5', 'x']) {
      assert.equal(allocateIp({ ...base, used: [], preferred: p }), '172.16.0.2', p);
    }
  });

  test('never hands out broadcast; a /30 has exactly one guest address', () => {
    const small = { cidr: '192.0.2.0/30', bridgeIp: '192.0.2.1' };
    assert.equal(allocateIp({ ...small, used: [] }), '192.0.2.2');
    const e = throwsBanger(
      () => allocateIp({ ...small, used: ['192.0.2.2'] }),
      /no free guest address in 192\.0\.2\.0\/30: all 1 guest addresses are in use/,
      'precondition',
    );
    assert.match(e.hint!, /widen cidr in config\.toml \(e\.g\. cidr = "192\.0\.2\.0\/26"\)/);
  });

  test('a full /24 is exhausted after 253 guests', () => {
    const used: string[] = [];
    for (let i = 0; i < 253; i++) used.push(allocateIp({ ...base, used }));
    assert.equal(used.at(-1), '172.16.0.254');
    assert.equal(new Set(used).size, 253);
    const e = throwsBanger(() => allocateIp({ ...base, used }), /172\.16\.0\.0\/24: all 253/);
    assert.match(e.line, /cidr = "172\.16\.0\.0\/20"/);
  });

  test('config mistakes name the key', () => {
    throwsBanger(
      () => allocateIp({ cidr: '172.16.0.0/24', bridgeIp: '172.16.1.1', used: [] }),
      /bridge_ip 172\.16\.1\.1 is not a host address of cidr 172\.16\.0\.0\/24/,
      'config_invalid',
    );
    throwsBanger(
      () => allocateIp({ cidr: '172.16.0.0/24', bridgeIp: '172.16.0.255', used: [] }),
      /bridge_ip/,
    );
    throwsBanger(
      () => allocateIp({ cidr: '172.16.0.0/33', bridgeIp: '172.16.0.1', used: [] }),
      /^cidr /,
    );
  });

  test('subnet facts and netmasks', () => {
    assert.deepEqual(subnet('172.16.5.9/20'), {
      cidr: '172.16.0.0/20',
      network: '172.16.0.0',
      prefix: 20,
      netmask: '255.255.240.0',
      broadcast: '172.16.15.255',
      first: '172.16.0.1',
      last: '172.16.15.254',
    });
    assert.equal(prefixToNetmask(24), '255.255.255.0');
    assert.equal(prefixToNetmask(8), '255.0.0.0');
    assert.equal(prefixToNetmask(30), '255.255.255.252');
  });
});

describe('network: names and MACs', () => {
  test('tap names are ours, ≤ 15 chars and stable', () => {
    const id = '0123456789abcdef0123456789abcdef';
    assert.equal(tapNameForVm(id), 'bgr0123456789ab');
    assert.equal(tapNameForVm(id).length, 15);
    assert.equal(tapNameForVm('Ab-c'), 'bgrabc');
    assert.ok(isBangerTap(tapNameForVm(id)));
    assert.ok(!isPoolTap(tapNameForVm(id)));
    throwsBanger(() => tapNameForVm('---'), /cannot derive a tap name/);
  });

  test('pool tap names are distinct from VM tap names', () => {
    const n = poolTapName();
    assert.match(n, /^bgr-[0-9a-f]{11}$/);
    assert.ok(isPoolTap(n) && isBangerTap(n));
    assert.notEqual(poolTapName(), n);
    for (const other of ['eth0', 'docker0', 'bgr', 'tap0', 'bgr0123456789abcd'])
      assert.ok(!isBangerTap(other), other);
  });

  test('MACs are stable, locally administered and unicast', () => {
    const a = macForVm('vm-a');
    assert.equal(macForVm('vm-a'), a);
    assert.notEqual(macForVm('vm-b'), a);
    assert.match(a, /^02(:[0-9a-f]{2}){5}$/);
    const first = parseInt(a.slice(0, 2), 16);
    assert.equal(first & 0x02, 0x02, 'locally administered');
    assert.equal(first & 0x01, 0, 'unicast');
    assert.notEqual(macForBridge('banger0'), macForVm('banger0'));
    // 1000 ids, no collisions.
    const macs = new Set(Array.from({ length: 1000 }, (_, i) => macForVm(`vm${i}`)));
    assert.equal(macs.size, 1000);
  });
});

describe('network: guest ip= argument and DNS', () => {
  test('builds the kernel ip= format', () => {
    assert.equal(
      guestIpArg({
        ip: '172.16.0.2',
        prefix: 24,
        gateway: '172.16.0.1',
        hostname: 'dev-box',
        dns: ['192.0.2.53', '198.51.100.53', '203.0.113.53'],
      }),
      'ip=172.16.0.2::172.16.0.1:255.255.255.0:dev-box:eth0:off:192.0.2.53:198.51.100.53',
    );
    assert.equal(
      guestIpArg({ ip: '10.1.2.3', prefix: 20, gateway: '10.1.0.1', hostname: 'a', dns: [] }),
      'ip=10.1.2.3::10.1.0.1:255.255.240.0:a:eth0:off',
    );
  });

  test('round-trips through the parser the initramfs mirrors', () => {
    const arg = guestIpArg({
      ip: '172.16.0.9',
      prefix: 24,
      gateway: '172.16.0.1',
      hostname: 'x1',
      dns: ['192.0.2.1'],
    });
    assert.deepEqual(parseGuestIpArg(arg), {
      ip: '172.16.0.9',
      gateway: '172.16.0.1',
      netmask: '255.255.255.0',
      hostname: 'x1',
      device: 'eth0',
      autoconf: 'off',
      dns: ['192.0.2.1'],
    });
    assert.equal(parseGuestIpArg('console=ttyS0'), undefined);
  });

  test('rejects values that would corrupt the format', () => {
    const ok = { ip: '172.16.0.2', prefix: 24, gateway: '172.16.0.1', hostname: 'a', dns: [] };
    throwsBanger(() => guestIpArg({ ...ok, hostname: 'a:b' }), /hostname 'a:b'/);
    throwsBanger(() => guestIpArg({ ...ok, hostname: 'a b' }), /hostname/);
    throwsBanger(() => guestIpArg({ ...ok, ip: '::1' }), /address/);
    throwsBanger(() => guestIpArg({ ...ok, dns: ['dns.example'] }), /DNS server/);
    throwsBanger(() => guestIpArg({ ...ok, prefix: 33 }), /prefix/);
  });

  test('resolv.conf parsing drops loopback, IPv6, comments and duplicates', () => {
    const text = [
      '# generated',
      'nameserver 127.0.0.53',
      'nameserver 192.0.2.53 # office',
      'nameserver ::1',
      'nameserver 2001:db8::53',
      'search example.org',
      'nameserver 192.0.2.53',
      ';nameserver 198.51.100.1',
      '  nameserver   198.51.100.53',
      'options edns0',
    ].join('\n');
    assert.deepEqual(parseResolvConf(text), ['192.0.2.53', '198.51.100.53']);
    assert.deepEqual(parseResolvConf('nameserver 127.0.0.53\n'), []);
  });

  test('DNS precedence: config, else host, else none', () => {
    assert.deepEqual(resolveGuestDns(['192.0.2.1'], { servers: ['198.51.100.1'] }), {
      servers: ['192.0.2.1'],
      source: 'config',
    });
    assert.deepEqual(resolveGuestDns([], { servers: ['198.51.100.1'], file: '/etc/resolv.conf' }), {
      servers: ['198.51.100.1'],
      source: 'host',
      file: '/etc/resolv.conf',
    });
    assert.deepEqual(resolveGuestDns([], { servers: [] }), { servers: [], source: 'none' });
    assert.equal(
      resolveGuestDns(['192.0.2.1', '192.0.2.2', '192.0.2.3'], undefined).servers.length,
      2,
    );
  });

  test('host DNS falls through a loopback-only stub to systemd-resolved upstreams', () => {
    const files: Record<string, string> = {
      '/etc/resolv.conf': 'nameserver 127.0.0.53\n',
      '/run/systemd/resolve/resolv.conf': 'nameserver 192.0.2.10\nnameserver 192.0.2.11\n',
    };
    const read = (f: string) => {
      const t = files[f];
      if (t === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
      return t;
    };
    assert.deepEqual(readHostDns(read), {
      servers: ['192.0.2.10', '192.0.2.11'],
      file: '/run/systemd/resolve/resolv.conf',
    });
    assert.deepEqual(
      readHostDns(() => 'nameserver 127.0.0.1\n'),
      { servers: [] },
    );
    assert.deepEqual(guestDns([], read).source, 'host');
    assert.deepEqual(guestDns(['192.0.2.99'], () => assert.fail('not read')).servers, [
      '192.0.2.99',
    ]);
  });
});

describe('network: firewall rule text', () => {
  const spec = {
    bridge: 'banger0',
    vms: [
      { id: 'vmb', ip: '172.16.0.10', nat: true },
      { id: 'vma', ip: '172.16.0.3', nat: true },
      { id: 'vmc', ip: '172.16.0.4', nat: false },
    ],
  };

  test('iptables-restore input rebuilds banger chains only', () => {
    assert.equal(
      iptablesRestoreInput(spec),
      [
        '*nat',
        ':BANGER-POSTROUTING - [0:0]',
        '-A BANGER-POSTROUTING -s 172.16.0.3/32 ! -o banger0 -m comment --comment "banger vm vma" -j MASQUERADE',
        '-A BANGER-POSTROUTING -s 172.16.0.10/32 ! -o banger0 -m comment --comment "banger vm vmb" -j MASQUERADE',
        'COMMIT',
        '*filter',
        ':BANGER-FORWARD - [0:0]',
        '-A BANGER-FORWARD -i banger0 -o banger0 -m comment --comment "banger: guest to guest on the bridge" -j ACCEPT',
        '-A BANGER-FORWARD -o banger0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger: replies to guests" -j ACCEPT',
        '-A BANGER-FORWARD -s 172.16.0.3/32 -i banger0 ! -o banger0 -m comment --comment "banger vm vma" -j ACCEPT',
        '-A BANGER-FORWARD -s 172.16.0.10/32 -i banger0 ! -o banger0 -m comment --comment "banger vm vmb" -j ACCEPT',
        '-A BANGER-FORWARD -i banger0 ! -o banger0 -m comment --comment "banger: no outbound forwarding without nat" -j DROP',
        'COMMIT',
        '',
      ].join('\n'),
    );
    // Never touches built-in chains or flushes tables.
    assert.doesNotMatch(iptablesRestoreInput(spec), /^(:POSTROUTING|:FORWARD|-A FORWARD|-F|-X)/m);
  });

  test('output is independent of input order', () => {
    const reversed = { ...spec, vms: [...spec.vms].reverse() };
    assert.equal(iptablesRestoreInput(reversed), iptablesRestoreInput(spec));
    assert.equal(nftRuleset(reversed), nftRuleset(spec));
  });

  test('VMs without NAT get no per-VM rules, only the shared DROP', () => {
    const text = iptablesRestoreInput({
      bridge: 'banger0',
      vms: [{ id: 'v', ip: '172.16.0.2', nat: false }],
    });
    assert.doesNotMatch(text, /172\.16\.0\.2/);
    assert.match(text, /-j DROP/);
  });

  test('nft ruleset replaces table inet banger atomically', () => {
    const text = nftRuleset(spec);
    assert.ok(
      text.startsWith('table inet banger\ndelete table inet banger\ntable inet banger {\n'),
    );
    assert.match(
      text,
      /ip saddr 172\.16\.0\.3 oifname != "banger0" masquerade comment "banger vm vma"/,
    );
    assert.match(text, /iifname "banger0" oifname != "banger0" ip saddr 172\.16\.0\.10 accept/);
    assert.match(text, /iifname "banger0" oifname "banger0" accept/);
    assert.doesNotMatch(text, /saddr 172\.16\.0\.4 /);
    assert.deepEqual(natVmIdsFromRules(text), ['vma', 'vmb']);
  });

  test('bad input cannot inject rule text', () => {
    throwsBanger(
      () =>
        iptablesRestoreInput({
          bridge: 'banger0',
          vms: [{ id: 'x" -j ACCEPT', ip: '172.16.0.2', nat: true }],
        }),
      /cannot label a firewall rule/,
    );
    throwsBanger(
      () => iptablesRestoreInput({ bridge: 'banger0', vms: [{ id: 'x', ip: '0/0', nat: true }] }),
      /no valid IPv4/,
    );
    throwsBanger(() => nftRuleset({ bridge: 'br"0', vms: [] }), /bridge_name/);
    throwsBanger(
      () =>
        normalizeSpec({
          bridge: 'banger0',
          vms: [
            { id: 'a', ip: '172.16.0.2', nat: true },
            { id: 'b', ip: '172.16.0.2', nat: false },
          ],
        }),
      /VMs a and b both have address 172\.16\.0\.2/,
      'conflict',
    );
  });

  test('reading rules back: ids, banger lines, jump deletions', () => {
    const save = [
      '*nat',
      ':POSTROUTING ACCEPT [0:0]',
      ':BANGER-POSTROUTING - [0:0]',
      '-A POSTROUTING -m comment --comment banger -j BANGER-POSTROUTING',
      '-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE',
      '-A BANGER-POSTROUTING -s 172.16.0.3/32 ! -o banger0 -m comment --comment "banger vm vma" -j MASQUERADE',
      'COMMIT',
    ].join('\n');
    assert.deepEqual(natVmIdsFromRules(save), ['vma']);
    assert.equal(bangerRulesFromSave(save).length, 1);
    const listing = [
      '-P POSTROUTING ACCEPT',
      '-A POSTROUTING -m comment --comment banger -j BANGER-POSTROUTING',
      '-A POSTROUTING -j BANGER-POSTROUTING',
      '-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE',
    ].join('\n');
    assert.deepEqual(jumpDeletions(listing, 'POSTROUTING', 'BANGER-POSTROUTING'), [
      ['-D', 'POSTROUTING', '-m', 'comment', '--comment', 'banger', '-j', 'BANGER-POSTROUTING'],
      ['-D', 'POSTROUTING', '-j', 'BANGER-POSTROUTING'],
    ]);
    assert.deepEqual(splitRuleLine('-A X -m comment --comment "a b \\"c\\"" -j Y'), [
      '-A',
      'X',
      '-m',
      'comment',
      '--comment',
      'a b "c"',
      '-j',
      'Y',
    ]);
  });

  test('firewall = auto prefers iptables, then nft', () => {
    const has =
      (...cmds: string[]) =>
      (c: string) =>
        cmds.includes(c) ? `/usr/sbin/${c}` : undefined;
    assert.equal(
      resolveFirewall('auto', has('iptables', 'iptables-restore', 'nft')).backend,
      'iptables',
    );
    assert.equal(resolveFirewall('auto', has('nft')).backend, 'nft');
    assert.equal(resolveFirewall('auto', has('iptables')).backend, undefined);
    assert.equal(resolveFirewall('nft', has('iptables', 'iptables-restore', 'nft')).backend, 'nft');
    const none = resolveFirewall('iptables', has('nft'));
    assert.equal(none.backend, undefined);
    assert.match(none.reason, /iptables-restore not found/);
  });
});
