import { Readable } from 'node:stream';
import type { ProgressSink } from '../api/events.js';
import type { VmSpec, VmView } from '../api/schemas/vms.js';
import type { Paths } from '../config/paths.js';
import type { Config } from '../config/schema.js';
import { BangerError, toBangerError } from '../errors.js';
import type { CpuTicks } from '../guest/agentProtocol.js';
import { ensureSshKey } from '../guest/ssh.js';
import type { Store } from '../store/index.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import type { VmRecord } from '../store/vms.js';
import type { Logger } from '../util/log.js';
import { sleep } from '../util/sleep.js';
import { canSnapshot } from '../vmm/driver.js';
import { guestRun, tarOf } from '../workspace/transfer.js';
import type { CreateHooks, CreatePlan, CreateRequest } from './create.js';
import { resolveFileSync } from './fileSync.js';
import type { VmmDrivers } from './needs.js';
import type { StartMeta, VmTable } from './records.js';
import type { VmRestore } from './restore.js';
import { fixedGuestAddresses } from './kernelArgs.js';
import { waitQuiet } from './settle.js';
import type { VmSnapshots } from './snapshots.js';
import {
  bootSnapshotFor,
  bootSnapshotName,
  chooseStart,
  fileSyncEntries,
  imageIdentity,
  kernelIdentity,
  shapeKey,
  staleBootSnapshots,
  type BootMeta,
  type StartChoice,
} from './warmShape.js';

/** How a started VM came up (its row's `meta.start`), for `vm show`. */
export function describeStart(m: StartMeta | undefined): string | null {
  if (!m) return null;
  if (m.kind === 'warm') return `warm (boot snapshot ${m.snapshot ?? '?'})`;
  return m.snapshot ? `cold (kept boot snapshot ${m.snapshot})` : 'cold';
}

/** What warm start needs from the rest of the VM service. */
export interface WarmNeeds {
  table: VmTable;
  store: Pick<Store, 'snapshots'>;
  paths: Pick<Paths, 'sshKey' | 'knownHosts'>;
  config(): Config;
  drivers: VmmDrivers;
  snapshots: Pick<VmSnapshots, 'takeLocked' | 'delete' | 'list'>;
  restorer: Pick<VmRestore, 'restore'>;
  locked<T>(vmId: string, fn: () => Promise<T>): Promise<T>;
  /** Remove a VM (VMM, tap, directory, row). The caller holds its lock. */
  discardLocked(vm: VmRecord): Promise<void>;
  /** Grow a running VM's disks and filesystems online (diskGrowth.ts). */
  growOnline(vm: VmRecord, sizeBytes: number): Promise<void>;
  view(vm: VmRecord): VmView;
  /** The guest's CPU counters through its agent (null when it cannot say). */
  guestCpu(vm: VmRecord, signal?: AbortSignal): Promise<CpuTicks | null>;
  logger: Logger;
}

/** The longest a first boot waits for its guest to go quiet before the boot snapshot. */
const SETTLE_MAX_MS = 8000;

/** The decision for one create, with the shape it was made for. */
export type WarmPlan = StartChoice & { key: string; meta: BootMeta };

/**
 * Warm start (docs/snapshots.md): the first VM of a shape that boots keeps a
 * boot snapshot taken at readiness, holding nothing but what every VM of the
 * shape gets (its [[file_sync]] files and workspace are written into the
 * guest after the snapshot); later VMs of the shape are restored from it
 * with a new identity, their disks grown online when asked larger, and their
 * content written into the running guest through ssh. Whatever fails on the
 * warm path, the caller boots cold instead.
 */
export class VmWarmStart {
  constructor(private readonly n: WarmNeeds) {}

