import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { VmStats, VmView } from '../../src/api/schemas/vms.js';
import { age, fit, fitColumns, vmColumns, type VmRow } from '../../src/tui/columns.js';
import { hostPath } from '../../src/tui/actions.js';
import { createBody, fieldErrors, moveFocus, newForm, typeInto } from '../../src/tui/form.js';
import { bindingFor, footer, helpSections, KEYMAP } from '../../src/tui/keymap.js';
import { keyName, keyPresses } from '../../src/tui/keys.js';
import { layout } from '../../src/tui/layout.js';
import { appendLog, emptyLog, scrollLog, visibleLog, MAX_LOG_LINES } from '../../src/tui/logs.js';
import { frameUpdate } from '../../src/tui/screen.js';
import {
  applyStats,
  applyVmEvent,
  cursorKey,
  initialState,
  moveCursor,
  targetVms,
  toggleMark,
  vmRows,
  type TuiState,
} from '../../src/tui/store.js';

/** The TUI's pure parts: keys, keymap, columns, the store's reducers, the form, logs, layout, frames. */

const vm = (name: string, extra: Partial<VmView> = {}): VmView => ({
  id: `id-${name}`,
  name,
  state: 'running',
  image: 'debian-bookworm',
  imageId: 'img1',
  kernel: 'debian-cloud-6.1',
  vmm: 'qemu',
  accel: 'tcg',
  vcpu: 2,
  memoryMib: 2048,
  diskSize: 8 * 1024 ** 3,
  nat: false,
  ip: '172.30.0.2',
  mac: null,
  tap: null,
  pid: 1234,
  createdAt: '2026-01-01T00:00:00.000Z',
  startedAt: '2026-01-01T00:00:00.000Z',
  stoppedAt: null,
  lastError: null,
  sshHost: `${name}.vm`,
  dir: `/state/vms/${name}`,
  bootMs: 3000,
  confinement: null,
  ...extra,
});

const withVms = (...vms: VmView[]): TuiState =>
  applyVmEvent(initialState({ columns: 80, rows: 24 }), { type: 'snapshot', vms });

describe('tui keys', () => {
  test('Ink key flags become the keymap names', () => {
    assert.equal(keyName('', { upArrow: true }), 'up');
    assert.equal(keyName('', { tab: true, shift: true }), 'S-tab');
    assert.equal(keyName('c', { ctrl: true }), 'C-c');
    assert.equal(keyName('', { delete: true }), 'backspace');
    assert.equal(keyName('', { return: true }), 'enter');
    assert.equal(keyName('', { escape: true }), 'esc');
    assert.equal(keyName(' ', {}), 'space');
    assert.equal(keyName('K', { shift: true }), 'K');
  });

  test('several keys read at once are one key each', () => {
    assert.deepEqual(
      keyPresses('\x7f\x7fab\r', {}).map((k) => k.name),
      ['backspace', 'backspace', 'a', 'b', 'enter'],
    );
    assert.deepEqual(keyPresses('', { delete: true }), [{ name: 'backspace', input: '' }]);
    assert.deepEqual(keyPresses('q', {}), [{ name: 'q', input: 'q' }]);
  });

  test('q quits the table, closes the help overlay, and is typed text in the create form', () => {
    const s = withVms(vm('a'));
    assert.equal(bindingFor(s, 'q')?.action, 'quit');
    assert.equal(bindingFor({ ...s, help: true }, 'q')?.action, 'closeHelp');
    const form = { ...s, modal: { kind: 'form' as const, form: newForm({ workspace: false }) } };
    assert.equal(bindingFor(form, 'q'), undefined);
    assert.equal(bindingFor(form, 'C-c')?.action, 'quit');
  });

  test('VM actions apply only when there is a VM; the filter takes typed keys', () => {
    const empty = withVms();
    assert.equal(bindingFor(empty, 's'), undefined);
    assert.equal(bindingFor(withVms(vm('a')), 's')?.action, 'start');
    assert.equal(bindingFor(withVms(vm('a')), 'D')?.action, 'delete');
    assert.equal(bindingFor({ ...withVms(vm('a')), filtering: true }, 's'), undefined);
  });

  test('the footer and the help overlay come from the one keymap', () => {
    const s = withVms(vm('a'));
    const labels = footer(s).map((f) => `${f.key} ${f.label}`);
    assert.ok(labels.includes('q quit'), labels.join(', '));
    assert.ok(labels.includes('n new'), labels.join(', '));
    const help = helpSections(s).flatMap((sec) => sec.rows.map((r) => r.help));
    for (const b of KEYMAP.filter((b) => b.scope === 'vms'))
      assert.ok(help.includes(b.help), b.help);
  });
});

