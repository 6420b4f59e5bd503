import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../../errors.js';
import type { JailPlan } from './jailer.js';

/**
 * The side effects around a jailed Firecracker: filling a jail with the VM's
 * files before the jailer runs, moving files Firecracker wrote in the jail
 * out, and removing a jail (and its cgroup) once the process is gone. The
 * jail lives under banger's state directory, so the VM's files are hard
 * links into it: the same inodes, no copies, and removing the jail removes
 * only the links.
 */

export interface Owner {
  uid: number;
  gid: number;
}

/**
 * A fresh jail for one start: what a previous start left is removed, the
 * plan's files linked in, writable ones owned by the VMM user, read-only ones
 * made readable for it (group read for its group when others may not read).
 */
export function prepareJail(dir: string, root: string, plan: JailPlan, owner: Owner): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  try {
    for (const f of plan.files) linkInto(f.from, f.to, owner, f.writable);
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** One host file at `to` inside a jail (a hard link; a copy for a read-only file on another filesystem). */
export function linkInto(from: string, to: string, owner: Owner, writable: boolean): void {
  fs.rmSync(to, { force: true });
  try {
    fs.linkSync(from, to);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' || writable)
      throw new BangerError(
        'precondition',
        `cannot link ${from} into the firecracker jail ${path.dirname(to)}: ${(e as Error).message}`,
        {
          hint: 'the state directory must be one filesystem (the jail is BANGER_STATE_DIR/jailer)',
          cause: e,
        },
      );
    fs.copyFileSync(from, to, fs.constants.COPYFILE_FICLONE);
  }
  if (writable) fs.chownSync(to, owner.uid, owner.gid);
  else grantRead(to, owner);
}

/** The VMM user can read the file: others may read it, or its group is the user's and may read. */
function grantRead(file: string, owner: Owner): void {
  const st = fs.statSync(file);
  if (st.uid === owner.uid && st.mode & 0o400) return;
  if (st.mode & 0o004) return;
  if (st.gid !== owner.gid) fs.chownSync(file, st.uid, owner.gid);
  if (!(st.mode & 0o040)) fs.chmodSync(file, (st.mode & 0o7777) | 0o040);
}

/**
 * A file Firecracker wrote inside the jail, moved to where the daemon keeps
 * it and owned by the daemon's user again.
 */
export function moveOut(from: string, to: string): void {
  try {
    fs.renameSync(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    fs.copyFileSync(from, to);
    fs.rmSync(from, { force: true });
  }
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  if (uid !== undefined && gid !== undefined) fs.chownSync(to, uid, gid);
}

/**
 * Everything a jailed VM had outside its VM directory: the jail directory
 * (links, the jailer's copy of Firecracker, its device nodes and sockets)
 * and its cgroup. Only when its process is gone; errors are left to the
 * next start (prepareJail) and the daemon's sweep.
 */
export function removeJail(dir: string, cgroupDir?: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  if (!cgroupDir) return;
  try {
    // cgroupfs: an empty cgroup directory is removed with rmdir (its control files go with it).
    fs.rmdirSync(cgroupDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // Not a cgroup filesystem (a test's stand-in): an ordinary directory.
    if (code === 'ENOTEMPTY' && !fs.existsSync(path.join(cgroupDir, 'cgroup.events')))
      fs.rmSync(cgroupDir, { recursive: true, force: true });
  }
}

/** cgroup v2 at `root` with the memory controller available: limits can be set through the jailer. */
export function cgroupV2Memory(root: string): boolean {
  try {
    return fs
      .readFileSync(path.join(root, 'cgroup.controllers'), 'utf8')
      .split(/\s+/)
      .includes('memory');
  } catch {
    return false;
  }
}
