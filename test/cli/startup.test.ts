import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeSandbox, REPO_ROOT, type Sandbox } from '../helpers/sandbox.js';

/**
 * What the CLI loads (see bench/cli.ts for the times): the bundle holds no
 * daemon-side code, and zod (its own bundle) is loaded only to validate a body
 * the CLI sends, never for reads.
 */
describe('CLI start-up loads only what the command needs', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await makeSandbox();
    assert.equal((await sb.run(['daemon', 'status'])).code, 0);
  });
  after(async () => {
    await sb.cleanup();
  });

  /** Files and built-ins the CLI required (Node's module debug log). */
  const loads = async (args: string[]): Promise<string[]> => {
    const r = await sb.run(args, { env: { NODE_DEBUG: 'module' } });
    return [...r.stderr.matchAll(/^MODULE \d+: load (?:"([^"]+)"|built-in module (\S+))/gm)].map(
      (m) => m[1] ?? m[2]!,
    );
  };
  const zod = path.join(REPO_ROOT, 'dist', 'cli', 'zod.cjs');

  test('--version, vm list and completion do not load zod or node:child_process', async () => {
    for (const args of [['--version'], ['vm', 'list'], ['__complete', '--', 'vm', 'show', '']]) {
      const l = await loads(args);
      assert.ok(l.includes(path.join(REPO_ROOT, 'dist', 'cli', 'main.cjs')), l.join('\n'));
      assert.ok(!l.includes(zod), `${args.join(' ')} loaded zod`);
      assert.ok(!l.includes('node:child_process'), `${args.join(' ')} loaded child_process`);
    }
  });

  test('a command that sends a body validates it with zod', async () => {
    assert.ok((await loads(['vm', 'create', '--name', 'Bad_Name'])).includes(zod));
  });

  test('the bundle contains no daemon-side module', () => {
    const meta = JSON.parse(
      fs.readFileSync(path.join(REPO_ROOT, 'dist', 'cli', 'meta.json'), 'utf8'),
    ) as { outputs: Record<string, { inputs: Record<string, unknown> }> };
    const inputs = Object.values(meta.outputs).flatMap((o) => Object.keys(o.inputs));
    assert.ok(inputs.some((i) => i.endsWith('dist/src/cli/main.js')));
    const daemonSide = inputs.filter((i) =>
      /dist\/src\/(daemon|vm|vmm|store|network|storage|image|doctor)\/|node_modules\/(pino|better-sqlite3|tar-stream|zod)\//.test(
        i,
      ),
    );
    assert.deepEqual(daemonSide, []);
  });

  test('the bundle holds none of the TUI: Ink and React load only when banger tui runs', () => {
    const meta = JSON.parse(
      fs.readFileSync(path.join(REPO_ROOT, 'dist', 'cli', 'meta.json'), 'utf8'),
    ) as { outputs: Record<string, { inputs: Record<string, unknown> }> };
    const inputs = Object.values(meta.outputs).flatMap((o) => Object.keys(o.inputs));
    assert.ok(inputs.some((i) => i.endsWith('dist/src/cli/commands/tui.js')));
    const tui = inputs.filter((i) =>
      /dist\/src\/tui\/|node_modules\/(ink|react|react-reconciler|yoga-layout)\//.test(i),
    );
    assert.deepEqual(tui, []);
  });
});
