import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, test } from 'node:test';
import { faultAt, faultPoint, parseFaults, setFaults } from '../../src/util/fault.js';

const faultModule = fileURLToPath(new URL('../../src/util/fault.js', import.meta.url));

/** A fresh node process with BANGER_FAULT set that passes one fault point. */
function passPoint(env: string, op: string, point: string) {
  const code = `const f = await import(${JSON.stringify(faultModule)}); f.faultPoint(${JSON.stringify(op)}, ${JSON.stringify(point)}); console.log('passed');`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    env: { PATH: process.env.PATH, BANGER_FAULT: env },
    encoding: 'utf8',
  });
}

describe('BANGER_FAULT parsing', () => {
  test('entries are op:point:action, comma separated, blanks ignored', () => {
    assert.deepEqual(parseFaults('create:after-disks:kill'), [
      { op: 'create', point: 'after-disks', action: 'kill' },
    ]);
    assert.deepEqual(parseFaults(' start:after-tap:fail , ,delete:begin:exit'), [
      { op: 'start', point: 'after-tap', action: 'fail' },
      { op: 'delete', point: 'begin', action: 'exit' },
    ]);
    assert.deepEqual(parseFaults(''), []);
  });

  test('a malformed entry is a usage error naming it and the form', () => {
    for (const bad of [
      'create:after-disks',
      'create:after-disks:explode',
      'create::kill',
      'Create:after-disks:kill',
      'create:after disks:kill',
      'a:b:kill:extra',
    ]) {
      assert.throws(
        () => parseFaults(`start:begin:kill,${bad}`),
        (e: Error & { code?: string }) =>
          e.code === 'usage' &&
          e.message === `invalid BANGER_FAULT entry '${bad}'` &&
          /OP:POINT:ACTION with ACTION one of kill, exit, fail/.test(
            (e as unknown as { hint: string }).hint,
          ),
        bad,
      );
    }
  });
});

describe('fault points', () => {
  afterEach(() => setFaults(undefined));

  test('with no faults armed a point does nothing', () => {
    setFaults(undefined);
    assert.equal(faultAt('create', 'after-disks'), undefined);
    faultPoint('create', 'after-disks');
  });

  test('fail throws at the armed point only', () => {
    setFaults(parseFaults('create:after-disks:fail'));
    faultPoint('create', 'after-row');
    faultPoint('delete', 'after-disks');
    assert.throws(
      () => faultPoint('create', 'after-disks'),
      /^BangerError: injected fault at create:after-disks$/,
    );
  });

  test('kill ends the process with SIGKILL at the point, before what follows', () => {
    const r = passPoint('create:after-disks:kill', 'create', 'after-disks');
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /injected fault at create:after-disks \(kill\)/);
  });

  test('exit ends the process with status 86', () => {
    const r = passPoint('delete:after-files:exit', 'delete', 'after-files');
    assert.equal(r.status, 86);
    assert.equal(r.stdout, '');
  });

  test('another point of the same process passes', () => {
    const r = passPoint('create:after-disks:kill', 'create', 'after-row');
    assert.equal(r.status, 0);
    assert.equal(r.stdout, 'passed\n');
  });

  test('an invalid BANGER_FAULT stops the process at once', () => {
    const r = passPoint('create:after-disks', 'create', 'after-disks');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /invalid BANGER_FAULT entry 'create:after-disks'/);
  });
});
