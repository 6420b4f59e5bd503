import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { isProcessAlive, processStartTime } from '../../src/util/proc.js';
import { canSnapshot, type LaunchSpec, type VmHandle } from '../../src/vmm/driver.js';
import {
  createFirecrackerDriver,
  type FirecrackerDriverOptions,
} from '../../src/vmm/firecracker/index.js';
import { connectVsock } from '../../src/vmm/firecracker/vsock.js';
import { FirecrackerContract } from '../fixtures/firecracker/contract.js';
import { readRecordedRequests } from '../fixtures/firecracker/fake-api.js';
import {
  bzImageHeader,
  killIfAlive,
  makeTempRoot,
  makeVm,
  type TempRoot,
} from '../fixtures/firecracker/harness.js';

/**
 * The real driver against the fake `firecracker` executable: real processes,
 * real sockets, requests checked against the Swagger file by the fake.
 */

const contract = FirecrackerContract.load();

const requestsOf = readRecordedRequests;

const rejectsWith = async (p: Promise<unknown>, check: (e: BangerError) => void): Promise<void> => {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(
      e instanceof BangerError,
      `not a BangerError: ${e instanceof Error ? e.stack : String(e)}`,
    );
    check(e);
    return true;
  });
};

/** Read newline-delimited JSON replies from the agent. */
function agentClient(sock: Socket): (req: object) => Promise<Record<string, unknown>> {
  let buf = '';
  const waiting: ((v: Record<string, unknown>) => void)[] = [];
  sock.on('data', (c: Buffer) => {
    buf += c.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      waiting.shift()?.(JSON.parse(line) as Record<string, unknown>);
    }
  });
  return (req) =>
    new Promise((resolve) => {
      waiting.push(resolve);
      sock.write(JSON.stringify(req) + '\n');
    });
}

