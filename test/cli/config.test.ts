import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { makeSandbox } from '../helpers/sandbox.js';

/** Config errors surface through the CLI as one line naming file, line and key. */
describe('config errors through the CLI', () => {
  const cases: { name: string; config: string; env?: Record<string, string>; expect: RegExp }[] = [
    {
      name: 'unknown top-level key',
      config: 'log_level = "debug"\n\nbriddge_name = "br0"\n',
      expect:
        /config\.toml:3: unknown key 'briddge_name': not a banger setting: remove it or use one of: .*bridge_name/,
    },
    {
      name: 'unknown key in [vm_defaults]',
      config: '[vm_defaults]\nvcpu = 2\nmemory = 4096\n',
      expect:
        /config\.toml:3: unknown key 'vm_defaults\.memory': not a banger setting in \[vm_defaults\]: .*memory_mib/,
    },
    {
      name: 'bad enum value',
      config: '# comment\nvmm = "kvmtool"\n',
      expect: /config\.toml:2: bad value for 'vmm': must be one of "auto", "firecracker", "qemu"/,
    },
    {
      name: 'bad size',
      config: '[vm_defaults]\ndisk_size = "lots"\n',
      expect: /config\.toml:2: bad value for 'vm_defaults\.disk_size': invalid size 'lots'/,
    },
    {
      name: 'TOML syntax error',
      config: 'log_level = "debug"\ncidr = 172.16.0.0/24\n',
      expect: /config\.toml:2: invalid TOML/,
    },
    {
      name: 'bridge_ip outside cidr',
      config: 'cidr = "172.16.0.0/24"\nbridge_ip = "172.17.0.1"\n',
      expect:
        /config\.toml:2: bad value for 'bridge_ip': 172\.17\.0\.1 is not inside cidr 172\.16\.0\.0\/24/,
    },
    {
      name: 'file_sync guest path outside /root',
      config:
        '[[file_sync]]\nhost = "~/.gitconfig"\nguest = "~/.gitconfig"\n\n[[file_sync]]\nhost = "~/.npmrc"\nguest = "/etc/npmrc"\n',
      expect:
        /config\.toml:7: bad value for 'file_sync\.guest' in \[\[file_sync\]\] entry 2: must be under '~\/' or '\/root\/'/,
    },
    {
      name: 'env override with a bad value',
      config: '',
      env: { BANGER_LOG_LEVEL: 'loud' },
      expect: /environment variable BANGER_LOG_LEVEL: bad value for 'log_level': must be one of/,
    },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      const sb = await makeSandbox({ config: c.config, env: c.env });
      try {
        const r = await sb.run(['daemon', 'status']);
        assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, `one line: ${r.stderr}`);
        assert.match(lines[0]!, /^error: /);
        assert.match(lines[0]!, c.expect);
        assert.equal(sb.daemonPid(), undefined, 'no daemon left running');
      } finally {
        await sb.cleanup();
      }
    });
  }

  test('a valid config shows up in doctor vm_defaults with provenance', async () => {
    const sb = await makeSandbox({
      config: '[vm_defaults]\nvcpu = 3\ndisk_size = "20G"\n',
      env: { BANGER_VM_DEFAULTS_MEMORY_MIB: '1536' },
    });
    try {
      const r = await sb.run(['doctor', '--json']);
      const out = JSON.parse(r.stdout) as {
        vmDefaults: Record<string, { value: number; source: string }>;
      };
      assert.deepEqual(out.vmDefaults.vcpu, { value: 3, source: 'config' });
      assert.deepEqual(out.vmDefaults.memoryMib, { value: 1536, source: 'config' });
      assert.deepEqual(out.vmDefaults.diskSize, { value: 20 * 1024 ** 3, source: 'config' });
    } finally {
      await sb.cleanup();
    }
  });

  test('editing config.toml applies without restarting the daemon; a broken edit is reported', async () => {
    const sb = await makeSandbox({ config: 'log_level = "info"\n' });
    try {
      assert.match((await sb.run(['daemon', 'status'])).stdout, /level info/);
      sb.writeConfig('log_level = "debug"\n');
      assert.match((await sb.run(['daemon', 'status'])).stdout, /level debug/);
      sb.writeConfig('log_level = "debug"\nnope = 1\n');
      const bad = await sb.run(['daemon', 'status']);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /config\.toml:2: unknown key 'nope'/);
    } finally {
      await sb.cleanup();
    }
  });
});
