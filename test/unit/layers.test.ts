import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { cruise, type ICruiseResult, type IForbiddenRuleType } from 'dependency-cruiser';
import { REPO_ROOT } from '../helpers/sandbox.js';

/**
 * The layer rules of `npm run lint` (.dependency-cruiser.mjs), run on a tiny
 * fixture tree (test/fixtures/layers/src) with deliberately wrong imports.
 */
interface LayerConfig {
  TIERS: string[][];
  CLI_MAY_IMPORT: string[];
  forbidden: IForbiddenRuleType[];
  options: { tsPreCompilationDeps: boolean; doNotFollow: { path: string } };
}

const loadConfig = async (): Promise<LayerConfig> =>
  (await import(
    pathToFileURL(path.join(REPO_ROOT, '.dependency-cruiser.mjs')).href
  )) as LayerConfig;

let cached: Promise<string[]> | undefined;
const violations = (): Promise<string[]> => (cached ??= cruiseFixture());

async function cruiseFixture(): Promise<string[]> {
  const cfg = await loadConfig();
  const r = await cruise(['src'], {
    baseDir: path.join(REPO_ROOT, 'test', 'fixtures', 'layers'),
    validate: true,
    ruleSet: { forbidden: cfg.forbidden },
    tsPreCompilationDeps: cfg.options.tsPreCompilationDeps,
    doNotFollow: cfg.options.doNotFollow,
  });
  const out = r.output as ICruiseResult;
  return out.summary.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`);
}

describe('layer rules (dependency-cruiser)', () => {
  test('a type-only import up a layer is a violation', async () => {
    assert.ok(
      (await violations()).includes('layer-util: src/util/units.ts -> src/vm/thing.ts'),
      'util importing a type from vm',
    );
  });

  test('the CLI importing the daemon is a violation; a type from vm is not', async () => {
    const v = await violations();
    assert.ok(v.includes('layer-cli: src/cli/main.ts -> src/daemon/server.ts'), v.join('\n'));
    assert.ok(!v.some((x) => x.includes('src/cli/main.ts -> src/vm/thing.ts')), v.join('\n'));
  });

  test('the TUI importing the daemon or a service is a violation; a type from vm is not', async () => {
    const v = await violations();
    assert.ok(v.includes('layer-tui: src/tui/view.ts -> src/daemon/server.ts'), v.join('\n'));
    assert.ok(!v.some((x) => x.includes('src/tui/view.ts -> src/vm/thing.ts')), v.join('\n'));
  });

  test('only the CLI imports the TUI, and only its entry', async () => {
    const v = await violations();
    assert.ok(v.includes('only-cli-imports-tui: src/cli/main.ts -> src/tui/view.ts'), v.join('\n'));
    assert.ok(
      v.includes('only-cli-imports-tui-entry: src/vm/thing.ts -> src/tui/main.tsx'),
      v.join('\n'),
    );
    assert.ok(!v.some((x) => x.includes('src/cli/main.ts -> src/tui/main.tsx')), v.join('\n'));
  });

  test('a cycle between two files is a violation, even through a type-only import', async () => {
    const v = await violations();
    assert.ok(
      v.some((x) => x.startsWith('no-circular: src/util/ring-')),
      `expected a no-circular violation in:\n${v.join('\n')}`,
    );
  });

  test('an import down the layers is not a violation', async () => {
    const v = await violations();
    assert.ok(!v.some((x) => x.includes('src/vm/thing.ts -> src/util/')), v.join('\n'));
  });

  test('every part of src/ has a tier, and each part appears once', async () => {
    const { TIERS } = await loadConfig();
    const parts = TIERS.flat();
    assert.equal(new Set(parts).size, parts.length);
    const src = path.join(REPO_ROOT, 'src');
    for (const e of fs.readdirSync(src, { withFileTypes: true })) {
      const part = e.isDirectory() ? e.name : e.name.replace(/\.ts$/, '');
      if (part === 'cli' || part === 'tui') continue;
      assert.ok(parts.includes(part), `src/${e.name} has no tier in .dependency-cruiser.mjs`);
    }
  });
});
