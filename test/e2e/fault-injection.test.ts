import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { which } from '../../src/util/exec.js';
import { makeTempRoot, type TempRoot } from '../fixtures/firecracker/harness.js';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { makeFixtureRepo } from '../helpers/gitFixture.js';
import { imageRow, settledViolations, startDaemon, vmRow, type Daemon } from '../helpers/faults.js';
import { pushImage, startRegistry, type Registry } from '../helpers/registry.js';
import { makeSandbox, sleep, type Sandbox } from '../helpers/sandbox.js';
import { gzip, makeTar } from '../helpers/tarWriter.js';

/**
 * Crash consistency (docs/reliability.md): for each fault point of each
 * operation, the daemon is killed there (BANGER_FAULT=<op>:<point>:kill),
 * started again, and the invariants are checked — the store consistent
 * (checkIntegrity: rows match files, addresses unique, no intent left), the
 * subject fully there or fully gone as the operation's recovery promises, no
 * stray process, file, tap or rule — then the operation is retried. Then 100
 * randomized cycles (random operation, point and kind of fault) over one state.
 *
 * Most operations need no VM boot: `--no-start` VMs of a tiny registered image,
 * images pulled from a registry on loopback. Start and stop are crashed with
 * real QEMU guests in a network namespace (two boots).
 */

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const noop = (): void => undefined;
const CYCLES = Number(process.env.BANGER_FAULT_CYCLES ?? 100);

/** The fault points of the operations that need no boot, and what recovery makes of each. */
const POINTS = {
  create: ['begin', 'after-row', 'after-disks'],
  delete: ['begin', 'after-stop', 'after-files', 'after-row'],
  set: ['begin', 'after-work-disk', 'after-overlay-disk', 'after-row'],
  image: ['begin', 'after-build', 'after-rename', 'after-row'],
} as const;
type Op = keyof typeof POINTS;

/**
 * What the subject is after recovery: a create is rolled back, a delete and a
 * disk growth completed, an image creation rolled back until its row exists.
 * A `fail` at `begin` refuses the operation before it starts: nothing changes.
 */
function expected(op: Op, point: string, action: string): 'gone' | 'there' {
  if (action === 'fail' && point === 'begin')
    return op === 'create' || op === 'image' ? 'gone' : 'there';
  if (op === 'set') return 'there';
  if (op === 'image') return point === 'after-row' ? 'there' : 'gone';
  return 'gone';
}

/** The error a client gets when the daemon dies under its request. */
const died = (e: Error & { code?: string }): boolean =>
  e.code === 'daemon_unavailable' || e.code === 'ECONNRESET' || /socket hang up/.test(e.message);

/** The results of a vm action or set: throws the first per-VM error. */
function okAll(r: { results: { ok: boolean; error?: { message: string } }[] }): void {
  const bad = r.results.find((x) => !x.ok);
  if (bad) throw new Error(bad.error?.message ?? 'failed');
}

const hasTools = Boolean(
  which('mkfs.ext4') && which('resize2fs') && which('debugfs') && which('docker-registry'),
);

