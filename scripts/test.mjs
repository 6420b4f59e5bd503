// The project's test command (npm test): unit tests, CLI/daemon tests, and the
// end-to-end suite that boots real VMs. Prints per-test results, then one
// summary line "N passed, N failed[, N skipped]".
//
//   node scripts/test.mjs [unit|cli|e2e|all] [--only <substring>]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const suite = args.find((a) => !a.startsWith('-')) ?? 'all';
const onlyIdx = args.indexOf('--only');
const only = onlyIdx >= 0 ? args[onlyIdx + 1] : undefined;

const groups = { unit: 'dist/test/unit', cli: 'dist/test/cli', e2e: 'dist/test/e2e' };
const dirs = suite === 'all' ? Object.values(groups) : [groups[suite]];
if (dirs.some((d) => d === undefined)) {
  console.error(`unknown suite '${suite}' (use unit, cli, e2e or all)`);
  process.exit(2);
}
const files = [];
for (const d of dirs) {
  const abs = path.join(root, d);
  if (!fs.existsSync(abs)) continue;
  for (const f of fs.readdirSync(abs).sort()) {
    if (f.endsWith('.test.js') && (!only || f.includes(only))) files.push(path.join(d, f));
  }
}
if (files.length === 0) {
  console.error('no test files found: run `npm run build` first');
  process.exit(1);
}
const r = spawnSync(
  process.execPath,
  [
    '--test',
    `--test-concurrency=${process.env.BANGER_TEST_CONCURRENCY ?? 2}`,
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    `--test-reporter=${path.join(root, 'scripts/summary-reporter.mjs')}`,
    '--test-reporter-destination=stdout',
    ...files,
  ],
  { cwd: root, stdio: 'inherit', env: process.env },
);
process.exit(r.status ?? 1);
