import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { KERNEL_CATALOG } from '../../src/image/kernel/catalog.js';
import {
  GUEST_MODULES,
  moduleIndex,
  moduleName,
  parseModulesAlias,
  parseModulesSoftdep,
  planModules,
} from '../../src/image/kernel/modules.js';

/** Excerpts of depmod output for Debian's 6.1 kernels (cloud: ext4 built in; generic: module). */
const DEP_COMMON = `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/input/evdev.ko:
kernel/drivers/acpi/button.ko:
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/net/vmw_vsock/vsock.ko
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
`;
const DEP_GENERIC = `${DEP_COMMON}kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
`;
const BUILTIN_CLOUD = `kernel/fs/ext4/ext4.ko
kernel/fs/jbd2/jbd2.ko
kernel/crypto/crc32c_generic.ko
kernel/lib/crc16.ko
`;
const SOFTDEP = `# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep libcrc32c pre: crc32c
`;
const ALIAS = `alias crypto-crc32c-intel crc32c_intel
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
`;

const base = (p: string): string => p.split('/').pop()!.replace(/\.ko$/, '');

describe('module names and index files', () => {
  test('moduleName strips the directory and suffix and normalises dashes', () => {
    assert.equal(moduleName('kernel/fs/ext4/ext4.ko'), 'ext4');
    assert.equal(moduleName('kernel/arch/x86/crypto/crc32c-intel.ko'), 'crc32c_intel');
    assert.equal(moduleName('kernel/net/vmw_vsock/vsock.ko.xz'), 'vsock');
  });

  test('softdep lines with pre and post, comments ignored', () => {
    const s = parseModulesSoftdep(
      `${SOFTDEP}softdep foo-bar pre: a b post: c\n# softdep x pre: y\n`,
    );
    assert.deepEqual(s.get('ext4'), { pre: ['crypto-crc32c'], post: [] });
    assert.deepEqual(s.get('foo_bar'), { pre: ['a', 'b'], post: ['c'] });
    assert.equal(s.has('x'), false);
  });

  test('aliases: exact ones kept, wildcard ones skipped, several modules per alias', () => {
    const a = parseModulesAlias(ALIAS);
    assert.deepEqual(a.get('crypto-crc32c'), ['crc32c_intel', 'crc32c_generic']);
    assert.equal(
      [...a.keys()].some((k) => k.includes('*')),
      false,
    );
  });
});

describe('planModules', () => {
  test('cloud kernel: the guest modules in dependency order, ext4 built in', () => {
    const idx = moduleIndex({
      dep: DEP_COMMON,
      builtin: BUILTIN_CLOUD,
      softdep: SOFTDEP,
      alias: ALIAS,
    });
    const plan = planModules(idx, GUEST_MODULES);
    assert.deepEqual(plan.load.map(base), [
      'virtio_ring',
      'virtio',
      'virtio_blk',
      'failover',
      'net_failover',
      'virtio_net',
      'virtio_console',
      'overlay',
      'evdev',
      'button',
      'vsock',
      'vmw_vsock_virtio_transport_common',
      'vmw_vsock_virtio_transport',
      'virtio_mmio',
    ]);
    assert.deepEqual(plan.builtin, ['ext4']);
  });

  test('generic kernel: ext4 with its deps, crc32c softdep resolved to the portable crc32c_generic', () => {
    const idx = moduleIndex({ dep: DEP_GENERIC, builtin: '', softdep: SOFTDEP, alias: ALIAS });
    const names = planModules(idx, GUEST_MODULES).load.map(base);
    const at = (n: string): number => names.indexOf(n);
    for (const n of ['crc32c_generic', 'jbd2', 'mbcache', 'crc16', 'ext4'])
      assert.ok(at(n) >= 0, n);
    assert.equal(names.includes('crc32c-intel'), false, 'no SSE4.2-only module');
    assert.ok(at('crc32c_generic') < at('jbd2'), 'softdep pre before jbd2');
    assert.ok(at('jbd2') < at('ext4') && at('mbcache') < at('ext4') && at('crc16') < at('ext4'));
    assert.equal(names[names.length - 1], 'virtio_mmio', 'the bus comes up last');
  });

  test('every dependency comes before its user, and each file appears once', () => {
    const idx = moduleIndex({ dep: DEP_GENERIC, softdep: SOFTDEP, alias: ALIAS });
    const plan = planModules(idx, [...GUEST_MODULES, 'virtio_net', 'bridge']);
    assert.equal(new Set(plan.load).size, plan.load.length);
    for (const [i, p] of plan.load.entries()) {
      for (const d of idx.deps.get(p)!) assert.ok(plan.load.indexOf(d) < i, `${d} before ${p}`);
    }
  });

  test('a softdep that is built in or unknown is skipped', () => {
    const idx = moduleIndex({
      dep: 'kernel/a.ko:\n',
      softdep: 'softdep a pre: crypto-crc32c nothing-here post: also-missing\n',
      alias: 'alias crypto-crc32c crc32c_generic\n',
      builtin: 'kernel/crypto/crc32c_generic.ko\n',
    });
    assert.deepEqual(planModules(idx, ['a']).load, ['kernel/a.ko']);
  });

  test('a dependency cycle does not loop', () => {
    const idx = moduleIndex({ dep: 'kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n' });
    assert.deepEqual(planModules(idx, ['a']).load.sort(), ['kernel/a.ko', 'kernel/b.ko']);
  });

  test('a missing module is a one-line error naming it and the kernel', () => {
    const idx = moduleIndex({ dep: DEP_COMMON, builtin: BUILTIN_CLOUD });
    assert.throws(
      () =>
        planModules(idx, ['virtio_blk', 'virtio_pmem'], { kernelRelease: '6.1.0-56-cloud-amd64' }),
      (e: unknown) =>
        e instanceof BangerError &&
        /module 'virtio_pmem'.*6\.1\.0-56-cloud-amd64/.test(e.message) &&
        !e.message.includes('\n') &&
        Boolean(e.hint),
    );
  });

  test('a dependency missing from modules.dep is reported', () => {
    const idx = moduleIndex({ dep: 'kernel/a.ko: kernel/gone.ko\n' });
    assert.throws(() => planModules(idx, ['a']), /gone\.ko.*missing from modules\.dep/);
  });

  test('every catalog kernel asks for the guest modules', () => {
    for (const k of KERNEL_CATALOG) {
      for (const m of [
        'virtio_blk',
        'virtio_net',
        'virtio_console',
        'overlay',
        'ext4',
        'virtio_mmio',
        'vmw_vsock_virtio_transport',
      ]) {
        assert.ok(k.modules.includes(m), `${k.name} wants ${m}`);
      }
    }
  });
});
