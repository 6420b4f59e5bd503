import { VM_STATES, type VmState } from '../api/vmStates.js';
import type { Db } from './db.js';
import { fromRow, insertSql, nowIso, toRow, updateSql } from './rows.js';

export { VM_STATES, type VmState };

export interface VmRecord {
  id: string;
  name: string;
  imageId: string;
  kernelName: string | null;
  state: VmState;
  vmm: string;
  accel: string | null;
  vcpu: number;
  memoryMib: number;
  diskSize: number;
  nat: boolean;
  ip: string | null;
  mac: string | null;
  tap: string | null;
  pid: number | null;
  pidStartTime: number | null;
  lastError: string | null;
  meta: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  stoppedAt: string | null;
}

/** What changed in the vms table: listeners re-read the row (it may be gone, or rolled back). */
export interface VmChange {
  kind: 'inserted' | 'updated' | 'deleted';
  id: string;
}

/**
 * The vms table. Owned by the VM service. Readers that must follow every change
 * (DNS records, ssh_config, the event stream) subscribe with `onChange`: each
 * write is announced once, after the current synchronous work (so after a
 * better-sqlite3 transaction has committed or rolled back).
 */
export class VmStore {
  private readonly listeners = new Set<(c: VmChange) => void>();

  constructor(private readonly db: Db) {}

  /** Call `fn` after every insert, update and delete; returns the unsubscribe function. */
  onChange(fn: (c: VmChange) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private changed(kind: VmChange['kind'], id: string): void {
    if (this.listeners.size === 0) return;
    queueMicrotask(() => {
      for (const fn of this.listeners) {
        try {
          fn({ kind, id });
        } catch {
          // A listener's failure is its own; the write already happened.
        }
      }
    });
  }

  private map(r: unknown): VmRecord {
    return fromRow<VmRecord>(r as Record<string, unknown>, ['nat']);
  }

  list(): VmRecord[] {
    return this.db
      .prepare('SELECT * FROM vms ORDER BY created_at, name')
      .all()
      .map((r) => this.map(r));
  }

  get(id: string): VmRecord | undefined {
    const r = this.db.prepare('SELECT * FROM vms WHERE id = ?').get(id);
    return r ? this.map(r) : undefined;
  }

  byName(name: string): VmRecord | undefined {
    const r = this.db.prepare('SELECT * FROM vms WHERE name = ?').get(name);
    return r ? this.map(r) : undefined;
  }

  byIdPrefix(prefix: string): VmRecord[] {
    return this.db
      .prepare("SELECT * FROM vms WHERE id LIKE ? ESCAPE '\\'")
      .all(`${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)
      .map((r) => this.map(r));
  }

  usingImage(imageId: string): VmRecord[] {
    return this.db
      .prepare('SELECT * FROM vms WHERE image_id = ?')
      .all(imageId)
      .map((r) => this.map(r));
  }

  usingKernel(kernelName: string): VmRecord[] {
    return this.db
      .prepare('SELECT * FROM vms WHERE kernel_name = ?')
      .all(kernelName)
      .map((r) => this.map(r));
  }

  usedIps(): string[] {
    return this.db
      .prepare('SELECT ip FROM vms WHERE ip IS NOT NULL')
      .all()
      .map((r) => (r as { ip: string }).ip);
  }

  insert(vm: Omit<VmRecord, 'createdAt' | 'updatedAt'>): VmRecord {
    const now = nowIso();
    const rec: VmRecord = { ...vm, createdAt: now, updatedAt: now };
    const row = toRow(rec as unknown as Record<string, unknown>);
    this.db.prepare(insertSql('vms', row)).run(row);
    this.changed('inserted', rec.id);
    return rec;
  }

  update(id: string, patch: Partial<Omit<VmRecord, 'id' | 'createdAt'>>): VmRecord {
    const row = toRow({ ...patch, id, updatedAt: nowIso() });
    // toRow drops undefined; explicit nulls are kept so fields can be cleared.
    this.db.prepare(updateSql('vms', row, 'id')).run(row);
    this.changed('updated', id);
    return this.get(id)!;
  }

  delete(id: string): boolean {
    const gone = this.db.prepare('DELETE FROM vms WHERE id = ?').run(id).changes > 0;
    if (gone) this.changed('deleted', id);
    return gone;
  }

  counts(): Record<VmState, number> {
    const out = Object.fromEntries(VM_STATES.map((s) => [s, 0])) as Record<VmState, number>;
    for (const r of this.db.prepare('SELECT state, COUNT(*) AS n FROM vms GROUP BY state').all()) {
      const row = r as { state: VmState; n: number };
      out[row.state] = row.n;
    }
    return out;
  }
}
