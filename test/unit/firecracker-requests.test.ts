import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import type { LaunchSpec } from '../../src/vmm/driver.js';
import {
  describeInstance,
  firecrackerBootArgs,
  getVersion,
  launchRequests,
  logger,
  driveRescan,
  pauseVm,
  resumeVm,
  sendCtrlAltDel,
  serial,
  snapshotCreate,
  snapshotLoad,
  stepName,
  type FcRequest,
} from '../../src/vmm/firecracker/requests.js';
import { FirecrackerContract } from '../fixtures/firecracker/contract.js';
import { sampleLaunchSpec } from '../helpers/launch-spec.js';

const spec = (over: Partial<LaunchSpec> = {}): LaunchSpec => sampleLaunchSpec('a1b2c3d4e5f6', over);

const contract = FirecrackerContract.load();

const expectInvalid = (fn: () => unknown, re: RegExp): void =>
  assert.throws(
    fn,
    (e: unknown) => e instanceof BangerError && e.code === 'invalid_request' && re.test(e.message),
  );

describe('firecracker request builders', () => {
  test('a launch is machine, kernel, disks in order, network, vsock, then InstanceStart', () => {
    assert.deepEqual(launchRequests(spec()), [
      {
        method: 'PUT',
        path: '/machine-config',
        body: { vcpu_count: 2, mem_size_mib: 1024, smt: false, track_dirty_pages: false },
      },
      {
        method: 'PUT',
        path: '/boot-source',
        body: {
          kernel_image_path: '/s/kernels/deb/vmlinux',
          boot_args:
            'console=ttyS0 quiet reboot=k panic=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd',
          initrd_path: '/s/kernels/deb/initrd.img',
        },
      },
      {
        method: 'PUT',
        path: '/drives/base',
        body: {
          drive_id: 'base',
          path_on_host: '/s/images/deb/rootfs.ext4',
          is_root_device: false,
          is_read_only: true,
        },
      },
      {
        method: 'PUT',
        path: '/drives/overlay',
        body: {
          drive_id: 'overlay',
          path_on_host: '/s/vms/a1b2c3d4e5f6/overlay.ext4',
          is_root_device: false,
          is_read_only: false,
          cache_type: 'Writeback',
        },
      },
      {
        method: 'PUT',
        path: '/drives/work',
        body: {
          drive_id: 'work',
          path_on_host: '/s/vms/a1b2c3d4e5f6/work.ext4',
          is_root_device: false,
          is_read_only: false,
          cache_type: 'Writeback',
        },
      },
      {
        method: 'PUT',
        path: '/network-interfaces/eth0',
        body: { iface_id: 'eth0', host_dev_name: 'bgtap3', guest_mac: '06:00:ac:10:00:02' },
      },
      {
        method: 'PUT',
        path: '/vsock',
        body: { guest_cid: 3, uds_path: '/s/vms/a1b2c3d4e5f6/agent.sock' },
      },
      { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } },
    ]);
  });

  test('no drive is a root device, so firecracker adds no root= and keeps the drive order', () => {
    const drives = launchRequests(spec()).filter((r) => r.path.startsWith('/drives/'));
    assert.deepEqual(
      drives.map((d) => [d.path, (d.body as { is_root_device: boolean }).is_root_device]),
      [
        ['/drives/base', false],
        ['/drives/overlay', false],
        ['/drives/work', false],
      ],
    );
  });

  test('the base disk is read-only even if the spec forgot it', () => {
    const reqs = launchRequests(spec({ disks: [{ id: 'base', path: '/b', readOnly: false }] }));
    const base = reqs.find((r) => r.path === '/drives/base')!.body as Record<string, unknown>;
    assert.equal(base.is_read_only, true);
    assert.equal(base.cache_type, undefined);
  });

  test('without initrd or network those fields and calls are left out', () => {
    const reqs = launchRequests(spec({ net: undefined, kernel: { path: '/k', cmdline: '' } }));
    assert.deepEqual(reqs.find((r) => r.path === '/boot-source')!.body, {
      kernel_image_path: '/k',
      boot_args: 'reboot=k panic=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd',
    });
    assert.equal(
      reqs.some((r) => r.path.startsWith('/network-interfaces/')),
      false,
    );
  });

  test('options: logger first, serial before start, CID, vsock path, dirty pages', () => {
    const reqs = launchRequests(spec(), {
      logger: { path: '/s/fc.log', level: 'Debug' },
      serialOutPath: '/s/console.log',
      guestCid: 42,
      vsockPath: '/s/v.sock',
      trackDirtyPages: true,
    });
    assert.deepEqual(reqs[0], logger('/s/fc.log', 'Debug'));
    assert.deepEqual(reqs.at(-2), serial('/s/console.log'));
    assert.deepEqual(reqs.at(-1), {
      method: 'PUT',
      path: '/actions',
      body: { action_type: 'InstanceStart' },
    });
    assert.deepEqual(reqs.find((r) => r.path === '/vsock')!.body, {
      guest_cid: 42,
      uds_path: '/s/v.sock',
    });
    assert.equal(
      (reqs.find((r) => r.path === '/machine-config')!.body as { track_dirty_pages: boolean })
        .track_dirty_pages,
      true,
    );
  });

  test('boot args: firecracker extras are appended once, caller values win', () => {
    assert.equal(
      firecrackerBootArgs('console=ttyS0  panic=5 reboot=t i8042.noaux'),
      'console=ttyS0 panic=5 reboot=t i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd',
    );
    const once = firecrackerBootArgs('console=ttyS0');
    assert.equal(firecrackerBootArgs(once), once);
    assert.doesNotMatch(once, /root=|pci=off/);
  });

  test('stop, status, pause/resume and snapshot calls', () => {
    assert.deepEqual(sendCtrlAltDel(), {
      method: 'PUT',
      path: '/actions',
      body: { action_type: 'SendCtrlAltDel' },
    });
    assert.deepEqual(describeInstance(), { method: 'GET', path: '/' });
    assert.deepEqual(pauseVm(), { method: 'PATCH', path: '/vm', body: { state: 'Paused' } });
    assert.deepEqual(driveRescan({ id: 'work', path: '/vms/x/work.ext4' }), {
      method: 'PATCH',
      path: '/drives/work',
      body: { drive_id: 'work', path_on_host: '/vms/x/work.ext4' },
    });
    assert.throws(() => driveRescan({ id: '../x', path: '/p' }), /invalid firecracker drive id/);
    assert.deepEqual(resumeVm(), { method: 'PATCH', path: '/vm', body: { state: 'Resumed' } });
    assert.deepEqual(snapshotCreate({ snapshotPath: '/s/vm.snap', memFilePath: '/s/vm.mem' }), {
      method: 'PUT',
      path: '/snapshot/create',
      body: { snapshot_path: '/s/vm.snap', mem_file_path: '/s/vm.mem', snapshot_type: 'Full' },
    });
    assert.deepEqual(
      snapshotLoad({
        snapshotPath: '/s/vm.snap',
        memFilePath: '/s/vm.mem',
        tap: 'bgtap9',
        vsockPath: '/s/n.sock',
      }),
      {
        method: 'PUT',
        path: '/snapshot/load',
        body: {
          snapshot_path: '/s/vm.snap',
          mem_backend: { backend_type: 'File', backend_path: '/s/vm.mem' },
          resume_vm: true,
          network_overrides: [{ iface_id: 'eth0', host_dev_name: 'bgtap9' }],
          vsock_override: { uds_path: '/s/n.sock' },
        },
      },
    );
    assert.equal(stepName(sendCtrlAltDel()), 'PUT /actions');
  });

  test('specs firecracker would reject fail before anything is spawned', () => {
    expectInvalid(
      () => launchRequests(spec({ vcpu: 33 })),
      /33 vCPUs requested, firecracker supports 1 to 32/,
    );
    expectInvalid(() => launchRequests(spec({ vcpu: 0 })), /0 vCPUs/);
    expectInvalid(() => launchRequests(spec({ memoryMib: 1.5 })), /memory/);
    expectInvalid(
      () => launchRequests(spec({ disks: [{ id: 'data-1', path: '/d', readOnly: false }] })),
      /disk id 'data-1'/,
    );
    expectInvalid(
      () =>
        launchRequests(
          spec({
            disks: [
              { id: 'base', path: '/a', readOnly: true },
              { id: 'base', path: '/b', readOnly: true },
            ],
          }),
        ),
      /used twice/,
    );
    expectInvalid(() => launchRequests(spec({ disks: [] })), /no disks/);
    expectInvalid(() => launchRequests(spec(), { guestCid: 2 }), /guest CID 2/);
    expectInvalid(
      () =>
        launchRequests(spec({ net: { tap: 'a-very-long-tap-name', mac: '06:00:00:00:00:01' } })),
      /tap name/,
    );
    expectInvalid(
      () => launchRequests(spec({ net: { tap: 'tap0', mac: '06:00:00:00:01' } })),
      /MAC address/,
    );
    expectInvalid(
      () => launchRequests(spec({ agentSocket: `/${'x'.repeat(120)}/agent.sock` })),
      /Unix sockets allow 107/,
    );
    const e = (() => {
      try {
        launchRequests(spec({ vcpu: 64 }));
      } catch (err) {
        return err as BangerError;
      }
      return undefined;
    })();
    assert.equal(
      e?.line,
      "cannot launch vm 'foo' on firecracker: 64 vCPUs requested, firecracker supports 1 to 32: use --vcpu 32 or less",
    );
  });
});

