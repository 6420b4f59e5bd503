// The project's test command (npm test): unit tests, CLI/daemon tests, then
// the end-to-end suite that boots real VMs. Prints per-test results, then one
// summary line "N passed, N failed[, N skipped]".
//
//   node scripts/test.mjs [unit|cli|e2e|all] [--only <substring>]
//
// Groups run one after another (e2e VMs are CPU-heavy); files within a group
// run in parallel up to BANGER_TEST_CONCURRENCY (default 2; e2e: 1, which the
// leak sweep after each e2e file relies on: see test/helpers/leaks.ts).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const suite =
  args.find((a) => !a.startsWith('-') && args[args.indexOf(a) - 1] !== '--only') ?? 'all';
const onlyIdx = args.indexOf('--only');
const only = onlyIdx >= 0 ? args[onlyIdx + 1] : undefined;

const groups = { unit: 'dist/test/unit', cli: 'dist/test/cli', e2e: 'dist/test/e2e' };
const selected = suite === 'all' ? Object.keys(groups) : [suite];
if (selected.some((g) => !(g in groups))) {
  console.error(`unknown suite '${suite}' (use unit, cli, e2e or all)`);
  process.exit(2);
}
if (!fs.existsSync(path.join(root, 'dist', 'build-info.json'))) {
  console.error('dist/ is missing: run `npm run build` first');
  process.exit(1);
}

const total = { passed: 0, failed: 0, skipped: 0 };
const skips = [];
const refusedSkips = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-test-'));
try {
  for (const group of selected) {
    const dir = path.join(root, groups[group]);
    const files = fs.existsSync(dir)
      ? fs
          .readdirSync(dir)
          .filter((f) => f.endsWith('.test.js') && (!only || f.includes(only)))
          .sort()
          .map((f) => path.join(dir, f))
      : [];
    if (files.length === 0) {
      if (only) {
        console.log(`\n=== ${group} tests: none match --only ${only} ===`);
        continue;
      }
      // A group that compiled to nothing is a broken build, not an empty suite.
      console.error(`\n${group}: no compiled test files under ${groups[group]}/`);
      total.failed++;
      continue;
    }
    console.log(`\n=== ${group} tests (${files.length} files) ===`);
    const countsFile = path.join(tmp, `${group}.json`);
    const concurrency = process.env.BANGER_TEST_CONCURRENCY ?? (group === 'e2e' ? '1' : '2');
    // After every e2e file, the leak sweep looks for what the file left behind
    // (processes, namespaces, taps, rules, temp files: test/helpers/leaks.ts).
    const sweep =
      group === 'e2e'
        ? [`--import=${pathToFileURL(path.join(root, 'dist/test/helpers/leaks.js')).href}`]
        : [];
    const r = spawnSync(
      process.execPath,
      [
        '--test',
        ...sweep,
        `--test-concurrency=${concurrency}`,
        '--test-reporter=spec',
        '--test-reporter-destination=stdout',
        `--test-reporter=${path.join(root, 'scripts/summary-reporter.mjs')}`,
        `--test-reporter-destination=${countsFile}`,
        ...files,
      ],
      { cwd: root, stdio: 'inherit', env: process.env },
    );
    let counts = { passed: 0, failed: 1, skipped: 0 };
    try {
      counts = JSON.parse(fs.readFileSync(countsFile, 'utf8'));
    } catch {
      console.error(`${group}: the test runner produced no results (exit ${r.status})`);
    }
    if (r.status !== 0 && counts.failed === 0) counts.failed = 1; // a crash outside any test
    total.passed += counts.passed;
    total.failed += counts.failed;
    total.skipped += counts.skipped;
    skips.push(...(counts.skips ?? []));
    refusedSkips.push(...(counts.refusedSkips ?? []));
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
for (const s of skips) console.log(`skipped: ${s.test}: ${s.reason}`);
for (const s of refusedSkips)
  console.log(`FAILED (a skip is not allowed in CI): ${s.test}: ${s.reason}`);
console.log(
  `\n${total.passed} passed, ${total.failed} failed${total.skipped ? `, ${total.skipped} skipped` : ''}`,
);
process.exit(total.failed > 0 ? 1 : 0);
