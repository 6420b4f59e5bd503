import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { openStore } from '../../src/store/index.js';
import type { IntentRecord, RecoveryCause } from '../../src/store/journal.js';
import { parseFaults, setFaults } from '../../src/util/fault.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-journal-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => openStore(path.join(dir, `j${n++}.db`));

describe('intent journal', () => {
  afterEach(() => setFaults(undefined));

  test('an intent records its steps and what they made, and goes when done', () => {
    const store = fresh();
    const j = store.journal;
    const i = j.begin('create', 'vm1', { dir: '/x' });
    assert.deepEqual(
      j.open().map((r) => [r.op, r.subject, r.step, r.data, r.pid]),
      [['create', 'vm1', 'begin', { dir: '/x' }, process.pid]],
    );
    i.step('after-row', { ip: '172.16.0.2' });
    i.note({ tap: 'bgr0' });
    const [rec] = j.open();
    assert.equal(rec!.step, 'after-row');
    assert.deepEqual(rec!.data, { dir: '/x', ip: '172.16.0.2', tap: 'bgr0' });
    i.done();
    assert.deepEqual(j.open(), []);
    store.close();
  });

  test('run clears the intent on success without recovering', async () => {
    const store = fresh();
    const calls: RecoveryCause[] = [];
    store.journal.onRecover('set', async (_r, c) => void calls.push(c));
    const out = await store.journal.run('set', 'vm1', {}, async (i) => {
      i.step('after-work-disk');
      return 42;
    });
    assert.equal(out, 42);
    assert.deepEqual(calls, []);
    assert.deepEqual(store.journal.open(), []);
    store.close();
  });

  test('run hands a failed operation to its recoverer with what it made, then clears it', async () => {
    const store = fresh();
    const seen: [string, Record<string, unknown>, RecoveryCause][] = [];
    store.journal.onRecover('start', async (r, c) => void seen.push([r.step, r.data, c]));
    await assert.rejects(
      store.journal.run('start', 'vm1', {}, async (i) => {
        i.step('after-tap', { tap: 'bgr3' });
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.deepEqual(seen, [['after-tap', { tap: 'bgr3' }, 'failed']]);
    assert.deepEqual(store.journal.open(), []);
    store.close();
  });

  test('a recoverer that fails keeps the record for the next start, and the first error is thrown', async () => {
    const store = fresh();
    store.journal.onRecover('delete', async () => {
      throw new Error('recovery broke');
    });
    await assert.rejects(
      store.journal.run('delete', 'vm1', {}, async () => {
        throw new Error('delete broke');
      }),
      /delete broke/,
    );
    assert.deepEqual(
      store.journal.open().map((r) => [r.op, r.subject]),
      [['delete', 'vm1']],
    );
    store.close();
  });

  test('a fail fault at a step throws after the step is recorded', async () => {
    const store = fresh();
    const seen: string[] = [];
    store.journal.onRecover('create', async (r) => void seen.push(r.step));
    setFaults(parseFaults('create:after-disks:fail'));
    await assert.rejects(
      store.journal.run('create', 'vm1', {}, async (i) => {
        i.step('after-row');
        i.step('after-disks');
        seen.push('not reached');
      }),
      /injected fault at create:after-disks/,
    );
    assert.deepEqual(seen, ['after-disks']);
    store.close();
  });

  test('at daemon start, records of a dead daemon are recovered oldest first and cleared', async () => {
    const file = path.join(dir, 'restart.db');
    // A daemon that records two intents and dies (its pid is then gone).
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { openStore } = await import(${JSON.stringify(new URL('../../src/store/index.js', import.meta.url).href)});
         const s = openStore(${JSON.stringify(file)});
         s.journal.begin('create', 'a', { dir: '/a' }).step('after-row');
         s.journal.begin('kernel', 'k', {});
         s.journal.begin('gone-op', 'z', {});`,
      ],
      { stdio: 'inherit' },
    );
    assert.equal(await new Promise((r) => child.on('exit', r)), 0);
    const store = openStore(file);
    const seen: [string, string, string, RecoveryCause][] = [];
    const rec = async (r: IntentRecord, c: RecoveryCause) =>
      void seen.push([r.op, r.subject, r.step, c]);
    store.journal.onRecover('create', rec);
    store.journal.onRecover('kernel', rec);
    const warned: string[] = [];
    const report = await store.journal.recover((m, r) => warned.push(`${r.op}: ${m}`));
    assert.deepEqual(seen, [
      ['create', 'a', 'after-row', 'restart'],
      ['kernel', 'k', 'begin', 'restart'],
    ]);
    assert.deepEqual(warned, [
      'gone-op: no recoverer for an interrupted operation; record dropped',
    ]);
    assert.equal(report.recovered.length, 3);
    assert.deepEqual(store.journal.open(), []);
    store.close();
  });

  test('records of a daemon that still runs are left alone', async () => {
    const store = fresh();
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)']);
    try {
      const stat = fs.readFileSync(`/proc/${sleeper.pid}/stat`, 'utf8');
      const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
      store.db
        .prepare(
          `INSERT INTO intents (op, subject, step, data, pid, pid_start_time, created_at, updated_at)
           VALUES ('create', 'b', 'begin', '{}', ?, ?, 'now', 'now')`,
        )
        .run(sleeper.pid, start);
      let called = false;
      store.journal.onRecover('create', async () => void (called = true));
      const report = await store.journal.recover(() => undefined);
      assert.equal(report.skipped, 1);
      assert.equal(called, false);
      assert.equal(store.journal.open().length, 1);
    } finally {
      sleeper.kill('SIGKILL');
      store.close();
    }
  });
});
