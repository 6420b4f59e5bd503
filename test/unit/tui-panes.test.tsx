import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { render } from 'ink-testing-library';
import type { VmView } from '../../src/api/schemas/vms.js';
import { Screen } from '../../src/tui/components/app.js';
import { appendLog, emptyLog } from '../../src/tui/logs.js';
import {
  applyVmEvent,
  initialState,
  startOp,
  patchOp,
  type TuiState,
} from '../../src/tui/store.js';

/** The panes that replace the table, rendered with Ink's test renderer from a given state. */

const vm: VmView = {
  id: 'id-a',
  name: 'alpha',
  state: 'running',
  image: 'debian-bookworm',
  imageId: 'i',
  kernel: 'debian-cloud-6.1',
  vmm: 'qemu',
  accel: 'tcg',
  vcpu: 2,
  memoryMib: 2048,
  diskSize: 8 * 1024 ** 3,
  nat: true,
  ip: '172.30.0.2',
  mac: '52:54:00:00:00:02',
  tap: 'bgr-tap0',
  pid: 4242,
  createdAt: '2026-01-01T00:00:00.000Z',
  startedAt: '2026-01-01T00:00:00.000Z',
  stoppedAt: null,
  lastError: null,
  sshHost: 'alpha.vm',
  dir: '/state/vms/alpha',
  bootMs: 3500,
  confinement: null,
};

const base = (): TuiState =>
  applyVmEvent(initialState({ columns: 80, rows: 24 }), { type: 'snapshot', vms: [vm] });

const screen = (s: TuiState): string => {
  const r = render(<Screen s={s} />);
  const f = r.lastFrame() ?? '';
  r.unmount();
  return f;
};

describe('tui panes', () => {
  test('details show the address, host name, VMM and sizes of the VM', () => {
    const f = screen({ ...base(), modal: { kind: 'details', id: 'id-a' } });
    assert.match(f, /VM alpha/);
    assert.match(f, /host: +alpha\.vm {2}172\.30\.0\.2/);
    assert.match(f, /vmm: +qemu \(accel tcg\) {2}pid 4242/);
    assert.match(f, /size: +2 vCPU, 2G memory, 8G disk/);
    assert.match(f, /boot: +3\.50s/);
  });

  test('logs show the newest lines while following, and say so', () => {
    let log = emptyLog();
    for (let i = 1; i <= 40; i++) log = appendLog(log, `console line ${i}\n`);
    const f = screen({ ...base(), modal: { kind: 'logs', id: 'id-a', name: 'alpha', log } });
    assert.match(f, /logs alpha \(following\)/);
    assert.match(f, /console line 40/);
    assert.doesNotMatch(f, /console line 1\n/);
  });

  test('delete asks first, naming the VM', () => {
    const f = screen({
      ...base(),
      modal: {
        kind: 'confirm',
        title: 'Delete VM alpha?',
        detail: 'disks are removed',
        confirm: () => undefined,
      },
    });
    assert.match(f, /Delete VM alpha\?/);
    assert.match(f, /y yes {2}n no/);
  });

  test('an operation in progress shows its step and progress above the status line', () => {
    const [s0, id] = startOp(base(), 'pull image debian-bookworm');
    const s = patchOp(s0, id, {
      step: 'download',
      current: 512 * 1024 ** 2,
      total: 1024 ** 3,
      unit: 'bytes',
    });
    const f = screen({ ...s, now: s.ops[0]!.started + 2000 });
    assert.match(f, /pull image debian-bookworm: download: 50% \(512M\/1G\) · 2s/);
  });
});
