import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BangerError } from '../errors.js';
import { MIGRATIONS, type Migration } from './migrations.js';

/** The vendor boundary for SQLite: the rest of banger sees only this type. */
export type Db = Database.Database;

export interface OpenOptions {
  migrations?: Migration[];
}

/** Open (or create) the state database: WAL, foreign keys, migrations applied. */
export function openDb(file: string, opts: OpenOptions = {}): Db {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  let db: Db;
  try {
    db = new Database(file);
  } catch (e) {
    throw new BangerError(
      'internal',
      `cannot open state database ${file}: ${(e as Error).message}`,
      {
        hint: 'check permissions of the state directory',
        cause: e,
      },
    );
  }
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db, opts.migrations ?? MIGRATIONS);
  return db;
}

export function schemaVersion(db: Db): number {
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as {
    v: number | null;
  };
  return row.v ?? 0;
}

export function migrate(db: Db, migrations: Migration[]): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`);
  const current = schemaVersion(db);
  const latest = migrations.reduce((m, x) => Math.max(m, x.version), 0);
  if (current > latest) {
    throw new BangerError(
      'precondition',
      `state database ${db.name} has schema version ${current}, newer than this banger supports (${latest})`,
      { hint: 'upgrade banger, or move the state directory aside' },
    );
  }
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
        m.version,
        m.name,
        new Date().toISOString(),
      );
    })();
  }
}