describe(
  'fault injection: every point of create, delete, set and image pull',
  { timeout: 15 * 60_000 },
  () => {
    let sb: Sandbox;
    let reg: Registry | undefined;
    let imageRef = '';
    let seq = 0;
    const ok = hasTools;

    before(async () => {
      // default_kernel names no catalog kernel: an image pull's background kernel fetch fails at once
      // (a warning) instead of reaching for a Debian mirror.
      sb = await makeSandbox({ config: 'default_kernel = "no-such-kernel"\n' });
      if (!ok) return;
      const files = path.join(sb.root, 'tiny');
      fs.mkdirSync(files);
      for (const f of ['rootfs.ext4', 'work-seed.ext4'])
        execFileSync('mkfs.ext4', ['-q', '-F', path.join(files, f), '16M']);
      fs.writeFileSync(path.join(files, 'vmlinux'), 'not a kernel: these VMs never boot');
      const r = await sb.run([
        'image',
        'register',
        '--name',
        'tiny',
        '--rootfs',
        path.join(files, 'rootfs.ext4'),
        '--work-seed',
        path.join(files, 'work-seed.ext4'),
        '--kernel',
        path.join(files, 'vmlinux'),
      ]);
      assert.equal(r.code, 0, r.stderr);
      await sb.run(['daemon', 'stop']);
      reg = await startRegistry();
      const layer = makeTar([
        { name: 'etc/', type: 'dir', mode: 0o755 },
        { name: 'etc/os-release', content: 'ID=tiny\n' },
        { name: 'root/', type: 'dir', mode: 0o700 },
        { name: 'root/.profile', content: 'echo hi\n', mode: 0o644 },
      ]);
      await pushImage(reg.host, 'test/tiny', 'v1', [{ data: gzip(layer) }]);
      imageRef = `${reg.host}/test/tiny:v1`;
    });
    after(async () => {
      await reg?.stop();
      await sb.cleanup();
    });

    const create = (d: Daemon, name: string) =>
      d.client.stream(
        'vmCreate',
        { body: { name, image: 'tiny', diskSize: GiB, start: false, nat: false } },
        noop,
      );
    const del = async (d: Daemon, name: string) =>
      okAll(
        await d.client.stream(
          'vmAction',
          { params: { action: 'delete' }, body: { refs: [name], force: true } },
          noop,
        ),
      );
    const grow = async (d: Daemon, name: string, size: number) =>
      okAll(await d.client.stream('vmSet', { body: { refs: [name], diskSize: size } }, noop));
    const pull = (d: Daemon, name: string) =>
      d.client.stream('imagePull', { body: { ref: imageRef, name } }, noop);
    const dropImage = (d: Daemon, name: string) =>
      d.client.call('imageDelete', { params: { name } });

    /** What the VM or image is now, against what recovery promised (`size`: the VM's disk size then). */
    function assertOutcome(
      c: { op: Op; point: string; action: string; subject: string },
      size?: number,
    ): void {
      const want = expected(c.op, c.point, c.action);
      const what = `${c.op}:${c.point}:${c.action} on ${c.subject}`;
      if (c.op === 'image') {
        assert.equal(Boolean(imageRow(sb, c.subject)), want === 'there', `${what}: image ${want}`);
        return;
      }
      const row = vmRow(sb, c.subject);
      assert.equal(Boolean(row), want === 'there', `${what}: the VM is ${want}`);
      if (!row || size === undefined) return;
      assert.equal(row.diskSize, size, `${what}: the row's disk size`);
      for (const f of ['overlay.ext4', 'work.ext4'])
        assert.equal(
          fs.statSync(path.join(sb.paths.vmsDir, row.id, f)).size,
          size,
          `${what}: ${f} has the row's size`,
        );
    }

    /** Make what the operation works on (with a daemon whose armed point is not on the way). */
    async function prepare(d: Daemon, op: Op): Promise<{ subject: string; growTo?: number }> {
      const subject = `f${op.slice(0, 3)}-${seq++}`;
      if (op === 'delete' || op === 'set') await create(d, subject);
      return { subject, growTo: op === 'set' ? GiB + 64 * MiB : undefined };
    }

    function runOp(d: Daemon, op: Op, subject: string, growTo?: number): Promise<unknown> {
      if (op === 'create') return create(d, subject);
      if (op === 'delete') return del(d, subject);
      if (op === 'set') return grow(d, subject, growTo!);
      return pull(d, subject);
    }

    /** Remove what a cycle left (through a healthy daemon). */
    async function tidy(d: Daemon, op: Op, subject: string): Promise<void> {
      if (op === 'image') {
        if (imageRow(sb, subject)) await dropImage(d, subject);
      } else if (vmRow(sb, subject)) await del(d, subject);
    }

    for (const op of Object.keys(POINTS) as Op[]) {
      for (const point of POINTS[op]) {
        test(`${op}: killed at ${point}, recovered at the next start, retried`, async (t) => {
          if (!needs(t, ok, 'mkfs.ext4, resize2fs, debugfs or docker-registry not installed'))
            return;
          const d1 = await startDaemon(sb, `${op}:${point}:kill`);
          const { subject, growTo } = await prepare(d1, op);
          await assert.rejects(runOp(d1, op, subject, growTo), died);
          assert.equal((await d1.exited).signal, 'SIGKILL', 'the daemon died at the fault point');

          const d2 = await startDaemon(sb);
          try {
            assert.deepEqual(await settledViolations(sb), [], 'consistent after recovery');
            assertOutcome({ op, point, action: 'kill', subject }, growTo);
            // The retry: a rolled-back create or pull is done again; a completed one is there.
            if (op === 'create') await create(d2, subject);
            if (op === 'set') await grow(d2, subject, growTo!);
            if (op === 'image' && !imageRow(sb, subject)) await pull(d2, subject);
            if (op === 'delete') assert.equal(vmRow(sb, subject), undefined);
            else if (op === 'image') assert.ok(imageRow(sb, subject), 'the retried pull made it');
            else assert.ok(vmRow(sb, subject), 'the retried operation made it');
            assert.deepEqual(await settledViolations(sb), [], 'consistent after the retry');
            await tidy(d2, op, subject);
            assert.deepEqual(await settledViolations(sb), [], 'consistent after clean-up');
          } finally {
            await d2.kill();
          }
        });
      }
    }

    // image delete: rolled back (files moved back) until the row is gone; image promote: the copies
    // moved in are removed until the row points at them.
    const IMAGE_FILE_OPS = {
      'image-delete': { 'after-move': 'there', 'after-row': 'gone' },
      'image-promote': { 'after-rename': 'unmanaged', 'after-row': 'managed' },
    } as const;
    for (const [op, points] of Object.entries(IMAGE_FILE_OPS)) {
      for (const [point, want] of Object.entries(points)) {
        test(`${op}: killed at ${point}, recovered at the next start, retried`, async (t) => {
          if (!needs(t, ok, 'mkfs.ext4, resize2fs, debugfs or docker-registry not installed'))
            return;
          const name = `fimg-${seq++}`;
          const d1 = await startDaemon(sb, `${op}:${point}:kill`);
          const files = path.join(sb.root, 'tiny');
          if (op === 'image-delete') await pull(d1, name);
          else
            await d1.client.call('imageRegister', {
              body: {
                name,
                rootfs: path.join(files, 'rootfs.ext4'),
                workSeed: path.join(files, 'work-seed.ext4'),
                kernel: path.join(files, 'vmlinux'),
              },
            });
          const act = (d: Daemon) =>
            op === 'image-delete'
              ? dropImage(d, name)
              : d.client.stream('imagePromote', { params: { name } }, noop);
          await assert.rejects(act(d1), died);
          assert.equal((await d1.exited).signal, 'SIGKILL', 'the daemon died at the fault point');
          const d2 = await startDaemon(sb);
          try {
            assert.deepEqual(await settledViolations(sb), [], 'consistent after recovery');
            const row = imageRow(sb, name);
            if (want === 'gone') assert.equal(row, undefined, 'the image is gone');
            else assert.ok(row, 'the image is there');
            if (want === 'managed' || want === 'unmanaged')
              assert.equal(row!.managed, want === 'managed', `the image is ${want}`);
            if (want === 'there' || want === 'unmanaged') await act(d2); // the retry
            assert.deepEqual(await settledViolations(sb), [], 'consistent after the retry');
            if (imageRow(sb, name)) await dropImage(d2, name);
            assert.deepEqual(await settledViolations(sb), [], 'consistent after clean-up');
          } finally {
            await d2.kill();
          }
        });
      }
    }

    test('vm run PATH (workspace copy onto the new disk): killed at create:after-populate, rolled back, retried', async (t) => {
      if (!needs(t, ok, 'mkfs.ext4, resize2fs, debugfs or docker-registry not installed')) return;
      const repo = path.join(sb.root, 'repo');
      if (!fs.existsSync(repo)) makeFixtureRepo(repo, sb.env.HOME!);
      const name = `fws-${seq++}`;
      const run = (d: Daemon) =>
        d.client.stream(
          'workspaceRun',
          {
            body: {
              vm: { name, image: 'tiny', diskSize: GiB, start: false, nat: false },
              workspace: { path: repo, mode: 'shallow' },
            },
          },
          noop,
        );
      const d1 = await startDaemon(sb, 'create:after-populate:kill');
      await assert.rejects(run(d1), died);
      assert.equal((await d1.exited).signal, 'SIGKILL', 'the daemon died at the fault point');
      const d2 = await startDaemon(sb);
      try {
        assert.deepEqual(await settledViolations(sb), [], 'consistent after recovery');
        assert.equal(vmRow(sb, name), undefined, 'the VM is fully gone');
        await run(d2);
        assert.ok(vmRow(sb, name), 'the retried run made it');
        assert.deepEqual(await settledViolations(sb), []);
        await del(d2, name);
        assert.deepEqual(await settledViolations(sb), []);
      } finally {
        await d2.kill();
      }
    });

    test(`${CYCLES} randomized cycles: random operation, point and fault over one state`, async (t) => {
      if (!needs(t, ok, 'mkfs.ext4, resize2fs, debugfs or docker-registry not installed')) return;
      // A small LCG: the run is reproducible from its seed (printed on failure).
      let seed = Number(process.env.BANGER_FAULT_SEED ?? Date.now() % 1_000_000);
      const seed0 = seed;
      const rand = (n: number): number => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return Math.floor(seed / 2 ** 16) % n; // the high bits: an LCG's low bits cycle fast
      };
      const vms: string[] = [];
      const sizes = new Map<string, number>();
      type Cycle = { op: Op; point: string; action: string; subject: string; size?: number };
      let pending: Cycle | undefined;
      const tally: Record<string, number> = {};
      const t0 = Date.now();
      for (let i = 0; i < CYCLES; i++) {
        const ops: Op[] = ['create', 'delete', 'set', 'image'];
        const op = ops[rand(ops.length)]!;
        const point = POINTS[op][rand(POINTS[op].length)]!;
        const action = (['kill', 'kill', 'kill', 'exit', 'fail'] as const)[rand(5)]!;
        const at = `cycle ${i} (seed ${seed0}): ${op}:${point}:${action}`;
        // This daemon recovers what the previous cycle's crash left.
        const d = await startDaemon(sb, `${op}:${point}:${action}`);
        assert.deepEqual(await settledViolations(sb), [], `${at}: consistent after recovery`);
        if (pending) assertOutcome(pending, pending.size);
        for (const n of [...vms]) if (!vmRow(sb, n)) vms.splice(vms.indexOf(n), 1);
        if ((op === 'delete' || op === 'set') && vms.length === 0) {
          // Something to delete or grow (made by this daemon: its armed point is not on a create).
          const made = `rvm-${i}`;
          await create(d, made);
          vms.push(made);
        }

        const subject =
          op === 'create' || op === 'image' ? `r${op.slice(0, 3)}-${i}` : vms[rand(vms.length)]!;
        const before = sizes.get(subject) ?? GiB;
        const growTo = op === 'set' ? before + 64 * MiB : undefined;
        if (op === 'create') vms.push(subject);
        const cycle: Cycle = { op, point, action, subject };
        if (op === 'set') {
          const size = action === 'fail' && point === 'begin' ? before : growTo!;
          sizes.set(subject, size);
          cycle.size = size;
        }
        pending = cycle;

        const err = await runOp(d, op, subject, growTo).then(
          () => undefined,
          (e: Error) => e,
        );
        assert.ok(err, `${at}: the operation did not complete`);
        if (action === 'fail') {
          // The daemon lives on: the failed operation was recovered at once.
          assert.match(err.message, new RegExp(`injected fault at ${op}:${point}`), at);
          assert.deepEqual(await settledViolations(sb), [], `${at}: consistent after the failure`);
          assertOutcome(cycle, cycle.size);
          pending = undefined;
          await d.kill();
        } else {
          assert.ok(died(err), `${at}: ${err.message}`);
          const ex = await d.exited;
          if (action === 'kill') assert.equal(ex.signal, 'SIGKILL', at);
          else assert.equal(ex.code, 86, at);
        }
        tally[`${op}:${action}`] = (tally[`${op}:${action}`] ?? 0) + 1;
      }
      const d = await startDaemon(sb);
      try {
        assert.deepEqual(await settledViolations(sb), [], 'consistent after the last recovery');
        if (pending) assertOutcome(pending, pending.size);
        for (const v of (await d.client.call('vmList')).vms) await del(d, v.name);
        for (const img of (await d.client.call('imageList')).images)
          if (img.name !== 'tiny') await dropImage(d, img.name);
        assert.deepEqual(await settledViolations(sb), [], 'consistent after clean-up');
      } finally {
        await d.kill();
      }
      t.diagnostic(
        `${CYCLES} cycles in ${Math.round((Date.now() - t0) / 1000)}s (seed ${seed0}): ${JSON.stringify(tally)}`,
      );
    });
  },
);

