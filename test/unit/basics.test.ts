import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildPath, matchPath } from '../../src/api/route.js';
import { BUILTIN_FLOORS, resolveVmSizing } from '../../src/config/vmDefaults.js';
import { Operations } from '../../src/daemon/ops.js';
import { KeyedMutex } from '../../src/util/mutex.js';
import { BangerError, toBangerError } from '../../src/errors.js';
import {
  formatDuration,
  formatSize,
  formatSizeShort,
  parseDuration,
  parseSize,
} from '../../src/util/units.js';
import { resolveVmm } from '../../src/vmm/resolve.js';

describe('units', () => {
  test('sizes', () => {
    assert.equal(parseSize('8G'), 8 * 1024 ** 3);
    assert.equal(parseSize('512MiB'), 512 * 1024 ** 2);
    assert.equal(parseSize('1.5g'), 1.5 * 1024 ** 3);
    assert.equal(parseSize(4096), 4096);
    assert.throws(() => parseSize('8Q'), /unit/);
    assert.throws(() => parseSize('-1G'));
    assert.equal(formatSize(1536), '1.5 KiB');
    assert.equal(formatSizeShort(8 * 1024 ** 3), '8G');
    assert.equal(formatSizeShort(1536 * 1024 ** 2), '1.5G');
  });
  test('durations', () => {
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration(2), 2000);
    assert.equal(parseDuration('0'), 0);
    assert.throws(() => parseDuration('5 minutes'));
    assert.equal(formatDuration(1500), '1.50s');
    assert.equal(formatDuration(90_000), '1m30s');
  });
});

describe('vm sizing provenance', () => {
  const host = { cpus: 16, memoryBytes: 32 * 1024 ** 3 };
  test('flag > config > host > builtin', () => {
    const s = resolveVmSizing({ vcpu: 8 }, { memoryMib: 1024 }, host);
    assert.deepEqual(s.vcpu, { value: 8, source: 'flag' });
    assert.deepEqual(s.memoryMib, { value: 1024, source: 'config' });
    assert.deepEqual(s.diskSize, { value: 8 * 1024 ** 3, source: 'host' });
  });
  test('host heuristics are capped', () => {
    const s = resolveVmSizing({}, {}, { cpus: 64, memoryBytes: 256 * 1024 ** 3 });
    assert.equal(s.vcpu.value, 4);
    assert.equal(s.memoryMib.value, 8192);
  });
  test('small hosts fall back to the built-in floors', () => {
    const s = resolveVmSizing({}, {}, { cpus: 2, memoryBytes: 2 * 1024 ** 3 });
    assert.deepEqual(s.vcpu, { value: BUILTIN_FLOORS.vcpu, source: 'builtin' });
    assert.deepEqual(s.memoryMib, { value: 512, source: 'builtin' });
    const none = resolveVmSizing({}, {}, undefined);
    assert.equal(none.diskSize.source, 'builtin');
  });
});

describe('routes', () => {
  test('match and build paths', () => {
    assert.deepEqual(matchPath('/v1/vms/:ref', '/v1/vms/a%20b'), { ref: 'a b' });
    assert.equal(matchPath('/v1/vms/:ref', '/v1/vms/'), undefined);
    assert.equal(matchPath('/v1/vms/:ref', '/v1/vms/a/b'), undefined);
    assert.equal(buildPath('/v1/vms/:ref/stop', { ref: 'x/y' }), '/v1/vms/x%2Fy/stop');
  });
});

describe('vmm resolution', () => {
  const find = (have: string[]) => (c: string) => (have.includes(c) ? `/usr/bin/${c}` : undefined);
  test('auto prefers firecracker', () => {
    assert.equal(
      resolveVmm({ vmm: 'auto' }, find(['firecracker', 'qemu-system-x86_64'])).resolved,
      'firecracker',
    );
    assert.equal(resolveVmm({ vmm: 'auto' }, find(['qemu-system-x86_64'])).resolved, 'qemu');
    assert.equal(resolveVmm({ vmm: 'auto' }, find([])).resolved, null);
  });
  test('explicit choices and binaries', () => {
    assert.equal(
      resolveVmm({ vmm: 'qemu' }, find(['firecracker', 'qemu-system-x86_64'])).resolved,
      'qemu',
    );
    const r = resolveVmm({ vmm: 'firecracker', firecrackerBin: '/opt/fc' }, find(['firecracker']));
    assert.equal(r.resolved, null);
    assert.match(r.reason, /\/opt\/fc was not found/);
  });
});

describe('errors', () => {
  test('one line with hint, typed codes and exit codes', () => {
    const e = new BangerError('not_found', "vm 'x' not found", {
      hint: 'list VMs with `banger vm list`',
    });
    assert.equal(e.line, "vm 'x' not found: list VMs with `banger vm list`");
    assert.equal(e.exitCode, 1);
    assert.equal(e.httpStatus, 404);
    assert.equal(new BangerError('usage', 'bad').exitCode, 2);
    const round = BangerError.fromJSON(e.toJSON());
    assert.equal(round.line, e.line);
    assert.equal(toBangerError(new Error('boom')).code, 'internal');
  });
});

describe('operations and locks', () => {
  test('KeyedMutex serialises one key and lets others run', async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    const slow = (k: string, tag: string, ms: number) =>
      m.run(k, async () => {
        log.push(`${tag}+`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`${tag}-`);
      });
    await Promise.all([slow('a', 'a1', 30), slow('a', 'a2', 1), slow('b', 'b1', 5)]);
    assert.ok(log.indexOf('a1-') < log.indexOf('a2+'), log.join(' '));
    assert.ok(log.indexOf('b1+') < log.indexOf('a1-'), 'b ran in parallel');
    assert.equal(m.isLocked('a'), false);
  });
  test('Operations.idle waits for in-flight work', async () => {
    const ops = new Operations();
    let done = false;
    const p = ops.track('x', async () => {
      await new Promise((r) => setTimeout(r, 20));
      done = true;
    });
    assert.equal(ops.count, 1);
    await ops.idle();
    assert.equal(done, true);
    await p;
    assert.equal(ops.count, 0);
  });
});

describe('process confinement and host users (pure parsers)', () => {
  test('parseConfinement reads Uid, Seccomp and NoNewPrivs', async () => {
    const { parseConfinement } = await import('../../src/util/proc.js');
    assert.deepEqual(
      parseConfinement('Name:\tqemu\nUid:\t999\t999\t999\t999\nNoNewPrivs:\t1\nSeccomp:\t2\n'),
      { uid: 999, seccomp: 2, noNewPrivs: true },
    );
    assert.deepEqual(parseConfinement('Uid:\t0\t0\t0\t0\n'), {
      uid: 0,
      seccomp: 0,
      noNewPrivs: false,
    });
    assert.equal(parseConfinement('Name:\tx\n'), undefined);
  });

  test('parsePasswdLine', async () => {
    const { parsePasswdLine } = await import('../../src/util/users.js');
    assert.deepEqual(parsePasswdLine('banger-vmm:x:999:995::/nonexistent:/usr/sbin/nologin'), {
      name: 'banger-vmm',
      uid: 999,
      gid: 995,
    });
    assert.equal(parsePasswdLine('# comment'), undefined);
    assert.equal(parsePasswdLine('bad:x:abc:1::/:/bin/sh'), undefined);
  });
});
