import { render, type Instance } from 'ink';
import { Actions, type ScreenControl } from './actions.js';
import { App } from './components/app.js';
import { Feed, type FeedOptions } from './feed.js';
import type { TuiHost } from './host.js';
import { FrameSink, SHOW_CURSOR } from './screen.js';
import { initialState, TuiStore } from './store.js';

/**
 * `banger tui`: the full-screen fleet view. Runs on the alternate screen
 * (the shell's screen comes back as it was on exit), draws with Ink, and
 * reaches the daemon only through the host's API client. ssh borrows the
 * terminal: the UI is unmounted (raw mode off, keys no longer read), ssh
 * runs, and the UI is drawn again from the same store.
 */
export interface TuiIo {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
}

const ENTER_ALT = '\x1b[?1049h\x1b[H\x1b[2J';
const LEAVE_ALT = `${SHOW_CURSOR}\x1b[?1049l`;

export async function runTui(
  host: TuiHost,
  io: TuiIo = { stdin: process.stdin, stdout: process.stdout },
  opts: FeedOptions = {},
): Promise<void> {
  const { stdin, stdout } = io;
  const size = (): { columns: number; rows: number } => ({
    columns: stdout.columns || 80,
    rows: stdout.rows || 24,
  });
  const store = new TuiStore(initialState(size()));

  let instance: Instance | undefined;
  let onAlt = false;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));

  const sink = new FrameSink(stdout);
  const enter = (): void => {
    if (!onAlt) stdout.write(ENTER_ALT);
    onAlt = true;
    sink.invalidate();
    sink.enabled = true;
  };
  /** Draw what is pending, then stop drawing and give the shell's screen back. */
  const leave = (): void => {
    sink.flush();
    sink.enabled = false;
    if (onAlt) stdout.write(LEAVE_ALT);
    onAlt = false;
  };
  const unmount = async (): Promise<void> => {
    const i = instance;
    instance = undefined;
    if (!i) return;
    i.unmount();
    await i.waitUntilExit().catch(() => undefined);
  };

  const screen: ScreenControl = {
    quit: () => {
      void unmount().then(() => {
        leave();
        done();
      });
    },
    async suspend<T>(fn: () => Promise<T>): Promise<T> {
      await unmount();
      leave();
      // Ink let go of raw mode and of its reader; make sure nothing reads keys meant for ssh.
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      const ignore = (): void => undefined;
      process.on('SIGINT', ignore);
      try {
        return await fn();
      } finally {
        process.off('SIGINT', ignore);
        store.set({ size: size() });
        enter();
        mount();
      }
    },
  };

  const feed = new Feed(store, host, opts);
  const actions = new Actions(store, host, feed, screen);
  const mount = (): void => {
    // Debug mode: Ink hands each whole frame to the sink, which draws the changed lines.
    instance = render(<App store={store} onKey={(name, input) => actions.key(name, input)} />, {
      stdin,
      stdout: sink as unknown as NodeJS.WriteStream,
      debug: true,
      exitOnCtrlC: false,
      patchConsole: false,
    });
  };

  const onResize = (): void => store.set({ size: size() });
  const onSignal = (): void => screen.quit();
  const restore = (): void => {
    if (onAlt) stdout.write(LEAVE_ALT);
  };
  // A failure outside an action (a bug) is shown, not allowed to kill the UI mid-screen.
  const onRejection = (e: unknown): void => store.status(host.errorLine(e), 'error');
  const tick = setInterval(() => store.set({ now: Date.now() }), 1000);

  stdout.on('resize', onResize);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  process.on('exit', restore);
  process.on('unhandledRejection', onRejection);
  try {
    enter();
    mount();
    feed.start();
    await finished;
  } finally {
    clearInterval(tick);
    feed.stop();
    stdout.off('resize', onResize);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
    process.off('exit', restore);
    process.off('unhandledRejection', onRejection);
    await unmount();
    leave();
    sink.close();
    stdin.pause();
  }
}
