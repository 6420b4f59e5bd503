import type { Db } from './db.js';
import { fromRow, insertSql, nowIso, toRow, updateSql } from './rows.js';

export interface ImageRecord {
  id: string;
  name: string;
  /** Where it came from: `catalog:debian-bookworm`, `oci:registry/repo@sha256:..`, `build:<from>`, `register:<path>`. */
  source: string;
  digest: string | null;
  kernelName: string | null;
  kernelPath: string | null;
  initrdPath: string | null;
  rootfsPath: string;
  workSeedPath: string | null;
  managed: boolean;
  sizeBytes: number | null;
  meta: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}

/** The images table. Owned by the image service. */
export class ImageStore {
  constructor(private readonly db: Db) {}

  list(): ImageRecord[] {
    return this.db
      .prepare('SELECT * FROM images ORDER BY name')
      .all()
      .map((r) => fromRow<ImageRecord>(r as Record<string, unknown>, ['managed']));
  }

  get(id: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE id = ?').get(id);
    return r ? fromRow<ImageRecord>(r as Record<string, unknown>, ['managed']) : undefined;
  }

  byName(name: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE name = ?').get(name);
    return r ? fromRow<ImageRecord>(r as Record<string, unknown>, ['managed']) : undefined;
  }

  usingKernel(kernelName: string): ImageRecord[] {
    return this.list().filter((i) => i.kernelName === kernelName);
  }

  insert(img: Omit<ImageRecord, 'createdAt' | 'updatedAt'>): ImageRecord {
    const now = nowIso();
    const rec: ImageRecord = { ...img, createdAt: now, updatedAt: now };
    const row = toRow(rec as unknown as Record<string, unknown>);
    this.db.prepare(insertSql('images', row)).run(row);
    return rec;
  }

  update(id: string, patch: Partial<Omit<ImageRecord, 'id' | 'createdAt'>>): ImageRecord {
    const row = toRow({ ...patch, id, updatedAt: nowIso() });
    this.db.prepare(updateSql('images', row, 'id')).run(row);
    return this.get(id)!;
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM images WHERE id = ?').run(id).changes > 0;
  }
}
