import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TerminalFilter, terminalSafe } from '../../src/util/terminal.js';
import { table } from '../../src/cli/render/table.js';

describe('terminal-safe guest text', () => {
  test('colours, cursor moves, title changes and hyperlinks are removed whole', () => {
    assert.equal(terminalSafe('\x1b[1;31mred\x1b[0m ok'), 'red ok');
    assert.equal(terminalSafe('a\x1b[2J\x1b[Hb'), 'ab');
    assert.equal(terminalSafe('\x1b]0;pwned title\x07after'), 'after');
    assert.equal(terminalSafe('\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\'), 'link');
    assert.equal(terminalSafe('\x1bPq#0;2;0;0;0\x1b\\x'), 'x'); // DCS (sixel)
    assert.equal(terminalSafe('\x1b(Bplain'), 'plain'); // charset designation
    assert.equal(terminalSafe('\x9b31mc1\x9d0;t\x9cz'), 'c1z'); // 8-bit CSI and OSC
  });

  test('control characters go, tab, newline and printable Unicode stay', () => {
    assert.equal(terminalSafe('a\tb\nc\r\nd'), 'a\tb\nc\nd');
    assert.equal(terminalSafe('secret\rfake prompt'), 'secretfake prompt');
    assert.equal(terminalSafe('bell\x07 nul\x00 del\x7f bs\x08'), 'bell nul del bs');
    assert.equal(terminalSafe('€ ünï 日本 🙂'), '€ ünï 日本 🙂');
  });

  test('a sequence split across chunks is still removed whole', () => {
    const f = new TerminalFilter();
    const out = ['ok \x1b', '[3', '1mred\x1b]0;ti', 'tle\x1b', '\\ end'].map((c) => f.write(c));
    assert.equal(out.join(''), 'ok red end');
  });

  test('table cells are filtered before widths are computed', () => {
    assert.equal(table(['A', 'B'], [['\x1b[31mx\x1b[0m', 'y']]), 'A   B\nx   y');
  });
});
