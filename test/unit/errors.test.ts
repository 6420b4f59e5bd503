import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VmCreateRequestSchema } from '../../src/api/schemas/vms.js';
import { exitStatus } from '../../src/cli/commands/vm.js';
import { schemaError, toBangerError } from '../../src/errors.js';

describe('schema errors through errors.ts', () => {
  const issues = (body: unknown) => {
    const r = VmCreateRequestSchema.safeParse(body);
    assert.equal(r.success, false);
    return r.error!.issues;
  };

  test('one line naming the field in the user words, its value and the fix', () => {
    const e = schemaError(issues({ name: 'Bad_Name' }), {
      code: 'usage',
      data: { name: 'Bad_Name' },
      labels: { name: 'VM name' },
    });
    assert.equal(
      e.line,
      "invalid VM name 'Bad_Name': use 1-64 lowercase letters, digits or dashes",
    );
    assert.equal(e.exitCode, 2);
  });

  test('without labels the field path is named, and where it was found', () => {
    const e = schemaError(issues({ vcpu: 999 }), {
      data: { vcpu: 999 },
      where: 'in the body of POST /v1/vms',
    });
    assert.equal(e.code, 'invalid_request');
    assert.equal(
      e.line,
      "invalid vcpu '999' in the body of POST /v1/vms: use a whole number from 1 to 64",
    );
  });

  test('a schema error that escapes becomes one line, not a dump of issues', () => {
    let thrown: unknown;
    try {
      VmCreateRequestSchema.parse({ memoryMib: 0 });
    } catch (e) {
      thrown = e;
    }
    const err = toBangerError(thrown);
    assert.equal(err.line, 'invalid memoryMib: use at least 128M, e.g. 2G or 2048 (MiB)');
    assert.doesNotMatch(err.line, /[[{]/);
  });
});

describe('exit status of a child', () => {
  test('its code, or 128 + the number of the signal that killed it', () => {
    assert.equal(exitStatus(0, null), 0);
    assert.equal(exitStatus(7, null), 7);
    assert.equal(exitStatus(null, 'SIGHUP'), 129);
    assert.equal(exitStatus(null, 'SIGKILL'), 137);
    assert.equal(exitStatus(null, 'SIGTERM'), 143);
  });
});
