import fs from 'node:fs';
import path from 'node:path';
import type { Db } from './db.js';
import { fromRow, insertSql, nowIso, toRow } from './rows.js';

/** `user`: made by `vm snapshot` / `vm fork`; `boot`: a warm-start snapshot taken at readiness. */
export type SnapshotKind = 'user' | 'boot';

export interface SnapshotRecord {
  id: string;
  name: string;
  kind: SnapshotKind;
  /** The VM it was taken of (its id is kept after that VM is deleted). */
  sourceVmId: string | null;
  sourceVmName: string;
  imageId: string;
  kernelName: string | null;
  vmm: string;
  accel: string;
  vcpu: number;
  memoryMib: number;
  diskSize: number;
  nat: boolean;
  /** The snapshot's directory: VMM state, guest memory, overlay and work disks (src/vm/snapshotLayout.ts). */
  dir: string;
  /** Allocated bytes of its files. */
  sizeBytes: number;
  meta: Record<string, unknown>;
  createdAt: string;
}

/** The snapshots table. Owned by the VM service's snapshot part (src/vm/snapshots.ts). */
export class SnapshotStore {
  constructor(private readonly db: Db) {}

  private map(r: unknown): SnapshotRecord {
    return fromRow<SnapshotRecord>(r as Record<string, unknown>, ['nat']);
  }

  list(kind?: SnapshotKind): SnapshotRecord[] {
    const rows = kind
      ? this.db
          .prepare('SELECT * FROM snapshots WHERE kind = ? ORDER BY created_at, name')
          .all(kind)
      : this.db.prepare('SELECT * FROM snapshots ORDER BY created_at, name').all();
    return rows.map((r) => this.map(r));
  }

  get(id: string): SnapshotRecord | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE id = ?').get(id);
    return r ? this.map(r) : undefined;
  }

  byName(name: string): SnapshotRecord | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE name = ?').get(name);
    return r ? this.map(r) : undefined;
  }

  byIdPrefix(prefix: string): SnapshotRecord[] {
    return this.db
      .prepare("SELECT * FROM snapshots WHERE id LIKE ? ESCAPE '\\'")
      .all(`${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)
      .map((r) => this.map(r));
  }

  usingImage(imageId: string): SnapshotRecord[] {
    return this.db
      .prepare('SELECT * FROM snapshots WHERE image_id = ?')
      .all(imageId)
      .map((r) => this.map(r));
  }

  usingKernel(kernelName: string): SnapshotRecord[] {
    return this.db
      .prepare('SELECT * FROM snapshots WHERE kernel_name = ?')
      .all(kernelName)
      .map((r) => this.map(r));
  }

  insert(s: Omit<SnapshotRecord, 'createdAt'>): SnapshotRecord {
    const rec: SnapshotRecord = { ...s, createdAt: nowIso() };
    const row = toRow(rec as unknown as Record<string, unknown>);
    this.db.prepare(insertSql('snapshots', row)).run(row);
    return rec;
  }

  setSize(id: string, sizeBytes: number): void {
    this.db.prepare('UPDATE snapshots SET size_bytes = ? WHERE id = ?').run(sizeBytes, id);
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(id).changes > 0;
  }

  /**
   * Remove boot snapshots (warm start, a cache) with their files: the row
   * first, then the directory — only ever one below `snapshotsDir`. Image and
   * kernel deletion use this; user snapshots are never removed here.
   */
  dropBoot(snaps: SnapshotRecord[], snapshotsDir: string): SnapshotRecord[] {
    const dropped: SnapshotRecord[] = [];
    for (const s of snaps) {
      if (s.kind !== 'boot') continue;
      this.delete(s.id);
      const rel = path.relative(snapshotsDir, s.dir);
      if (rel && !rel.startsWith('..') && !path.isAbsolute(rel))
        fs.rmSync(s.dir, { recursive: true, force: true });
      dropped.push(s);
    }
    return dropped;
  }
}