describe('fault injection: start and stop of real guests', { timeout: 10 * 60_000 }, () => {
  let env: VmEnv | undefined;
  before(async () => {
    if (isRoot()) env = await vmEnv('flt');
  });
  after(async () => {
    await env?.cleanup();
  });

  const wrap = (e: VmEnv) => ['ip', 'netns', 'exec', e.ns];
  const start = async (d: Daemon, name: string) =>
    okAll(
      await d.client.stream(
        'vmAction',
        { params: { action: 'start' }, body: { refs: [name] } },
        noop,
      ),
    );
  const stop = async (d: Daemon, name: string) =>
    okAll(
      await d.client.stream(
        'vmAction',
        { params: { action: 'stop' }, body: { refs: [name], timeoutMs: 30_000 } },
        noop,
      ),
    );
  /** Taps in the namespace, and firewall lines naming an address. */
  const taps = async (e: VmEnv): Promise<string[]> =>
    ((await e.sh(['ip', '-o', 'link', 'show'])).stdout.match(/^\d+: (bgr[^:@]*)/gm) ?? []).map(
      (l) => l.split(': ')[1]!,
    );
  const rulesFor = async (e: VmEnv, ip: string): Promise<string[]> => {
    const text = `${(await e.sh(['iptables-save'])).stdout}\n${(await e.sh(['nft', 'list', 'ruleset'])).stdout}`;
    return text.split('\n').filter((l) => new RegExp(`\\b${ip.replace(/\./g, '\\.')}\\b`).test(l));
  };
  const stateOf = (e: VmEnv, name: string) => vmRow(e.sb, name);

  /** Start the daemon (armed or not) in the namespace, after the current one is gone. */
  async function daemon(e: VmEnv, fault?: string): Promise<Daemon> {
    await e.run(['daemon', 'stop']);
    return startDaemon(e.sb, fault, wrap(e));
  }

  async function waitState(e: VmEnv, name: string, states: string[], ms: number): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = stateOf(e, name)?.state ?? 'gone';
      if (states.includes(s) || Date.now() > deadline) return s;
      await sleep(500);
    }
  }

  test('start killed before and after its VMM runs; stop killed before and after the VMM exits', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    const name = e.name('flt');
    const created = await e.run(['vm', 'create', '--no-start', '--name', name]);
    assert.equal(created.code, 0, created.stderr);
    const ip = stateOf(e, name)!.ip!;

    // Before the row records a VMM: rolled back — no VMM, no tap, no rule, stopped.
    for (const point of ['after-tap', 'after-spawn']) {
      const d1 = await daemon(e, `start:${point}:kill`);
      await assert.rejects(start(d1, name), died);
      assert.equal((await d1.exited).signal, 'SIGKILL', `start:${point}: died there`);
      const d2 = await startDaemon(e.sb, undefined, wrap(e));
      try {
        assert.deepEqual(await settledViolations(e.sb), [], `start:${point}: consistent`);
        const vm = stateOf(e, name)!;
        assert.equal(vm.state, 'stopped', `start:${point}: rolled back`);
        assert.equal(vm.pid, null);
        assert.deepEqual(await taps(e), [], `start:${point}: no tap left`);
        assert.deepEqual(await rulesFor(e, ip), [], `start:${point}: no rule left`);
      } finally {
        await d2.kill();
      }
    }

    // After the row records its VMM: adopted, and the boot finishes under the next daemon.
    const d3 = await daemon(e, 'start:after-row:kill');
    await assert.rejects(start(d3, name), died);
    assert.equal((await d3.exited).signal, 'SIGKILL');
    let d4 = await startDaemon(e.sb, undefined, wrap(e));
    assert.equal(await waitState(e, name, ['running', 'error'], 180_000), 'running');
    assert.deepEqual(await settledViolations(e.sb), [], 'adopted boot: consistent');
    assert.equal((await taps(e)).length, 1, 'its tap is there');
    await d4.kill();

    // Stop killed after the guest was asked: the VM is what its VMM is; a retried stop stops it.
    const d5 = await startDaemon(e.sb, 'stop:after-request:kill', wrap(e));
    await assert.rejects(stop(d5, name), died);
    assert.equal((await d5.exited).signal, 'SIGKILL');
    d4 = await startDaemon(e.sb, undefined, wrap(e));
    assert.deepEqual(await settledViolations(e.sb), [], 'stop:after-request: consistent');
    assert.ok(['running', 'stopped'].includes(stateOf(e, name)!.state));
    await stop(d4, name);
    assert.equal(stateOf(e, name)!.state, 'stopped');
    assert.deepEqual(await taps(e), [], 'stopped: no tap');
    assert.deepEqual(await rulesFor(e, ip), [], 'stopped: no rule');

    // Start (the retry of the rolled-back starts), then stop killed after the VMM is gone.
    await start(d4, name);
    assert.equal(stateOf(e, name)!.state, 'running');
    await d4.kill();
    const d6 = await startDaemon(e.sb, 'stop:after-exit:kill', wrap(e));
    await assert.rejects(stop(d6, name), died);
    assert.equal((await d6.exited).signal, 'SIGKILL');
    const d7 = await startDaemon(e.sb, undefined, wrap(e));
    try {
      assert.deepEqual(await settledViolations(e.sb), [], 'stop:after-exit: consistent');
      assert.equal(stateOf(e, name)!.state, 'stopped');
      assert.deepEqual(await taps(e), []);
      assert.deepEqual(await rulesFor(e, ip), []);
    } finally {
      await d7.kill();
    }
  });
});

