import fs from 'node:fs';
import type { ProgressSink } from '../api/events.js';
import { BangerError, toBangerError } from '../errors.js';
import { nowIso } from '../store/rows.js';
import type { ImageRecord } from '../store/images.js';
import type { Intent } from '../store/journal.js';
import type { VmRecord } from '../store/vms.js';
import { formatSize } from '../util/units.js';
import { canSnapshot, type SnapshotFiles, type VmHandle, type VmmDriver } from '../vmm/driver.js';
import type { AgentPool } from './agents.js';
import type { VmBoot } from './boot.js';
import type { VmLayout } from './layout.js';
import type { VmmDrivers, VmNetworking } from './needs.js';
import type { VmReadiness } from './ready.js';
import type { VmTable } from './records.js';
import { checkSaved, factsOf, savedFacts } from './savedState.js';

/**
 * `vm suspend` / `vm resume` (docs/snapshots.md). Suspend pauses the VM, has
 * its driver save the device state and memory into the VM's directory, ends
 * the VMM (its memory is freed) and releases the tap; the row keeps its
 * address and says `suspended`. Resume starts a VMM from those files with a
 * new tap (boot.ts `restoreLocked`), lets the guest run, steps its clock
 * through the agent, and brings it up like a boot (ready.ts) before it is
 * `running` again; the files are then removed. Nothing is half-done: a
 * failed suspend leaves the VM running; a failed resume leaves it suspended
 * with the reason (saved again if the guest had already run).
 */

/** What suspend and resume need from the rest of the lifecycle. */
export interface SuspendNeeds {
  table: VmTable;
  drivers: VmmDrivers;
  network: Pick<VmNetworking, 'released'>;
  liveness: { alive(vm: VmRecord): boolean };
  agents: Pick<AgentPool, 'get' | 'drop'>;
  boot: Pick<VmBoot, 'restoreLocked'>;
  images: { get(id: string): ImageRecord | undefined };
  readiness: Pick<VmReadiness, 'bringUp'>;
}

type SnapDriver = VmmDriver & Required<Pick<VmmDriver, 'pause' | 'resume' | 'save' | 'restore'>>;

/** How long a resumed guest's agent may take to answer. */
const RESUME_READY_MS = 60_000;

/** The saved state of a suspended VM, in its directory. */
export const suspendFiles = (l: Pick<VmLayout, 'suspendState' | 'suspendMem'>): SnapshotFiles => ({
  statePath: l.suspendState,
  memPath: l.suspendMem,
});

export const removeFiles = (f: SnapshotFiles): void => {
  for (const p of [f.statePath, f.memPath]) fs.rmSync(p, { force: true });
};

/** Bytes a (sparse) file occupies on disk. */
const allocated = (p: string): number => {
  try {
    return fs.statSync(p).blocks * 512;
  } catch {
    return 0;
  }
};

export class VmSuspension {
  constructor(private readonly n: SuspendNeeds) {}

  private driverFor(vm: VmRecord): SnapDriver {
    const driver = this.n.drivers.driverFor(vm.vmm);
    if (!canSnapshot(driver))
      throw new BangerError(
        'precondition',
        `vm '${vm.name}' runs on ${driver.name}, which cannot save a VM's memory`,
        { hint: `stop it instead: banger vm stop ${vm.name}` },
      );
    return driver;
  }

  /** The caller holds the VM's lock. */
  async suspendLocked(vm: VmRecord, emit: ProgressSink): Promise<VmRecord> {
    if (vm.state === 'suspended') return vm;
    const handle = this.n.table.handleOf(vm);
    if (vm.state !== 'running' || !handle || !this.n.liveness.alive(vm)) {
      throw new BangerError('precondition', `vm '${vm.name}' is not running (${vm.state})`, {
        hint: `only a running VM can be suspended: banger vm start ${vm.name}`,
      });
    }
    const driver = this.driverFor(vm);
    const files = suspendFiles(this.n.table.layout(vm));
    const t0 = Date.now();
    const label = `Suspending ${vm.name}`;
    emit({ type: 'step', id: `suspend:${vm.name}`, label, state: 'start' });
    try {
      await this.saveAndStop(vm, driver, handle, files);
    } catch (e) {
      const err = toBangerError(e);
      emit({ type: 'step', id: `suspend:${vm.name}`, label, state: 'fail', detail: err.message });
      throw new BangerError(err.code, `suspending vm '${vm.name}' failed: ${err.message}`, {
        hint: err.hint ?? `it is still running; see \`banger vm logs ${vm.name}\``,
        cause: e,
      });
    }
    const out = this.n.table.current(vm);
    emit({
      type: 'step',
      id: `suspend:${vm.name}`,
      label,
      state: 'done',
      detail: `${formatSize(allocated(files.memPath))} of memory saved`,
      ms: Date.now() - t0,
    });
    return out;
  }

