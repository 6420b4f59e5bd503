import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { resolveFileSync } from '../../src/vm/fileSync.js';

describe('[[file_sync]] → work disk files', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-fsync-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('a file gets its mode (default 0600); a directory keeps its modes; a missing path warns', () => {
    const file = path.join(tmp, 'tool.sh');
    fs.writeFileSync(file, 'x', { mode: 0o644 });
    const dir = path.join(tmp, 'conf');
    fs.mkdirSync(path.join(dir, 'sub'), { recursive: true, mode: 0o750 });
    fs.chmodSync(dir, 0o750);
    fs.writeFileSync(path.join(dir, 'a.txt'), 'a', { mode: 0o640 });
    fs.writeFileSync(path.join(dir, 'sub', 'run'), 'r', { mode: 0o755 });
    fs.symlinkSync('a.txt', path.join(dir, 'link'));

    const plan = resolveFileSync([
      { host: file, guest: '/root/bin/tool.sh', mode: 0o755 },
      { host: file, guest: '/root/.secret' },
      { host: dir, guest: '/root/.config/conf' },
      { host: path.join(tmp, 'nope'), guest: '/root/nope' },
    ]);
    assert.deepEqual(
      plan.files.map((f) => [f.path, f.hostPath, f.mode]),
      [
        ['/bin/tool.sh', file, 0o755],
        ['/.secret', file, 0o600],
        ['/.config/conf/a.txt', path.join(dir, 'a.txt'), 0o640],
        ['/.config/conf/sub/run', path.join(dir, 'sub', 'run'), 0o755],
      ],
    );
    assert.deepEqual(
      plan.dirs.map((d) => [d.path, d.mode]),
      [
        ['/.config/conf', 0o750],
        ['/.config/conf/sub', 0o750],
      ],
    );
    assert.deepEqual(plan.warnings, [
      `[[file_sync]] entry 3: skipped 1 symlink in ${dir}`,
      `[[file_sync]] entry 4: ${path.join(tmp, 'nope')} does not exist on the host: skipped`,
    ]);
  });

  test('mode set on a directory entry applies to its files', () => {
    const dir = path.join(tmp, 'keys');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'k'), 'k', { mode: 0o644 });
    const plan = resolveFileSync([{ host: dir, guest: '/root/keys', mode: 0o400 }]);
    assert.deepEqual(
      plan.files.map((f) => f.mode),
      [0o400],
    );
  });
});
