import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LineSplitter } from '../../src/guest/lineSplitter.js';

describe('LineSplitter', () => {
  test('splits across chunk boundaries, including a UTF-8 character cut in two', () => {
    const s = new LineSplitter(100);
    const euro = Buffer.from('€'); // 3 bytes
    assert.deepEqual(s.push(Buffer.from('one\ntw')), { lines: ['one'], tooLong: false });
    assert.deepEqual(s.push(Buffer.concat([Buffer.from('o '), euro.subarray(0, 1)])), {
      lines: [],
      tooLong: false,
    });
    assert.equal(s.pending, 5);
    assert.deepEqual(s.push(Buffer.concat([euro.subarray(1), Buffer.from('\n\nthree\n')])), {
      lines: ['two €', '', 'three'],
      tooLong: false,
    });
    assert.equal(s.pending, 0);
  });

  test('a line may be exactly the cap; one byte more is reported and not kept', () => {
    const s = new LineSplitter(8);
    assert.deepEqual(s.push(Buffer.from('12345678\n')), { lines: ['12345678'], tooLong: false });
    assert.deepEqual(s.push(Buffer.from('1234')), { lines: [], tooLong: false });
    assert.deepEqual(s.push(Buffer.from('56789')), { lines: [], tooLong: true });
    assert.equal(s.pending, 0);
  });

  test('lines before an overlong one in the same chunk are still returned', () => {
    const s = new LineSplitter(4);
    assert.deepEqual(s.push(Buffer.from('ok\nfar too long\nlater\n')), {
      lines: ['ok'],
      tooLong: true,
    });
  });
});
