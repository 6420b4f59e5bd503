import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { render } from 'ink-testing-library';
import type { VmView } from '../../src/api/schemas/vms.js';
import { withDaemon } from '../../src/cli/daemon.js';
import { formatSpec } from '../../src/cli/commands/vm.js';
import { BangerError, toBangerError } from '../../src/errors.js';
import { Actions, type ScreenControl } from '../../src/tui/actions.js';
import { App, Screen } from '../../src/tui/components/app.js';
import { Feed } from '../../src/tui/feed.js';
import type { TuiHost } from '../../src/tui/host.js';
import { applyVmEvent, initialState, TuiStore } from '../../src/tui/store.js';
import { makeSandbox, sleep, type Sandbox } from '../helpers/sandbox.js';

/**
 * The TUI's views rendered with Ink's test renderer, fed by the real feed
 * and actions against a daemon in temp dirs (no VMs: those are the e2e's).
 */

const ESC = '\x1b';
const ENTER = '\r';
const BACKSPACE = '\x7f';

async function until(frame: () => string | undefined, re: RegExp, what: string): Promise<string> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const f = frame() ?? '';
    if (re.test(f)) return f;
    if (Date.now() > deadline) assert.fail(`${what}: ${re} not on screen:\n${f}`);
    await sleep(25);
  }
}

interface Ui {
  store: TuiStore;
  frame: () => string | undefined;
  keys: (s: string) => Promise<void>;
  close: () => void;
}

function mount(host: TuiHost): Ui {
  const store = new TuiStore(initialState({ columns: 80, rows: 24 }));
  const feed = new Feed(store, host, { retryMs: 200 });
  const screen: ScreenControl = { quit: () => undefined, suspend: (fn) => fn() };
  const actions = new Actions(store, host, feed, screen);
  const r = render(<App store={store} onKey={(n, i) => actions.key(n, i)} />);
  feed.start();
  return {
    store,
    frame: r.lastFrame,
    keys: async (s) => {
      for (const ch of s) {
        r.stdin.write(ch);
        await sleep(ch === ESC ? 80 : 5);
      }
    },
    close: () => {
      feed.stop();
      r.unmount();
    },
  };
}

describe('tui views (Ink test renderer, daemon in temp dirs)', () => {
  let sb: Sandbox;
  let host: TuiHost;
  before(async () => {
    sb = await makeSandbox();
    const r = await sb.run(['vm', 'list']);
    assert.equal(r.code, 0, r.stderr);
    host = {
      socket: sb.paths.socket,
      daemon: (fn, o) => withDaemon(sb.paths, fn, { autostart: o?.autostart ?? false }),
      ssh: () => Promise.resolve(0),
      errorLine: (e) => toBangerError(e).line,
      specLine: formatSpec,
    };
  });
  after(async () => {
    await sb.cleanup();
  });

  test('banger tui refuses a non-terminal with one line and exit 2', async () => {
    const r = await sb.run(['tui']);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      'error: banger tui needs a terminal (stdin and stdout are not a TTY): run it in a terminal, or use `banger vm list` in scripts\n',
    );
  });

  test('the VM table connects through the event stream and says there are no VMs', async () => {
    const ui = mount(host);
    try {
      const f = await until(ui.frame, /bangerd up · 0 VMs/, 'header');
      assert.match(f, /NAME +STATE/);
      assert.match(f, /no VMs yet: n creates one/);
      assert.match(f, /\? help {2}n new/);
    } finally {
      ui.close();
    }
  });

  test('the create form shows a bad name inline and sends nothing; a daemon refusal stays in the form', async () => {
    const ui = mount(host);
    try {
      await until(ui.frame, /bangerd up/, 'connected');
      await ui.keys('n');
      await until(ui.frame, /New VM/, 'form');
      await ui.keys('Bad_Name');
      await until(ui.frame, /✗ use 1-64 lowercase letters, digits or dashes/, 'inline error');
      await ui.keys(ENTER);
      await sleep(200);
      const list = await withDaemon(sb.paths, (c) => c.call('vmList', {}));
      assert.deepEqual(list, { vms: [] });
      await ui.keys(BACKSPACE.repeat(8) + 'good-1\t' + 'no-such-image' + ENTER);
      const f = await until(ui.frame, /✗ image 'no-such-image' not found/, 'daemon error');
      assert.match(f, /New VM/, 'the form stays open to fix the value');
      await ui.keys(ESC);
      await until(ui.frame, /no VMs yet/, 'back to the table');
    } finally {
      ui.close();
    }
  });

  test('the images and kernels views list what the daemon has; ? shows the keys of the view', async () => {
    const ui = mount(host);
    try {
      await until(ui.frame, /bangerd up/, 'connected');
      await ui.keys('2');
      await until(ui.frame, /no images: p pulls one/, 'images view');
      await ui.keys('\t');
      await until(ui.frame, /no kernels: p pulls one/, 'kernels view');
      await ui.keys('?');
      const f = await until(ui.frame, /Keys \(\? or esc closes\)/, 'help');
      assert.match(f, /pull a kernel/);
      assert.match(f, /delete the kernel/);
    } finally {
      ui.close();
    }
  });

  test('a daemon that cannot be reached is said clearly in the status line', async () => {
    const down: TuiHost = {
      ...host,
      socket: '/nonexistent/bangerd.sock',
      daemon: () =>
        Promise.reject(
          new BangerError(
            'daemon_unavailable',
            'cannot reach bangerd at /nonexistent/bangerd.sock',
          ),
        ),
    };
    const ui = mount(down);
    try {
      const f = await until(
        ui.frame,
        /cannot reach bangerd at \/nonexistent\/bangerd.sock · c starts it/,
        'status line',
      );
      assert.match(f, /bangerd: down/);
      assert.match(f, /c start daemon/);
    } finally {
      ui.close();
    }
  });

  test('VM rows show name, state, address and uptime within 80 columns', () => {
    const base: VmView = {
      id: 'id-a',
      name: 'alpha',
      state: 'running',
      image: 'debian-bookworm',
      imageId: 'i',
      kernel: 'k',
      vmm: 'qemu',
      accel: 'tcg',
      vcpu: 2,
      memoryMib: 2048,
      diskSize: 8 * 1024 ** 3,
      nat: false,
      ip: '172.30.0.2',
      mac: null,
      tap: null,
      pid: 1,
      createdAt: '2026-01-01T00:00:00.000Z',
      startedAt: new Date(Date.now() - 65_000).toISOString(),
      stoppedAt: null,
      lastError: null,
      sshHost: 'alpha.vm',
      dir: '/d',
      bootMs: 1,
      confinement: null,
    };
    const s = applyVmEvent(initialState({ columns: 80, rows: 24 }), {
      type: 'snapshot',
      vms: [
        base,
        { ...base, id: 'id-b', name: 'beta', state: 'stopped', ip: null, startedAt: null },
      ],
    });
    const r = render(<Screen s={s} />);
    const lines = (r.lastFrame() ?? '').split('\n');
    r.unmount();
    const alpha = lines.find((l) => l.includes('alpha')) ?? '';
    const beta = lines.find((l) => l.includes('beta')) ?? '';
    assert.match(alpha, /alpha +running .*172\.30\.0\.2 +1m5s/);
    assert.match(beta, /beta +stopped/);
    assert.ok(
      lines.every((l) => l.length <= 80),
      'no line is wider than the terminal',
    );
    assert.equal(lines.length, 24);
  });
});
