import fs from 'node:fs';
import path from 'node:path';
import type { ProgressSink } from '../api/events.js';
import type { SnapshotView } from '../api/schemas/snapshots.js';
import { BangerError, toBangerError } from '../errors.js';
import type { Store } from '../store/index.js';
import type { SnapshotKind, SnapshotRecord } from '../store/snapshots.js';
import type { VmRecord } from '../store/vms.js';
import type { Logger } from '../util/log.js';
import { canSnapshot, type VmmDriver } from '../vmm/driver.js';
import type { VmmDrivers } from './needs.js';
import { newVmId, shortId, VM_NAME_RE } from './names.js';
import type { VmTable } from './records.js';
import { savedFacts } from './savedState.js';
import { snapshotLayout, type SnapshotLayout } from './snapshotLayout.js';

/** What taking and keeping snapshots needs from the rest of the daemon. */
export interface SnapshotNeeds {
  table: VmTable;
  store: Pick<Store, 'snapshots' | 'images'>;
  snapshotsDir: string;
  drivers: VmmDrivers;
  alive(vm: VmRecord): boolean;
  /** Sparse copy of a disk (cp --sparse=always --reflink=auto), written under a temporary name. */
  copyDisk(src: string, dst: string, signal?: AbortSignal): Promise<void>;
  logger: Logger;
}

/**
 * `vm snapshot` and the snapshots table: under the VM's lock (the caller's),
 * the VM is paused, its memory and device state saved by its driver, its
 * overlay and work disks copied sparsely while it is paused, then it is
 * resumed — also when any of that failed, and then the partial snapshot is
 * removed. The row is written last, so a snapshot in the table is complete;
 * a directory without a row (a daemon that died mid-snapshot) is removed at
 * the next daemon start (`removeOrphans`).
 */
export class VmSnapshots {
  /** Snapshot id → names of the VMs being restored from it now. */
  private readonly restoring = new Map<string, Set<string>>();

  constructor(private readonly n: SnapshotNeeds) {}

  list(): SnapshotRecord[] {
    return this.n.store.snapshots.list();
  }

