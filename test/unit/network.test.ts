import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { tapOwner } from '../../src/vm/net.js';
import {
  bangerRulesFromSave,
  ebtablesRestoreInput,
  ip6tablesRestoreInput,
  tableListing,
  teardownRestoreInput,
  withMissingJumps,
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
      { id: 'vmb', ip: '172.16.0.10', nat: true, tap: 'bgrb', mac: '02:00:00:00:00:0B' },
      { id: 'vma', ip: '172.16.0.3', nat: true, tap: 'bgra', mac: '02:00:00:00:00:0a' },
      { id: 'vmc', ip: '172.16.0.4', nat: false },
    ],
  };
  const MANGLE_V4 = [
    '*mangle',
    ':BANGER-INPUT - [0:0]',
    ':BANGER-GUARD - [0:0]',
    '-A BANGER-INPUT -i banger0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger: replies to the host" -j RETURN',
    '-A BANGER-INPUT -i banger0 -m comment --comment "banger: guests do not reach the host" -j DROP',
    '-A BANGER-GUARD -d 169.254.0.0/16 -i banger0 -m comment --comment "banger: no link-local or metadata" -j DROP',
    '-A BANGER-GUARD -i banger0 -o banger0 -m comment --comment "banger: no guest to guest" -j DROP',
    '-A BANGER-GUARD -s 172.16.0.3/32 -i banger0 ! -o banger0 -m comment --comment "banger vm vma" -j RETURN',
    '-A BANGER-GUARD -s 172.16.0.10/32 -i banger0 ! -o banger0 -m comment --comment "banger vm vmb" -j RETURN',
    '-A BANGER-GUARD -i banger0 ! -o banger0 -m comment --comment "banger: no outbound forwarding without nat" -j DROP',
    'COMMIT',
  ];

  test('iptables-restore input: NAT, drops in mangle, accepts in filter, banger chains only', () => {
    assert.equal(
      iptablesRestoreInput(spec),
      [
        '*nat',
        ':BANGER-POSTROUTING - [0:0]',
        '-A BANGER-POSTROUTING -s 172.16.0.3/32 ! -o banger0 -m comment --comment "banger vm vma" -j MASQUERADE',
        '-A BANGER-POSTROUTING -s 172.16.0.10/32 ! -o banger0 -m comment --comment "banger vm vmb" -j MASQUERADE',
        'COMMIT',
        ...MANGLE_V4,
        '*filter',
        ':BANGER-FORWARD - [0:0]',
        '-A BANGER-FORWARD -o banger0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger: replies to guests" -j ACCEPT',
        '-A BANGER-FORWARD -s 172.16.0.3/32 -i banger0 ! -o banger0 -m comment --comment "banger vm vma" -j ACCEPT',
        '-A BANGER-FORWARD -s 172.16.0.10/32 -i banger0 ! -o banger0 -m comment --comment "banger vm vmb" -j ACCEPT',
        'COMMIT',
        '',
      ].join('\n'),
    );
    // Never touches built-in chains or flushes tables.
    assert.doesNotMatch(
      iptablesRestoreInput(spec),
      /^(:POSTROUTING|:FORWARD|:INPUT|-A FORWARD|-A INPUT|-F|-X)/m,
    );
  });

  test('guest_to_guest and the ip_forward record change exactly their rules', () => {
    const text = iptablesRestoreInput({ ...spec, guestToGuest: true, ipForwardWasOff: true });
    assert.doesNotMatch(text, /no guest to guest/);
    assert.match(
      text,
      /\n:BANGER-FORWARD - \[0:0\]\n-A BANGER-FORWARD -i banger0 -o banger0 -m comment --comment "banger: guest to guest on the bridge" -j ACCEPT\n/,
    );
    assert.match(
      text,
      /\n-A BANGER-FORWARD -m comment --comment "banger: ip_forward was 0" -j RETURN\nCOMMIT\n$/,
    );
    assert.doesNotMatch(ebtablesRestoreInput({ ...spec, guestToGuest: true }), /-o bgr\+/);
    const nft = nftRuleset({ ...spec, guestToGuest: true, ipForwardWasOff: true });
    assert.match(nft, /iifname "banger0" oifname "banger0" accept comment/);
    assert.doesNotMatch(nft, /oifname "bgr\*"/);
    assert.match(nft, /\n {2}chain ip_forward_was_0 \{\n {2}\}\n\}\n/);
  });

  test('ip6tables-restore input: the host closed, nothing forwarded', () => {
    assert.equal(
      ip6tablesRestoreInput(spec),
      [
        '*mangle',
        ':BANGER-INPUT - [0:0]',
        ':BANGER-GUARD - [0:0]',
        '-A BANGER-INPUT -i banger0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "banger: replies to the host" -j RETURN',
        '-A BANGER-INPUT -i banger0 -m comment --comment "banger: guests do not reach the host" -j DROP',
        '-A BANGER-GUARD -i banger0 -o banger0 -m comment --comment "banger: no guest to guest" -j DROP',
        '-A BANGER-GUARD -i banger0 ! -o banger0 -m comment --comment "banger: no IPv6 forwarding for guests" -j DROP',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  test('ebtables-restore input: each tap sends only from its MAC and address', () => {
    assert.equal(
      ebtablesRestoreInput(spec),
      [
        '*nat',
        ':BANGER-GUESTS RETURN',
        '-A BANGER-GUESTS -s ! 02:00:00:00:00:0a -i bgra -j DROP',
        '-A BANGER-GUESTS -p IPv4 -i bgra --ip-src 172.16.0.3 -j RETURN',
        '-A BANGER-GUESTS -p ARP -i bgra --arp-ip-src 172.16.0.3 --arp-mac-src 02:00:00:00:00:0a -j RETURN',
        '-A BANGER-GUESTS -p IPv6 -i bgra --ip6-src fe80::/10 -j RETURN',
        '-A BANGER-GUESTS -i bgra -j DROP',
        '-A BANGER-GUESTS -s ! 02:00:00:00:00:0b -i bgrb -j DROP',
        '-A BANGER-GUESTS -p IPv4 -i bgrb --ip-src 172.16.0.10 -j RETURN',
        '-A BANGER-GUESTS -p ARP -i bgrb --arp-ip-src 172.16.0.10 --arp-mac-src 02:00:00:00:00:0b -j RETURN',
        '-A BANGER-GUESTS -p IPv6 -i bgrb --ip6-src fe80::/10 -j RETURN',
        '-A BANGER-GUESTS -i bgrb -j DROP',
        '-A BANGER-GUESTS -i bgr+ -j DROP',
        'COMMIT',
        '*filter',
        ':BANGER-G2G RETURN',
        '-A BANGER-G2G -i bgr+ -o bgr+ -j DROP',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  test('output is independent of input order', () => {
    const reversed = { ...spec, vms: [...spec.vms].reverse() };
    assert.equal(iptablesRestoreInput(reversed), iptablesRestoreInput(spec));
    assert.equal(ebtablesRestoreInput(reversed), ebtablesRestoreInput(spec));
    assert.equal(nftRuleset(reversed), nftRuleset(spec));
  });

  test('VMs without NAT get no per-VM NAT rules, only the shared DROP', () => {
    const text = iptablesRestoreInput({
      bridge: 'banger0',
      vms: [{ id: 'v', ip: '172.16.0.2', nat: false }],
    });
    assert.doesNotMatch(text, /172\.16\.0\.2/);
    assert.match(text, /no outbound forwarding without nat" -j DROP/);
  });

  test('nft ruleset replaces table inet banger and table bridge banger atomically', () => {
    assert.equal(
      nftRuleset(spec),
      [
        'table inet banger',
        'delete table inet banger',
        'table bridge banger',
        'delete table bridge banger',
        'table inet banger {',
        '  chain postrouting {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        '    ip saddr 172.16.0.3 oifname != "banger0" masquerade comment "banger vm vma"',
        '    ip saddr 172.16.0.10 oifname != "banger0" masquerade comment "banger vm vmb"',
        '  }',
        '  chain input {',
        '    type filter hook input priority filter; policy accept;',
        '    iifname "banger0" ct state established,related accept comment "banger: replies to the host"',
        '    iifname "banger0" drop comment "banger: guests do not reach the host"',
        '  }',
        '  chain forward {',
        '    type filter hook forward priority filter; policy accept;',
        '    iifname "banger0" ip daddr 169.254.0.0/16 drop comment "banger: no link-local or metadata"',
        '    iifname "banger0" oifname "banger0" drop comment "banger: no guest to guest"',
        '    oifname "banger0" ct state established,related accept comment "banger: replies to guests"',
        '    iifname "banger0" oifname != "banger0" ip saddr 172.16.0.3 accept comment "banger vm vma"',
        '    iifname "banger0" oifname != "banger0" ip saddr 172.16.0.10 accept comment "banger vm vmb"',
        '    iifname "banger0" oifname != "banger0" drop comment "banger: no outbound forwarding without nat"',
        '  }',
        '}',
        'table bridge banger {',
        '  chain prerouting {',
        '    type filter hook prerouting priority filter; policy accept;',
        '    iifname "bgra" ether saddr != 02:00:00:00:00:0a drop comment "banger vm vma"',
        '    iifname "bgra" ip saddr 172.16.0.3 accept',
        '    iifname "bgra" arp saddr ip 172.16.0.3 arp saddr ether 02:00:00:00:00:0a accept',
        '    iifname "bgra" ip6 saddr fe80::/10 accept',
        '    iifname "bgra" drop',
        '    iifname "bgrb" ether saddr != 02:00:00:00:00:0b drop comment "banger vm vmb"',
        '    iifname "bgrb" ip saddr 172.16.0.10 accept',
        '    iifname "bgrb" arp saddr ip 172.16.0.10 arp saddr ether 02:00:00:00:00:0b accept',
        '    iifname "bgrb" ip6 saddr fe80::/10 accept',
        '    iifname "bgrb" drop',
        '    iifname "bgr*" drop comment "banger: taps of no VM"',
        '  }',
        '  chain forward {',
        '    type filter hook forward priority filter; policy accept;',
        '    iifname "bgr*" oifname "bgr*" drop comment "banger: no guest to guest"',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    assert.deepEqual(natVmIdsFromRules(nftRuleset(spec)), ['vma', 'vmb']);
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
        ebtablesRestoreInput({
          bridge: 'banger0',
          vms: [
            { id: 'x', ip: '172.16.0.2', nat: false, tap: 'eth0 -j ACCEPT', mac: macForVm('x') },
          ],
        }),
      /not a banger tap/,
    );
    throwsBanger(
      () =>
        nftRuleset({
          bridge: 'banger0',
          vms: [{ id: 'x', ip: '172.16.0.2', nat: false, tap: 'bgrx', mac: '02:00" accept' }],
        }),
      /no valid MAC/,
    );
    throwsBanger(
      () =>
        normalizeSpec({
          bridge: 'banger0',
          vms: [
            { id: 'a', ip: '172.16.0.2', nat: false, tap: 'bgrx' },
            { id: 'b', ip: '172.16.0.3', nat: false, tap: 'bgrx' },
          ],
        }),
      /VMs a and b both have tap bgrx/,
      'conflict',
    );
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
    // A whole iptables-save: banger's jumps (with or without its comment), its chains, others' rules.
    const whole = [
      '*nat',
      ':POSTROUTING ACCEPT [0:0]',
      ':BANGER-POSTROUTING - [0:0]',
      '-A POSTROUTING -m comment --comment banger -j BANGER-POSTROUTING',
      '-A POSTROUTING -j BANGER-POSTROUTING',
      '-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE',
      'COMMIT',
      '*filter',
      ':FORWARD DROP [0:0]',
      '-A FORWARD -j DOCKER-USER',
      'COMMIT',
      '',
    ].join('\n');
    assert.equal(
      teardownRestoreInput('iptables', whole),
      [
        '*nat',
        '-D POSTROUTING -m comment --comment banger -j BANGER-POSTROUTING',
        '-D POSTROUTING -j BANGER-POSTROUTING',
        '-F BANGER-POSTROUTING',
        '-X BANGER-POSTROUTING',
        'COMMIT',
        '',
      ].join('\n'),
    );
    assert.equal(teardownRestoreInput('ip6tables', whole), '', "nothing of banger's there");
    // Apply: the jumps a table lacks go in before its COMMIT, appended after the others' rules.
    const input =
      '*nat\n:BANGER-POSTROUTING - [0:0]\nCOMMIT\n*filter\n:BANGER-FORWARD - [0:0]\nCOMMIT\n';
    assert.equal(
      withMissingJumps(input, 'iptables', whole),
      '*nat\n:BANGER-POSTROUTING - [0:0]\nCOMMIT\n*filter\n:BANGER-FORWARD - [0:0]\n' +
        '-A FORWARD -m comment --comment banger -j BANGER-FORWARD\nCOMMIT\n',
    );
    // ebtables-save writes no COMMIT: a table runs to the next header.
    const eb = '*filter\n:FORWARD ACCEPT\n-A FORWARD -j BANGER-G2G\n*nat\n:PREROUTING ACCEPT\n';
    assert.equal(tableListing(eb, 'nat'), ':PREROUTING ACCEPT\n');
    assert.equal(
      withMissingJumps('*nat\nCOMMIT\n*filter\nCOMMIT\n', 'ebtables', eb),
      '*nat\n-A PREROUTING -j BANGER-GUESTS\nCOMMIT\n*filter\nCOMMIT\n',
    );
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

  test('firewall = auto prefers iptables (with ip6tables and ebtables), then nft', () => {
    const has =
      (...cmds: string[]) =>
      (c: string) =>
        cmds.includes(c) ? `/usr/sbin/${c}` : undefined;
    const xt = ['iptables', 'ip6tables', 'ebtables'].flatMap((t) => [
      t,
      `${t}-restore`,
      `${t}-save`,
    ]);
    assert.equal(resolveFirewall('auto', has(...xt, 'nft')).backend, 'iptables');
    assert.equal(resolveFirewall('auto', has('nft')).backend, 'nft');
    const noEb = xt.filter((c) => !c.startsWith('ebtables'));
    assert.equal(resolveFirewall('auto', has(...noEb, 'nft')).backend, 'nft');
    const none = resolveFirewall('auto', has(...noEb));
    assert.equal(none.backend, undefined);
    assert.match(none.reason, /lacks ebtables, ebtables-restore, ebtables-save/);
    assert.equal(resolveFirewall('nft', has(...xt, 'nft')).backend, 'nft');
    const explicit = resolveFirewall('iptables', has('nft', 'iptables'));
    assert.equal(explicit.backend, undefined);
    assert.match(explicit.reason, /iptables-restore, iptables-save, ip6tables, .* not found/);
  });
});

describe('network: who owns a VM tap', () => {
  const users = (name: string) =>
    name === 'banger-vmm' ? { name, uid: 999, gid: 998 } : undefined;
  test('a root daemon hands the tap to vmm_user, so the dropped VMM can open it', () => {
    assert.equal(tapOwner('banger-vmm', 0, users), 999);
  });
  test('nobody in particular when the VMM stays root, the daemon is not root, or the user is missing', () => {
    assert.equal(tapOwner('root', 0, users), undefined);
    assert.equal(tapOwner('banger-vmm', 1000, users), undefined);
    assert.equal(tapOwner('nosuch', 0, users), undefined);
  });
});