  /**
   * Pause, save, end the VMM, release the tap; the row says `suspended`. A
   * save that fails lets the VM run on (its partial files removed).
   */
  private async saveAndStop(
    vm: VmRecord,
    driver: SnapDriver,
    handle: VmHandle,
    files: SnapshotFiles,
  ): Promise<VmRecord> {
    const { table } = this.n;
    // Crash-consistent (recoverSnapshots.ts): cut short while the VMM lives, the suspend is
    // undone (files removed, VM resumed); once the files are complete and the VMM is gone, done.
    const vmm = {
      pid: handle.pid,
      pidStartTime: handle.pidStartTime,
      controlSocket: handle.controlSocket,
      tap: vm.tap,
      ip: vm.ip,
    };
    return table.journal.run('suspend', vm.id, vmm, async (intent) => {
      removeFiles(files);
      await driver.pause(handle);
      intent.step('after-pause');
      // A save that fails is undone by the recoverer (cause `failed`): files removed, VM resumed.
      await driver.save(handle, files);
      intent.step('after-save');
      table.setMeta(table.current(vm), { stopRequested: true });
      this.n.agents.drop(vm.id);
      await driver.kill(handle, 'SIGKILL');
      intent.step('after-kill');
      const before = table.current(vm);
      const out = this.markSuspended(before, files);
      intent.step('after-row');
      await this.n.network.released(before, () => table.runningNets(vm.id)).catch(() => undefined);
      return out;
    });
  }

  /** The row of a VM whose files are complete and whose VMM is gone: `suspended`, what was saved recorded. */
  markSuspended(vm: VmRecord, files: SnapshotFiles): VmRecord {
    const image = this.n.images.get(vm.imageId);
    const out = this.n.table.update(vm.id, {
      state: 'suspended',
      pid: null,
      pidStartTime: null,
      tap: null,
      stoppedAt: nowIso(),
      lastError: null,
      meta: { ...vm.meta, saved: image ? savedFacts(files, image) : undefined },
    });
    this.n.table.event('vm.suspended', vm, { memBytes: allocated(files.memPath) });
    return out;
  }

  /** The caller holds the VM's lock. */
  async resumeLocked(vm: VmRecord, emit: ProgressSink, signal?: AbortSignal): Promise<VmRecord> {
    if (vm.state !== 'suspended') {
      throw new BangerError('precondition', `vm '${vm.name}' is not suspended (${vm.state})`, {
        hint:
          vm.state === 'running'
            ? 'it is already running'
            : `start it instead: banger vm start ${vm.name}`,
      });
    }
    const driver = this.driverFor(vm);
    const files = suspendFiles(this.n.table.layout(vm));
    const image = this.n.images.get(vm.imageId);
    if (image)
      checkSaved(
        `vm '${vm.name}'`,
        files,
        factsOf(vm.meta),
        image,
        `it cannot be resumed; discard the saved state: banger vm stop ${vm.name}`,
      );
    // Crash-consistent (recoverSnapshots.ts): until the guest runs, an interrupted resume goes
    // back to `suspended` with its files; after, the files are stale and adoption finishes it.
    return this.n.table.journal.run('resume', vm.id, {}, (intent) =>
      this.resumeJournaled(vm, driver, files, intent, emit, signal),
    );
  }

