import path from 'node:path';

/**
 * Facts about a VMM started through a jailer (Firecracker's), for the parts
 * of banger that only hold a VM's handle: its control socket lives in the
 * jail, `<state>/jailer/<exec name>/<vm id>/root/<socket>`, and the process's
 * command line names the socket as the VMM sees it (`/<socket>`) and the
 * VM's id (`--id=<id>`). Pure.
 */

/** The directory under the state directory that holds every VM's jail. */
export const JAIL_BASE_NAME = 'jailer';

export interface JailFacts {
  /** The chroot: what the VMM sees as `/`. */
  root: string;
  /** `<base>/<exec name>/<id>`, removed when the VM stops. */
  dir: string;
  /** The VM id the jail is named by. */
  id: string;
  /** The control socket as the jailed VMM names it. */
  socketInJail: string;
}

/** The jail a control socket lives in, or undefined for a VMM that is not jailed. */
export function jailOfSocket(socket: string): JailFacts | undefined {
  const parts = path.resolve(socket).split('/');
  // [..., 'jailer', <exec name>, <id>, 'root', <socket>]
  const n = parts.length;
  if (n < 6 || parts[n - 2] !== 'root' || parts[n - 5] !== JAIL_BASE_NAME) return undefined;
  const id = parts[n - 3]!;
  if (!/^[A-Za-z0-9-]{1,64}$/.test(id) || !parts[n - 4]) return undefined;
  const root = parts.slice(0, n - 1).join('/');
  return { root, dir: path.dirname(root), id, socketInJail: `/${parts[n - 1]}` };
}

/**
 * Does this command line belong to the VMM of this control socket? An
 * unjailed VMM names the socket's host path; a jailed one names it as seen
 * in the jail, and its VM id (`--id=<id>` from the jailer, or `--id <id>`).
 */
export function cmdlineNamesSocket(cmdline: string[], socket: string): boolean {
  if (cmdline.some((a) => a.includes(socket))) return true;
  const jail = jailOfSocket(socket);
  if (!jail) return false;
  return cmdline.includes(jail.socketInJail) && jailedId(cmdline) === jail.id;
}

/** The `--id` a jailed VMM was started with, if its command line has one. */
export function jailedId(cmdline: string[]): string | undefined {
  for (let i = 0; i < cmdline.length; i++) {
    const a = cmdline[i]!;
    if (a.startsWith('--id=')) return a.slice(5);
    if (a === '--id') return cmdline[i + 1];
  }
  return undefined;
}