/**
 * The snapshot operations' points, with guests played by the contract-checked
 * fake `firecracker` (test/fixtures/firecracker): a real VMM process per VM
 * with its API socket (pause, snapshot create/load, resume) and the guest
 * agent on its vsock socket, so a VM "boots" in a moment and a killed daemon
 * leaves real processes, paused or not, for the next one to recover.
 */
const SNAPSHOT_POINTS = {
  snapshot: ['begin', 'after-pause', 'after-save', 'after-disks', 'after-resume', 'after-row'],
  restore: [
    'begin',
    'after-row',
    'after-disks',
    'after-tap',
    'after-spawn',
    'after-starting',
    'after-net',
  ],
  fork: ['begin', 'after-snapshot', 'after-children'],
  suspend: ['begin', 'after-pause', 'after-save', 'after-kill', 'after-row'],
  resume: ['begin', 'after-tap', 'after-spawn', 'after-starting', 'after-cont', 'after-ready'],
} as const;
type SnapOp = keyof typeof SNAPSHOT_POINTS;

/** What recovery promises after a kill at op:point (docs/reliability.md). */
function snapshotOutcome(op: SnapOp, point: string): string {
  switch (op) {
    case 'snapshot':
      return point === 'after-row' ? 'snapshot kept' : 'no snapshot';
    case 'restore':
      return ['after-starting', 'after-net'].includes(point) ? 'restored' : 'no new VM';
    case 'fork':
      return point === 'after-children' ? 'child kept' : 'no child';
    case 'suspend':
      return ['after-kill', 'after-row'].includes(point) ? 'suspended' : 'running';
    case 'resume':
      return ['after-cont', 'after-ready'].includes(point) ? 'running' : 'suspended';
  }
}

