import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { FirecrackerApi } from '../../src/vmm/firecracker/api.js';
import {
  describeInstance,
  launchRequests,
  pauseVm,
  resumeVm,
  sendCtrlAltDel,
  snapshotCreate,
} from '../../src/vmm/firecracker/requests.js';
import { FirecrackerContract } from '../fixtures/firecracker/contract.js';
import { FakeFirecracker } from '../fixtures/firecracker/fake-api.js';
import { makeTempRoot, makeVm, type TempRoot } from '../fixtures/firecracker/harness.js';

const contract = FirecrackerContract.load();

const rejects = async (p: Promise<unknown>, check: (e: BangerError) => void): Promise<void> => {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof BangerError, `not a BangerError: ${String(e)}`);
    check(e);
    return true;
  });
};

describe('firecracker API client against the contract-checked fake', () => {
  let root: TempRoot;
  let n = 0;
  const servers: { close(): Promise<void> }[] = [];

  before(() => {
    root = makeTempRoot();
  });
  after(async () => {
    for (const s of servers) await s.close();
    root.cleanup();
  });

  const fake = async (
    opts: Partial<ConstructorParameters<typeof FakeFirecracker>[0]> = {},
  ): Promise<{ fc: FakeFirecracker; api: FirecrackerApi; vm: ReturnType<typeof makeVm> }> => {
    const vm = makeVm(root.dir, `vm${++n}`);
    const socketPath = path.join(vm.dir, 'fc.sock');
    const fc = new FakeFirecracker({ socketPath, contract, id: vm.vmId, ...opts });
    await fc.listen();
    servers.push(fc);
    return { fc, vm, api: new FirecrackerApi({ socketPath, vmName: vm.name, logPath: vm.vmmLog }) };
  };

  test('the whole launch sequence is accepted and boots the fake', async () => {
    const { fc, api, vm } = await fake();
    await api.callAll(launchRequests(vm));
    assert.deepEqual(
      fc.requests.map((r) => `${r.method} ${r.path} ${r.status}`),
      [
        'PUT /machine-config 204',
        'PUT /boot-source 204',
        'PUT /drives/base 204',
        'PUT /drives/overlay 204',
        'PUT /drives/work 204',
        'PUT /network-interfaces/eth0 204',
        'PUT /vsock 204',
        'PUT /actions 204',
      ],
    );
    const info = await api.call<{ state: string; id: string; app_name: string }>(
      describeInstance(),
    );
    assert.deepEqual(contract.validateDefinition('InstanceInfo', info), []);
    assert.equal(info.state, 'Running');
    assert.equal(info.id, vm.vmId);
    await api.call(pauseVm());
    assert.equal((await api.call<{ state: string }>(describeInstance())).state, 'Paused');
    await api.call(
      snapshotCreate({
        snapshotPath: path.join(vm.dir, 'vm.snap'),
        memFilePath: path.join(vm.dir, 'vm.mem'),
      }),
    );
    assert.ok(fs.existsSync(path.join(vm.dir, 'vm.snap')));
    await api.call(resumeVm());
    await api.call(sendCtrlAltDel());
  });

  test('a 400 becomes one error naming the step and the VM, with the fault and a log hint', async () => {
    const { api, vm } = await fake({
      failStep: 'PUT /boot-source',
      fault: 'The kernel file cannot be opened: Permission denied (os error 13)',
    });
    const reqs = launchRequests(vm);
    await api.call(reqs[0]!);
    await rejects(api.call(reqs[1]!), (e) => {
      assert.equal(e.code, 'vmm_failed');
      assert.equal(
        e.message,
        `firecracker rejected PUT /boot-source for vm '${vm.name}': The kernel file cannot be opened: Permission denied (os error 13)`,
      );
      assert.equal(e.hint, `see the VMM log ${vm.vmmLog} (banger vm logs ${vm.name})`);
      assert.equal(e.details?.status, 400);
    });
  });

  test('callAll stops at the first failure', async () => {
    const { fc, api, vm } = await fake({ failStep: 'PUT /drives/overlay' });
    await rejects(api.callAll(launchRequests(vm)), (e) =>
      assert.match(e.message, /rejected PUT \/drives\/overlay/),
    );
    assert.equal(fc.requests.at(-1)!.path, '/drives/overlay');
    assert.equal(fc.state, 'Not started');
  });

  test('a request outside the contract is refused by the fake with its reason', async () => {
    const { api } = await fake();
    await rejects(
      api.call({
        method: 'PUT',
        path: '/machine-config',
        body: { vcpu_count: 2, mem_size_mib: '512' },
      }),
      (e) =>
        assert.match(
          e.message,
          /rejected PUT \/machine-config for vm '.*': Invalid MachineConfiguration .*mem_size_mib must be integer/,
        ),
    );
    await rejects(
      api.call({
        method: 'PUT',
        path: '/drives/a',
        body: {
          drive_id: 'b',
          is_root_device: false,
          path_on_host: '/dev/null',
          is_read_only: true,
        },
      }),
      (e) => assert.match(e.message, /does not match the id from the body/),
    );
  });

  test('configuration after InstanceStart is refused like firecracker does', async () => {
    const { api, vm } = await fake();
    await api.callAll(launchRequests(vm));
    await rejects(api.call(launchRequests(vm)[0]!), (e) =>
      assert.match(e.message, /not supported after starting the microVM/),
    );
  });

  test('a missing socket names the socket', async () => {
    const sock = path.join(root.dir, 'nope.sock');
    const api = new FirecrackerApi({ socketPath: sock, vmName: 'gone' });
    await rejects(api.call(describeInstance()), (e) => {
      assert.equal(e.code, 'vmm_failed');
      assert.equal(
        e.message,
        `cannot reach firecracker of vm 'gone' for GET /: its API socket ${sock} does not exist`,
      );
    });
  });

  const rawServer = async (handler: http.RequestListener): Promise<string> => {
    const sock = path.join(root.dir, `raw${++n}.sock`);
    const server = http.createServer(handler);
    await new Promise<void>((r) => server.listen(sock, r));
    servers.push({
      close: () =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    });
    return sock;
  };

  test('an error body that is not JSON is still shown', async () => {
    const sock = await rawServer((_req, res) => {
      res.writeHead(500);
      res.end('internal kaboom\n');
    });
    const api = new FirecrackerApi({ socketPath: sock, vmName: 'x' });
    await rejects(api.call(sendCtrlAltDel()), (e) =>
      assert.equal(e.message, "firecracker rejected PUT /actions for vm 'x': internal kaboom"),
    );
  });

  test('a silent API times out; an abort cancels', async () => {
    const sock = await rawServer(() => undefined);
    const api = new FirecrackerApi({ socketPath: sock, vmName: 'slow', timeoutMs: 100 });
    await rejects(api.call(describeInstance()), (e) => {
      assert.equal(e.code, 'timeout');
      assert.match(e.message, /did not answer GET \/ for vm 'slow' within 100 ms/);
    });
    const ac = new AbortController();
    const p = api.call(describeInstance(), { timeoutMs: 5_000, signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await rejects(p, (e) => assert.equal(e.code, 'cancelled'));
  });
});
