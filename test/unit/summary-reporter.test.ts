import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../helpers/sandbox.js';

/**
 * The test command's summary reporter (scripts/summary-reporter.mjs), fed
 * node:test events by hand: what counts as passed, failed and skipped, and
 * which skips CI refuses.
 */

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
  skips: { test: string; reason: string }[];
  refusedSkips: { test: string; reason: string }[];
}
type Reporter = (source: AsyncIterable<unknown>) => AsyncGenerator<string>;

async function report(events: unknown[], ci: boolean): Promise<Counts> {
  const url = pathToFileURL(path.join(REPO_ROOT, 'scripts', 'summary-reporter.mjs')).href;
  const summary = ((await import(url)) as { default: Reporter }).default;
  const saved = process.env.CI;
  process.env.CI = ci ? 'true' : 'false';
  try {
    let out = '';
    for await (const chunk of summary(
      (async function* () {
        yield* events;
      })(),
    ))
      out += chunk;
    return JSON.parse(out) as Counts;
  } finally {
    if (saved === undefined) delete process.env.CI;
    else process.env.CI = saved;
  }
}

const ev = (type: 'test:pass' | 'test:fail', data: Record<string, unknown>) => ({
  type,
  data: { file: '/x.test.js', ...data },
});
const suite = { type: 'suite' };

describe('summary reporter', () => {
  const events = [
    ev('test:pass', { name: 'ok' }),
    ev('test:fail', { name: 'broken', details: { error: {} } }),
    ev('test:pass', { name: 'no lz4 here', skip: 'lz4 is not installed' }),
    ev('test:pass', {
      name: 'firecracker suite',
      skip: 'firecracker is not on PATH: the cases were not run',
    }),
    // A skipped suite reports none of its tests.
    ev('test:pass', { name: 'kernel suite', skip: 'apt lists are missing', details: suite }),
    // A suite whose tests failed is not counted again; one that failed in a hook is.
    ev('test:fail', {
      name: 'parent',
      details: { ...suite, error: { failureType: 'subtestsFailed' } },
    }),
    ev('test:fail', {
      name: 'hooked',
      details: { ...suite, error: { failureType: 'hookFailed' } },
    }),
  ];

  test('outside CI a skip is counted and listed with its reason', async () => {
    const c = await report(events, false);
    assert.deepEqual([c.passed, c.failed, c.skipped], [1, 2, 3]);
    assert.deepEqual(
      c.skips.map((s) => s.reason),
      [
        'lz4 is not installed',
        'firecracker is not on PATH: the cases were not run',
        'apt lists are missing',
      ],
    );
    assert.deepEqual(c.refusedSkips, []);
  });

  test('in CI every skip off the allow-list fails, a skipped suite included', async () => {
    const c = await report(events, true);
    assert.deepEqual([c.passed, c.failed, c.skipped], [1, 4, 1]);
    assert.deepEqual(
      c.refusedSkips.map((s) => s.test),
      ['no lz4 here (/x.test.js)', 'kernel suite (/x.test.js)'],
    );
    assert.deepEqual(
      c.skips.map((s) => s.test),
      ['firecracker suite (/x.test.js)'],
    );
  });
});
