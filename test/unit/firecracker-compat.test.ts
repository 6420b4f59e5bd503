import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import {
  checkFirecrackerCompat,
  detectKernelFormat,
  firecrackerCompatProblem,
  kvmAccess,
  parseFirecrackerVersion,
  versionAtLeast,
  type CompatFacts,
} from '../../src/vmm/firecracker/compat.js';
import { kvmDevicePath, readKvmFacts } from '../../src/vmm/accel.js';
import {
  bzImageHeader,
  elfHeader,
  makeTempRoot,
  type TempRoot,
} from '../fixtures/firecracker/harness.js';

const facts = (over: Partial<CompatFacts> = {}): CompatFacts => ({
  kernelName: 'debian-6.1-cloud',
  kernelPath: '/k/vmlinux',
  image: { format: 'elf', elfX86_64: true },
  features: { virtioMmioCmdline: false },
  version: 'Firecracker v1.10.1\n\nSupported snapshot data format versions: v1.0.0 v2.0.0\n',
  kvm: { exists: true, accessible: true },
  ...over,
});

const problem = (over: Partial<CompatFacts>): BangerError => {
  const p = firecrackerCompatProblem(facts(over));
  assert.ok(p, 'expected a problem');
  return p;
};

describe('firecracker kernel and version compatibility', () => {
  test('kernel formats are told apart by their magic bytes', () => {
    assert.deepEqual(detectKernelFormat(elfHeader()), { format: 'elf', elfX86_64: true });
    assert.deepEqual(detectKernelFormat(elfHeader(0xb7)), { format: 'elf', elfX86_64: false }); // aarch64
    assert.deepEqual(detectKernelFormat(elfHeader(0x3e, 1)), { format: 'elf', elfX86_64: false }); // 32-bit
    assert.deepEqual(detectKernelFormat(bzImageHeader()), { format: 'bzImage' });
    assert.deepEqual(detectKernelFormat(Buffer.from('#!/bin/sh\n')), { format: 'unknown' });
    assert.deepEqual(detectKernelFormat(Buffer.alloc(0)), { format: 'unknown' });
    assert.deepEqual(detectKernelFormat(bzImageHeader().subarray(0, 0x204)), { format: 'unknown' }); // truncated
  });

  test('firecracker --version output is parsed', () => {
    assert.deepEqual(
      parseFirecrackerVersion(
        'Firecracker v1.10.1\n\nSupported snapshot data format versions: v5.0.0\n',
      ),
      {
        major: 1,
        minor: 10,
        patch: 1,
        text: '1.10.1',
      },
    );
    assert.equal(parseFirecrackerVersion('Firecracker v1.12.0-dev\n')?.text, '1.12.0-dev');
    assert.equal(parseFirecrackerVersion('v1.7.0')?.minor, 7);
    assert.equal(parseFirecrackerVersion('\n1.8.0\n')?.text, '1.8.0');
    assert.equal(parseFirecrackerVersion('firecracker: command not found'), undefined);
    assert.equal(
      versionAtLeast({ major: 1, minor: 10, patch: 0 }, { major: 1, minor: 8, patch: 0 }),
      true,
    );
    assert.equal(
      versionAtLeast({ major: 1, minor: 7, patch: 9 }, { major: 1, minor: 8, patch: 0 }),
      false,
    );
    assert.equal(
      versionAtLeast({ major: 2, minor: 0, patch: 0 }, { major: 1, minor: 8, patch: 0 }),
      true,
    );
  });

  test('a Debian kernel (no cmdline virtio devices) runs on firecracker >= 1.8', () => {
    assert.equal(firecrackerCompatProblem(facts()), undefined);
    assert.equal(firecrackerCompatProblem(facts({ version: 'Firecracker v1.8.0' })), undefined);
  });

  test('a Debian kernel on firecracker 1.7 is refused with the reason and the fix', () => {
    const p = problem({ version: 'Firecracker v1.7.0' });
    assert.equal(p.code, 'precondition');
    assert.equal(
      p.message,
      "firecracker 1.7.0 cannot give kernel 'debian-6.1-cloud' its disks: the kernel lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES and firecracker describes virtio devices through ACPI only from 1.8",
    );
    assert.match(p.hint!, /upgrade firecracker to 1\.8 or newer/);
    assert.match(
      problem({ version: 'Firecracker v1.7.0', features: {} }).message,
      /is not known to have CONFIG_VIRTIO/,
    );
  });

  test('a kernel with cmdline virtio devices also runs on older firecracker', () => {
    assert.equal(
      firecrackerCompatProblem(
        facts({ version: 'Firecracker v1.4.1', features: { virtioMmioCmdline: true } }),
      ),
      undefined,
    );
    assert.match(
      problem({ version: 'Firecracker v0.25.2', features: { virtioMmioCmdline: true } }).message,
      /0\.25\.2 is too old/,
    );
  });

  test('a bzImage-only kernel entry is refused', () => {
    const p = problem({ image: { format: 'bzImage' }, kernelPath: '/k/vmlinuz' });
    assert.equal(
      p.message,
      "firecracker needs an uncompressed ELF vmlinux; kernel entry 'debian-6.1-cloud' has only a bzImage (/k/vmlinuz)",
    );
    assert.match(
      problem({ image: { format: 'unknown' } }).message,
      /neither an ELF vmlinux nor a bzImage/,
    );
    assert.match(
      problem({ image: { format: 'elf', elfX86_64: false } }).message,
      /not a 64-bit x86_64 kernel/,
    );
  });

  test('KVM access comes first', () => {
    assert.equal(
      problem({ kvm: { exists: false, accessible: false }, image: { format: 'bzImage' } }).message,
      'firecracker needs KVM but /dev/kvm does not exist',
    );
    const p = problem({ kvm: { exists: true, accessible: false } });
    assert.equal(p.code, 'permission');
    assert.equal(
      p.line,
      'firecracker needs KVM but /dev/kvm is not accessible: add your user to group kvm (sudo usermod -aG kvm $USER) and log in again',
    );
  });

  test('an unparsable version is reported', () => {
    assert.match(
      problem({ version: 'something else' }).message,
      /cannot tell the firecracker version from 'something else'/,
    );
  });
});

