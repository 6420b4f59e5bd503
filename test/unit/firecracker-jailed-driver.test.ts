import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isProcessAlive } from '../../src/util/proc.js';
import { lookupUser } from '../../src/util/users.js';
import { canSnapshot, type VmHandle } from '../../src/vmm/driver.js';
import { createFirecrackerDriver } from '../../src/vmm/firecracker/index.js';
import { connectVsock } from '../../src/vmm/firecracker/vsock.js';
import { FirecrackerContract } from '../fixtures/firecracker/contract.js';
import { readRecordedRequests, type RecordedRequest } from '../fixtures/firecracker/fake-api.js';
import {
  killIfAlive,
  makeFakeJailer,
  makeTempRoot,
  makeVm,
  type TempRoot,
} from '../fixtures/firecracker/harness.js';
import { needs } from '../helpers/ci.js';

/**
 * The Firecracker driver through a jailer, with real processes: the fake
 * jailer (test/fixtures/firecracker/fake-jailer.ts) checks its command line
 * like the real one, chroots into `<base>/firecracker/<id>/root` in its own
 * mount namespace and drops to the VMM user before it execs the fake
 * Firecracker, so a file the driver forgot to put in the jail, or one the
 * VMM user cannot open, fails the start. Needs root and the banger-vmm user.
 */
const VMM_USER = 'banger-vmm';
const canRun = process.getuid?.() === 0 && lookupUser(VMM_USER) !== undefined;

