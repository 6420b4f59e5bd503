import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  hostPathInJail,
  jailCgroupDir,
  jailDir,
  jailerArgv,
  jailPlan,
  jailRoot,
  vmCgroups,
} from '../../src/vmm/firecracker/jailer.js';
import { cmdlineNamesSocket, jailedId, jailOfSocket } from '../../src/vmm/jail.js';
import { launchRequests } from '../../src/vmm/firecracker/requests.js';
import { FirecrackerContract } from '../fixtures/firecracker/contract.js';
import { sampleLaunchSpec } from '../helpers/launch-spec.js';

const spec = sampleLaunchSpec('a1b2c3d4e5f60718');
const opts = {
  jailerBin: '/usr/bin/jailer',
  firecrackerBin: '/usr/bin/firecracker',
  id: spec.vmId,
  uid: 999,
  gid: 998,
  chrootBase: '/s/jail',
};

describe('firecracker jailer (pure parts)', () => {
  test("argv: id, exec file, uid/gid, chroot base, cgroup v2 and limits, then firecracker's own", () => {
    assert.deepEqual(jailerArgv({ ...opts, parentCgroup: 'banger', cgroups: vmCgroups(spec) }), [
      '--id',
      'a1b2c3d4e5f60718',
      '--exec-file',
      '/usr/bin/firecracker',
      '--uid',
      '999',
      '--gid',
      '998',
      '--chroot-base-dir',
      '/s/jail',
      '--cgroup-version',
      '2',
      '--parent-cgroup',
      'banger',
      '--cgroup',
      'memory.max=1207959552',
      '--',
      '--api-sock',
      '/fc.sock',
    ]);
  });

  test('argv refuses root, odd ids and cgroup values that would split', () => {
    assert.throws(() => jailerArgv({ ...opts, uid: 0 }), /unprivileged uid/);
    assert.throws(() => jailerArgv({ ...opts, gid: 0 }), /unprivileged gid/);
    assert.throws(() => jailerArgv({ ...opts, id: '../x' }), /1-64 letters/);
    assert.throws(
      () => jailerArgv({ ...opts, cgroups: { 'memory.max': '1 2' } }),
      /invalid cgroup/,
    );
    assert.throws(() => jailerArgv({ ...opts, chrootBase: 'jail' }), /absolute/);
  });

  test('the chroot is <base>/<exec file name>/<id>/root', () => {
    assert.equal(jailRoot(opts), '/s/jail/firecracker/a1b2c3d4e5f60718/root');
  });

  test('plan: every file Firecracker opens is inside the jail, requests name jail paths', () => {
    const root = jailRoot(opts);
    const p = jailPlan(spec, root);
    assert.deepEqual(p.files, [
      { from: '/s/kernels/deb/vmlinux', to: `${root}/vmlinux`, writable: false },
      { from: '/s/kernels/deb/initrd.img', to: `${root}/initrd`, writable: false },
      { from: '/s/images/deb/rootfs.ext4', to: `${root}/base.img`, writable: false },
      { from: spec.disks[1]!.path, to: `${root}/overlay.img`, writable: true },
      { from: spec.disks[2]!.path, to: `${root}/work.img`, writable: true },
    ]);
    assert.equal(
      p.spec.vmmLog,
      spec.vmmLog,
      "Firecracker's stdout is the daemon's file, not in the jail",
    );
    assert.equal(
      jailPlan(spec, root, { consoleLogInJail: true }).files.at(-1)?.to,
      `${root}/console.log`,
      'the console log is linked in when Firecracker writes it (PUT /serial)',
    );
    assert.equal(p.hostApiSocket, `${root}/fc.sock`);
    assert.equal(p.hostAgentSocket, `${root}/agent.sock`);
    const reqs = launchRequests(p.spec);
    const paths = JSON.stringify(reqs.map((r) => r.body));
    assert.doesNotMatch(paths, /\/s\//, 'no host path reaches Firecracker');
    const contract = FirecrackerContract.load();
    for (const r of reqs) {
      const res = contract.validate(r.method, r.path, r.body);
      assert.ok(res.ok, `${r.method} ${r.path}: ${res.ok ? '' : res.fault}`);
    }
  });

  test('argv without limits leaves cgroups alone; an exec file not named firecracker is refused', () => {
    assert.deepEqual(jailerArgv(opts), [
      '--id',
      'a1b2c3d4e5f60718',
      '--exec-file',
      '/usr/bin/firecracker',
      '--uid',
      '999',
      '--gid',
      '998',
      '--chroot-base-dir',
      '/s/jail',
      '--',
      '--api-sock',
      '/fc.sock',
    ]);
    assert.ok(!jailerArgv(opts).includes('--daemonize'), 'the spawned pid stays Firecracker');
    assert.throws(
      () => jailerArgv({ ...opts, firecrackerBin: '/usr/bin/fc' }),
      /contains 'firecracker'/,
    );
  });

  test('paths: the jail dir, the cgroup dir, host paths of jail paths', () => {
    assert.equal(jailDir(opts), '/s/jail/firecracker/a1b2c3d4e5f60718');
    assert.equal(jailCgroupDir('/sys/fs/cgroup', 'banger', 'a1b2'), '/sys/fs/cgroup/banger/a1b2');
    assert.throws(() => jailCgroupDir('/sys/fs/cgroup', '../x', 'a1b2'), /invalid cgroup/);
    assert.throws(() => jailCgroupDir('/sys/fs/cgroup', 'banger', '../a'), /invalid cgroup/);
    assert.equal(
      hostPathInJail('/s/jail/firecracker/x/root', '/snapshot.mem'),
      '/s/jail/firecracker/x/root/snapshot.mem',
    );
    assert.throws(() => hostPathInJail('/r', 'rel'), /inside the jail/);
    assert.throws(() => hostPathInJail('/r', '/../etc/passwd'), /inside the jail/);
  });

  test('a control socket in a jail says which VM and how its VMM names it; others are not jailed', () => {
    assert.deepEqual(jailOfSocket('/var/lib/banger/jailer/firecracker/ab12-cd/root/fc.sock'), {
      root: '/var/lib/banger/jailer/firecracker/ab12-cd/root',
      dir: '/var/lib/banger/jailer/firecracker/ab12-cd',
      id: 'ab12-cd',
      socketInJail: '/fc.sock',
    });
    assert.equal(jailOfSocket('/var/lib/banger/vms/ab12/fc.sock'), undefined);
    assert.equal(jailOfSocket('/x/other/firecracker/ab12/root/fc.sock'), undefined);
    const sock = '/s/jailer/firecracker/ab12/root/fc.sock';
    assert.equal(
      cmdlineNamesSocket(['firecracker', '--id=ab12', '--api-sock', '/fc.sock'], sock),
      true,
    );
    assert.equal(
      cmdlineNamesSocket(['firecracker', '--id=ab13', '--api-sock', '/fc.sock'], sock),
      false,
      'another VM',
    );
    assert.equal(cmdlineNamesSocket(['firecracker', '--id=ab12'], sock), false, 'no socket');
    assert.equal(
      cmdlineNamesSocket(['qemu', '-qmp', 'unix:/s/vms/ab/qmp.sock'], '/s/vms/ab/qmp.sock'),
      true,
    );
    assert.equal(jailedId(['fc', '--id', 'x1']), 'x1');
    assert.equal(jailedId(['fc']), undefined);
  });
});