describe('firecracker requests against the Swagger contract', () => {
  const all = (): FcRequest[] => [
    ...launchRequests(spec(), {
      logger: { path: '/s/fc.log' },
      serialOutPath: '/s/console.log',
      trackDirtyPages: true,
    }),
    ...launchRequests(
      spec({
        net: undefined,
        kernel: { path: '/k', cmdline: 'x' },
        disks: [{ id: 'only', path: '/o', readOnly: false }],
      }),
    ),
    sendCtrlAltDel(),
    describeInstance(),
    getVersion(),
    pauseVm(),
    resumeVm(),
    driveRescan({ id: 'work', path: '/vms/x/work.ext4' }),
    snapshotCreate({ snapshotPath: '/a', memFilePath: '/b', diff: true }),
    snapshotLoad({ snapshotPath: '/a', memFilePath: '/b' }),
    snapshotLoad({
      snapshotPath: '/a',
      memFilePath: '/b',
      resume: false,
      tap: 't',
      vsockPath: '/v',
    }),
  ];

  test(`the contract loads (Firecracker API ${contract.apiVersion})`, () => {
    assert.match(contract.apiVersion, /^\d+\.\d+/);
    assert.ok(contract.operations.length > 20);
  });

  test('every request banger builds matches the contract', () => {
    for (const r of all()) {
      const res = contract.validate(r.method, r.path, r.body);
      assert.ok(res.ok, `${stepName(r)} ${JSON.stringify(r.body)}: ${res.ok ? '' : res.fault}`);
    }
  });

  // Each case changes a correct request the way a careless edit of a builder
  // might; the contract must reject every one.
  const mutations: { name: string; mutate: (r: FcRequest[]) => FcRequest; fault: RegExp }[] = [
    {
      name: 'vcpu_count sent as a string',
      mutate: (r) => withBody(r[0]!, { vcpu_count: '2' }),
      fault: /MachineConfiguration\/vcpu_count must be integer/,
    },
    {
      name: 'mem_size_mib left out',
      mutate: (r) => ({ ...r[0]!, body: { vcpu_count: 2 } }),
      fault: /must have required property 'mem_size_mib'/,
    },
    {
      name: 'vcpu_count above 32',
      mutate: (r) => withBody(r[0]!, { vcpu_count: 64 }),
      fault: /must be <= 32/,
    },
    {
      name: 'a misspelt field',
      mutate: (r) => withBody(r[1]!, { boot_arg: 'x' }),
      fault: /must NOT have additional properties 'boot_arg'/,
    },
    {
      name: 'kernel path renamed',
      mutate: (r) => ({ ...r[1]!, body: { kernel_path: '/k' } }),
      fault: /required property 'kernel_image_path'/,
    },
    {
      name: 'is_root_device dropped',
      mutate: (r) => {
        const b = { ...(r[2]!.body as Record<string, unknown>) };
        delete b.is_root_device;
        return { ...r[2]!, body: b };
      },
      fault: /required property 'is_root_device'/,
    },
    {
      name: 'cache_type not in the enum',
      mutate: (r) => withBody(r[3]!, { cache_type: 'WriteBack' }),
      fault: /must be equal to one of the allowed values/,
    },
    {
      name: 'drive path without id',
      mutate: (r) => ({ ...r[2]!, path: '/drives' }),
      fault: /Invalid request method and\/or path/,
    },
    {
      name: 'guest_cid below 3',
      mutate: (r) => withBody(r[6]!, { guest_cid: 2 }),
      fault: /Vsock\/guest_cid must be >= 3/,
    },
    {
      name: 'tap under the wrong key',
      mutate: (r) => ({ ...r[5]!, body: { iface_id: 'eth0', tap: 'bgtap3' } }),
      fault: /required property 'host_dev_name'/,
    },
    {
      name: 'unknown action',
      mutate: (r) => withBody(r[7]!, { action_type: 'Start' }),
      fault: /allowed values/,
    },
    {
      name: 'POST instead of PUT',
      mutate: (r) => ({ ...r[7]!, method: 'POST' as never }),
      fault: /Invalid request method/,
    },
    {
      name: 'PUT /vm instead of PATCH',
      mutate: () => ({ ...pauseVm(), method: 'PUT' }),
      fault: /Invalid request method/,
    },
    {
      name: 'vm state Resume',
      mutate: () => ({ ...pauseVm(), body: { state: 'Resume' } }),
      fault: /allowed values/,
    },
    { name: 'missing body', mutate: (r) => ({ ...r[1]!, body: undefined }), fault: /Missing body/ },
    {
      name: 'a GET with a body',
      mutate: () => ({ ...describeInstance(), body: { state: 'Running' } }),
      fault: /^GET \/ takes no body\.$/,
    },
    {
      name: 'Ctrl+Alt+Del with an extra field',
      mutate: () => withBody(sendCtrlAltDel(), { payload: 'now' }),
      fault: /InstanceActionInfo must NOT have additional properties 'payload'/,
    },
  ];
  for (const m of mutations) {
    test(`the contract rejects: ${m.name}`, () => {
      const base = launchRequests(spec());
      const bad = m.mutate(base);
      const res = contract.validate(bad.method, bad.path, bad.body);
      assert.equal(res.ok, false, `${stepName(bad)} ${JSON.stringify(bad.body)} was accepted`);
      assert.match(res.ok ? '' : res.fault, m.fault);
    });
  }
});

function withBody(r: FcRequest, patch: Record<string, unknown>): FcRequest {
  return { ...r, body: { ...(r.body as Record<string, unknown>), ...patch } };
}