describe('tui columns', () => {
  test('at 80 columns the table keeps name, state and usage and drops the low-priority columns', () => {
    const ids = fitColumns(vmColumns(0), 80).map((f) => f.col.id);
    for (const id of ['name', 'state', 'cpu', 'mem', 'ip']) assert.ok(ids.includes(id), ids.join());
    assert.ok(!ids.includes('host'), ids.join());
    const width = fitColumns(vmColumns(0), 80).reduce((n, f) => n + f.width + 1, -1);
    assert.ok(width <= 80, `row is ${width} wide`);
  });

  test('cells are cut with an ellipsis or padded to their width', () => {
    assert.equal(fit('abcdefgh', 5), 'abcd…');
    assert.equal(fit('ab', 5), 'ab   ');
    assert.equal(fit('ab', 5, 'right'), '   ab');
    assert.equal(age(45_000), '45s');
    assert.equal(age(3 * 86_400_000 + 4 * 3_600_000), '3d4h');
  });
});

describe('tui store', () => {
  test('events add, replace and remove VMs', () => {
    let s = withVms(vm('a'), vm('b'));
    s = applyVmEvent(s, { type: 'vm', vm: vm('b', { state: 'stopped' }) });
    assert.equal(s.vms.get('id-b')?.state, 'stopped');
    s = applyVmEvent(s, { type: 'gone', id: 'id-a' });
    assert.deepEqual([...s.vms.keys()], ['id-b']);
  });

  test('the selection stays on its VM when rows are added before it', () => {
    let s = withVms(vm('b'), vm('c'));
    s = moveCursor(s, 1);
    assert.equal(cursorKey(s), 'id-c');
    s = applyVmEvent(s, { type: 'vm', vm: vm('a') });
    assert.equal(cursorKey(s), 'id-c');
    // Its row goes away: the cursor stays where it was.
    s = applyVmEvent(s, { type: 'gone', id: 'id-c' });
    assert.equal(cursorKey(s), 'id-b');
  });

  test('the filter matches name, state and address; rows are sorted by name', () => {
    const s = withVms(vm('web'), vm('db', { state: 'stopped' }), vm('api'));
    assert.deepEqual(
      vmRows(s).map((r) => r.vm.name),
      ['api', 'db', 'web'],
    );
    assert.deepEqual(
      vmRows({ ...s, filter: 'stop' }).map((r) => r.vm.name),
      ['db'],
    );
  });

  test('actions apply to the marked VMs, else to the one under the cursor', () => {
    let s = withVms(vm('a'), vm('b'), vm('c'));
    assert.deepEqual(
      targetVms(s).map((v) => v.name),
      ['a'],
    );
    s = toggleMark(s); // marks a, moves to b
    s = moveCursor(s, 1);
    s = toggleMark(s); // marks c
    assert.deepEqual(
      targetVms(s).map((v) => v.name),
      ['a', 'c'],
    );
  });

  test('stats samples replace the previous ones, only for known VMs', () => {
    const sample = (id: string, cpu: number): VmStats => ({
      id,
      name: id,
      state: 'running',
      cpuPercent: cpu,
      rssBytes: 1,
      memoryMib: 2048,
      guest: null,
      disk: { overlayBytes: 0, workBytes: 0, workSizeBytes: 0 },
    });
    const s = applyStats(withVms(vm('a')), [sample('id-a', 12), sample('id-zz', 50)]);
    assert.equal(s.stats.get('id-a')?.cpuPercent, 12);
    assert.equal(s.stats.has('id-zz'), false);
    const row: VmRow = { vm: vm('a'), stats: s.stats.get('id-a'), marked: false };
    const cpu = vmColumns(0).find((c) => c.id === 'cpu')!;
    assert.equal(cpu.cell(row).text, '12');
  });
});

