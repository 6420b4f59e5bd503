import { CommanderError } from '@commander-js/extra-typings';
import { BangerError, toBangerError } from '../errors.js';
import { CliContext } from './context.js';
import { ExitWith } from './exit.js';
import { buildProgram } from './program.js';
import { terminalSafe } from '../util/terminal.js';

/**
 * The CLI entry. The one place errors become output: a single line
 * `error: <what failed>: <what to do>` on stderr and an exit code
 * (0 ok, 1 failure, 2 usage; guest commands pass their own status through).
 */

async function main(argv: string[]): Promise<number> {
  const ctx = new CliContext();
  // `vm run ... -- CMD` / `vm ssh NAME -- CMD`: everything after `--` is the guest command.
  const dd = argv.indexOf('--');
  if (dd >= 0 && argv[0] !== '__complete') {
    ctx.guestCommand = argv.slice(dd + 1);
    argv = argv.slice(0, dd);
  }
  const program = buildProgram(ctx);
  const debug = argv.includes('--debug');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof ExitWith) return e.code;
    if (e instanceof CommanderError) {
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
      ) {
        return e.code === 'commander.help' ? 2 : 0;
      }
      const msg = (e.message.replace(/^error: /, '').split('\n')[0] ?? '').replace(/\.$/, '');
      const suggestion = /\(Did you mean ([^?]+)\?\)/.exec(e.message)?.[1];
      const hint = suggestion ? `did you mean ${suggestion}? See` : 'see';
      process.stderr.write(`error: ${msg}: ${hint} \`banger ${commandPath(argv)}--help\`\n`);
      return 2;
    }
    const err = toBangerError(e);
    process.stderr.write(`error: ${terminalSafe(err.line)}\n`);
    if (debug) {
      process.stderr.write(`${formatDebug(e)}\n`);
    }
    // Interrupted by Ctrl-C: the conventional 128 + SIGINT.
    return err.code === 'cancelled' ? 130 : err.exitCode;
  }
}

function commandPath(argv: string[]): string {
  const words: string[] = [];
  for (const w of argv) {
    if (w.startsWith('-')) break;
    words.push(w);
    if (words.length === 2) break;
  }
  return words.length ? `${words.join(' ')} ` : '';
}

function formatDebug(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  while (cur instanceof Error) {
    parts.push(cur.stack ?? String(cur));
    if (cur instanceof BangerError && cur.details)
      parts.push(`details: ${JSON.stringify(cur.details)}`);
    cur = (cur as Error & { cause?: unknown }).cause;
  }
  return parts.join('\ncaused by: ');
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`error: ${String(e)}\n`);
    process.exitCode = 1;
  },
);
