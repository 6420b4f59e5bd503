import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { DEFAULT_CONFIG, type Config } from '../../src/config/schema.js';
import { CHECKS, type Probe } from '../../src/doctor/checks.js';
import { DoctorService } from '../../src/doctor/service.js';

const goodProbe = (over: Partial<Probe> = {}): Probe => ({
  arch: 'x64',
  uid: 1000,
  kvmDevice: '/dev/kvm',
  which: (c) => (['firecracker', 'custom-fc'].includes(c) ? undefined : `/usr/bin/${c}`),
  access: () => true,
  exists: () => true,
  version: async (bin) => `${bin} version 1`,
  freeBytes: () => 100 * 1024 ** 3,
  stat: () => ({ uid: 1000, mode: 0o40700 }),
  hasNetAdmin: () => true,
  openFilesLimit: () => 4096,
  userUid: (name) => (name === 'banger-vmm' ? 999 : undefined),
  ...over,
});

async function runDoctor(probe: Probe, config: Partial<Config> = {}) {
  const events: unknown[] = [];
  const svc = new DoctorService({
    config: () => ({ ...DEFAULT_CONFIG, ...config }),
    stateDir: '/s',
    runtimeDir: '/r',
    host: { cpus: 8, memoryBytes: 16 * 1024 ** 3 },
    probe,
    checks: CHECKS,
  });
  const result = await svc.run((e) => events.push(e));
  const by = Object.fromEntries(result.checks.map((c) => [c.id, c]));
  return { result, by, events };
}

describe('doctor checks', () => {
  test('a good host passes, firecracker missing is only a warning', async () => {
    const { result, by } = await runDoctor(goodProbe());
    assert.equal(result.summary.fail, 0);
    assert.equal(by.firecracker!.status, 'warn');
    assert.equal(result.checks.length, CHECKS.length);
    assert.deepEqual(result.vmDefaults.vcpu, { value: 2, source: 'host' });
  });
  test('the Firecracker jailer: not needed without firecracker, a note (pass) when not found, a failure when jailer_bin is missing', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bdoc-'));
    try {
      assert.equal((await runDoctor(goodProbe())).by.jailer!.detail, 'not needed (no firecracker)');
      const fc = path.join(dir, 'firecracker');
      fs.writeFileSync(fc, '#!/bin/sh\n', { mode: 0o755 });
      const withFc = goodProbe({ which: (c) => (c === fc ? fc : `/usr/bin/${c}`) });
      const none = (await runDoctor(withFc, { firecrackerBin: fc })).by.jailer!;
      assert.equal(none.status, 'pass');
      assert.match(none.detail, new RegExp(`^not used \\(no jailer next to ${fc}\\)`));
      const missing = (
        await runDoctor(withFc, { firecrackerBin: fc, jailerBin: path.join(dir, 'nope') })
      ).by.jailer!;
      assert.equal(missing.status, 'fail');
      assert.match(missing.detail, /jailer_bin '.*nope' not found/);
      const off = (await runDoctor(withFc, { firecrackerBin: fc, jailerBin: 'off' })).by.jailer!;
      assert.match(off.detail, /^not used \(jailer_bin = "off"\)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('each failure carries a fix hint', async () => {
    const { by } = await runDoctor(
      goodProbe({
        arch: 'arm64',
        access: () => false,
        which: () => undefined,
        hasNetAdmin: () => false,
        freeBytes: () => 1024 ** 3,
        stat: () => ({ uid: 0, mode: 0o40777 }),
      }),
      { accel: 'kvm' },
    );
    for (const id of [
      'arch',
      'kvm',
      'qemu',
      'vmm',
      'tool:mkfs.ext4',
      'tool:firewall',
      'tun',
      'net-admin',
      'disk',
      'runtime-dir',
    ]) {
      assert.equal(by[id]?.status, 'fail', id);
      assert.ok(by[id]?.hint, `${id} hint`);
    }
    assert.match(by.kvm!.hint!, /usermod -aG kvm/);
    assert.match(by['tool:mkfs.ext4']!.hint!, /apt-get install e2fsprogs/);
  });
  test('guest memory tmpfs: /dev/shm missing or tiny fails, small warns', async () => {
    const at = (free: number | undefined) =>
      runDoctor(goodProbe({ freeBytes: (d) => (d === '/dev/shm' ? free : 100 * 1024 ** 3) }));
    assert.equal((await at(undefined)).by['vm-memory']!.status, 'fail');
    assert.equal((await at(256 * 1024 ** 2)).by['vm-memory']!.status, 'fail');
    assert.equal((await at(1024 ** 3)).by['vm-memory']!.status, 'warn');
    const ok = (await at(12 * 1024 ** 3)).by['vm-memory']!;
    assert.equal(ok.status, 'pass');
    assert.equal(ok.detail, '12 GiB free at /dev/shm (QEMU guest memory)');
  });
  test('kvm missing is a warning unless accel = kvm', async () => {
    const probe = goodProbe({ access: (f) => f !== '/dev/kvm', exists: () => false });
    assert.equal((await runDoctor(probe)).by.kvm!.status, 'warn');
    assert.equal((await runDoctor(probe, { accel: 'kvm' })).by.kvm!.status, 'fail');
  });
  test('vmm = firecracker without the binary fails', async () => {
    const { by } = await runDoctor(goodProbe(), { vmm: 'firecracker' });
    assert.equal(by.firecracker!.status, 'fail');
    assert.equal(by.vmm!.status, 'fail');
  });
  test('progress: one start, an item per check, one done', async () => {
    const { events } = await runDoctor(goodProbe());
    const types = (events as { type: string; state?: string }[]).map((e) =>
      e.type === 'step' ? `step:${e.state}` : e.type,
    );
    assert.equal(types[0], 'step:start');
    assert.equal(types[types.length - 1], 'step:done');
    assert.equal(types.filter((t) => t === 'item').length, CHECKS.length);
  });

  test('VMM confinement: a root daemon needs vmm_user to exist', async () => {
    assert.equal(
      (await runDoctor(goodProbe())).by['vmm-confinement']!.detail,
      "VMMs run as you (uid 1000) under QEMU's seccomp sandbox",
    );
    const root = goodProbe({ uid: 0 });
    assert.equal(
      (await runDoctor(root)).by['vmm-confinement']!.detail,
      "VMMs run as banger-vmm (uid 999) under QEMU's seccomp sandbox",
    );
    const missing = (await runDoctor(root, { vmmUser: 'nobody-here' })).by['vmm-confinement']!;
    assert.equal(missing.status, 'fail');
    assert.equal(missing.detail, "vmm_user 'nobody-here' does not exist: VMs cannot start");
    assert.equal(
      (await runDoctor(root, { vmmUser: 'root' })).by['vmm-confinement']!.status,
      'warn',
    );
  });
});
