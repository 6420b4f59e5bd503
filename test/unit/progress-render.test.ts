import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ProgressRenderer } from '../../src/cli/render/progress.js';

describe('progress rendering', () => {
  test('on a terminal a copy shows files and bytes together', () => {
    let out = '';
    const stream = {
      columns: 200,
      write: (s: string) => {
        out += s;
        return true;
      },
    } as unknown as NodeJS.WriteStream;
    const r = new ProgressRenderer({ stream, tty: true });
    r.handle({ type: 'step', id: 'ws', label: 'Copying /src to /root/repo', state: 'start' });
    r.handle({
      type: 'progress',
      id: 'ws',
      current: 512 * 1024,
      total: 1024 * 1024,
      unit: 'bytes',
      items: { current: 3, total: 10, label: 'files' },
    });
    r.handle({ type: 'log', level: 'warn', message: 'redraw' });
    r.finish();
    // eslint-disable-next-line no-control-regex
    const lines = out.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').split('\n');
    const live = lines.filter(
      (l) => l.includes('Copying /src to /root/repo') && l.includes('files'),
    );
    assert.ok(live.length > 0, out);
    assert.match(live[live.length - 1]!, /█{12}░{12} 512 KiB\/1 MiB 3\/10 files \d+ms$/);
  });
});
