import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { locateKey } from '../../src/config/locate.js';
import { resolvePaths } from '../../src/config/paths.js';
import { DEFAULT_CONFIG } from '../../src/config/schema.js';
import { BangerError } from '../../src/errors.js';

const load = (text: string, env: Record<string, string> = {}) =>
  loadConfig({ file: '/cfg/config.toml', env, home: '/home/u', text });

const errorOf = (fn: () => unknown): BangerError => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof BangerError);
    return e;
  }
  assert.fail('expected an error');
};

describe('config loading', () => {
  test('empty config gives the defaults', () => {
    const { config } = load('');
    assert.deepEqual(config, DEFAULT_CONFIG);
  });

  test('every key of spec §3 parses and normalises', () => {
    const { config, fromFile } = load(`
log_level = "debug"
vmm = "qemu"
firecracker_bin = "~/bin/firecracker"
qemu_bin = "/usr/bin/qemu-system-x86_64"
accel = "tcg"
ssh_key_path = "~/.ssh/banger"
default_image_name = "my-image"
default_kernel = "debian-generic-6.1"
bridge_name = "br-test"
bridge_ip = "10.9.0.1"
cidr = "10.9.0.0/16"
default_dns = ["1.1.1.1", "9.9.9.9"]
dns_listen = "127.0.0.1:5353"
tap_pool_size = 4
auto_stop_stale_after = "2h"
stats_poll_interval = "10s"

[vm_defaults]
vcpu = 2
memory_mib = 2048
disk_size = "16G"

[[file_sync]]
host = "~/.gitconfig"
guest = "~/.gitconfig"

[[file_sync]]
host = "/etc/hosts"
guest = "/root/hosts"
mode = "0644"
`);
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.vmm, 'qemu');
    assert.equal(config.firecrackerBin, '/home/u/bin/firecracker');
    assert.equal(config.accel, 'tcg');
    assert.equal(config.sshKeyPath, '/home/u/.ssh/banger');
    assert.equal(config.cidr, '10.9.0.0/16');
    assert.deepEqual(config.defaultDns, ['1.1.1.1', '9.9.9.9']);
    assert.deepEqual(config.dnsListen, { host: '127.0.0.1', port: 5353 });
    assert.equal(config.tapPoolSize, 4);
    assert.equal(config.autoStopStaleAfterMs, 2 * 3600_000);
    assert.equal(config.statsPollIntervalMs, 10_000);
    assert.deepEqual(config.vmDefaults, { vcpu: 2, memoryMib: 2048, diskSize: 16 * 1024 ** 3 });
    assert.deepEqual(config.fileSync, [
      { host: '/home/u/.gitconfig', guest: '/root/.gitconfig' },
      { host: '/etc/hosts', guest: '/root/hosts', mode: 0o644 },
    ]);
    assert.ok(fromFile.includes('vm_defaults.vcpu'));
  });

  test('cidr is normalised to its network address', () => {
    assert.equal(
      load('cidr = "172.16.0.77/24"\nbridge_ip = "172.16.0.1"').config.cidr,
      '172.16.0.0/24',
    );
  });

  test('guest_to_guest: off by default, a boolean in the file or env', () => {
    assert.equal(load('').config.guestToGuest, false);
    assert.equal(load('guest_to_guest = true').config.guestToGuest, true);
    assert.equal(
      load('guest_to_guest = true', { BANGER_GUEST_TO_GUEST: 'false' }).config.guestToGuest,
      false,
    );
    assert.equal(load('', { BANGER_GUEST_TO_GUEST: 'true' }).config.guestToGuest, true);
    const e = errorOf(() => load('guest_to_guest = "yes"'));
    assert.match(e.message, /:1: bad value for 'guest_to_guest'/);
  });

  test('env overrides win over the file and are reported', () => {
    const r = load('vmm = "qemu"\n', {
      BANGER_VMM: 'firecracker',
      BANGER_VM_DEFAULTS_VCPU: '3',
      BANGER_DEFAULT_DNS: '8.8.8.8, 1.1.1.1',
    });
    assert.equal(r.config.vmm, 'firecracker');
    assert.equal(r.config.vmDefaults.vcpu, 3);
    assert.deepEqual(r.config.defaultDns, ['8.8.8.8', '1.1.1.1']);
    assert.deepEqual(r.fromEnv.sort(), ['default_dns', 'vm_defaults.vcpu', 'vmm']);
  });

  test('errors name the file, line and key', () => {
    const e = errorOf(() => load('a = 1\n[vm_defaults]\nvcpu = 0\n'));
    assert.match(e.message, /^\/cfg\/config\.toml:1: unknown key 'a'/);
    const e2 = errorOf(() => load('[vm_defaults]\n\nvcpu = 0\n'));
    assert.match(
      e2.message,
      /^\/cfg\/config\.toml:3: bad value for 'vm_defaults\.vcpu': must be at least 1/,
    );
    assert.equal(e2.code, 'config_invalid');
    const e3 = errorOf(() => load('tap_pool_size = "many"'));
    assert.match(e3.message, /:1: bad value for 'tap_pool_size'/);
    const e4 = errorOf(() => load('dns_listen = "localhost"'));
    assert.match(e4.message, /must be IPv4:port/);
    // the DNS listener answers the host only
    const e4b = errorOf(() => load('dns_listen = "0.0.0.0:5353"'));
    assert.match(e4b.message, /'0\.0\.0\.0:5353' must be a loopback address \(127\.0\.0\.0\/8\)/);
    const e4c = errorOf(() => load('[[file_sync]]\nhost = "~/x"\nguest = "~/x"\nmode = 4096\n'));
    assert.match(e4c.message, /must be a file mode from 0 to 0o7777/);
    const e5 = errorOf(() => load('bridge_ip = "172.16.0.0"'));
    assert.match(e5.message, /network or broadcast address/);
    const e6 = errorOf(() => load('[[file_sync]]\nguest = "~/x"\n'));
    assert.match(e6.message, /:1: \[\[file_sync\]\] entry 1: 'host' is required/);
    const e7 = errorOf(() => load('vm_defaults = 3'));
    assert.match(e7.message, /must be a table/);
    const e8 = errorOf(() => load('stats_poll_interval = "10ms"'));
    assert.match(e8.message, /at least 500ms/);
  });

  test('syntax errors carry the line', () => {
    const e = errorOf(() => load('x = 1\ny = = 2\n'));
    assert.match(e.message, /^\/cfg\/config\.toml:2: invalid TOML/);
  });

  test('env errors name the variable', () => {
    const e = errorOf(() => load('', { BANGER_VM_DEFAULTS_DISK_SIZE: '10Q' }));
    assert.match(e.message, /^environment variable BANGER_VM_DEFAULTS_DISK_SIZE: bad value/);
  });
});