describe(
  'fault injection: every point of snapshot, restore, fork, suspend and resume (fake Firecracker)',
  { timeout: 15 * 60_000 },
  () => {
    let env: VmEnv | undefined;
    let root: TempRoot | undefined;
    before(async () => {
      if (!isRoot()) return;
      root = makeTempRoot();
      const kvmDevice = path.join(root.dir, 'kvm');
      fs.writeFileSync(kvmDevice, '');
      env = await vmEnv('fsn', {
        config: `vmm = "firecracker"\nfirecracker_bin = "${root.bin}"\naccel = "kvm"\n`,
        env: { FAKE_FC_AGENT: '1', BANGER_KVM_DEVICE: kvmDevice },
      });
    });
    after(async () => {
      try {
        await env?.cleanup();
      } finally {
        root?.cleanup();
      }
    });

    const wrap = (e: VmEnv) => ['ip', 'netns', 'exec', e.ns];
    const action = async (d: Daemon, act: 'suspend' | 'resume' | 'delete', name: string) =>
      okAll(
        await d.client.stream(
          'vmAction',
          { params: { action: act }, body: { refs: [name] } },
          noop,
        ),
      );
    const create = (d: Daemon, name: string) =>
      d.client.stream('vmCreate', { body: { name, start: true, nat: false } }, noop);
    const snapshot = (d: Daemon, vm: string, name: string) =>
      d.client.stream('vmSnapshot', { params: { ref: vm }, body: { name } }, noop);
    const restore = (d: Daemon, snap: string, name: string) =>
      d.client.stream('snapshotRestore', { params: { ref: snap }, body: { name } }, noop);
    const fork = (d: Daemon, vm: string, name: string) =>
      d.client.stream('vmFork', { params: { ref: vm }, body: { name, count: 1 } }, noop);

    /** The fake VMM's own state (`Running`, `Paused`) through its API socket. */
    const vmmState = (socket: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const req = http.get({ socketPath: socket, path: '/' }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve((JSON.parse(body) as { state: string }).state));
        });
        req.on('error', reject);
      });
    const snapshotDirs = (e: VmEnv): string[] => {
      const dir = path.join(e.sb.paths.stateDir, 'snapshots');
      return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
    };
    const snapshotRows = (d: Daemon) =>
      d.client.call('snapshotList').then((r) => r.snapshots.map((s) => s.name));

    async function waitState(
      e: VmEnv,
      name: string,
      states: string[],
      ms: number,
    ): Promise<string> {
      const deadline = Date.now() + ms;
      for (;;) {
        const s = vmRow(e.sb, name)?.state ?? 'gone';
        if (states.includes(s) || Date.now() > deadline) return s;
        await sleep(200);
      }
    }

    let seq = 0;
    for (const op of Object.keys(SNAPSHOT_POINTS) as SnapOp[]) {
      for (const point of SNAPSHOT_POINTS[op]) {
        const want = snapshotOutcome(op, point);
        test(`${op}: killed at ${point} → ${want}; consistent; retried`, async (t) => {
          if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
          const e = env!;
          await e.run(['daemon', 'stop']);
          const vm = `fs${seq++}-${op.slice(0, 3)}`;
          const snap = `${vm}-s`;
          const child = `${vm}-c`;
          e.adopt(vm);
          e.adopt(child);
          // Prepared by a daemon armed at the point: no preparing step passes it.
          const d1 = await startDaemon(e.sb, `${op}:${point}:kill`, wrap(e));
          await create(d1, vm);
          if (op === 'restore') await snapshot(d1, vm, snap);
          if (op === 'resume') await action(d1, 'suspend', vm);
          const run = (d: Daemon): Promise<unknown> =>
            op === 'snapshot'
              ? snapshot(d, vm, snap)
              : op === 'restore'
                ? restore(d, snap, child)
                : op === 'fork'
                  ? fork(d, vm, child)
                  : action(d, op as 'suspend' | 'resume', vm);
          await assert.rejects(run(d1), died);
          assert.equal((await d1.exited).signal, 'SIGKILL', 'the daemon died at the fault point');

          const d2 = await startDaemon(e.sb, undefined, wrap(e));
          try {
            if (want === 'restored' || want === 'running')
              assert.equal(
                await waitState(e, op === 'restore' ? child : vm, ['running', 'error'], 60_000),
                'running',
                `${op}:${point}: adopted, then running`,
              );
            assert.deepEqual(await settledViolations(e.sb), [], `${op}:${point}: consistent`);
            const rows = await snapshotRows(d2);
            assert.equal(
              snapshotDirs(e).length,
              rows.length,
              'a directory per snapshot row, no other',
            );
            const parent = vmRow(e.sb, vm)!;
            const layout = path.join(e.sb.paths.vmsDir, parent.id);
            const saved = ['suspend.state', 'suspend.mem'].filter((f) =>
              fs.existsSync(path.join(layout, f)),
            );
            if (want === 'suspended') {
              assert.equal(parent.state, 'suspended');
              assert.deepEqual(saved, ['suspend.state', 'suspend.mem'], 'both files kept');
            } else {
              assert.equal(parent.state, 'running', `${op}:${point}: the VM runs`);
              assert.deepEqual(saved, [], 'no saved files left');
              const sock = (parent.meta as { controlSocket: string }).controlSocket;
              assert.equal(await vmmState(sock), 'Running', 'its VMM is not left paused');
            }
            if (op === 'snapshot')
              assert.deepEqual(rows, want === 'snapshot kept' ? [snap] : [], 'the snapshot');
            if (op === 'fork') assert.deepEqual(rows, [], 'no temporary snapshot left');
            if (op === 'restore' || op === 'fork')
              assert.equal(
                Boolean(vmRow(e.sb, child)),
                want === 'restored' || want === 'child kept',
                `${op}:${point}: the new VM is ${want}`,
              );

            // The retry (or, completed, the next step) works on the recovered state.
            if (op === 'snapshot' && want !== 'snapshot kept') await snapshot(d2, vm, snap);
            if (op === 'restore' && want !== 'restored') await restore(d2, snap, child);
            if (op === 'fork' && want !== 'child kept') await fork(d2, vm, child);
            if (op === 'suspend' || op === 'resume')
              await action(d2, want === 'suspended' ? 'resume' : 'suspend', vm);
            assert.deepEqual(
              await settledViolations(e.sb),
              [],
              `${op}:${point}: consistent after the retry`,
            );

            // Clean up through the daemon.
            for (const s of await snapshotRows(d2))
              await d2.client.call('snapshotDelete', { params: { ref: s } });
            for (const n of [child, vm])
              if (vmRow(e.sb, n))
                okAll(
                  await d2.client.stream(
                    'vmAction',
                    { params: { action: 'delete' }, body: { refs: [n], force: true } },
                    noop,
                  ),
                );
            assert.deepEqual(await settledViolations(e.sb), [], 'consistent after clean-up');
          } finally {
            await d2.kill();
          }
        });
      }
    }
  },
);
