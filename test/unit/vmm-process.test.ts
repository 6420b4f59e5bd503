import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { isProcessAlive } from '../../src/util/proc.js';
import { sleep } from '../../src/util/sleep.js';
import { canPauseResume, canSnapshot } from '../../src/vmm/driver.js';
import { killVmm, signalVmm, spawnVmm, waitGone } from '../../src/vmm/process.js';
import { createVmmDriver } from '../../src/vmm/registry.js';

/**
 * The VMM process helper both drivers use (real processes), and the parts of
 * the driver interface the lifecycle decides by: preflight, exit diagnosis,
 * version warnings, sockets, capabilities.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-vmmproc-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const logFile = (): string => path.join(tmp, `vmm${++n}.log`);

const rejectsWith = (p: Promise<unknown>, code: string, msg: RegExp) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof BangerError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, msg);
    return true;
  });

describe('VMM process helper', () => {
  test('spawns detached with a header line in the log, and kills with a bounded wait', async () => {
    const log = logFile();
    const p = await spawnVmm({
      bin: 'sleep',
      args: ['30'],
      cwd: tmp,
      log,
      installHint: 'apt-get install coreutils',
    });
    assert.ok(isProcessAlive(p.pid, p.pidStartTime));
    assert.match(fs.readFileSync(log, 'utf8'), /^\[banger\] \S+ starting sleep 30\n$/);
    const h = { pid: p.pid, pidStartTime: p.pidStartTime!, controlSocket: '' };
    await killVmm(h, 'sleep of vm x');
    assert.equal(isProcessAlive(p.pid), false);
    for (let i = 0; i < 300 && !p.exited(); i++) await sleep(10);
    assert.deepEqual(p.exited(), { code: null, signal: 'SIGKILL' });
  });

  test("a VMM's own output is this run's log tail; its exit status is kept", async () => {
    const log = logFile();
    fs.writeFileSync(log, 'an older run\n');
    const p = await spawnVmm({
      bin: 'sh',
      args: ['-c', 'echo first; echo "the last words" >&2; exit 3'],
      cwd: tmp,
      log,
      installHint: 'x',
    });
    for (let i = 0; i < 300 && !p.exited(); i++) await sleep(10);
    assert.deepEqual(p.exited(), { code: 3, signal: null });
    assert.equal(p.logTail(), 'first\nthe last words');
    assert.equal(p.logTail(1), 'the last words');
  });

  test('a missing binary is tool_missing with the driver hint; nothing runs', async () => {
    await assert.rejects(
      spawnVmm({
        bin: path.join(tmp, 'no-such-vmm'),
        args: [],
        cwd: tmp,
        log: logFile(),
        installHint: 'install the-vmm',
      }),
      (e: unknown) =>
        e instanceof BangerError && e.code === 'tool_missing' && e.hint === 'install the-vmm',
    );
  });

  test('a recycled pid (other start time) is never signalled', async () => {
    const p = await spawnVmm({
      bin: 'sleep',
      args: ['30'],
      cwd: tmp,
      log: logFile(),
      installHint: 'x',
    });
    const impostor = { pid: p.pid, pidStartTime: p.pidStartTime! + 1 };
    signalVmm(impostor, 'SIGKILL', 'x');
    await killVmm(impostor, 'x');
    assert.ok(isProcessAlive(p.pid, p.pidStartTime), 'still running');
    assert.equal(await waitGone({ pid: p.pid, pidStartTime: p.pidStartTime! }, 50), false);
    await killVmm({ pid: p.pid, pidStartTime: p.pidStartTime! }, 'x');
    assert.equal(await waitGone({ pid: p.pid, pidStartTime: p.pidStartTime! }, 50), true);
  });
});

describe('driver interface: what the lifecycle asks', () => {
  const config = { qemuBin: 'qemu-system-x86_64', firecrackerBin: 'firecracker' };
  const qemu = createVmmDriver('qemu', config);
  const fc = createVmmDriver('firecracker', config);

  test('capability gates match the methods', () => {
    assert.equal(canPauseResume(qemu), true);
    assert.equal(canSnapshot(qemu), true, 'QEMU saves and restores (migration + RAM file)');
    assert.equal(canPauseResume(fc), true);
    assert.equal(canSnapshot(fc), true);
  });

  test('preflight: firecracker refuses TCG with the accelerator decision, QEMU accepts it', async () => {
    await qemu.preflight({ vmName: 'v', accel: 'tcg', accelReason: 'accel = "tcg"' });
    await rejectsWith(
      fc.preflight({ vmName: 'v', accel: 'tcg', accelReason: 'auto: /dev/kvm is missing' }),
      'precondition',
      /^firecracker needs KVM, but auto: \/dev\/kvm is missing$/,
    );
  });

  test('exit diagnosis: a KVM failure in the QEMU log is one actionable line', () => {
    const e = qemu.diagnoseExit('v1', 'boot...\nKVM internal error. Suberror: 1\nmore\n');
    assert.equal(e?.code, 'vmm_failed');
    assert.equal(e?.message, "vm 'v1' died under KVM (KVM internal error. Suberror: 1)");
    assert.match(e?.hint ?? '', /accel = "tcg"/);
    assert.equal(qemu.diagnoseExit('v1', 'an ordinary exit\n'), undefined);
  });

  test('version warnings: firecracker before 1.8 cannot give Debian kernels their disks', () => {
    assert.match(fc.versionWarning('Firecracker v1.7.0')?.detail ?? '', /older than 1\.8\.0/);
    assert.equal(fc.versionWarning('Firecracker v1.10.1'), undefined);
    assert.equal(qemu.versionWarning('QEMU emulator version 7.2.19'), undefined);
  });

  test("each driver's sockets in a VM directory, for the path-length check", () => {
    const vm = { dir: '/s/vms/abc', agentSocket: '/s/vms/abc/agent.sock' };
    assert.deepEqual(qemu.socketPaths(vm), ['/s/vms/abc/qmp.sock', '/s/vms/abc/agent.sock']);
    assert.deepEqual(fc.socketPaths(vm), ['/s/vms/abc/fc.sock', '/s/vms/abc/agent.sock']);
  });

  test('agent transport: vsock dials retry every failure, virtio-serial only not-listening ones', () => {
    const vm = { name: 'v', dir: '/s/vms/abc', agentSocket: '/s/vms/abc/agent.sock' };
    assert.equal(qemu.agentChannel(vm).retryAllFailures, false);
    assert.equal(fc.agentChannel(vm).retryAllFailures, true);
  });
});
