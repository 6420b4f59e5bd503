import { BangerError, toBangerError } from '../../errors.js';
import type { CliContext } from '../context.js';
import { formatSpec, sshInto } from './vm.js';

/**
 * `banger tui`: checks the terminal, then loads the TUI (Ink and React, an
 * ES module graph of its own, outside the CLI bundle) only now, so other
 * commands never pay for it. The TUI reaches the daemon through this CLI's
 * client and ssh, handed over as its host.
 */
export async function tui(ctx: CliContext): Promise<void> {
  if (!process.stdin.isTTY || !process.stdout.isTTY) {
    throw new BangerError('usage', 'banger tui needs a terminal (stdin and stdout are not a TTY)', {
      hint: 'run it in a terminal, or use `banger vm list` in scripts',
    });
  }
  const { runTui } = await import('../../tui/main.js');
  await runTui({
    socket: ctx.paths.socket,
    daemon: (fn, opts) => ctx.daemon(fn, opts),
    ssh: (vm) => sshInto(ctx, vm, []),
    errorLine: (e) => toBangerError(e).line,
    specLine: formatSpec,
  });
}
