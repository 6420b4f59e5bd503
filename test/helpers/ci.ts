import type { TestContext } from 'node:test';

/**
 * The one rule for a test this host cannot run (a missing tool, no root, no
 * network namespaces): skipped with the reason on a developer machine, a
 * failure in CI (`CI=true`), where every test must run. The only skips CI
 * accepts are on the allow-list of scripts/summary-reporter.mjs, which also
 * turns any other skip into a failure.
 */
export const IN_CI = process.env.CI === 'true';

/**
 * Inside a test: true when it can run; otherwise it throws in CI and skips
 * (returning false) elsewhere. Use as `if (!needs(t, ok, why)) return;`.
 */
export function needs(t: TestContext, ok: boolean, why: string): boolean {
  if (ok) return true;
  if (IN_CI) throw new Error(`cannot run in CI: ${why}`);
  t.skip(why);
  return false;
}

/**
 * The same rule as node:test options, for a test or suite decided before it
 * runs: `test(name, skipUnless(which('lz4'), 'lz4 is not installed'), fn)`.
 * Outside CI the test is skipped with the reason. In CI it is skipped too and
 * the summary reporter counts that skip as a failure with the reason, which
 * says more than the test failing on the missing piece.
 */
export function skipUnless(ok: unknown, why: string): { skip?: string } {
  return ok ? {} : { skip: why };
}
