import fs from 'node:fs';
import { BangerError } from '../errors.js';

/**
 * The runtime directory holds the daemon's socket and lock: whoever controls
 * it can stand in for bangerd. Both the daemon (before it listens) and the CLI
 * (before it connects) check it with lstat, never following a symlink, and
 * refuse — rather than repair — a directory or socket another user could have
 * planted.
 */

const uid = (): number => process.getuid?.() ?? 0;

const refuse = (what: string, hint: string): BangerError =>
  new BangerError('permission', what, { hint });

/**
 * Why a runtime dir with this lstat mode and owner cannot be trusted (pure;
 * doctor shows the same verdict): a symlink, not a directory, another
 * user's, or open to other users. Undefined for a private directory of ours.
 */
export function runtimeDirProblem(
  dir: string,
  st: { mode: number; uid: number },
  me: number,
): { what: string; hint: string } | undefined {
  const elsewhere = `remove it if you did not create it, or set BANGER_RUNTIME_DIR to a directory of your own`;
  const type = st.mode & 0o170000;
  if (type === 0o120000)
    return { what: `refusing runtime dir ${dir}: it is a symbolic link`, hint: elsewhere };
  if (type !== 0o040000)
    return { what: `refusing runtime dir ${dir}: it is not a directory`, hint: elsewhere };
  if (st.uid !== me)
    return {
      what: `refusing runtime dir ${dir}: it belongs to uid ${st.uid}, not to you (uid ${me})`,
      hint: elsewhere,
    };
  if ((st.mode & 0o077) !== 0)
    return {
      what: `refusing runtime dir ${dir}: mode ${(st.mode & 0o777).toString(8)} lets other users ${st.mode & 0o022 ? 'write to' : 'into'} it`,
      hint: `chmod 700 ${dir}`,
    };
  return undefined;
}

function problem(dir: string, st: fs.Stats): BangerError | undefined {
  const p = runtimeDirProblem(dir, st, uid());
  return p && refuse(p.what, p.hint);
}

/** Create dir (0700) if missing, then insist it is ours and private. */
export function ensurePrivateDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // e.g. a dangling symlink
  }
  const bad = problem(dir, fs.lstatSync(dir));
  if (bad) throw bad;
}

/**
 * The CLI's check before it talks to a socket in dir: the directory (if it
 * exists) must be ours and private, and the socket (if it exists) a socket of
 * ours. Missing is fine: the daemon creates both.
 */
export function checkRuntimeDir(dir: string, socket: string): void {
  const st = lstatOrNull(dir);
  if (!st) return;
  const bad = problem(dir, st);
  if (bad) throw bad;
  const s = lstatOrNull(socket);
  if (!s) return;
  if (!s.isSocket() || s.uid !== uid())
    throw refuse(
      `refusing ${socket}: it is not a socket of yours (uid ${s.uid}, ${s.isSymbolicLink() ? 'symbolic link' : s.isSocket() ? 'socket' : 'not a socket'})`,
      `remove it if you did not create it; bangerd recreates it when it starts`,
    );
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}
