import type { ApiClient } from '../api/client.js';
import type { VmSpec } from '../api/schemas/vms.js';

/**
 * What the TUI needs from the program that runs it, declared here and passed
 * in by `banger tui` (src/cli/commands/tui.ts): the CLI's way of reaching the
 * daemon, its ssh session, its error lines and its `spec:` line. Tests pass
 * the same pieces pointed at a sandbox daemon.
 */
export interface TuiHost {
  /** The daemon's socket, for messages. */
  socket: string;
  /**
   * Run fn with a client of the daemon. With autostart (the default) a daemon
   * that is down is started first, as every command does.
   */
  daemon<T>(fn: (c: ApiClient) => Promise<T>, opts?: { autostart?: boolean }): Promise<T>;
  /** An interactive ssh session into the VM on this terminal; resolves with ssh's exit status. */
  ssh(vm: { id: string; name: string }): Promise<number>;
  /** An error as the one line the CLI prints (without `error: `). */
  errorLine(e: unknown): string;
  /** The CLI's `spec:` line for a new VM's spec. */
  specLine(spec: VmSpec): string;
}
