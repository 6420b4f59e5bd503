import type { ProgressSink } from '../api/events.js';
import type { VmRecord } from '../store/vms.js';
import type { Logger } from '../util/log.js';
import { bootTimeoutMs } from './bootWatch.js';
import { consoleSize } from './logs.js';
import type { VmmDrivers, VmNetworking } from './needs.js';
import type { ReadyFacts, VmReadiness } from './ready.js';
import { isActive, metaOf, type VmTable } from './records.js';

/** What adoption needs from the rest of the lifecycle. */
export interface AdoptionNeeds {
  table: VmTable;
  drivers: VmmDrivers;
  network: Pick<VmNetworking, 'reconcile'>;
  liveness: {
    alive(vm: VmRecord): boolean;
    markGone(vm: VmRecord, state: 'stopped'): Promise<VmRecord>;
    ensureMonitor(): void;
  };
  readiness: Pick<VmReadiness, 'bringUp' | 'refresh'>;
  /**
   * A VM restored from a snapshot that was adopted before it was ready gets
   * its new identity (restore.ts) instead of a boot wait; undefined for others.
   */
  restoredFacts?(vm: VmRecord): (() => Promise<ReadyFacts>) | undefined;
  /** Run fn holding the VM's lock. */
  locked<T>(vmId: string, fn: () => Promise<T>): Promise<T>;
  logger: Logger;
}

/** An adopted boot gets at least this long to finish, however long it has run already. */
const ADOPTED_BOOT_MIN_MS = 30_000;
/** How long a running VM's agent may take to answer again after adoption. */
const REFRESH_TIMEOUT_MS = 15_000;

/**
 * Daemon start: VMs whose VMM still runs are adopted, vanished ones are
 * marked stopped, and bridge, taps and rules are made to match. Adopted VMs
 * then get everything a ready VM has (ready.ts), in the background under
 * their lock: a VM that was still booting stays `starting` until its guest
 * is ready (or its boot fails, as it would have under the old daemon); a
 * running one has its agent asked again and the ready steps re-applied.
 */
export class VmAdoption {
  private readonly pending = new Set<Promise<void>>();
  private readonly stopping = new AbortController();

  constructor(private readonly n: AdoptionNeeds) {}

  /** `reconcile`: reconcile the host network even if no VM has a tap (a start was rolled back). */
  async adopt(opts: { reconcile?: boolean } = {}): Promise<void> {
    const { table, liveness } = this.n;
    let anyNet = opts.reconcile ?? false;
    const adopted: VmRecord[] = [];
    for (const vm of table.list()) {
      if (vm.tap) anyNet = true;
      if (!isActive(vm)) continue;
      if (liveness.alive(vm)) {
        const cur = vm.state === 'stopping' ? table.update(vm.id, { state: 'running' }) : vm;
        adopted.push(cur);
        this.n.logger.info({ vm: vm.name, pid: vm.pid, state: cur.state }, 'adopted VM');
      } else {
        await liveness.markGone(vm, 'stopped');
      }
    }
    const running = table.runningNets();
    if (running.length > 0 || anyNet) await this.n.network.reconcile(running);
    if (running.length > 0) liveness.ensureMonitor();
    for (const vm of adopted)
      this.track(vm.state === 'starting' ? this.finishBoot(vm) : this.refresh(vm));
  }

  /** Resolves when every adopted VM has settled (ready, failed, or refreshed). */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /** Daemon shutdown: adopted boots in progress are left for the next daemon. */
  shutdown(): void {
    this.stopping.abort();
  }

  private track(p: Promise<void>): void {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** A VM adopted while booting: the boot path's readiness, with the time the boot has left. */
  private finishBoot(vm: VmRecord): Promise<void> {
    return this.n
      .locked(vm.id, async () => {
        const cur = this.n.table.get(vm.id);
        const handle = cur && this.n.table.handleOf(cur);
        if (!cur || !handle || cur.state !== 'starting' || !this.n.liveness.alive(cur)) return;
        const bootStart = cur.startedAt ? Date.parse(cur.startedAt) : Date.now();
        const left = bootTimeoutMs(cur.accel) - (Date.now() - bootStart);
        await this.n.readiness.bringUp(cur, {
          driver: this.n.drivers.driverFor(cur.vmm),
          handle,
          consoleStart: metaOf(cur).consoleStart ?? consoleSize(this.n.table.layout(cur)),
          bootStart,
          timeoutMs: Math.max(left, ADOPTED_BOOT_MIN_MS),
          emit: this.logSink(cur),
          signal: this.stopping.signal,
          leaveOnAbort: true,
          facts: this.n.restoredFacts?.(cur),
        });
      })
      .catch((e) => this.n.logger.warn({ err: e, vm: vm.name }, 'adopted VM did not become ready'));
  }

  /** A VM adopted running: its agent asked again, the ready steps re-applied. */
  private refresh(vm: VmRecord): Promise<void> {
    return this.n
      .locked(vm.id, async () => {
        const cur = this.n.table.get(vm.id);
        if (!cur || cur.state !== 'running' || !this.n.liveness.alive(cur)) return;
        await this.n.readiness.refresh(cur, {
          timeoutMs: REFRESH_TIMEOUT_MS,
          signal: this.stopping.signal,
        });
      })
      .catch((e) =>
        this.n.logger.warn({ err: e, vm: vm.name }, 'adopted VM: ready steps not re-applied'),
      );
  }

  /** Progress of a boot nobody watches goes to the daemon log. */
  private logSink(vm: VmRecord): ProgressSink {
    return (ev) => this.n.logger.debug({ vm: vm.name, ev }, 'adopted boot');
  }
}