  /** A snapshot by name or id prefix. */
  resolve(ref: string): SnapshotRecord {
    const s = this.n.store.snapshots;
    const byName = s.byName(ref);
    if (byName) return byName;
    const matches = /^[0-9a-f]{1,16}$/.test(ref) ? s.byIdPrefix(ref) : [];
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) {
      throw new BangerError('ambiguous', `snapshot id prefix '${ref}' is ambiguous`, {
        hint: `use more characters or the name (${matches.map((m) => m.name).join(', ')})`,
      });
    }
    throw new BangerError('not_found', `no snapshot named '${ref}'`, {
      hint: 'see `banger snapshot list`',
    });
  }

  layout(s: Pick<SnapshotRecord, 'dir'>): SnapshotLayout {
    return snapshotLayout(s.dir);
  }

  view(s: SnapshotRecord): SnapshotView {
    const l = this.layout(s);
    return {
      id: s.id,
      name: s.name,
      kind: s.kind,
      sourceVm: s.sourceVmName,
      sourceVmId: s.sourceVmId,
      image: this.n.store.images.get(s.imageId)?.name ?? s.imageId,
      imageId: s.imageId,
      kernel: s.kernelName,
      vmm: s.vmm,
      accel: s.accel,
      vcpu: s.vcpu,
      memoryMib: s.memoryMib,
      diskSize: s.diskSize,
      nat: s.nat,
      dir: s.dir,
      files: { state: l.state, mem: l.mem, overlay: l.overlay, work: l.work },
      sizeBytes: s.sizeBytes,
      createdAt: s.createdAt,
      restoring: [...(this.restoring.get(s.id) ?? [])].sort(),
    };
  }

  /** Mark a restore from `s` as in progress until the returned function is called. */
  beginRestore(s: SnapshotRecord, vmName: string): () => void {
    let set = this.restoring.get(s.id);
    if (!set) this.restoring.set(s.id, (set = new Set()));
    set.add(vmName);
    return () => {
      set.delete(vmName);
      if (set.size === 0) this.restoring.delete(s.id);
    };
  }

  /** The driver of a VM, if it can snapshot; else the one error saying why not. */
  snapshotDriver(
    vm: Pick<VmRecord, 'name' | 'vmm'>,
    what = `vm '${vm.name}'`,
  ): VmmDriver & Required<Pick<VmmDriver, 'pause' | 'resume' | 'save' | 'restore'>> {
    const driver = this.n.drivers.driverFor(vm.vmm);
    if (!canSnapshot(driver)) {
      throw new BangerError(
        'not_implemented',
        `${what}: its VMM (${vm.vmm}) cannot save and restore snapshots`,
        { hint: 'snapshots need a VMM driver with save/restore (see docs/snapshots.md)' },
      );
    }
    return driver;
  }

  /** A free default name: `<vm>-snap<N>`. */
  defaultName(vmName: string): string {
    for (let i = 1; ; i++) {
      const suffix = `-snap${i}`;
      const name = `${vmName.slice(0, 64 - suffix.length)}${suffix}`;
      if (!this.n.store.snapshots.byName(name)) return name;
    }
  }

  /** A name for `vm fork`'s temporary snapshot: `<vm>-fork-<8 hex>`. */
  tempName(vmName: string): string {
    const suffix = `-fork-${newVmId().slice(0, 8)}`;
    return `${vmName.slice(0, 64 - suffix.length)}${suffix}`;
  }

  /** Take a snapshot of a running VM. The caller holds the VM's lock. */
  async takeLocked(
    vm: VmRecord,
    o: { name?: string; kind: SnapshotKind; meta?: Record<string, unknown> },
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<SnapshotRecord> {
    const name = o.name ?? this.defaultName(vm.name);
    if (!VM_NAME_RE.test(name)) {
      throw new BangerError('usage', `invalid snapshot name '${name}'`, {
        hint: 'use 1-64 lowercase letters, digits or dashes',
      });
    }
    if (this.n.store.snapshots.byName(name)) {
      throw new BangerError('conflict', `a snapshot named '${name}' already exists`, {
        hint: `choose another --name, or delete it: banger snapshot delete ${name}`,
      });
    }
    if (vm.state !== 'running' || !this.n.alive(vm)) {
      throw new BangerError('precondition', `vm '${vm.name}' is not running (${vm.state})`, {
        hint: `start it first: banger vm start ${vm.name}`,
      });
    }
    const driver = this.snapshotDriver(vm);
    const handle = this.n.table.handleOf(vm);
    if (!handle) {
      throw new BangerError('precondition', `vm '${vm.name}' has no VMM handle`, {
        hint: `restart it: banger vm restart ${vm.name}`,
      });
    }
    const id = newVmId();
    const l = snapshotLayout(path.join(this.n.snapshotsDir, id));
    const vmFiles = this.n.table.layout(vm);
    const image = this.n.store.images.get(vm.imageId);
    const t0 = Date.now();
    emit({ type: 'step', id: 'snapshot', label: `Snapshotting ${vm.name}`, state: 'start' });
    // Crash-consistent (recoverSnapshots.ts): a snapshot cut short is removed, its VM resumed.
    const vmm = {
      pid: handle.pid,
      pidStartTime: handle.pidStartTime,
      controlSocket: handle.controlSocket,
    };
    const rec = await this.n.table.journal.run(
      'snapshot',
      vm.id,
      { snapshotId: id, dir: l.dir, name, ...vmm },
      async (intent) => {
        fs.mkdirSync(l.dir, { recursive: true, mode: 0o700 });
        let paused = false;
        try {
          await driver.pause(handle);
          paused = true;
          intent.step('after-pause');
          await driver.save(handle, { statePath: l.state, memPath: l.mem }, signal);
          intent.step('after-save');
          await this.n.copyDisk(vmFiles.overlayDisk, l.overlay, signal);
          await this.n.copyDisk(vmFiles.workDisk, l.work, signal);
          intent.step('after-disks');
        } catch (e) {
          if (paused) await this.resumeAfter(driver, handle, vm, e);
          fs.rmSync(l.dir, { recursive: true, force: true });
          emit({ type: 'step', id: 'snapshot', label: `Snapshotting ${vm.name}`, state: 'fail' });
          throw e;
        }
        const pausedMs = Date.now() - t0;
        await this.resumeAfter(driver, handle, vm);
        intent.step('after-resume');
        const saved = image ? savedFacts({ statePath: l.state, memPath: l.mem }, image) : undefined;
        let row: SnapshotRecord;
        try {
          row = this.n.store.snapshots.insert({
            id,
            name,
            kind: o.kind,
            sourceVmId: vm.id,
            sourceVmName: vm.name,
            imageId: vm.imageId,
            kernelName: vm.kernelName,
            vmm: vm.vmm,
            accel: vm.accel ?? 'tcg',
            vcpu: vm.vcpu,
            memoryMib: vm.memoryMib,
            diskSize: vm.diskSize,
            nat: vm.nat,
            dir: l.dir,
            sizeBytes: allocatedBytes(l),
            meta: { pausedMs, ...(saved ? { saved } : {}), ...(o.meta ?? {}) },
          });
        } catch (e) {
          fs.rmSync(l.dir, { recursive: true, force: true });
          if (/UNIQUE constraint failed: snapshots.name/.test((e as Error).message)) {
            throw new BangerError('conflict', `a snapshot named '${name}' already exists`, {
              hint: 'choose another --name',
            });
          }
          throw e;
        }
        intent.step('after-row');
        emit({
          type: 'step',
          id: 'snapshot',
          label: `Snapshotting ${vm.name}`,
          state: 'done',
          detail: `${name} (paused ${pausedMs} ms)`,
          ms: Date.now() - t0,
        });
        this.n.table.event('vm.snapshot', vm, { snapshot: name, snapshotId: id, pausedMs });
        return row;
      },
    );
    return rec;
  }

  /** Resume after a snapshot; a VM that cannot be resumed is reported (with the snapshot's own error, if any). */
  private async resumeAfter(
    driver: Required<Pick<VmmDriver, 'resume'>>,
    handle: NonNullable<ReturnType<VmTable['handleOf']>>,
    vm: VmRecord,
    cause?: unknown,
  ): Promise<void> {
    try {
      await driver.resume(handle);
    } catch (e) {
      const why = toBangerError(e).message;
      this.n.logger.error({ vm: vm.name, err: why }, 'resume after snapshot failed');
      throw new BangerError(
        'vmm_failed',
        `vm '${vm.name}' stayed paused after a snapshot: ${why}${cause ? ` (the snapshot failed: ${toBangerError(cause).message})` : ''}`,
        { hint: `restart it: banger vm restart ${vm.name}` },
      );
    }
  }

  /** Remove a snapshot and its files; refused while a VM is being restored from it. */
  delete(ref: string): SnapshotRecord {
    const s = this.resolve(ref);
    const users = this.restoring.get(s.id);
    if (users?.size) {
      throw new BangerError(
        'conflict',
        `snapshot '${s.name}' is being restored as ${[...users].sort().join(', ')}`,
        { hint: 'delete it once the restore has finished' },
      );
    }
    this.removeFiles(s);
    this.n.store.snapshots.delete(s.id);
    this.n.logger.info({ snapshot: s.name, id: shortId(s.id) }, 'snapshot.deleted');
    return s;
  }

  private removeFiles(s: Pick<SnapshotRecord, 'dir'>): void {
    // only ever below the snapshots directory
    const rel = path.relative(this.n.snapshotsDir, s.dir);
    if (!rel || rel.startsWith('..') || path.isAbsolute(rel)) return;
    fs.rmSync(s.dir, { recursive: true, force: true });
  }

  /**
   * Daemon start: `vm fork`'s temporary snapshots (a daemon died mid-fork),
   * and directories of snapshots that never got their row (mid-snapshot).
   */
  removeOrphans(): void {
    for (const s of this.list()) {
      if (s.meta.temporary !== true) continue;
      this.removeFiles(s);
      this.n.store.snapshots.delete(s.id);
    }
    let entries: string[];
    try {
      entries = fs.readdirSync(this.n.snapshotsDir);
    } catch {
      return;
    }
    const known = new Set(this.list().map((s) => path.basename(s.dir)));
    for (const e of entries) {
      if (known.has(e)) continue;
      this.n.logger.warn({ dir: e }, 'removing an incomplete snapshot');
      fs.rmSync(path.join(this.n.snapshotsDir, e), { recursive: true, force: true });
    }
  }
}

/** Allocated bytes of a snapshot's files (sparse files count what they hold). */
function allocatedBytes(l: SnapshotLayout): number {
  let n = 0;
  for (const f of [l.state, l.mem, l.overlay, l.work]) {
    try {
      n += fs.statSync(f).blocks * 512;
    } catch {
      // a driver may keep the state in fewer files
    }
  }
  return n;
}
