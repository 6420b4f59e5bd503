import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildQemuArgv } from '../../src/vmm/qemu/argv.js';
import type { LaunchSpec } from '../../src/vmm/driver.js';

const spec: LaunchSpec = {
  vmId: 'id1',
  name: 'dev',
  dir: '/s/vms/id1',
  vcpu: 2,
  memoryMib: 1024,
  accel: 'tcg',
  kernel: { path: '/k/bzImage', initrd: '/k/initrd', cmdline: 'console=ttyS0' },
  disks: [{ id: 'root', path: '/s/images/a,b.ext4', readOnly: true }],
  net: { tap: 'bgr0', mac: '02:00:00:00:00:01' },
  agentSocket: '/s/vms/id1/agent.sock',
  consoleLog: '/s/vms/id1/console.log',
  vmmLog: '/s/vms/id1/vmm.log',
};

const after = (argv: string[], flag: string): string[] =>
  argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));

describe('qemu argv', () => {
  test('console appended to its log, commas escaped, named process', () => {
    const argv = buildQemuArgv(spec, { qmpSocket: '/s/vms/id1/qmp.sock' });
    assert.deepEqual(after(argv, '-name'), ['banger-dev,process=banger-dev']);
    assert.ok(
      after(argv, '-chardev').includes('file,id=console,path=/s/vms/id1/console.log,append=on'),
    );
    assert.ok(after(argv, '-drive')[0]!.includes('file=/s/images/a,,b.ext4'));
    assert.deepEqual(after(argv, '-sandbox'), []);
    assert.deepEqual(after(argv, '-runas'), []);
  });

  test('confined: the full seccomp policy without -runas; with it, everything but elevateprivileges', () => {
    const own = buildQemuArgv(spec, { qmpSocket: 'q', sandbox: true });
    assert.deepEqual(after(own, '-sandbox'), [
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    ]);
    const dropped = buildQemuArgv(spec, { qmpSocket: 'q', sandbox: true, runAs: 'banger-vmm' });
    assert.deepEqual(after(dropped, '-sandbox'), [
      'on,obsolete=deny,spawn=deny,resourcecontrol=deny',
    ]);
    assert.deepEqual(after(dropped, '-runas'), ['banger-vmm']);
    assert.throws(
      () => buildQemuArgv(spec, { qmpSocket: 'q', runAs: 'x,y' }),
      /not a valid user name/,
    );
  });
});
