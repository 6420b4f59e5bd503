import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runProcess, sleep } from './sandbox.js';

/**
 * A real terminal for TUI tests: a tmux server of the test's own (its socket
 * in a temp dir), one pane of a fixed size running a shell, driven with
 * send-keys and read with capture-pane.
 */
export interface Tmux {
  /** Send keys as tmux names them ('Enter', 'Escape', 'BSpace', 'Tab') or literal text (literal: true). */
  keys(keys: string[], opts?: { literal?: boolean }): Promise<void>;
  /** Type a line of text and press Enter. */
  line(text: string): Promise<void>;
  /** The pane's text now. */
  capture(): Promise<string>;
  /** Wait until the pane's text matches; fails with the last capture. */
  waitFor(re: RegExp, what: string, timeoutMs?: number): Promise<string>;
  /** Resize the terminal. */
  resize(columns: number, rows: number): Promise<void>;
  /** A tmux format of the pane, e.g. '#{alternate_on}'. */
  display(format: string): Promise<string>;
  kill(): Promise<void>;
}

export async function startTmux(opts: {
  /** Prefix for the server (e.g. ['ip', 'netns', 'exec', ns]): where the shell and what it runs live. */
  wrap?: string[];
  env: Record<string, string>;
  cwd: string;
  columns?: number;
  rows?: number;
}): Promise<Tmux> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-tmux-'));
  const sock = path.join(dir, 'sock');
  const tmux = async (args: string[]): Promise<string> => {
    const r = await runProcess('tmux', ['-S', sock, ...args], { timeoutMs: 20_000 });
    if (r.code !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const envArgs = Object.entries({ TERM: 'xterm-256color', ...opts.env }).flatMap(([k, v]) => [
    '-e',
    `${k}=${v}`,
  ]);
  const [cmd, ...pre] = [...(opts.wrap ?? []), 'tmux'];
  const r = await runProcess(
    cmd!,
    [
      ...pre,
      '-S',
      sock,
      '-f',
      '/dev/null',
      'new-session',
      '-d',
      '-x',
      String(opts.columns ?? 100),
      '-y',
      String(opts.rows ?? 30),
      '-c',
      opts.cwd,
      ...envArgs,
      'bash --norc --noprofile',
    ],
    { timeoutMs: 20_000 },
  );
  if (r.code !== 0) throw new Error(`tmux new-session: ${r.stderr}`);
  const t: Tmux = {
    keys: async (keys, o = {}) =>
      void (await tmux(['send-keys', '-t', '0', ...(o.literal ? ['-l'] : []), ...keys])),
    line: async (text) => {
      await t.keys([text], { literal: true });
      await t.keys(['Enter']);
    },
    capture: () => tmux(['capture-pane', '-p', '-t', '0']),
    async waitFor(re, what, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const text = await t.capture();
        if (re.test(text)) return text;
        if (Date.now() > deadline)
          throw new Error(`${what}: ${re} not on screen after ${timeoutMs} ms:\n${text}`);
        await sleep(100);
      }
    },
    resize: async (columns, rows) =>
      void (await tmux(['resize-window', '-t', '0', '-x', String(columns), '-y', String(rows)])),
    display: async (format) => (await tmux(['display-message', '-p', '-t', '0', format])).trim(),
    async kill() {
      await tmux(['kill-server']).catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}