  /** Restore or boot; boot snapshots made from an older image or kernel are removed here. */
  async choose(plan: CreatePlan, req: CreateRequest, hooks: CreateHooks): Promise<WarmPlan> {
    const config = this.n.config();
    const pubKey = await ensureSshKey(config.sshKeyPath ?? this.n.paths.sshKey);
    const meta: BootMeta = {
      shape: '',
      image: imageIdentity(plan.image),
      kernel: kernelIdentity(plan.kernel),
    };
    meta.shape = shapeKey({
      imageId: plan.image.id,
      image: meta.image,
      kernelName: plan.kernel?.name ?? null,
      kernel: meta.kernel,
      vmm: plan.vmm,
      accel: plan.accel,
      vcpu: plan.spec.sizing.vcpu.value,
      memoryMib: plan.spec.sizing.memoryMib.value,
      nat: req.nat,
      fixedAddresses: fixedGuestAddresses(plan.accel, config.tcgAslr),
      pubKey,
    });
    const stale = staleBootSnapshots(this.n.snapshots.list(), {
      imageId: plan.image.id,
      image: meta.image,
      kernelName: plan.kernel?.name ?? null,
      kernel: meta.kernel,
    });
    for (const s of stale) this.forget(s, 'its image or kernel changed');
    const choice = chooseStart({
      warmStart: config.warmStart,
      start: req.start,
      cold: Boolean(req.cold),
      canSnapshot: canSnapshot(this.n.drivers.driverFor(plan.vmm)),
      canDefer: !hooks.populateWorkDisk || Boolean(hooks.populateRunning),
      diskSize: plan.spec.sizing.diskSize.value,
      snapshot: bootSnapshotFor(meta.shape, (name) => this.n.store.snapshots.byName(name)),
    });
    return { ...choice, key: meta.shape, meta };
  }

