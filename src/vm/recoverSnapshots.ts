import fs from 'node:fs';
import path from 'node:path';
import type { IntentRecord, RecoveryCause } from '../store/journal.js';
import type { Store } from '../store/index.js';
import type { VmRecord } from '../store/vms.js';
import type { Logger } from '../util/log.js';
import type { SnapshotFiles, VmHandle } from '../vmm/driver.js';
import type { VmmDrivers, VmNetworking } from './needs.js';
import { isOurVmm, type VmRecovery } from './recover.js';
import { isActive, type VmTable } from './records.js';
import { removeFiles, suspendFiles } from './suspend.js';

/**
 * Crash consistency of the snapshot operations (docs/reliability.md): what
 * an open intent of `snapshot`, `restore`, `fork`, `suspend` or `resume`
 * means, completed or rolled back at daemon start (cause `restart`) or at
 * once when the operation threw (cause `failed`). Every recoverer is
 * idempotent and takes no lock.
 *
 *  - snapshot: the snapshot is kept only if its row was written; otherwise
 *    its directory goes. A VMM left paused (cut between pause and resume)
 *    is resumed.
 *  - restore: as a start — rolled back (VMM, tap, directory, row) unless the
 *    row records the VMM at daemon start; then adoption finishes it (sends
 *    the identity again).
 *  - fork: rolled back until every child is there (children and the
 *    temporary snapshot removed), completed after (the snapshot removed).
 *  - suspend: the VMM still runs → undone (files removed, VMM resumed); the
 *    VMM is gone and the files are complete → `suspended`; gone with partial
 *    files → the files removed, `stopped` with the reason.
 *  - resume: before the guest runs (its VMM still paused) → back to
 *    `suspended` with its files (a restored VMM killed); after → the files
 *    are stale and removed, and the VM is what its VMM is: adopted (still
 *    `starting`) or, the VMM gone, `error`.
 */

export interface SnapshotRecoveryNeeds {
  table: VmTable;
  store: Pick<Store, 'snapshots'>;
  snapshotsDir: string;
  drivers: VmmDrivers;
  liveness: {
    alive(vm: VmRecord): boolean;
    markGone(vm: VmRecord, state: 'stopped'): Promise<VmRecord>;
  };
  recovery: VmRecovery;
  network: Pick<VmNetworking, 'released'>;
  /** The row of a VM whose suspend files are complete and whose VMM is gone (suspend.ts). */
  markSuspended(vm: VmRecord, files: SnapshotFiles): VmRecord;
  logger: Logger;
}

/** The steps of each operation before which its VMM may be paused by it. */
const SNAPSHOT_PAUSED = ['after-pause', 'after-save', 'after-disks'];
const SUSPEND_COMPLETE = ['after-save', 'after-kill', 'after-row'];
/** Resume steps at which the guest has not run yet (the restored VMM is paused). */
const RESUME_NOT_RUN = ['begin', 'after-tap', 'after-spawn', 'after-starting'];

export class SnapshotRecovery {
  constructor(private readonly n: SnapshotRecoveryNeeds) {
    const j = n.table.journal;
    j.onRecover('snapshot', (r, cause) => this.snapshot(r, cause));
    j.onRecover('restore', (r, cause) => this.restore(r, cause));
    j.onRecover('fork', (r, cause) => this.fork(r, cause));
    j.onRecover('suspend', (r, cause) => this.suspend(r, cause));
    j.onRecover('resume', (r, cause) => this.resume(r, cause));
  }

  private recordedHandle(r: IntentRecord): VmHandle | undefined {
    const d = r.data as { pid?: number; pidStartTime?: number; controlSocket?: string };
    if (!d.pid || !d.controlSocket) return undefined;
    if (!isOurVmm(d.pid, d.pidStartTime, d.controlSocket)) return undefined;
    return { pid: d.pid, pidStartTime: d.pidStartTime ?? 0, controlSocket: d.controlSocket };
  }

  /** Let a VMM that an operation paused run again; a failure is recorded on the VM, not thrown. */
  private async resumeVmm(vm: VmRecord, h: VmHandle, op: string): Promise<void> {
    try {
      await this.n.drivers.driverFor(vm.vmm).resume!(h);
      this.n.table.event('vm.resumed', vm, { after: `an interrupted ${op}` });
    } catch (e) {
      this.n.logger.error({ vm: vm.name, err: String(e) }, `resuming after an interrupted ${op}`);
      this.n.table.update(vm.id, {
        lastError: `left paused by an interrupted ${op}; restart it: banger vm restart ${vm.name}`,
      });
    }
  }

  /** A snapshot's directory, only ever below the snapshots directory. */
  private removeSnapshotDir(dir: unknown): void {
    if (typeof dir !== 'string') return;
    const rel = path.relative(this.n.snapshotsDir, dir);
    if (!rel || rel.startsWith('..') || path.isAbsolute(rel)) return;
    fs.rmSync(dir, { recursive: true, force: true });
  }

  private async snapshot(r: IntentRecord, cause: RecoveryCause): Promise<void> {
    const id = r.data.snapshotId as string | undefined;
    if (!id || !this.n.store.snapshots.get(id)) this.removeSnapshotDir(r.data.dir);
    const vm = this.n.table.get(r.subject);
    const h = this.recordedHandle(r);
    // A failed snapshot's own error path resumed the VM (and said so if it could not).
    if (cause === 'restart' && vm && h && SNAPSHOT_PAUSED.includes(r.step))
      await this.resumeVmm(vm, h, 'snapshot');
  }

