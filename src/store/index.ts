import { openDb, type Db } from './db.js';
import { EventStore } from './events.js';
import { ImageStore } from './images.js';
import { Journal } from './journal.js';
import { KernelStore } from './kernels.js';
import { SnapshotStore } from './snapshots.js';
import { VmStore } from './vms.js';

/** All tables of the state database, one store object per table. */
export interface Store {
  db: Db;
  vms: VmStore;
  images: ImageStore;
  kernels: KernelStore;
  snapshots: SnapshotStore;
  events: EventStore;
  /** Intents of multi-step operations (journal.ts, docs/reliability.md). */
  journal: Journal;
  close(): void;
}

export function openStore(file: string): Store {
  const db = openDb(file);
  return {
    db,
    vms: new VmStore(db),
    images: new ImageStore(db),
    kernels: new KernelStore(db),
    snapshots: new SnapshotStore(db),
    events: new EventStore(db),
    journal: new Journal(db),
    close: () => db.close(),
  };
}