  private async resumeJournaled(
    vm: VmRecord,
    driver: SnapDriver,
    files: SnapshotFiles,
    intent: Intent,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<VmRecord> {
    const t0 = Date.now();
    const r = await this.n.boot.restoreLocked(
      vm,
      emit,
      (_, launch) => driver.restore(launch, files, { paused: true, signal }),
      intent,
    );
    const label = `Resuming (${driver.name}, ${vm.accel})`;
    try {
      // Paused until the network rules for its new tap are in place; from here the guest runs.
      await driver.resume(r.handle);
      intent.step('after-cont');
      const ready = await this.n.readiness.bringUp(r.vm, {
        driver,
        handle: r.handle,
        consoleStart: r.consoleStart,
        bootStart: r.t0,
        timeoutMs: RESUME_READY_MS,
        emit,
        signal,
        label,
        keepOnFailure: true,
        afterAgent: (cur) => this.stepClock(cur, emit),
      });
      intent.step('after-ready');
      removeFiles(files);
      this.n.table.event('vm.resumed', ready, { ms: Date.now() - t0 });
      return this.n.table.update(ready.id, { meta: { ...ready.meta, saved: undefined } });
    } catch (e) {
      throw await this.resumeFailed(r.vm, driver, r.handle, files, e, emit);
    }
  }

  /** After a restore the guest clock is as old as the save: step it to the host's. */
  private async stepClock(vm: VmRecord, emit: ProgressSink): Promise<void> {
    try {
      const r = await this.n.agents.get(vm).setTime({ timeoutMs: 10_000 });
      emit({
        type: 'log',
        level: 'debug',
        message: `${vm.name}: guest clock stepped by ${(r.stepMs / 1000).toFixed(1)}s`,
      });
    } catch (e) {
      // An agent older than set-time: the guest's own time sync has to catch up.
      if (toBangerError(e).code !== 'not_implemented') throw e;
      emit({
        type: 'log',
        level: 'warn',
        message: `${vm.name}: its guest agent cannot set the clock (rebuild the image for a newer agent)`,
      });
    }
  }

  /**
   * A resumed VM that did not become ready. The guest ran, so its disks moved
   * on from the saved files: save it again (it stays suspended, with the
   * reason); when even that is impossible, the saved state is stale and is
   * discarded (the VM is left in `error`).
   */
  private async resumeFailed(
    vm: VmRecord,
    driver: SnapDriver,
    handle: VmHandle,
    files: SnapshotFiles,
    e: unknown,
    emit: ProgressSink,
  ): Promise<BangerError> {
    const err = toBangerError(e);
    const { table } = this.n;
    let state: 'suspended' | 'error' = 'suspended';
    let reason = `resuming vm '${vm.name}' failed: ${err.message}`;
    try {
      if (!this.n.liveness.alive(table.current(vm))) throw new Error('the VMM is gone');
      await driver.pause(handle);
      await driver.save(handle, files);
    } catch (saveErr) {
      state = 'error';
      removeFiles(files);
      reason += `; its saved state was discarded (${toBangerError(saveErr).message})`;
    }
    this.n.agents.drop(vm.id);
    await driver.kill(handle, 'SIGKILL').catch(() => undefined);
    const before = table.current(vm);
    table.update(vm.id, {
      state,
      pid: null,
      pidStartTime: null,
      tap: null,
      stoppedAt: nowIso(),
      lastError: reason,
    });
    table.event('vm.resume_failed', vm, { error: reason });
    await this.n.network.released(before, () => table.runningNets(vm.id)).catch(() => undefined);
    emit({ type: 'step', id: 'boot', label: 'Resuming', state: 'fail', detail: err.message });
    return new BangerError(err.code, reason, {
      hint:
        state === 'suspended'
          ? `try again (banger vm resume ${vm.name}), or discard the saved state: banger vm stop ${vm.name}`
          : `start it afresh: banger vm start ${vm.name}`,
      cause: e,
    });
  }

  /** `vm stop` of a suspended VM: the saved state is discarded, the VM is stopped. */
  discardLocked(vm: VmRecord): VmRecord {
    if (vm.state !== 'suspended') return vm;
    removeFiles(suspendFiles(this.n.table.layout(vm)));
    const out = this.n.table.update(vm.id, { state: 'stopped', stoppedAt: nowIso() });
    this.n.table.event('vm.stopped', vm, { discarded: 'suspended state' });
    return out;
  }
}
