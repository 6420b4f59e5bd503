import type { ApiClient } from '../api/client.js';
import type { StreamEvent } from '../api/events.js';
import type { CallInput, Response, RouteDef } from '../api/route.js';
import { loadConfig } from '../config/load.js';
import { currentPaths, type Paths } from '../config/paths.js';
import { withDaemon } from './daemon.js';
import { ProgressRenderer } from './render/progress.js';

/**
 * What every command handler gets: paths, output streams, global flags and a
 * way to reach the daemon. Tests run the real CLI with temp BANGER_*_DIRs.
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
  sshKeyPath(): string {
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
    this.err.write(`${line}\n`);
  }

  daemon<T>(fn: (client: ApiClient) => Promise<T>, opts?: { autostart?: boolean }): Promise<T> {
    return withDaemon(this.paths, fn, opts);
  }

  call<D extends RouteDef>(def: D, input: CallInput<D> = {}): Promise<Response<D>> {
    return this.daemon((c) => c.call(def, input));
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
  async stream<D extends RouteDef>(
    def: D,
    input: CallInput<D>,
    opts: { onItem?: (data: unknown) => void; onEvent?: (e: StreamEvent) => void } = {},
  ): Promise<Response<D>> {
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
            def,
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