  private async restore(r: IntentRecord, cause: RecoveryCause): Promise<void> {
    const vm = this.n.table.get(r.subject);
    const h = this.recordedHandle(r);
    // At daemon start, a row that records this VMM is a complete restore: adoption finishes it.
    if (cause === 'restart' && vm && h && vm.pid === h.pid && isActive(vm)) return;
    const name = (r.data.name as string | undefined) ?? vm?.name;
    await this.n.recovery.killRecorded(r.data, `the VMM of an interrupted restore of vm '${name}'`);
    if (cause === 'restart') this.n.recovery.markNetDirty();
    await this.n.recovery.removeVm(r.subject, name, 'rolled back: an interrupted restore');
    // A tap taken before the row was gone (an error path that removed the row first).
    await this.releaseRecordedTap(r);
  }

  /** The tap an intent recorded, released unless a row still has it. */
  private async releaseRecordedTap(r: IntentRecord): Promise<void> {
    const tap = r.data.tap as string | undefined;
    if (!tap || this.n.table.list().some((v) => v.tap === tap)) return;
    await this.n.network
      .released({ tap, ip: (r.data.ip as string | undefined) ?? null }, () =>
        this.n.table.runningNets(),
      )
      .catch((e) => this.n.logger.warn({ err: e, tap }, `releasing the tap of a ${r.op}`));
  }

  private async fork(r: IntentRecord, cause: RecoveryCause): Promise<void> {
    const snapId = r.data.snapshotId as string | undefined;
    if (!snapId) return; // the temporary snapshot's own intent covers a fork cut short before it
    if (cause === 'failed' || r.step !== 'after-children') {
      for (const child of this.n.table.list()) {
        const origin = (child.meta as { origin?: { kind?: string; snapshotId?: string } }).origin;
        if (origin?.kind !== 'fork' || origin.snapshotId !== snapId) continue;
        if (cause === 'restart') this.n.recovery.markNetDirty();
        await this.n.recovery.removeVm(child.id, child.name, 'rolled back: an interrupted fork');
      }
    }
    const snap = this.n.store.snapshots.get(snapId);
    if (snap) {
      this.removeSnapshotDir(snap.dir);
      this.n.store.snapshots.delete(snap.id);
    }
  }

  private async suspend(r: IntentRecord, cause: RecoveryCause): Promise<void> {
    const vm = this.n.table.get(r.subject);
    if (!vm) return;
    const files = suspendFiles(this.n.table.layout(vm));
    const h = this.recordedHandle(r);
    if (h) {
      // The VMM lives: the suspend did not happen. Whatever was saved goes; the guest runs on
      // (and a later exit of its VMM is a crash again, not the end the suspend asked for).
      removeFiles(files);
      if ((vm.meta as { stopRequested?: boolean }).stopRequested)
        this.n.table.update(vm.id, { meta: { ...vm.meta, stopRequested: false } });
      if (r.step !== 'begin') await this.resumeVmm(vm, h, 'suspend');
      return;
    }
    if (
      SUSPEND_COMPLETE.includes(r.step) &&
      fs.existsSync(files.statePath) &&
      fs.existsSync(files.memPath)
    ) {
      // Saved whole, the VMM gone: a suspend that only missed its last steps.
      if (vm.state === 'suspended') {
        await this.releaseRecordedTap(r);
        return;
      }
      const gone = isActive(vm) || vm.tap ? await this.n.liveness.markGone(vm, 'stopped') : vm;
      this.n.markSuspended(gone, files);
      if (cause === 'restart') this.n.recovery.markNetDirty();
      return;
    }
    // The VMM is gone and the files are partial: nothing to resume from.
    removeFiles(files);
    if (isActive(vm) || vm.tap) {
      const gone = await this.n.liveness.markGone(vm, 'stopped');
      this.n.table.update(gone.id, {
        lastError: `its VMM ended during vm suspend (at ${r.step}) before its state was saved; start it again`,
      });
      if (cause === 'restart') this.n.recovery.markNetDirty();
    }
  }

  private async resume(r: IntentRecord, cause: RecoveryCause): Promise<void> {
    const vm = this.n.table.get(r.subject);
    if (!vm) return;
    const files = suspendFiles(this.n.table.layout(vm));
    if (cause === 'restart') this.n.recovery.markNetDirty();
    if (RESUME_NOT_RUN.includes(r.step)) {
      // The guest never ran: its saved files still hold it. Back to `suspended`.
      await this.n.recovery.killRecorded(
        r.data,
        `the VMM of an interrupted resume of vm '${vm.name}'`,
      );
      let cur = this.n.table.current(vm);
      if (isActive(cur) || cur.tap) cur = await this.n.liveness.markGone(cur, 'stopped');
      if (cur.state !== 'suspended')
        this.n.table.update(cur.id, {
          state: 'suspended',
          lastError:
            cause === 'restart'
              ? `the daemon stopped during vm resume (at ${r.step}); resume it again`
              : cur.lastError,
        });
      return;
    }
    // The guest ran: the saved files are stale.
    const cur = this.n.table.current(vm);
    if (cur.state === 'suspended') return; // the resume's error path saved it again
    removeFiles(files);
    const h = this.recordedHandle(r);
    // Still its VMM: adopted at daemon start (`starting` until its agent answers).
    if (h && isActive(cur) && cur.pid === h.pid) return;
    if (isActive(cur) || cur.tap) {
      const gone = await this.n.liveness.markGone(cur, 'stopped');
      this.n.table.update(gone.id, {
        state: 'error',
        lastError: `its VMM ended during vm resume (at ${r.step}); its saved state was stale and is discarded; start it afresh`,
      });
    }
  }
}
