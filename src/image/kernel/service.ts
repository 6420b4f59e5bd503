import type { ProgressSink } from '../../api/events.js';
import type { KernelCatalogEntry, KernelView } from '../../api/schemas/images.js';
import type { ServiceDeps } from '../../daemon/services.js';
import { notImplemented } from '../../errors.js';
import type { KernelRecord } from '../../store/kernels.js';

/** Kernels: the catalog, pulling Debian kernels, banger's initramfs, deletion. */
export class KernelService {
  constructor(readonly deps: ServiceDeps) {}

  list(): KernelView[] {
    throw notImplemented('kernel list');
  }

  catalog(): KernelCatalogEntry[] {
    throw notImplemented('kernel list --available');
  }

  get(name: string): KernelRecord | undefined {
    return this.deps.store.kernels.get(name);
  }

  /** Pull (or return) a catalog kernel; concurrent calls for one name share one pull. */
  async ensure(name: string, _emit: ProgressSink, _signal?: AbortSignal): Promise<KernelRecord> {
    const found = this.get(name);
    if (found) return found;
    throw notImplemented(`kernel pull ${name}`);
  }

  async pull(name: string, _emit: ProgressSink, _signal?: AbortSignal): Promise<KernelView> {
    const found = this.get(name);
    if (found) return found;
    throw notImplemented(`kernel pull ${name}`);
  }

  delete(name: string): { deleted: string[] } {
    throw notImplemented(`kernel delete ${name}`);
  }
}