  /**
   * A new VM restored from the shape's boot snapshot: its own identity
   * (restore.ts), then its disks grown to the size asked, then its content.
   * A failure after the restore removes the VM again; the caller falls back.
   */
  async warm(
    plan: CreatePlan,
    snap: SnapshotRecord,
    spec: VmSpec,
    hooks: CreateHooks,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<VmRecord> {
    const start: StartMeta = { kind: 'warm', snapshot: snap.name };
    const { vm } = await this.n.restorer.restore(
      snap,
      {
        name: plan.name,
        nameSource: spec.name.source,
        spec,
        meta: { start },
      },
      emit,
      signal,
    );
    return this.n.locked(vm.id, async () => {
      let cur = this.n.table.current(vm);
      try {
        const size = plan.spec.sizing.diskSize.value;
        if (size > snap.diskSize) {
          const t0 = Date.now();
          emit({ type: 'step', id: 'grow', label: 'Growing disks', state: 'start' });
          await this.n.growOnline(cur, size);
          cur = this.n.table.update(cur.id, { diskSize: size });
          emit({
            type: 'step',
            id: 'grow',
            label: 'Growing disks',
            state: 'done',
            ms: Date.now() - t0,
          });
        }
        await this.writeContent(cur, hooks, emit, signal);
        return this.n.table.current(cur);
      } catch (e) {
        await this.n.discardLocked(this.n.table.current(cur)).catch(() => undefined);
        throw e;
      }
    });
  }

  /**
   * Keep a boot snapshot of a VM that just booted cold with nothing but its
   * shape's content. The caller holds the VM's lock. A failure is a warning:
   * the VM runs on.
   */
  async keep(vm: VmRecord, w: WarmPlan, emit: ProgressSink, signal?: AbortSignal): Promise<void> {
    try {
      await this.settle(vm, emit, signal);
      const s = await this.n.snapshots.takeLocked(
        vm,
        { name: bootSnapshotName(w.key), kind: 'boot', meta: { ...w.meta } },
        emit,
        signal,
      );
      this.n.table.setMeta(this.n.table.current(vm), {
        start: { kind: 'cold', snapshot: s.name } satisfies StartMeta,
      });
    } catch (e) {
      const err = toBangerError(e);
      // Another first boot of the same shape kept one meanwhile: nothing is missing.
      if (err.code === 'conflict') return;
      emit({
        type: 'log',
        level: 'warn',
        message: `no boot snapshot kept for warm starts: ${err.message}`,
      });
    }
  }

  /**
   * Let the guest finish booting before the snapshot (settle.ts): at most
   * SETTLE_MAX_MS, then the snapshot is taken anyway.
   */
  private async settle(vm: VmRecord, emit: ProgressSink, signal?: AbortSignal): Promise<void> {
    const label = 'Letting the guest settle';
    emit({ type: 'step', id: 'settle', label, state: 'start' });
    const r = await waitQuiet({
      sample: () => this.n.guestCpu(vm, signal).catch(() => null),
      sleep: (ms) => sleep(ms, signal),
      now: () => Date.now(),
      intervalMs: 250,
      quietBelow: 0.2,
      quietWindows: 2,
      maxMs: SETTLE_MAX_MS,
    });
    const detail = r.quiet
      ? 'quiet'
      : r.windows.length
        ? 'still busy, snapshot anyway'
        : 'no CPU figures';
    emit({ type: 'step', id: 'settle', label, state: 'done', detail, ms: r.waitedMs });
    this.n.logger.debug({ vm: vm.name, ...r }, 'guest settled before its boot snapshot');
  }

  /**
   * [[file_sync]] as one tar over ssh into /root, then the create hook's own
   * content (a workspace). The caller holds the VM's lock.
   */
  async writeContent(
    vm: VmRecord,
    hooks: CreateHooks,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<void> {
    const config = this.n.config();
    const sync = resolveFileSync(config.fileSync);
    for (const w of sync.warnings) emit({ type: 'log', level: 'warn', message: w });
    const entries = fileSyncEntries(sync);
    if (entries.length) {
      const t0 = Date.now();
      const label = 'Writing [[file_sync]] files';
      emit({ type: 'step', id: 'file_sync', label, state: 'start' });
      const r = await guestRun(
        {
          name: vm.name,
          ip: vm.ip!,
          keyPath: config.sshKeyPath ?? this.n.paths.sshKey,
          knownHosts: this.n.paths.knownHosts,
        },
        'tar -x -p -f - -C /root',
        { input: Readable.from(tarOf(entries)), signal },
      );
      if (r.code !== 0) {
        emit({ type: 'step', id: 'file_sync', label, state: 'fail' });
        throw new BangerError(
          'tool_failed',
          `writing [[file_sync]] files into vm '${vm.name}' failed: ${r.stderr.trim().split('\n').pop() || `exit status ${r.code}`}`,
          { hint: 'check the [[file_sync]] entries, or boot with --cold' },
        );
      }
      emit({
        type: 'step',
        id: 'file_sync',
        label,
        state: 'done',
        detail: `${entries.filter((e) => e.kind === 'file').length} files`,
        ms: Date.now() - t0,
      });
    }
    if (hooks.populateRunning) await hooks.populateRunning(this.n.view(vm));
  }

  /** A boot snapshot that must not be restored again; kept if a restore from it is under way. */
  forget(s: SnapshotRecord, why: string): void {
    try {
      this.n.snapshots.delete(s.id);
      this.n.logger.info({ snapshot: s.name, why }, 'boot snapshot removed');
    } catch (e) {
      this.n.logger.warn({ snapshot: s.name, err: toBangerError(e).message }, 'boot snapshot kept');
    }
  }

  /** `snapshot prune`: every boot snapshot not being restored from now. */
  prune(): { pruned: string[]; freedBytes: number; kept: string[] } {
    const out = { pruned: [] as string[], freedBytes: 0, kept: [] as string[] };
    for (const s of this.n.snapshots.list()) {
      if (s.kind !== 'boot') continue;
      try {
        this.n.snapshots.delete(s.id);
        out.pruned.push(s.name);
        out.freedBytes += s.sizeBytes;
      } catch {
        out.kept.push(s.name);
      }
    }
    return out;
  }
}
