import type { Db } from './db.js';
import { fromRow, insertSql, nowIso, toRow, updateSql } from './rows.js';

export interface KernelRecord {
  name: string;
  version: string;
  source: string;
  dir: string;
  kernelPath: string;
  vmlinuxPath: string | null;
  initrdPath: string | null;
  managed: boolean;
  meta: Record<string, unknown>;
  createdAt: string;
}

/** The kernels table. Owned by the kernel service. */
export class KernelStore {
  constructor(private readonly db: Db) {}

  list(): KernelRecord[] {
    return this.db
      .prepare('SELECT * FROM kernels ORDER BY name')
      .all()
      .map((r) => fromRow<KernelRecord>(r as Record<string, unknown>, ['managed']));
  }

  get(name: string): KernelRecord | undefined {
    const r = this.db.prepare('SELECT * FROM kernels WHERE name = ?').get(name);
    return r ? fromRow<KernelRecord>(r as Record<string, unknown>, ['managed']) : undefined;
  }

  upsert(k: Omit<KernelRecord, 'createdAt'> & { createdAt?: string }): KernelRecord {
    const rec: KernelRecord = { ...k, createdAt: k.createdAt ?? nowIso() };
    const row = toRow(rec as unknown as Record<string, unknown>);
    this.db.transaction(() => {
      if (this.get(rec.name)) this.db.prepare(updateSql('kernels', row, 'name')).run(row);
      else this.db.prepare(insertSql('kernels', row)).run(row);
    })();
    return rec;
  }

  delete(name: string): boolean {
    return this.db.prepare('DELETE FROM kernels WHERE name = ?').run(name).changes > 0;
  }
}