describe('firecracker driver with the fake firecracker executable', () => {
  let root: TempRoot;
  let n = 0;
  const started: VmHandle[] = [];

  before(() => {
    root = makeTempRoot();
  });
  afterEach(async () => {
    // Whatever a test left running, by pid and start time only.
    for (const h of started.splice(0)) await killIfAlive(h.pid, h.pidStartTime);
  });
  after(() => root.cleanup());

  const setup = (
    env: Record<string, string> = {},
    over: Partial<LaunchSpec> = {},
    opts: FirecrackerDriverOptions = {},
  ) => {
    const vm = makeVm(root.dir, `vm${++n}`, over);
    const requestLog = path.join(vm.dir, 'requests.jsonl');
    const driver = createFirecrackerDriver({
      bin: root.bin,
      env: { ...process.env, FAKE_FC_REQUEST_LOG: requestLog, ...env },
      // generous: the fake is a Node process that loads the Swagger contract, slow on a loaded host
      socketTimeoutMs: 20_000,
      ...opts,
    });
    const start = async (): Promise<VmHandle> => {
      const h = await driver.start(vm);
      started.push(h);
      return h;
    };
    return { vm, driver, requestLog, start };
  };

  test('binary, version and capabilities', async () => {
    const { driver } = setup({ FAKE_FC_VERSION: '1.9.2' });
    assert.equal(driver.binary(), root.bin);
    assert.equal(await driver.version(), '1.9.2');
    assert.deepEqual(driver.capabilities, {
      accels: ['kvm'],
      kernelFormats: ['elf'],
      agentTransport: 'vsock',
      gracefulStop: 'ctrl-alt-del',
      pauseResume: true,
      snapshot: true,
    });
    const missing = createFirecrackerDriver({ bin: path.join(root.dir, 'no-such-firecracker') });
    assert.equal(missing.binary(), undefined);
    await rejectsWith(missing.version(), (e) => assert.equal(e.code, 'tool_missing'));
  });

  test('start → status → stop: configured per contract, detached, graceful Ctrl+Alt+Del', async () => {
    const { vm, driver, requestLog, start } = setup();
    const h = await start();
    assert.equal(h.controlSocket, path.join(vm.dir, 'fc.sock'));
    assert.equal(h.pidStartTime, processStartTime(h.pid));
    assert.ok(isProcessAlive(h.pid, h.pidStartTime));
    // Own session (setsid), so a daemon restart does not take it down.
    const stat = fs.readFileSync(`/proc/${h.pid}/stat`, 'utf8');
    assert.equal(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3], String(h.pid));
    const cmdline = fs.readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').split('\0');
    assert.deepEqual(cmdline.slice(-5, -1), ['--api-sock', h.controlSocket, '--id', vm.vmId]);

    const reqs = requestsOf(requestLog);
    assert.deepEqual(
      reqs.map((r) => `${r.method} ${r.path} ${r.status}`),
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
    for (const r of reqs)
      assert.ok(contract.validate(r.method, r.path, r.body).ok, `${r.method} ${r.path}`);
    // Firecracker's own output lands in the VM's VMM log.
    assert.match(
      fs.readFileSync(vm.vmmLog, 'utf8'),
      /\[banger\] .* starting .*firecracker --api-sock .*\n.*Running Firecracker v1\.10\.1/,
    );

    assert.equal(await driver.status(h), 'running');
    const r = await driver.stop(h, { timeoutMs: 5_000 });
    assert.deepEqual(r, { graceful: true });
    assert.equal(isProcessAlive(h.pid, h.pidStartTime), false);
    assert.equal(await driver.status(h), 'stopped');
    assert.equal(fs.existsSync(h.controlSocket), false);
    assert.equal(
      requestsOf(requestLog).at(-1)!.body &&
        (requestsOf(requestLog).at(-1)!.body as { action_type: string }).action_type,
      'SendCtrlAltDel',
    );
    // Stopping a stopped VM is a no-op.
    assert.deepEqual(await driver.stop(h, { timeoutMs: 1_000 }), { graceful: true });
  });

  test('the VM can be started again after a stop (stale sockets are cleared)', async () => {
    const { driver, start } = setup();
    const h1 = await start();
    await driver.kill(h1, 'SIGKILL');
    for (let i = 0; i < 100 && isProcessAlive(h1.pid, h1.pidStartTime); i++)
      await new Promise((r) => setTimeout(r, 10));
    // The killed process left fc.sock and the vsock socket behind.
    const h2 = await start();
    assert.equal(await driver.status(h2), 'running');
    assert.deepEqual(await driver.stop(h2, { timeoutMs: 5_000 }), { graceful: true });
  });

  test('a second start while firecracker runs is refused', async () => {
    const { vm, driver, start } = setup();
    const h = await start();
    await rejectsWith(driver.start(vm), (e) => {
      assert.equal(e.code, 'conflict');
      assert.match(e.message, /already has a firecracker answering on/);
    });
    assert.equal(await driver.status(h), 'running');
  });

  test('a guest that ignores Ctrl+Alt+Del is killed after the timeout', async () => {
    const { driver, start } = setup({ FAKE_FC_IGNORE_CTRL_ALT_DEL: '1' });
    const h = await start();
    const t0 = Date.now();
    assert.deepEqual(await driver.stop(h, { timeoutMs: 300 }), { graceful: false });
    assert.ok(Date.now() - t0 >= 300);
    assert.equal(isProcessAlive(h.pid, h.pidStartTime), false);
  });

  test('kill sends the signal; status and kill never touch a recycled pid', async () => {
    const { driver, start } = setup();
    const h = await start();
    const impostor: VmHandle = { ...h, pidStartTime: h.pidStartTime + 1 };
    assert.equal(await driver.status(impostor), 'stopped');
    await driver.kill(impostor, 'SIGKILL');
    assert.ok(
      isProcessAlive(h.pid, h.pidStartTime),
      'a handle with another start time must not be signalled',
    );
    await driver.kill(h, 'SIGTERM');
    for (let i = 0; i < 200 && isProcessAlive(h.pid, h.pidStartTime); i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(await driver.status(h), 'stopped');
  });

  test('pause and resume are reflected in status', async () => {
    const { driver, start } = setup();
    const h = await start();
    await driver.pause(h);
    assert.equal(await driver.status(h), 'paused');
    await driver.resume(h);
    assert.equal(await driver.status(h), 'running');
    await driver.pause(h);
    // A paused guest is resumed so it can see Ctrl+Alt+Del.
    assert.deepEqual(await driver.stop(h, { timeoutMs: 5_000 }), { graceful: true });
  });

  test('pause, save, restore: a snapshot round trip over the API, per contract', async () => {
    const { vm, driver, requestLog, start } = setup({ FAKE_FC_AGENT: '1' });
    assert.ok(canSnapshot(driver), 'capabilities.snapshot and the methods agree');
    const h = await start();
    await driver.pause(h);
    const files = {
      statePath: path.join(vm.dir, 'snap.state'),
      memPath: path.join(vm.dir, 'snap.mem'),
    };
    await driver.save(h, files);
    assert.ok(fs.existsSync(files.statePath) && fs.existsSync(files.memPath));
    await driver.kill(h, 'SIGKILL');
    assert.equal(isProcessAlive(h.pid, h.pidStartTime), false);
    const r = await driver.restore(vm, files);
    started.push(r);
    assert.notEqual(r.pid, h.pid);
    assert.equal(await driver.status(r), 'running');
    const reqs = requestsOf(requestLog);
    const i = reqs.findIndex((q) => q.path === '/snapshot/load');
    assert.deepEqual(
      reqs.slice(i).map((q) => `${q.method} ${q.path} ${q.status}`),
      ['PUT /snapshot/load 204', 'GET / 200'],
      'the restored process gets only the load (then the status query)',
    );
    assert.deepEqual(reqs[i]!.body, {
      snapshot_path: files.statePath,
      mem_backend: { backend_type: 'File', backend_path: files.memPath },
      resume_vm: true,
      network_overrides: [{ iface_id: 'eth0', host_dev_name: 'tap-bg0' }],
      vsock_override: { uds_path: vm.agentSocket },
    });
    const snapCreate = reqs.find((q) => q.path === '/snapshot/create')!;
    assert.equal(snapCreate.status, 204);
    // The restored guest's agent answers on the VM's agent socket again.
    const sock = await connectVsock(vm.agentSocket, 52, { vmName: vm.name });
    sock.destroy();
  });

  test('a rejected step fails the start, names the step, and leaves nothing running', async () => {
    const { vm, driver, requestLog } = setup({
      FAKE_FC_FAIL_STEP: 'PUT /drives/work',
      FAKE_FC_FAULT: 'Unable to create the block device: BackingFile(Os { code: 13 })',
    });
    await rejectsWith(driver.start(vm), (e) => {
      assert.equal(e.code, 'vmm_failed');
      assert.equal(
        e.message,
        `firecracker rejected PUT /drives/work for vm '${vm.name}': Unable to create the block device: BackingFile(Os { code: 13 })`,
      );
      assert.match(e.hint!, new RegExp(`see the VMM log ${vm.vmmLog}`));
    });
    assert.equal(requestsOf(requestLog).at(-1)!.path, '/drives/work');
    assertNothingLeft(vm);
  });

  test('a process that exits at once is reported with the tail of its log', async () => {
    const { vm, driver } = setup({
      FAKE_FC_EXIT_EARLY: 'Error: KvmContext(Kvm(Error(13))): /dev/kvm: Permission denied',
    });
    await rejectsWith(driver.start(vm), (e) => {
      assert.equal(e.code, 'vmm_failed');
      assert.equal(
        e.message,
        `firecracker of vm '${vm.name}' exited during startup (exit code 1): Error: KvmContext(Kvm(Error(13))): /dev/kvm: Permission denied`,
      );
      assert.equal(e.hint, `see the VMM log ${vm.vmmLog}`);
    });
    assertNothingLeft(vm);
  });

  test('a process that dies while being configured is reported as such', async () => {
    const { vm, driver } = setup({ FAKE_FC_DIE_ON: 'PUT /vsock' });
    await rejectsWith(driver.start(vm), (e) => {
      assert.match(
        e.message,
        new RegExp(
          `firecracker of vm '${vm.name}' exited during startup \\(exit code 1\\): fake firecracker dies on PUT /vsock`,
        ),
      );
    });
    assertNothingLeft(vm);
  });

  test('an API socket that never appears times out and the process is killed', async () => {
    const { vm, driver } = setup({ FAKE_FC_NO_SOCKET: '1' }, {}, { socketTimeoutMs: 2_000 });
    await rejectsWith(driver.start(vm), (e) => {
      assert.equal(e.code, 'timeout');
      assert.match(
        e.message,
        new RegExp(
          `firecracker of vm '${vm.name}' did not open its API socket .*fc\\.sock within 2000 ms; its log ends with: .*not opening the API socket`,
        ),
      );
    });
    assertNothingLeft(vm);
  });

  test('bzImage kernels, tcg and bad specs are refused before spawning', async () => {
    const { vm, driver } = setup();
    const bz = path.join(vm.dir, 'vmlinuz');
    fs.writeFileSync(bz, bzImageHeader());
    await rejectsWith(driver.start({ ...vm, kernel: { ...vm.kernel, path: bz } }), (e) =>
      assert.equal(
        e.message,
        `firecracker needs an uncompressed ELF vmlinux; the kernel of vm '${vm.name}' is a bzImage (${bz})`,
      ),
    );
    await rejectsWith(driver.start({ ...vm, accel: 'tcg' }), (e) =>
      assert.match(e.message, /firecracker runs only with KVM/),
    );
    await rejectsWith(driver.start({ ...vm, vcpu: 40 }), (e) =>
      assert.equal(e.code, 'invalid_request'),
    );
    assert.equal(fs.existsSync(vm.vmmLog), false, 'nothing was spawned');
  });

  test('a missing firecracker is a tool_missing error', async () => {
    const { vm } = setup();
    const driver = createFirecrackerDriver({ bin: 'firecracker-not-installed-here' });
    await rejectsWith(driver.start(vm), (e) => {
      assert.equal(e.code, 'tool_missing');
      assert.match(e.hint!, /docs\/firecracker\.md/);
    });
  });

  test('the fake guest agent answers over vsock and powers the VM off', async () => {
    const { vm, driver, start } = setup({ FAKE_FC_AGENT: '1' });
    const h = await start();
    const sock = await connectVsock(vm.agentSocket, 52, { vmName: vm.name });
    try {
      const call = agentClient(sock);
      const hello = await call({ id: 1, op: 'hello' });
      assert.equal(hello.id, 1);
      assert.equal(hello.ok, true);
      const res = hello.result as Record<string, unknown>;
      assert.equal(res.protocol, 1);
      assert.equal(res.agentVersion, 'fake');
      assert.equal(res.ready, true);
      for (const k of ['hostname', 'bootId']) assert.equal(typeof res[k], 'string');
      assert.equal(typeof res.uptimeMs, 'number');
      const ready = await call({ id: 2, op: 'wait-ready' });
      assert.equal(
        (ready.result as { hostKeys: string[] }).hostKeys[0]!.startsWith('ssh-ed25519 '),
        true,
      );
      assert.equal((ready.result as { readyAtMs: number }).readyAtMs, 100);
      const unknown = await call({ id: 3, op: 'dance' });
      assert.equal(unknown.ok, false);
      const off = await call({ id: 4, op: 'poweroff' });
      assert.equal(off.ok, true);
    } finally {
      sock.destroy();
    }
    for (let i = 0; i < 300 && isProcessAlive(h.pid, h.pidStartTime); i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(await driver.status(h), 'stopped');
    // Only the agent port is served; others are dropped like a guest without a listener.
    await rejectsWith(connectVsock(vm.agentSocket, 1024), (e) =>
      assert.equal(e.details?.reason, 'unreachable'),
    );
  });

  test('other vsock ports have no guest listener', async () => {
    const { vm, start } = setup({ FAKE_FC_AGENT: '1' });
    await start();
    await rejectsWith(connectVsock(vm.agentSocket, 5000, { vmName: vm.name }), (e) =>
      assert.equal(e.details?.reason, 'closed'),
    );
  });
});

function assertNothingLeft(vm: LaunchSpec): void {
  assert.equal(fs.existsSync(path.join(vm.dir, 'fc.sock')), false, 'API socket removed');
  assert.equal(fs.existsSync(vm.agentSocket), false, 'vsock socket removed');
  // No process of ours still holds the VM's API socket path on its command line.
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd = '';
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmd.includes(path.join(vm.dir, 'fc.sock')) && isProcessAlive(Number(pid))) {
      assert.fail(`process ${pid} still runs for ${vm.name}: ${cmd.split('\0').join(' ')}`);
    }
  }
}