describe('locateKey', () => {
  const src = `# top
log_level = "info"
[vm_defaults]
  vcpu = 2
"memory_mib" = 3

[[file_sync]]
host = "a"
[[file_sync]]
host = "b"
guest = "c"
`;
  test('finds keys in tables and arrays of tables', () => {
    assert.equal(locateKey(src, { table: [], key: 'log_level' }), 2);
    assert.equal(locateKey(src, { table: ['vm_defaults'], key: 'vcpu' }), 4);
    assert.equal(locateKey(src, { table: ['vm_defaults'], key: 'memory_mib' }), 5);
    assert.equal(locateKey(src, { table: ['file_sync'], index: 1, key: 'host' }), 10);
    assert.equal(locateKey(src, { table: ['file_sync'], index: 1 }), 9);
    assert.equal(locateKey(src, { table: [], key: 'vcpu' }), undefined);
  });
});

describe('paths', () => {
  test('XDG defaults', () => {
    const p = resolvePaths({ env: {}, uid: 1000, home: '/home/u' });
    assert.equal(p.configFile, '/home/u/.config/banger/config.toml');
    assert.equal(p.db, '/home/u/.local/state/banger/banger.db');
    assert.equal(p.cacheDir, '/home/u/.cache/banger');
    assert.equal(p.socket, '/tmp/banger-1000/bangerd.sock');
    assert.equal(p.sshKey, '/home/u/.config/banger/ssh/id_ed25519');
    // root (sudo drops XDG_RUNTIME_DIR) gets a directory no other user can pre-create in /tmp
    assert.equal(
      resolvePaths({ env: {}, uid: 0, home: '/root' }).socket,
      '/run/banger/bangerd.sock',
    );
  });
  test('XDG variables and BANGER_*_DIR overrides', () => {
    const p = resolvePaths({
      env: {
        XDG_RUNTIME_DIR: '/run/user/1000',
        XDG_CONFIG_HOME: '/xdg/config',
        BANGER_STATE_DIR: '/s',
      },
      uid: 1000,
      home: '/home/u',
    });
    assert.equal(p.socket, '/run/user/1000/banger/bangerd.sock');
    assert.equal(p.configDir, '/xdg/config/banger');
    assert.equal(p.vmsDir, '/s/vms');
    const q = resolvePaths({
      env: { BANGER_RUNTIME_DIR: '/r', XDG_CONFIG_HOME: 'relative' },
      uid: 1,
      home: '/h',
    });
    assert.equal(q.socket, '/r/bangerd.sock');
    assert.equal(q.configDir, '/h/.config/banger', 'relative XDG values are ignored');
  });
});