describe('checkFirecrackerCompat (reads the kernel file)', () => {
  let root: TempRoot;
  before(() => {
    root = makeTempRoot();
  });
  after(() => root.cleanup());

  const kvm = { exists: true, accessible: true };

  test('accepts an ELF vmlinux and returns the version', async () => {
    const k = path.join(root.dir, 'vmlinux');
    fs.writeFileSync(k, elfHeader());
    const v = await checkFirecrackerCompat({
      kernel: { name: 'deb', path: k, features: { virtioMmioCmdline: false } },
      version: 'Firecracker v1.9.0',
      kvm,
    });
    assert.equal(v.text, '1.9.0');
  });

  test('refuses a bzImage file', async () => {
    const k = path.join(root.dir, 'vmlinuz');
    fs.writeFileSync(k, bzImageHeader());
    await assert.rejects(
      checkFirecrackerCompat({
        kernel: { name: 'deb', path: k, features: {} },
        version: '1.10.0',
        kvm,
      }),
      (e: unknown) =>
        e instanceof BangerError &&
        e.message ===
          `firecracker needs an uncompressed ELF vmlinux; kernel entry 'deb' has only a bzImage (${k})`,
    );
  });

  test('a missing kernel file is not_found', async () => {
    await assert.rejects(
      checkFirecrackerCompat({
        kernel: { name: 'deb', path: path.join(root.dir, 'missing'), features: {} },
        version: '1.10.0',
        kvm,
      }),
      (e: unknown) => e instanceof BangerError && e.code === 'not_found',
    );
  });
});

describe('the KVM probe looks at the device it is given', () => {
  let root: TempRoot;
  before(() => {
    root = makeTempRoot();
  });
  after(() => root.cleanup());

  test('kvmDevicePath: /dev/kvm unless BANGER_KVM_DEVICE names another', () => {
    assert.equal(kvmDevicePath({}), '/dev/kvm');
    assert.equal(kvmDevicePath({ BANGER_KVM_DEVICE: '' }), '/dev/kvm');
    assert.equal(kvmDevicePath({ BANGER_KVM_DEVICE: '/tmp/x' }), '/tmp/x');
  });

  test('a missing device: the real user error, naming the device', async () => {
    const dev = path.join(root.dir, 'no-such-kvm');
    assert.deepEqual(kvmAccess(dev), { path: dev, exists: false, accessible: false });
    const k = path.join(root.dir, 'vmlinux-missing-kvm');
    fs.writeFileSync(k, elfHeader());
    await assert.rejects(
      checkFirecrackerCompat({
        kernel: { name: 'deb', path: k, features: {} },
        version: '1.10.0',
        kvm: kvmAccess(dev),
      }),
      (e: unknown) =>
        e instanceof BangerError &&
        e.code === 'precondition' &&
        e.message === `firecracker needs KVM but ${dev} does not exist` &&
        /use vmm = "qemu"/.test(e.hint ?? ''),
    );
  });

  test('a read/writable device passes the probe', () => {
    const dev = path.join(root.dir, 'fake-kvm');
    fs.writeFileSync(dev, '');
    assert.deepEqual(kvmAccess(dev), { path: dev, exists: true, accessible: true });
    const facts = readKvmFacts(dev);
    assert.equal(facts.device, dev);
    assert.equal(facts.devKvmRw, true);
    assert.equal(readKvmFacts(path.join(root.dir, 'none')).devKvmRw, false);
  });
});
