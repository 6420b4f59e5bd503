/**
 * Versioned schema migrations. Append only: a released migration is never
 * edited; a change is a new entry. Each runs in its own transaction.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
      CREATE TABLE kernels (
        name         TEXT PRIMARY KEY,
        version      TEXT NOT NULL,
        source       TEXT NOT NULL,
        dir          TEXT NOT NULL,
        kernel_path  TEXT NOT NULL,
        vmlinux_path TEXT,
        initrd_path  TEXT,
        managed      INTEGER NOT NULL DEFAULT 1,
        meta         TEXT NOT NULL DEFAULT '{}',
        created_at   TEXT NOT NULL
      );
      CREATE TABLE images (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        source         TEXT NOT NULL,
        digest         TEXT,
        kernel_name    TEXT REFERENCES kernels(name) ON DELETE RESTRICT,
        kernel_path    TEXT,
        initrd_path    TEXT,
        rootfs_path    TEXT NOT NULL,
        work_seed_path TEXT,
        managed        INTEGER NOT NULL DEFAULT 1,
        size_bytes     INTEGER,
        meta           TEXT NOT NULL DEFAULT '{}',
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL
      );
      CREATE TABLE vms (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        image_id       TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
        kernel_name    TEXT REFERENCES kernels(name) ON DELETE RESTRICT,
        state          TEXT NOT NULL,
        vmm            TEXT NOT NULL,
        accel          TEXT,
        vcpu           INTEGER NOT NULL,
        memory_mib     INTEGER NOT NULL,
        disk_size      INTEGER NOT NULL,
        nat            INTEGER NOT NULL DEFAULT 0,
        ip             TEXT UNIQUE,
        mac            TEXT,
        tap            TEXT,
        pid            INTEGER,
        pid_start_time INTEGER,
        last_error     TEXT,
        meta           TEXT NOT NULL DEFAULT '{}',
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        started_at     TEXT,
        stopped_at     TEXT
      );
      CREATE TABLE events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           TEXT NOT NULL,
        kind         TEXT NOT NULL,
        subject_type TEXT,
        subject_id   TEXT,
        data         TEXT NOT NULL DEFAULT '{}'
      );
      CREATE INDEX events_subject ON events(subject_type, subject_id, id);
    `,
  },
  {
    version: 2,
    name: 'snapshots',
    sql: `
      CREATE TABLE snapshots (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        kind           TEXT NOT NULL,
        source_vm_id   TEXT,
        source_vm_name TEXT NOT NULL,
        image_id       TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
        kernel_name    TEXT REFERENCES kernels(name) ON DELETE RESTRICT,
        vmm            TEXT NOT NULL,
        accel          TEXT NOT NULL,
        vcpu           INTEGER NOT NULL,
        memory_mib     INTEGER NOT NULL,
        disk_size      INTEGER NOT NULL,
        nat            INTEGER NOT NULL DEFAULT 0,
        dir            TEXT NOT NULL,
        size_bytes     INTEGER NOT NULL DEFAULT 0,
        meta           TEXT NOT NULL DEFAULT '{}',
        created_at     TEXT NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: 'intents',
    sql: `
      CREATE TABLE intents (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        op             TEXT NOT NULL,
        subject        TEXT NOT NULL,
        step           TEXT NOT NULL,
        data           TEXT NOT NULL DEFAULT '{}',
        pid            INTEGER NOT NULL,
        pid_start_time INTEGER,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL
      );
    `,
  },
];
