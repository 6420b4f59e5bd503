import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildKernelCmdline } from '../../src/vm/kernelArgs.js';

describe('guest kernel command line', () => {
  const base = { vmId: 'abc123', ipArg: 'ip=172.16.0.2::172.16.0.1:255.255.255.0::eth0:off' };

  test('a TCG guest gets the host TSC and fixed user-space addresses', () => {
    const args = buildKernelCmdline({ ...base, accel: 'tcg', tscKhz: 2_400_000 }).split(' ');
    assert.ok(args.includes('tsc_early_khz=2400000'));
    assert.ok(args.includes('norandmaps'));
    assert.ok(args.includes(base.ipArg));
    assert.ok(args.includes('banger.id=abc123'), args.join(' '));
  });

  test('tcg_aslr keeps randomization in a TCG guest', () => {
    const line = buildKernelCmdline({ ...base, accel: 'tcg', tcgAslr: true });
    assert.doesNotMatch(line, /norandmaps/);
  });

  test('a KVM guest keeps randomization and calibrates its own TSC', () => {
    const line = buildKernelCmdline({ ...base, accel: 'kvm', tscKhz: 2_400_000 });
    assert.doesNotMatch(line, /norandmaps|tsc_early_khz/);
  });

  test('extra arguments come last; whitespace inside one is refused', () => {
    const line = buildKernelCmdline({ ...base, accel: 'kvm', extra: ['init=/x', 'banger.nat=1'] });
    assert.match(line, / init=\/x banger\.nat=1$/);
    assert.throws(
      () => buildKernelCmdline({ ...base, accel: 'kvm', extra: ['a b'] }),
      /whitespace/,
    );
  });
});
