import fs from 'node:fs';
import Database from 'better-sqlite3';
import { BangerError } from '../errors.js';

/**
 * The single-instance lock. It is an exclusive SQLite lock (POSIX fcntl
 * underneath) on `<runtime>/bangerd.lock`, so the kernel releases it when the
 * holder dies — a crashed daemon never leaves a lock that blocks the next one.
 * The holder's pid is written beside it for diagnostics only.
 */
export interface DaemonLock {
  release(): void;
}

export function acquireDaemonLock(lockPath: string): DaemonLock {
  const db = new Database(lockPath);
  try {
    db.pragma('busy_timeout = 0');
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (e) {
    db.close();
    const code = (e as { code?: string }).code;
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
      let holder = '';
      try {
        holder = fs.readFileSync(`${lockPath}.pid`, 'utf8').trim();
      } catch {
        // unknown holder
      }
      throw new BangerError(
        'daemon_running',
        `another bangerd already runs for ${lockPath}${holder ? ` (pid ${holder})` : ''}`,
        {
          hint: 'use `banger daemon status`, or stop it with `banger daemon stop`',
        },
      );
    }
    throw e;
  }
  fs.writeFileSync(`${lockPath}.pid`, `${process.pid}\n`, { mode: 0o600 });
  return {
    release: () => {
      try {
        fs.rmSync(`${lockPath}.pid`, { force: true });
        db.close();
      } catch {
        // already released
      }
    },
  };
}
