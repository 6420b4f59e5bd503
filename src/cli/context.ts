import fs from 'node:fs';
import type { ApiClient } from '../api/client.js';
import type { RouteId } from '../api/endpoints.js';
import type { StreamEvent } from '../api/events.js';
import type { CallInput, Response } from '../api/route.js';
import type { Routes } from '../api/routes.js';
import { currentPaths, type Paths } from '../config/paths.js';
import { terminalSafe } from '../util/terminal.js';

/**
 * Whether ssh_key_path may be set: the env override exists, or config.toml
 * has the key's name anywhere (a comment too: then the full load decides).
 * A missing file sets nothing; one that cannot be read is left to the load.
 */
export function mentionsSshKeyPath(configFile: string, env: NodeJS.ProcessEnv): boolean {
  if (env.BANGER_SSH_KEY_PATH !== undefined) return true;
  try {
    return fs.readFileSync(configFile, 'utf8').includes('ssh_key_path');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/**
 * What every command handler gets: paths, output streams, global flags and a
 * way to reach the daemon. Tests run the real CLI with temp BANGER_*_DIRs.
 * Heavier pieces (the HTTP client, config parsing, progress rendering) are
 * imported when first used, so a command loads only what it needs.
 */
export interface GlobalFlags {
  json: boolean;
  debug: boolean;
}

export class CliContext {
  readonly paths: Paths = currentPaths();
  readonly out = process.stdout;
  readonly err = process.stderr;
  flags: GlobalFlags = { json: false, debug: false };
  /** Words after `--` on the command line (the guest command of vm run / vm ssh). */
  guestCommand: string[] = [];

  /** The private key ssh uses: ssh_key_path from config, else banger's managed key. */
  async sshKeyPath(): Promise<string> {
    // Loading the config (TOML and its schema) costs ~0.14 s of every `vm ssh`; without the
    // key set anywhere (config.toml, BANGER_SSH_KEY_PATH) the answer is the managed key.
    if (!mentionsSshKeyPath(this.paths.configFile, process.env)) return this.paths.sshKey;
    const { loadConfig } = await import('../config/load.js');
    return (
      loadConfig({ file: this.paths.configFile, env: process.env }).config.sshKeyPath ??
      this.paths.sshKey
    );
  }

  get stderrTty(): boolean {
    return Boolean(this.err.isTTY) && process.env.TERM !== 'dumb';
  }

  print(line = ''): void {
    this.out.write(`${line}\n`);
  }

  printJson(value: unknown): void {
    this.out.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  note(line: string): void {
    this.err.write(`${terminalSafe(line)}\n`);
  }

  async daemon<T>(
    fn: (client: ApiClient) => Promise<T>,
    opts?: { autostart?: boolean },
  ): Promise<T> {
    const { withDaemon } = await import('./daemon.js');
    return withDaemon(this.paths, fn, opts);
  }

  call<K extends RouteId>(id: K, input: CallInput<Routes[K]> = {}): Promise<Response<Routes[K]>> {
    return this.daemon((c) => c.call(id, input));
  }

  /** Run fn with a signal that Ctrl-C aborts (instead of killing the CLI mid-request). */
  async interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ac = new AbortController();
    const onSig = (): void => ac.abort();
    process.once('SIGINT', onSig);
    try {
      return await fn(ac.signal);
    } finally {
      process.off('SIGINT', onSig);
    }
  }

  /** Run a streaming operation with progress rendered on stderr. */
  async stream<K extends RouteId>(
    id: K,
    input: CallInput<Routes[K]>,
    opts: { onItem?: (data: unknown) => void; onEvent?: (e: StreamEvent) => void } = {},
  ): Promise<Response<Routes[K]>> {
    const { ProgressRenderer } = await import('./render/progress.js');
    const renderer = new ProgressRenderer({
      stream: this.err,
      tty: this.stderrTty && !this.flags.json,
      verbose: this.flags.debug,
      onItem: opts.onItem,
    });
    try {
      return await this.interruptible((signal) =>
        this.daemon((c) =>
          c.stream(
            id,
            input,
            (e) => {
              opts.onEvent?.(e);
              renderer.handle(e);
            },
            signal,
          ),
        ),
      );
    } finally {
      renderer.finish();
    }
  }
}
