import { nowIso } from '../store/rows.js';
import type { VmRecord } from '../store/vms.js';
import type { Logger } from '../util/log.js';
import { isProcessAlive } from '../util/proc.js';
import { capVmLogs } from './logCap.js';
import { guestPoweredOff } from './logs.js';
import type { VmNetworking } from './needs.js';
import { isActive, metaOf, vmLockKey, type VmTable } from './records.js';

/** What liveness needs from the rest of the lifecycle. */
export interface LivenessNeeds {
  table: VmTable;
  network: Pick<VmNetworking, 'released'>;
  agents: { drop(vmId: string): void };
  /** True while an operation holds the lock (it will settle the VM's state itself). */
  isLocked(key: string): boolean;
  /** Current cap of each VM log in bytes (config `log_max_size`). */
  logMaxBytes(): number;
  logger: Logger;
  /** The VMM is gone: the driver removes what it kept outside the VM directory (a jail). */
  vmmReleased?(vm: VmRecord): void;
}

/** How often running VMs are checked for a VMM that died behind the daemon's back. */
const MONITOR_MS = 1000;

/**
 * Is a VM's VMM still there, and what happens when it is not: the row says
 * so at once (stopped, or crashed when nobody asked it to stop), its agent
 * client is dropped and its tap and rules are released. A monitor checks
 * active VMs every second while there are any, and keeps their console and
 * VMM logs under the cap while it is at it.
 */
export class VmLiveness {
  private timer?: NodeJS.Timeout;

  constructor(private readonly n: LivenessNeeds) {}

  /** The VMM process recorded for the VM runs (pid and /proc start time match). */
  alive(vm: Pick<VmRecord, 'pid' | 'pidStartTime'>): boolean {
    return vm.pid !== null && isProcessAlive(vm.pid, vm.pidStartTime);
  }

  /**
   * The VMM is gone: record it (synchronously, so readers see it at once) and
   * release the VM's tap and firewall rules; resolves once they are released.
   */
  async markGone(vm: VmRecord, state: 'stopped' | 'crashed', error?: string): Promise<VmRecord> {
    this.n.agents.drop(vm.id);
    try {
      this.n.vmmReleased?.(vm);
    } catch (e) {
      this.n.logger.warn({ err: e, vm: vm.name }, 'removing the VMM jail failed');
    }
    const updated = this.n.table.update(vm.id, {
      state,
      pid: null,
      pidStartTime: null,
      tap: null,
      stoppedAt: nowIso(),
      lastError: error ?? vm.lastError,
    });
    this.n.table.event(
      state === 'crashed' ? 'vm.crashed' : 'vm.stopped',
      vm,
      error ? { error } : {},
    );
    await this.n.network
      .released(vm, () => this.n.table.runningNets(vm.id))
      .catch((e) => this.n.logger.warn({ err: e }, 'network release failed'));
    return updated;
  }

  /** Notice VMMs that died behind our back (kill -9, OOM, guest poweroff). */
  check(): void {
    for (const vm of this.n.table.list()) {
      if (!isActive(vm)) continue;
      this.capLogs(vm);
      if (this.n.isLocked(vmLockKey(vm.id))) continue;
      if (this.alive(vm)) continue;
      if (metaOf(vm).stopRequested || guestPoweredOff(this.n.table.layout(vm)))
        void this.markGone(vm, 'stopped');
      else
        void this.markGone(
          vm,
          'crashed',
          'the VMM process exited unexpectedly (see `banger vm logs`)',
        );
    }
  }

  private capLogs(vm: VmRecord): void {
    try {
      for (const file of capVmLogs(this.n.table.layout(vm), this.n.logMaxBytes()))
        this.n.logger.info(
          { vm: vm.name, file },
          'log reached log_max_size; older part kept as .1',
        );
    } catch (e) {
      this.n.logger.warn({ err: e, vm: vm.name }, 'capping VM logs failed');
    }
  }

  /** Start the monitor (it stops itself when no VM is active). */
  ensureMonitor(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      try {
        this.check();
        if (!this.n.table.list().some(isActive)) this.stopMonitor();
      } catch (e) {
        this.n.logger.warn({ err: e }, 'liveness check failed');
      }
    }, MONITOR_MS);
    this.timer.unref();
  }

  stopMonitor(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
