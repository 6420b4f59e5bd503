import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { isAlive, sleep } from '../helpers/sandbox.js';
import { isRoot, needs, vmEnv, type VmEnv } from '../helpers/e2e.js';

/**
 * A daemon killed while a VM boots (issue 20): the next CLI call starts a new
 * daemon, which adopts the VM; the VM stays `starting` until its agent has
 * reported ready with its SSH host keys, and `vm ssh` waits for that and then
 * connects with strict host key checking against the managed known_hosts.
 * Real QEMU guests in a network namespace made by the test.
 */

interface Vm {
  name: string;
  state: string;
  pid: number | null;
}

describe(
  'a VM adopted during its boot can be reached with vm ssh',
  { timeout: 20 * 60_000 },
  () => {
    let env: VmEnv | undefined;

    before(async () => {
      if (!isRoot()) return;
      env = await vmEnv('vma', { config: 'vmm = "qemu"\n' });
    });
    after(async () => {
      await env?.cleanup();
    });

    for (const delayMs of [1000, 3000]) {
      test(`bangerd killed ${delayMs / 1000} s into the boot: adopted, then vm ssh -- true works`, async (t) => {
        if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
        const e = env!;
        const name = e.name('adopt');
        const show = (): Promise<Vm> => e.json<Vm>(['vm', 'show', name]);
        await e.run(['vm', 'list']); // the daemon is up before the clock starts
        const create = e.run(['vm', 'create', '--name', name], { timeoutMs: 10 * 60_000 });
        // Wait until the VMM runs (the row says `starting`), then give the boot its head start.
        const deadline = Date.now() + 120_000;
        let vm: Vm | undefined;
        while (Date.now() < deadline) {
          vm = await show().catch(() => undefined);
          if (vm?.state === 'starting' && vm.pid) break;
          await sleep(200);
        }
        assert.equal(vm?.state, 'starting', 'the VM reached its boot');
        await sleep(delayMs);
        const daemon = e.sb.daemonPid();
        assert.ok(daemon && isAlive(daemon), 'a daemon runs');
        process.kill(daemon, 'SIGKILL');
        const cut = await create;
        assert.notEqual(cut.code, 0, 'vm create lost its daemon');
        assert.ok(isAlive(vm!.pid!), 'the VMM outlived the daemon');

        // The next call starts a new daemon, which adopts the VM while it boots.
        const ssh = await e.run(['vm', 'ssh', name, '--', 'true'], { timeoutMs: 6 * 60_000 });
        assert.equal(ssh.code, 0, ssh.stderr);
        assert.notEqual(e.sb.daemonPid(), daemon, 'a new daemon answered');
        const after = await show();
        assert.equal(after.state, 'running');
        assert.equal(after.pid, vm!.pid, 'the same VMM, adopted (not restarted)');
        const known = fs.readFileSync(e.sb.paths.knownHosts, 'utf8');
        assert.match(known, new RegExp(`^${name}\\.vm ssh-ed25519 `, 'm'));
      });
    }
  },
);
