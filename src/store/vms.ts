import type { Db } from './db.js';
import { fromRow, insertSql, nowIso, toRow, updateSql } from './rows.js';

export const VM_STATES = [
  'created',
  'starting',
  'running',
  'stopping',
  'stopped',
  'crashed',
  'error',
] as const;
export type VmState = (typeof VM_STATES)[number];

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

/** The vms table. Owned by the VM service. */
export class VmStore {
  constructor(private readonly db: Db) {}

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
    return rec;
  }

  update(id: string, patch: Partial<Omit<VmRecord, 'id' | 'createdAt'>>): VmRecord {
    const row = toRow({ ...patch, id, updatedAt: nowIso() });
    // toRow drops undefined; explicit nulls are kept so fields can be cleared.
    this.db.prepare(updateSql('vms', row, 'id')).run(row);
    return this.get(id)!;
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM vms WHERE id = ?').run(id).changes > 0;
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
