import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { capLog } from '../../src/vm/logCap.js';
import { readFrom } from '../../src/util/tail.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-logcap-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('capLog', () => {
  test('under the cap nothing happens; over it the log moves to .1 and an O_APPEND writer goes on at the start', () => {
    const log = path.join(tmp, 'console.log');
    const fd = fs.openSync(log, 'a'); // as QEMU (append=on) and the VMM's stdout hold it
    try {
      fs.writeSync(fd, 'a'.repeat(1000));
      assert.equal(capLog(log, 1000), false);
      assert.equal(fs.existsSync(`${log}.1`), false);
      fs.writeSync(fd, 'b');
      assert.equal(capLog(log, 1000), true);
      assert.equal(fs.readFileSync(`${log}.1`, 'utf8'), `${'a'.repeat(1000)}b`);
      assert.equal(fs.statSync(log).size, 0);
      fs.writeSync(fd, 'after');
      assert.equal(
        fs.readFileSync(log, 'utf8'),
        'after',
        'no hole: the writer appends at the new end',
      );
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(capLog(path.join(tmp, 'missing.log'), 10), false);
  });

  test('an offset taken before the log was capped reads the new log from its start', () => {
    const log = path.join(tmp, 'marked.log');
    fs.writeFileSync(log, 'x'.repeat(500));
    const mark = 500;
    capLog(log, 100);
    fs.appendFileSync(log, 'this boot');
    assert.equal(readFrom(log, mark), 'this boot');
  });
});
