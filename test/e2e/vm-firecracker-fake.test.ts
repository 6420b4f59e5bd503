import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readRecordedRequests, type RecordedRequest } from '../fixtures/firecracker/fake-api.js';
import { makeFakeJailer, makeTempRoot, type TempRoot } from '../fixtures/firecracker/harness.js';
import { lookupUser } from '../../src/util/users.js';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { isAlive } from '../helpers/sandbox.js';

/**
 * The daemon's Firecracker path end to end, against the contract-checked
 * fake `firecracker` (no Firecracker binary exists on these machines): every
 * API request banger sends is validated against the upstream Swagger file, and
 * the fake plays the guest agent over its vsock socket.
 */
describe(
  'vm lifecycle through the Firecracker driver (contract-checked fake)',
  { timeout: 10 * 60_000 },
  () => {
    let env: VmEnv | undefined;
    let root: TempRoot | undefined;
    let requestLog = '';

    before(async () => {
      if (!isRoot()) return;
      root = makeTempRoot();
      requestLog = path.join(root.dir, 'requests.jsonl');
      // The fake stands in for Firecracker and KVM alike: the daemon's KVM probe
      // looks at a read/writable file of the test's, so the run is the same on
      // hosts with and without /dev/kvm.
      const kvmDevice = path.join(root.dir, 'kvm');
      fs.writeFileSync(kvmDevice, '');
      env = await vmEnv('fcf', {
        config: `vmm = "firecracker"\nfirecracker_bin = "${root.bin}"\naccel = "kvm"\n`,
        env: {
          FAKE_FC_AGENT: '1',
          FAKE_FC_REQUEST_LOG: requestLog,
          BANGER_KVM_DEVICE: kvmDevice,
          // A guest takes a moment to shut down: the API stays up for the stop's requests.
          FAKE_FC_EXIT_DELAY_MS: '1000',
        },
      });
    });
    after(async () => {
      try {
        await env?.cleanup();
      } finally {
        root?.cleanup();
      }
    });

    type Recorded = Omit<RecordedRequest, 'body'> & { body?: { action_type?: string } };
    /** Every request the fake answered so far, in order, with its status. */
    const requests = (): Recorded[] => readRecordedRequests(requestLog) as Recorded[];
    const callOf = (r: Recorded): string =>
      `${r.method} ${r.path}${r.body?.action_type ? ` ${r.body.action_type}` : ''}`;
    const refused = (rs: Recorded[]): string[] =>
      rs
        .filter((r) => r.status < 200 || r.status > 299)
        .map((r) => `${callOf(r)} -> ${r.status} ${r.fault ?? ''}`);

    /** What a start must send: the whole configuration, then InstanceStart last. */
    const assertLaunch = (sent: Recorded[], what: string): void => {
      const calls = sent.map(callOf);
      for (const c of [
        'PUT /machine-config',
        'PUT /boot-source',
        'PUT /drives/base',
        'PUT /drives/overlay',
        'PUT /drives/work',
        'PUT /vsock',
      ])
        assert.equal(
          calls.filter((x) => x === c).length,
          1,
          `${what}: ${c} sent once (sent: ${calls.join(', ')})`,
        );
      assert.equal(
        calls.filter((c) => c.startsWith('PUT /network-interfaces/')).length,
        1,
        `${what}: network interface configured`,
      );
      assert.equal(calls[calls.length - 1], 'PUT /actions InstanceStart', `${what}: started last`);
      assert.deepEqual(refused(sent), [], `${what}: every request accepted`);
    };

    test('create → start → stop → start → delete, every request valid per the Swagger contract', async (t) => {
      if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
      const e = env!;
      const name = e.name('fc');
      const create = await e.run(['vm', 'create', '--name', name]);
      assert.equal(create.code, 0, create.stderr);
      assert.match(create.stderr, /vmm=firecracker/);
      const vm = await e.json<{ state: string; vmm: string; pid: number; dir: string }>([
        'vm',
        'show',
        name,
      ]);
      assert.equal(vm.state, 'running');
      assert.equal(vm.vmm, 'firecracker');
      assert.ok(isAlive(vm.pid));
      assertLaunch(requests(), 'first start');

      // Stop: the guest is asked (Ctrl+Alt+Del through the API) and goes on its own.
      const beforeStop = requests().length;
      const stop = await e.run(['vm', 'stop', name]);
      assert.equal(stop.code, 0, stop.stderr);
      assert.match(stop.stderr, new RegExp(`^done: Stopping ${name} \\(guest powered off, `, 'm'));
      assert.equal(isAlive(vm.pid), false, 'firecracker process gone');
      assert.equal((await e.json<{ state: string }>(['vm', 'show', name])).state, 'stopped');
      const stopCalls = requests().slice(beforeStop);
      assert.ok(
        stopCalls.some((r) => callOf(r) === 'PUT /actions SendCtrlAltDel' && r.status === 204),
        `the graceful stop request was sent and accepted (sent: ${stopCalls.map(callOf).join(', ')})`,
      );
      assert.deepEqual(refused(stopCalls), [], 'every stop request accepted');

      const beforeStart = requests().length;
      const start = await e.run(['vm', 'start', name]);
      assert.equal(start.code, 0, start.stderr);
      const again = await e.json<{ state: string; pid: number }>(['vm', 'show', name]);
      assert.equal(again.state, 'running');
      assert.notEqual(again.pid, vm.pid, 'a new firecracker process');
      assertLaunch(requests().slice(beforeStart), 'second start');

      const del = await e.run(['vm', 'delete', '--force', name]);
      assert.equal(del.code, 0, del.stderr);
      assert.equal(isAlive(again.pid), false);
      assert.equal(fs.existsSync(vm.dir), false);
      assert.deepEqual(refused(requests()), [], 'no request of the whole lifecycle was refused');
    });

    test('vm snapshot and vm fork -n 2: pause, snapshot/create, resume; each child a fresh firecracker loading the snapshot with its own tap and vsock socket', async (t) => {
      if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
      const e = env!;
      const name = e.name('fcsnap');
      const create = await e.run(['vm', 'create', '--name', name]);
      assert.equal(create.code, 0, create.stderr);

      const before = requests().length;
      const snap = await e.run(['vm', 'snapshot', name, '--name', `${name}-s`]);
      assert.equal(snap.code, 0, snap.stderr);
      assert.deepEqual(requests().slice(before).map(callOf), [
        'PATCH /vm',
        'PUT /snapshot/create',
        'PATCH /vm',
      ]);
      const view = await e.json<{ files: { state: string; mem: string } }>([
        'snapshot',
        'show',
        `${name}-s`,
      ]);
      assert.equal(fs.readFileSync(view.files.state, 'utf8'), 'fake snapshot state\n');
      assert.equal((await e.run(['snapshot', 'delete', `${name}-s`])).code, 0);

      const kids = [`${name}-1`, `${name}-2`];
      for (const k of kids) e.adopt(k);
      const atFork = requests().length;
      const fork = await e.run(['vm', 'fork', name, '-n', '2']);
      assert.equal(fork.code, 0, fork.stderr);
      assert.deepEqual(fork.stdout.trim().split('\n'), kids);
      interface Load {
        method: string;
        path: string;
        status: number;
        body?: {
          network_overrides?: { host_dev_name: string }[];
          vsock_override?: { uds_path: string };
        };
      }
      const loads = (requests().slice(atFork) as Load[]).filter(
        (r) => `${r.method} ${r.path}` === 'PUT /snapshot/load',
      );
      assert.equal(loads.length, 2, 'one snapshot load per child');
      const parent = await e.json<{ state: string; tap: string }>(['vm', 'show', name]);
      assert.equal(parent.state, 'running');
      const seen = new Set<string>();
      for (const k of kids) {
        const v = await e.json<{ state: string; tap: string; dir: string; origin: string }>([
          'vm',
          'show',
          k,
        ]);
        assert.equal(v.state, 'running');
        assert.equal(v.origin, `fork of ${name}`);
        const load = loads.find((l) => l.body?.network_overrides?.[0]?.host_dev_name === v.tap);
        assert.ok(load, `${k}: a snapshot load with its tap ${v.tap}`);
        assert.equal(load.status, 204);
        assert.equal(path.dirname(load.body!.vsock_override!.uds_path), v.dir);
        assert.notEqual(v.tap, parent.tap);
        seen.add(v.tap);
      }
      assert.equal(seen.size, 2, 'two taps');
      const known = fs.readFileSync(e.sb.paths.knownHosts, 'utf8');
      for (const k of kids) {
        const key = Buffer.from(`fake-identity-${k}`).toString('base64').replace(/=+$/, '');
        assert.ok(known.includes(`${k}.vm ssh-ed25519 ${key}`), known);
      }
      assert.deepEqual(await e.json<unknown[]>(['snapshot', 'list']), []);
      assert.deepEqual(refused(requests()), [], 'no request was refused');
      const del = await e.run(['vm', 'delete', '--force', name, ...kids]);
      assert.equal(del.code, 0, del.stderr);
    });

    test('suspend → resume through snapshot/create and snapshot/load, every request valid per the contract', async (t) => {
      if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
      const e = env!;
      const name = e.name('fcsus');
      const create = await e.run(['vm', 'create', '--name', name]);
      assert.equal(create.code, 0, create.stderr);
      const show = () =>
        e.json<{ state: string; pid: number | null; ip: string; dir: string }>([
          'vm',
          'show',
          name,
        ]);
      const vm = await show();
      const before = requests().length;
      const sus = await e.run(['vm', 'suspend', name]);
      assert.equal(sus.code, 0, sus.stderr);
      assert.equal(sus.stdout.trim(), `${name}: suspended`);
      const s = await show();
      assert.equal(s.state, 'suspended');
      assert.equal(s.ip, vm.ip);
      assert.equal(isAlive(vm.pid!), false, 'firecracker process gone');
      assert.ok(fs.existsSync(path.join(vm.dir, 'suspend.state')));
      assert.ok(fs.existsSync(path.join(vm.dir, 'suspend.mem')));
      const saved = requests().slice(before).map(callOf);
      assert.deepEqual(
        saved.filter((c) => c === 'PATCH /vm' || c === 'PUT /snapshot/create'),
        ['PATCH /vm', 'PUT /snapshot/create'],
        `paused, then saved (sent: ${saved.join(', ')})`,
      );

      const mid = requests().length;
      const res = await e.run(['vm', 'resume', name]);
      assert.equal(res.code, 0, res.stderr);
      const r = await show();
      assert.equal(r.state, 'running');
      assert.equal(r.ip, vm.ip);
      assert.notEqual(r.pid, vm.pid, 'a new firecracker process');
      const loaded = requests().slice(mid).map(callOf);
      assert.deepEqual(
        loaded.filter((c) => c === 'PUT /snapshot/load' || c === 'PATCH /vm'),
        ['PUT /snapshot/load', 'PATCH /vm'],
        `loaded paused, then resumed (sent: ${loaded.join(', ')})`,
      );
      assert.equal(fs.existsSync(path.join(vm.dir, 'suspend.state')), false);
      assert.deepEqual(refused(requests().slice(before)), [], 'every request accepted');
      assert.equal((await e.run(['vm', 'delete', '--force', name])).code, 0);
    });

    test('without a KVM device, vm start fails with the one-line KVM error and starts nothing', async (t) => {
      if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
      const e = env!;
      const name = e.name('fcnokvm');
      const create = await e.run(['vm', 'create', '--no-start', '--name', name]);
      assert.equal(create.code, 0, create.stderr);
      // A daemon that sees no KVM device, as on a host without /dev/kvm.
      const missing = path.join(root!.dir, 'no-kvm-here');
      assert.equal((await e.run(['daemon', 'stop'])).code, 0);
      const sent = requests().length;
      const start = await e.run(['vm', 'start', name], { env: { BANGER_KVM_DEVICE: missing } });
      assert.equal(start.code, 1, start.stderr);
      assert.equal(
        start.stderr.trim(),
        `error: firecracker needs KVM but ${missing} does not exist: enable virtualisation in the BIOS and load kvm_intel or kvm_amd, or use vmm = "qemu" (it can emulate without KVM)`,
      );
      assert.equal(requests().length, sent, 'no firecracker process was configured');
      const vm = await e.json<{ state: string; pid: number | null; tap: string | null }>([
        'vm',
        'show',
        name,
      ]);
      assert.equal(vm.pid, null);
      assert.equal(vm.tap, null);
      assert.notEqual(vm.state, 'running');
      await e.run(['daemon', 'stop']);
      const del = await e.run(['vm', 'delete', name]);
      assert.equal(del.code, 0, del.stderr);
    });

    test('doctor reports the firecracker binary and its version', async (t) => {
      if (!needs(t, isRoot(), 'needs root')) return;
      const out = await env!.run(['doctor', '--json']);
      const r = JSON.parse(out.stdout) as {
        checks: { id: string; status: string; detail: string }[];
      };
      const fc = r.checks.find((c) => c.id === 'firecracker')!;
      assert.equal(fc.status, 'pass', fc.detail);
      assert.match(fc.detail, /1\.\d+/);
    });

    test('through the jailer: create → stop → start → suspend → resume → delete; firecracker chrooted as the VMM user, every request valid, nothing left behind', async (t) => {
      if (!needs(t, isRoot(), 'needs root for network namespaces, taps and the chroot')) return;
      const vmmUser = lookupUser('banger-vmm');
      if (!needs(t, vmmUser !== undefined, 'needs the banger-vmm user (scripts/setup.sh)')) return;
      const e = env!;
      const uid = vmmUser!.uid;
      const jailer = makeFakeJailer(path.join(root!.dir, 'jail-bin'));
      const cgroups = path.join(root!.dir, 'cgroup');
      fs.mkdirSync(cgroups, { recursive: true });
      fs.writeFileSync(path.join(cgroups, 'cgroup.controllers'), 'cpu memory pids\n');
      const jailerLog = path.join(root!.dir, 'jailer.jsonl');
      // A daemon that knows the jailer (jailer_bin from the environment); stopped again at the end.
      assert.equal((await e.run(['daemon', 'stop'])).code, 0);
      const jenv = {
        BANGER_JAILER_BIN: jailer,
        BANGER_CGROUP_ROOT: cgroups,
        FAKE_JAILER_CGROUP_ROOT: cgroups,
        FAKE_JAILER_LOG: jailerLog,
      };
      const run = (args: string[]) => e.run(args, { env: jenv });
      const jails = path.join(e.sb.paths.stateDir, 'jailer');
      try {
        const doctor = JSON.parse((await run(['doctor', '--json'])).stdout) as {
          checks: { id: string; status: string; detail: string }[];
        };
        const jc = doctor.checks.find((c) => c.id === 'jailer')!;
        assert.equal(jc.status, 'pass', jc.detail);
        assert.match(jc.detail, /^Jailer v1\.10\.1: .*jailer, as banger-vmm \(uid \d+\)/);

        const name = e.name('fcjail');
        const create = await run(['vm', 'create', '--name', name]);
        assert.equal(create.code, 0, create.stderr);
        const show = () =>
          e.json<{
            id: string;
            state: string;
            pid: number | null;
            confinement: string | null;
            dir: string;
          }>(['vm', 'show', name]);
        const vm = await show();
        assert.equal(vm.state, 'running');
        const jailRoot = path.join(jails, 'firecracker', vm.id, 'root');
        const checkJailed = (pid: number, what: string): void => {
          const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
          assert.match(
            status,
            new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'),
            `${what}: runs as banger-vmm`,
          );
          assert.equal(
            fs.readlinkSync(`/proc/${pid}/root`),
            jailRoot,
            `${what}: chrooted into its jail`,
          );
        };
        checkJailed(vm.pid!, 'first start');
        assert.match(
          vm.confinement ?? '',
          new RegExp(`^jailer \\(chroot, uid ${uid} \\(banger-vmm\\), `),
        );
        const text = await run(['vm', 'show', name]);
        assert.match(text.stdout, /^confined: jailer \(chroot, uid \d+ \(banger-vmm\), /m);
        const argv = fs
          .readFileSync(jailerLog, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as string[]);
        const first = argv.find((a) => a.includes(vm.id))!;
        assert.deepEqual(first.slice(first.indexOf('--')), ['--', '--api-sock', '/fc.sock']);
        assert.equal(first[first.indexOf('--uid') + 1], String(uid));
        assert.equal(first[first.indexOf('--chroot-base-dir') + 1], jails);
        const boot = requests()
          .filter((r) => r.path === '/boot-source')
          .at(-1) as unknown as {
          body: { kernel_image_path: string };
        };
        assert.equal(boot.body.kernel_image_path, '/vmlinux', 'paths inside the jail');
        const cg = path.join(cgroups, 'banger', vm.id);
        assert.ok(fs.existsSync(path.join(cg, 'memory.max')), 'memory limit written');

        // A daemon restart adopts the jailed VMM (its command line names /fc.sock and --id=<id>).
        assert.equal((await e.run(['daemon', 'stop'])).code, 0);
        assert.ok(isAlive(vm.pid!), 'the VMM outlives the daemon');
        assert.equal((await run(['daemon', 'status'])).code, 0);
        const adopted = await show();
        assert.equal(adopted.state, 'running', 'adopted, not swept');
        assert.equal(adopted.pid, vm.pid);
        assert.ok(fs.existsSync(jailRoot), 'its jail kept');

        const stop = await run(['vm', 'stop', name]);
        assert.equal(stop.code, 0, stop.stderr);
        assert.equal(isAlive(vm.pid!), false);
        assert.equal(fs.existsSync(path.dirname(jailRoot)), false, 'jail removed at stop');
        assert.equal(fs.existsSync(cg), false, 'cgroup removed at stop');

        const start = await run(['vm', 'start', name]);
        assert.equal(start.code, 0, start.stderr);
        const again = await show();
        assert.equal(again.state, 'running');
        checkJailed(again.pid!, 'second start');

        const sus = await run(['vm', 'suspend', name]);
        assert.equal(sus.code, 0, sus.stderr);
        assert.equal((await show()).state, 'suspended');
        assert.ok(fs.existsSync(path.join(vm.dir, 'suspend.state')), 'state moved out of the jail');
        assert.equal(fs.existsSync(path.dirname(jailRoot)), false, 'no jail while suspended');
        const res = await run(['vm', 'resume', name]);
        assert.equal(res.code, 0, res.stderr);
        const resumed = await show();
        assert.equal(resumed.state, 'running');
        checkJailed(resumed.pid!, 'resumed');
        const load = requests()
          .filter((r) => r.path === '/snapshot/load')
          .at(-1) as unknown as {
          status: number;
          body: { snapshot_path: string };
        };
        assert.equal(load.status, 204);
        assert.equal(load.body.snapshot_path, '/snapshot.state');

        const del = await run(['vm', 'delete', '--force', name]);
        assert.equal(del.code, 0, del.stderr);
        assert.equal(isAlive(resumed.pid!), false);
        assert.deepEqual(fs.readdirSync(path.join(jails, 'firecracker')), [], 'no jail left');
        assert.equal(fs.existsSync(cg), false, 'no cgroup left');
        assert.equal(fs.existsSync(vm.dir), false);
        assert.deepEqual(refused(requests()), [], 'no request was refused');
        const mounts = fs.readFileSync('/proc/mounts', 'utf8');
        assert.equal(mounts.includes(jails), false, 'no mount of a jail is left on the host');
      } finally {
        await e.run(['daemon', 'stop']);
      }
    });
  },
);