describe('firecracker driver through the jailer (fake jailer, real chroot)', () => {
  let root: TempRoot;
  let jailer: string;
  let base: string;
  let cgroupRoot: string;
  let log: string;
  const started: VmHandle[] = [];
  const env = (): NodeJS.ProcessEnv => ({
    ...process.env,
    FAKE_FC_REQUEST_LOG: log,
    FAKE_FC_AGENT: '1',
    FAKE_JAILER_CGROUP_ROOT: cgroupRoot,
  });
  const driver = () =>
    createFirecrackerDriver({
      bin: root.bin,
      env: env(),
      jailer: { bin: jailer, chrootBase: base, vmmUser: VMM_USER, cgroupRoot },
    });

  before(() => {
    root = makeTempRoot('bfj-');
    // The VMM user reaches nothing of the test's directory but the jail (chroot).
    fs.chmodSync(root.dir, 0o700);
    jailer = makeFakeJailer(path.join(root.dir, 'jbin'));
    base = path.join(root.dir, 'jailer');
    cgroupRoot = path.join(root.dir, 'cgroup');
    fs.mkdirSync(cgroupRoot);
    fs.writeFileSync(path.join(cgroupRoot, 'cgroup.controllers'), 'cpu io memory pids\n');
    log = path.join(root.dir, 'requests.jsonl');
  });
  after(async () => {
    for (const h of started) await killIfAlive(h.pid, h.pidStartTime);
    root?.cleanup();
  });

  const requests = (): RecordedRequest[] => readRecordedRequests(log);

  test('start: firecracker runs chrooted as the VMM user, requests name jail paths, the contract accepts each; stop removes the jail and its cgroup', async (t) => {
    if (!needs(t, canRun, `needs root and the ${VMM_USER} user`)) return;
    const spec = makeVm(root.dir, 'jl');
    const d = driver();
    const h = await d.start(spec);
    started.push(h);
    const jailRoot = path.join(base, 'firecracker', spec.vmId, 'root');
    assert.equal(h.controlSocket, path.join(jailRoot, 'fc.sock'));
    const status = fs.readFileSync(`/proc/${h.pid}/status`, 'utf8');
    const uid = lookupUser(VMM_USER)!.uid;
    assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
    assert.equal(fs.readlinkSync(`/proc/${h.pid}/root`), jailRoot, 'chrooted into the jail');
    const cmd = fs.readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmd.includes(`--id=${spec.vmId}`), cmd.join(' '));
    assert.ok(cmd.includes('/fc.sock'), cmd.join(' '));

    const sent = requests();
    const contract = FirecrackerContract.load();
    for (const r of sent) {
      assert.equal(r.status < 300, true, `${r.method} ${r.path}: ${r.status} ${r.fault ?? ''}`);
      assert.ok(contract.validate(r.method, r.path, r.body).ok);
    }
    const boot = sent.find((r) => r.path === '/boot-source')!.body as Record<string, string>;
    assert.equal(boot.kernel_image_path, '/vmlinux');
    assert.equal(boot.initrd_path, '/initrd');
    const overlay = sent.find((r) => r.path === '/drives/overlay')!.body as Record<string, string>;
    assert.equal(overlay.path_on_host, '/overlay.img');
    assert.equal(
      fs.statSync(path.join(jailRoot, 'overlay.img')).ino,
      fs.statSync(spec.disks[1]!.path).ino,
      'a hard link',
    );
    const cg = path.join(cgroupRoot, 'banger', spec.vmId);
    assert.equal(
      fs.readFileSync(path.join(cg, 'memory.max'), 'utf8').trim(),
      String((1024 + 128) * 1024 * 1024),
    );
    assert.equal(fs.readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').trim(), String(h.pid));

    // The agent answers through the jail's vsock socket.
    const sock = await connectVsock(d.socketPaths(spec)[1]!, 52, { vmName: 'jl', timeoutMs: 2000 });
    sock.destroy();
    assert.deepEqual(d.socketPaths(spec), [h.controlSocket, path.join(jailRoot, 'agent.sock')]);

    const r = await d.stop(h, { timeoutMs: 5000 });
    assert.equal(r.graceful, true);
    assert.equal(isProcessAlive(h.pid), false);
    assert.equal(fs.existsSync(path.dirname(jailRoot)), false, 'jail removed');
    assert.equal(fs.existsSync(cg), false, 'cgroup removed');
    assert.ok(fs.existsSync(spec.disks[1]!.path), 'the VM disk itself stays');
  });

  test('save and restore through the jail: files moved out, linked back in, the jail paths sent', async (t) => {
    if (!needs(t, canRun, `needs root and the ${VMM_USER} user`)) return;
    const spec = makeVm(root.dir, 'js');
    const d = driver();
    assert.ok(canSnapshot(d));
    const h = await d.start(spec);
    started.push(h);
    await d.pause(h);
    const files = {
      statePath: path.join(spec.dir, 'x.state'),
      memPath: path.join(spec.dir, 'x.mem'),
    };
    await d.save(h, files);
    assert.equal(fs.readFileSync(files.statePath, 'utf8'), 'fake snapshot state\n');
    assert.equal(fs.statSync(files.memPath).uid, 0, 'owned by the daemon again');
    const create = requests()
      .filter((r) => r.path === '/snapshot/create')
      .at(-1)!;
    assert.deepEqual(create.body, {
      snapshot_path: '/snapshot.state',
      mem_file_path: '/snapshot.mem',
      snapshot_type: 'Full',
    });
    await d.kill(h, 'SIGKILL');
    assert.equal(
      fs.existsSync(path.join(base, 'firecracker', spec.vmId)),
      false,
      'jail removed after kill',
    );

    const h2 = await d.restore(spec, files);
    started.push(h2);
    const load = requests()
      .filter((r) => r.path === '/snapshot/load')
      .at(-1)!;
    assert.equal(load.status, 204, load.fault);
    const body = load.body as { snapshot_path: string; vsock_override?: { uds_path: string } };
    assert.equal(body.snapshot_path, '/snapshot.state');
    assert.equal(body.vsock_override?.uds_path, '/agent.sock');
    const jailRoot = path.join(base, 'firecracker', spec.vmId, 'root');
    assert.equal(
      fs.existsSync(path.join(jailRoot, 'snapshot.mem')),
      false,
      'links dropped once loaded',
    );
    assert.ok(fs.existsSync(files.memPath));
    await d.stop(h2, { timeoutMs: 5000 });
    assert.equal(fs.existsSync(path.dirname(jailRoot)), false);

    // A fork: another VM restored from the same files, in its own jail.
    const child = makeVm(root.dir, 'jsk');
    const h3 = await d.restore(child, files);
    started.push(h3);
    assert.equal(h3.controlSocket, path.join(base, 'firecracker', child.vmId, 'root', 'fc.sock'));
    assert.equal(
      requests()
        .filter((r) => r.path === '/snapshot/load')
        .at(-1)!.status,
      204,
    );
    await d.stop(h3, { timeoutMs: 5000 });
    assert.deepEqual(fs.readdirSync(path.join(base, 'firecracker')), [], 'no jail left');
  });

  test('the fake jailer refuses what the real one refuses', async (t) => {
    if (!needs(t, canRun, `needs root and the ${VMM_USER} user`)) return;
    const { spawnSync } = await import('node:child_process');
    const run = (...args: string[]) => spawnSync(jailer, args, { encoding: 'utf8' });
    const ok = ['--exec-file', root.bin, '--uid', '999', '--gid', '999', '--chroot-base-dir', base];
    assert.match(run('--id', 'a_b', ...ok).stderr, /Invalid instance ID/);
    assert.match(
      run('--id', 'x', ...ok.slice(0, 2), '--uid', 'me', '--gid', '1').stderr,
      /Invalid uid/,
    );
    assert.match(
      run('--exec-file', root.bin, '--uid', '1', '--gid', '1').stderr,
      /mandatory argument 'id'/,
    );
    assert.match(
      run('--id', 'x', '--exec-file', jailer, '--uid', '1', '--gid', '1').stderr,
      /must contain "firecracker"/,
    );
    assert.match(
      run('--id', 'x', '--exec-file', '/nope/firecracker', '--uid', '1', '--gid', '1').stderr,
      /No such file/,
    );
    assert.match(run('--id', 'x', ...ok, '--daemonize').stderr, /not expected from banger/);
  });
});
