import type { Db } from './db.js';
import { nowIso } from './rows.js';

export interface EventRecord {
  id: number;
  at: string;
  kind: string;
  subjectType: string | null;
  subjectId: string | null;
  data: Record<string, unknown>;
}

/** Append-only audit log of what happened to VMs, images and kernels. */
export class EventStore {
  constructor(private readonly db: Db) {}

  append(
    kind: string,
    subject?: { type: string; id: string },
    data: Record<string, unknown> = {},
  ): void {
    this.db
      .prepare(
        'INSERT INTO events (at, kind, subject_type, subject_id, data) VALUES (?, ?, ?, ?, ?)',
      )
      .run(nowIso(), kind, subject?.type ?? null, subject?.id ?? null, JSON.stringify(data));
  }

  list(opts: { subjectType?: string; subjectId?: string; limit?: number } = {}): EventRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (opts.subjectType) {
      where.push('subject_type = ?');
      args.push(opts.subjectType);
    }
    if (opts.subjectId) {
      where.push('subject_id = ?');
      args.push(opts.subjectId);
    }
    const sql = `SELECT * FROM events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    return this.db
      .prepare(sql)
      .all(...args, opts.limit ?? 100)
      .map((r) => {
        const row = r as {
          id: number;
          at: string;
          kind: string;
          subject_type: string | null;
          subject_id: string | null;
          data: string;
        };
        return {
          id: row.id,
          at: row.at,
          kind: row.kind,
          subjectType: row.subject_type,
          subjectId: row.subject_id,
          data: JSON.parse(row.data) as Record<string, unknown>,
        };
      });
  }
}
