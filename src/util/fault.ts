import { BangerError } from '../errors.js';

/**
 * Fault injection for the crash-consistency tests (docs/reliability.md).
 *
 * `BANGER_FAULT=<op>:<point>:<action>[,…]` in the daemon's environment makes
 * the named point of the named operation
 *
 *  - `kill`: SIGKILL the daemon (as abrupt as a crash gets: no handler runs),
 *  - `exit`: `process.exit(FAULT_EXIT_CODE)` (exit handlers run, nothing async),
 *  - `fail`: throw, as if the step had failed (the operation's own error path runs).
 *
 * Points are the step names operations pass to their intent (`Intent.step`,
 * store/journal.ts), so every step boundary that is journaled is also a fault
 * point. With the variable unset (always, outside tests) a point is one
 * comparison against `undefined`: no parsing, no allocation, no behaviour change.
 */

export const FAULT_ACTIONS = ['kill', 'exit', 'fail'] as const;
export type FaultAction = (typeof FAULT_ACTIONS)[number];

export interface FaultSpec {
  op: string;
  point: string;
  action: FaultAction;
}

/** The exit status of a daemon stopped by an `exit` fault. */
export const FAULT_EXIT_CODE = 86;

const WORD = /^[a-z0-9][a-z0-9-]*$/;

/** Parse a BANGER_FAULT value; throws a usage error naming the bad entry. Pure. */
export function parseFaults(text: string): FaultSpec[] {
  const out: FaultSpec[] = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (!entry) continue;
    const parts = entry.split(':');
    const [op, point, action] = parts;
    if (
      parts.length !== 3 ||
      !WORD.test(op!) ||
      !WORD.test(point!) ||
      !(FAULT_ACTIONS as readonly string[]).includes(action!)
    ) {
      throw new BangerError('usage', `invalid BANGER_FAULT entry '${entry}'`, {
        hint: `use OP:POINT:ACTION with ACTION one of ${FAULT_ACTIONS.join(', ')} (e.g. create:after-disks:kill)`,
      });
    }
    out.push({ op: op!, point: point!, action: action as FaultAction });
  }
  return out;
}

/** The faults of this process: undefined unless BANGER_FAULT is set (read once). */
let active: FaultSpec[] | undefined = process.env.BANGER_FAULT
  ? parseFaults(process.env.BANGER_FAULT)
  : undefined;

/** Replace this process's faults (unit tests); undefined turns injection off. */
export function setFaults(specs: FaultSpec[] | undefined): void {
  active = specs && specs.length ? specs : undefined;
}

/** The action armed for op:point, if any. Pure over the active list. */
export function faultAt(op: string, point: string): FaultAction | undefined {
  if (active === undefined) return undefined;
  return active.find((f) => f.op === op && f.point === point)?.action;
}

/** Pass a fault point: nothing unless BANGER_FAULT arms it. */
export function faultPoint(op: string, point: string): void {
  if (active === undefined) return;
  const action = faultAt(op, point);
  if (!action) return;
  if (action === 'fail') {
    throw new BangerError('internal', `injected fault at ${op}:${point}`, {
      hint: 'unset BANGER_FAULT (it is for tests only)',
    });
  }
  // Written synchronously so the test can tell an injected crash from a real one.
  process.stderr.write(`bangerd: injected fault at ${op}:${point} (${action})\n`);
  if (action === 'kill') process.kill(process.pid, 'SIGKILL');
  process.exit(FAULT_EXIT_CODE);
}