describe('tui create form', () => {
  const typed = (values: Record<string, string>) => {
    let f = newForm({ workspace: false });
    for (const [i, field] of f.fields.entries()) {
      const v = values[field.id];
      if (v) f = typeInto({ ...f, focus: i }, v);
    }
    return moveFocus(f, 0);
  };

  test('a bad name or size is an inline error with the fix, and no request', () => {
    const f = typed({ name: 'Bad_Name', memory: '64M' });
    const errors = fieldErrors(f);
    assert.equal(errors.name, 'use 1-64 lowercase letters, digits or dashes');
    assert.equal(errors.memory, 'use at least 128M, e.g. 2G or 2048 (MiB)');
    assert.equal(createBody(f), undefined);
  });

  test('empty fields are left to the daemon defaults; sizes are parsed like the CLI flags', () => {
    assert.deepEqual(createBody(typed({})), {
      name: undefined,
      image: undefined,
      vcpu: undefined,
      memoryMib: undefined,
      diskSize: undefined,
      nat: false,
      start: true,
    });
    const body = createBody(typed({ name: 'dev-1', vcpu: '4', memory: '2G', disk: '10G' }));
    assert.equal(body?.name, 'dev-1');
    assert.equal(body?.vcpu, 4);
    assert.equal(body?.memoryMib, 2048);
    assert.equal(body?.diskSize, 10 * 1024 ** 3);
  });
});

describe('tui create form with a workspace', () => {
  test('the workspace field is offered when the API has workspace runs; its path becomes absolute', () => {
    assert.ok(newForm({ workspace: true }).fields.some((f) => f.id === 'workspace'));
    assert.ok(!newForm({ workspace: false }).fields.some((f) => f.id === 'workspace'));
    assert.equal(hostPath('src/app', '/home/u/work', '/home/u'), '/home/u/work/src/app');
    assert.equal(hostPath('~/repo', '/tmp', '/home/u'), '/home/u/repo');
    assert.equal(hostPath('/srv/repo', '/tmp', '/home/u'), '/srv/repo');
  });
});

describe('tui logs', () => {
  test('chunks become clean lines; a partial line waits for its end', () => {
    let b = appendLog(emptyLog(), '\x1b[32mboot ok\x1b[0m\r\nhalf');
    assert.deepEqual(b.lines, ['boot ok']);
    b = appendLog(b, ' line\n');
    assert.deepEqual(b.lines, ['boot ok', 'half line']);
  });

  test('follow shows the newest lines; scrolling up pauses it, reaching the end resumes it', () => {
    let b = emptyLog();
    for (let i = 1; i <= 10; i++) b = appendLog(b, `l${i}\n`);
    assert.deepEqual(visibleLog(b, 3).lines, ['l8', 'l9', 'l10']);
    b = scrollLog(b, -2, 3);
    assert.equal(b.follow, false);
    assert.deepEqual(visibleLog(b, 3).lines, ['l6', 'l7', 'l8']);
    b = appendLog(b, 'l11\n');
    assert.deepEqual(visibleLog(b, 3).lines, ['l6', 'l7', 'l8']);
    b = scrollLog(b, 10, 3);
    assert.equal(b.follow, true);
    assert.deepEqual(visibleLog(b, 3).lines, ['l9', 'l10', 'l11']);
  });

  test('the buffer keeps the newest lines only', () => {
    let b = emptyLog();
    b = appendLog(b, 'x\n'.repeat(MAX_LOG_LINES + 5));
    assert.equal(b.lines.length, MAX_LOG_LINES);
    assert.equal(b.dropped, 5);
  });
});

describe('tui screen', () => {
  test('an 80x24 terminal gets a 21-row body between header, status and footer', () => {
    const l = layout({ columns: 80, rows: 24 }, 0);
    assert.deepEqual(l, { width: 80, height: 24, body: 21, ops: 0, status: 1 });
    assert.equal(layout({ columns: 80, rows: 24 }, 5).body, 18);
  });

  test('only changed lines are written, each at its row', () => {
    assert.equal(frameUpdate(['a', 'b', 'c'], ['a', 'b', 'c'], 3), '');
    const out = frameUpdate(['a', 'b', 'c'], ['a', 'B', 'c'], 3);
    assert.ok(out.includes('\x1b[2;1HB'), JSON.stringify(out));
    assert.ok(!out.includes('\x1b[1;1H') && !out.includes('\x1b[3;1H'), JSON.stringify(out));
  });

  test('an unknown screen is drawn whole and lines past the terminal are not', () => {
    const out = frameUpdate(undefined, ['a', 'b', 'c', 'd'], 3);
    for (const row of [1, 2, 3]) assert.ok(out.includes(`\x1b[${row};1H`), `row ${row}`);
    assert.ok(!out.includes('\x1b[4;1H'));
  });
});
