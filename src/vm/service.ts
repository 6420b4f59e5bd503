import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { ProgressSink } from '../api/events.js';
import type { VmEvent, VmResult, VmSpec, VmStats, VmView } from '../api/schemas/vms.js';
import type { SnapshotView } from '../api/schemas/snapshots.js';
import type { HostFacts } from '../config/vmDefaults.js';
import { BangerError, toBangerError } from '../errors.js';
import type { AgentClient } from '../guest/agentClient.js';
import type { Paths } from '../config/paths.js';
import type { Config } from '../config/schema.js';
import type { Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import type { KeyedMutex } from '../util/mutex.js';
import type { VmRecord } from '../store/vms.js';
import { which } from '../util/exec.js';
import { cloneSparse } from '../storage/ext4.js';
import { PACKAGE_ROOT } from '../version.js';
import { hostTscKhz, readKvmFacts } from '../vmm/accel.js';
import { VMM_NAMES, type VmmName } from '../vmm/driver.js';
import { createVmmDriver } from '../vmm/registry.js';
import { JAIL_BASE_NAME } from '../vmm/jail.js';
import { VmAdoption } from './adopt.js';
import { AgentPool } from './agents.js';
import { VmBoot } from './boot.js';
import { VmCreation, type CreateHooks, type CreateRequest } from './create.js';
import { growDisksOnline } from './diskGrowth.js';
import { ext4Disks, type VmDisks } from './disks.js';
import { VmLiveness } from './liveness.js';
import type { HostProbe, ImageSource, KernelSource, VmmDrivers, VmNetworking } from './needs.js';
import { VmNetwork } from './net.js';
import { readySteps, VmReadiness, type ReadyStep } from './ready.js';
import { VmRecovery } from './recover.js';
import { SnapshotRecovery } from './recoverSnapshots.js';
import { isActive, metaOf, vmLockKey, VmTable } from './records.js';
import { VmSettings, type VmPatch } from './settings.js';
import { describeOrigin, VmRestore, type VmOrigin } from './restore.js';
import { describeStart, VmWarmStart } from './warmStart.js';
import { VmSnapshots } from './snapshots.js';
import { forkNames } from './fork.js';
import { effectiveAutoStop } from './idle.js';
import { VmSampler } from './sampler.js';
import { VmSshConfig } from './sshConfig.js';
import { VmStatsReader } from './stats.js';
import { VmSuspension } from './suspend.js';
import { VmTeardown } from './teardown.js';
import { openTunnel } from './tunnel.js';
import { watchVms } from './watch.js';

export type { CreateHooks, CreateRequest } from './create.js';

/** How long an idle VM's guest gets to power off before its VMM is killed. */
const IDLE_STOP_TIMEOUT_MS = 30_000;

/**
 * The VM lifecycle, composed: the one place that builds the VM services and
 * the API they offer the daemon's routes. Each public method resolves the VM,
 * takes its lock (one operation per VM at a time; different VMs in
 * parallel) and hands the current row to the service that does the work:
 *
 *   creation (create.ts) → boot (boot.ts) → readiness (ready.ts, bootWatch.ts)
 *   teardown (teardown.ts), settings (settings.ts), stats (stats.ts)
 *   liveness (liveness.ts) and adoption (adopt.ts) at daemon start
 *   the sampler (sampler.ts, idle.ts): stats samples and idle auto-stop
 *
 * Lock order (all keys of the daemon's one KeyedMutex, never re-entered):
 *   1. `image:<name>` / `kernel:<name>` — only inside images/kernels.ensure,
 *      before the VM's row exists, never while a VM lock is held;
 *   2. `vm:<id>` — one per operation, never two at once;
 *   3. the network's own mutexes (src/network/host.ts) — leaves.
 *
 * Who calls whom and where a new feature plugs in: docs/architecture.md,
 * "The VM lifecycle".
 */

export interface VmServiceDeps {
  paths: Paths;
  /** The current config (re-read when config.toml changes). */
  config(): Config;
  logger: Logger;
  store: Store;
  /** The daemon's keyed locks (this service takes `vm:<id>` keys). */
  locks: KeyedMutex;
  kernels: KernelSource;
  images: ImageSource;
  /** Host CPU and memory, for sizing defaults. */
  host: HostFacts;
  /** Defaults: the real parts. Tests pass fakes. */
  network?: VmNetworking;
  drivers?: VmmDrivers;
  probe?: HostProbe;
  disks?: VmDisks;
  /** Sparse disk copies for snapshots and restores (default cp --sparse=always --reflink=auto). */
  copyDisk?: (src: string, dst: string, signal?: AbortSignal) => Promise<void>;
  /** What every ready VM has (default readySteps(paths)). */
  readySteps?: ReadyStep[];
  /**
   * The command ssh_config's ProxyCommand runs (the VM name is appended);
   * default this package's `bin/banger __proxy` under this Node.
   */
  sshProxy?: string[];
}

export class VmService {
  readonly table: VmTable;
  private readonly agents: AgentPool;
  private readonly liveness: VmLiveness;
  private readonly boot: VmBoot;
  private readonly creation: VmCreation;
  private readonly teardown: VmTeardown;
  private readonly suspension: VmSuspension;
  private readonly settings: VmSettings;
  private readonly statsReader: VmStatsReader;
  private readonly adoption: VmAdoption;
  private readonly sampler: VmSampler;
  private readonly snapshots: VmSnapshots;
  private readonly restorer: VmRestore;
  private readonly warm: VmWarmStart;
  /** Open tunnels (ssh) per VM id: activity for the idle auto-stop. */
  private readonly tunnels = new Map<string, number>();
  private readonly sshConfig: VmSshConfig;
  private readonly recovery: VmRecovery;

  constructor(private readonly deps: VmServiceDeps) {
    const table = new VmTable(deps.store, deps.logger, deps.paths.vmsDir);
    const network = deps.network ?? new VmNetwork(deps.config, deps.logger);
    const drivers: VmmDrivers = deps.drivers ?? {
      driverFor: (name) => createVmmDriver(name as VmmName, deps.config(), deps.paths),
    };
    const probe: HostProbe = deps.probe ?? {
      which: (c) => which(c),
      kvmFacts: () => readKvmFacts(),
      tscKhz: hostTscKhz,
    };
    const disks = deps.disks ?? ext4Disks;
    const growOnline = async (vm: VmRecord, sizeBytes: number): Promise<void> => {
      const handle = table.handleOf(vm);
      if (!handle) throw new BangerError('internal', `vm '${vm.name}' runs without a VMM handle`);
      await growDisksOnline({
        vmName: vm.name,
        layout: table.layout(vm),
        handle,
        driver: drivers.driverFor(vm.vmm),
        growFs: () => agents.get(vm).request('grow-fs', {}, { timeoutMs: 30_000 }),
        sizeBytes,
      });
    };
    const agents = new AgentPool(
      (vm) => drivers.driverFor(vm.vmm).agentChannel({ name: vm.name, ...table.layout(vm) }),
      (vm, why) => deps.logger.warn({ vm: vm.name }, `guest agent channel dropped: ${why}`),
    );
    const liveness = new VmLiveness({
      table,
      network,
      agents,
      isLocked: (key) => deps.locks.isLocked(key),
      logMaxBytes: () => deps.config().logMaxBytes,
      logger: deps.logger,
      vmmReleased: (vm) => drivers.driverFor(vm.vmm).released?.(vm.id),
    });
    const alive = (vm: VmRecord): boolean => liveness.alive(vm);
    const readiness = new VmReadiness({
      table,
      agents,
      network,
      monitor: liveness,
      steps: deps.readySteps ?? readySteps(deps.paths),
    });
    this.table = table;
    this.agents = agents;
    this.liveness = liveness;
    this.boot = new VmBoot({
      table,
      store: deps.store,
      drivers,
      network,
      host: probe,
      config: deps.config,
      liveness,
      readiness,
    });
    this.creation = new VmCreation({
      table,
      store: deps.store,
      paths: deps.paths,
      config: deps.config,
      hostFacts: deps.host,
      host: probe,
      drivers,
      images: deps.images,
      kernels: deps.kernels,
      disks,
      locked: (id, fn) => this.locked(id, fn),
    });
    this.teardown = new VmTeardown({
      table,
      drivers,
      knownHosts: deps.paths.knownHosts,
      liveness,
      agents,
    });
    this.suspension = new VmSuspension({
      table,
      drivers,
      network,
      liveness,
      agents,
      boot: this.boot,
      images: deps.store.images,
      readiness,
    });
    this.settings = new VmSettings({
      table,
      disks,
      network,
      alive,
      growOnline: (vm, sizeBytes) => growOnline(vm, sizeBytes),
    });
    this.recovery = new VmRecovery({
      table,
      disks,
      liveness,
      knownHosts: deps.paths.knownHosts,
      sshConfig: deps.paths.sshConfig,
      vmsDir: deps.paths.vmsDir,
      jailsDir: path.join(deps.paths.stateDir, JAIL_BASE_NAME),
      releaseJail: (id) => {
        for (const n of VMM_NAMES) drivers.driverFor(n).released?.(id);
      },
      logger: deps.logger,
    });
    this.statsReader = new VmStatsReader({
      table,
      alive,
      guestStats: (vm) => agents.get(vm).stats({ timeoutMs: 3000 }),
    });
    this.adoption = new VmAdoption({
      table,
      drivers,
      network,
      liveness,
      readiness,
      restoredFacts: (vm) => this.restorer.factsFor(vm),
      locked: (id, fn) => this.locked(id, fn),
      logger: deps.logger,
    });
    const copyDisk = deps.copyDisk ?? cloneSparse;
    this.snapshots = new VmSnapshots({
      table,
      store: deps.store,
      snapshotsDir: deps.paths.snapshotsDir,
      drivers,
      alive,
      copyDisk,
      logger: deps.logger,
    });
    new SnapshotRecovery({
      table,
      store: deps.store,
      snapshotsDir: deps.paths.snapshotsDir,
      drivers,
      liveness,
      recovery: this.recovery,
      network,
      markSuspended: (vm, files) => this.suspension.markSuspended(vm, files),
      logger: deps.logger,
    });
    this.restorer = new VmRestore({
      table,
      store: deps.store,
      config: deps.config,
      network,
      host: probe,
      readiness,
      agents,
      snapshots: this.snapshots,
      copyDisk,
      locked: (id, fn) => this.locked(id, fn),
      discard: async (vm) => {
        await this.teardown.deleteLocked(this.table.get(vm.id) ?? vm, true, () => undefined);
      },
    });
    this.warm = new VmWarmStart({
      table,
      store: deps.store,
      paths: deps.paths,
      config: deps.config,
      drivers,
      snapshots: this.snapshots,
      restorer: this.restorer,
      locked: (id, fn) => this.locked(id, fn),
      discardLocked: async (vm) => {
        await this.teardown.deleteLocked(vm, true, () => undefined);
      },
      growOnline,
      view: (vm) => this.view(vm),
      guestCpu: async (vm, signal) =>
        (await agents.get(vm).stats({ timeoutMs: 3000, signal })).cpuTicks,
      logger: deps.logger,
    });
    this.sampler = new VmSampler({
      list: () => table.list(),
      config: () => deps.config(),
      isLocked: (id) => deps.locks.isLocked(vmLockKey(id)),
      read: (vm) => this.statsReader.of(vm),
      tunnels: (id) => this.tunnels.get(id) ?? 0,
      stopIdle: (vm, idleMs, afterMs) => this.stopIdle(vm, idleMs, afterMs),
      logger: deps.logger,
    });
    const proxy = deps.sshProxy ?? [
      process.execPath,
      path.join(PACKAGE_ROOT, 'bin', 'banger'),
      '__proxy',
    ];
    this.sshConfig = new VmSshConfig({
      table,
      file: deps.paths.sshConfig,
      input: () => ({
        keyPath: deps.config().sshKeyPath ?? deps.paths.sshKey,
        knownHosts: deps.paths.knownHosts,
        proxy,
        // The proxy must find this daemon whatever the shell that runs ssh has set.
        env: {
          BANGER_CONFIG_DIR: deps.paths.configDir,
          BANGER_STATE_DIR: deps.paths.stateDir,
          BANGER_CACHE_DIR: deps.paths.cacheDir,
          BANGER_RUNTIME_DIR: deps.paths.runtimeDir,
        },
      }),
      logger: deps.logger,
    });
  }

  private locked<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    return this.deps.locks.run(vmLockKey(vmId), fn);
  }

  /** Resolve `ref`, take the VM's lock, run fn on the row as it is then. */
  private withVm<T>(ref: string, fn: (vm: VmRecord) => Promise<T>): Promise<T> {
    const vm = this.table.resolve(ref);
    return this.locked(vm.id, () => fn(this.table.current(vm)));
  }

  // ------------------------------------------------------------------ views

  list(): VmView[] {
    this.liveness.check();
    return this.table.list().map((v) => this.fullView(v));
  }

  /** The row's view with what the sampler knows: auto-stop, last activity, last sample. */
  private fullView(vm: VmRecord): VmView {
    const running = vm.state === 'running';
    return {
      ...this.view(vm),
      autoStop: effectiveAutoStop(
        this.deps.config().autoStopStaleAfterMs,
        metaOf(vm).autoStopAfterMs,
      ),
      activity: running ? this.sampler.activity(vm.id) : null,
      sample: running ? this.sampler.lastSample(vm.id) : null,
    };
  }

  /** A row's view, with where a restored VM came from. */
  private view(vm: VmRecord): VmView {
    const origin = (vm.meta as { origin?: VmOrigin }).origin;
    return {
      ...this.table.view(vm),
      origin: origin ? describeOrigin(origin) : null,
      start: describeStart(metaOf(vm).start),
    };
  }

  /** Every VM, then each change of the table, until the returned function is called (watch.ts). */
  watch(send: (e: VmEvent) => void): () => void {
    this.liveness.check();
    return watchVms(this.table, send);
  }

  resolve(ref: string): VmRecord {
    return this.table.resolve(ref);
  }

  show(ref: string): VmView {
    this.liveness.check();
    return this.fullView(this.table.resolve(ref));
  }

  logFiles(ref: string): { vm: VmRecord; console: string; vmm: string } {
    const vm = this.table.resolve(ref);
    const l = this.table.layout(vm);
    return { vm, console: l.consoleLog, vmm: l.vmmLog };
  }

  async stats(refs: string[]): Promise<VmStats[]> {
    this.liveness.check();
    const vms = refs.length
      ? refs.map((r) => this.table.resolve(r))
      : this.table.list().filter(isActive);
    return Promise.all(
      vms.map(async (vm) => {
        const running = vm.state === 'running';
        // The sampler's last sample when there is one (its age is sampledAt); else read now.
        const stats =
          (running && this.sampler.lastSample(vm.id)) || (await this.statsReader.of(vm));
        return { ...stats, activity: running ? this.sampler.activity(vm.id) : null };
      }),
    );
  }

  /** The VM's guest-agent client (dialled through its driver; reconnects on its own). */
  agentFor(vm: VmRecord): AgentClient {
    return this.agents.get(vm);
  }

  /** A byte tunnel to a TCP port of the guest (ssh goes through here). */
  async tunnel(ref: string, port = 22): Promise<Duplex> {
    this.liveness.check();
    const vm = this.table.resolve(ref);
    const s = await openTunnel(vm, port);
    this.tunnels.set(vm.id, (this.tunnels.get(vm.id) ?? 0) + 1);
    s.once('close', () => {
      const n = (this.tunnels.get(vm.id) ?? 1) - 1;
      if (n > 0) this.tunnels.set(vm.id, n);
      else this.tunnels.delete(vm.id);
    });
    return s;
  }

  // ------------------------------------------------------------------ actions

  async create(
    req: CreateRequest,
    emit: ProgressSink,
    signal?: AbortSignal,
    hooks: CreateHooks = {},
  ): Promise<{ vm: VmView; spec: VmSpec }> {
    const plan = await this.creation.prepare(req, emit, signal);
    const w = await this.warm.choose(plan, req, hooks);
    if (w.start === 'warm') {
      // Warm start (warmStart.ts): the shape's boot snapshot restored as this VM.
      const spec: VmSpec = { ...plan.spec, start: 'warm' };
      try {
        const vm = await this.warm.warm(plan, w.snapshot, spec, hooks, emit, signal);
        return { vm: this.view(vm), spec };
      } catch (e) {
        if (signal?.aborted) throw e;
        emit({
          type: 'log',
          level: 'warn',
          message: `warm start from ${w.snapshot.name} failed, booting instead: ${toBangerError(e).message}`,
        });
        this.warm.forget(w.snapshot, 'a warm start from it failed');
      }
    }
    // Booting. The first VM of its shape keeps a boot snapshot at readiness, its content written after.
    const keep = w.start === 'cold' && w.keep;
    const spec: VmSpec = req.start ? { ...plan.spec, start: 'cold' } : plan.spec;
    const { vm } = await this.creation.create(req, emit, signal, hooks, {
      plan,
      spec,
      deferContent: keep,
    });
    let out = vm;
    if (req.start) {
      out = await this.locked(vm.id, async () => {
        const up = await this.boot.startLocked(this.table.current(vm), emit, signal);
        this.table.setMeta(up, { start: { kind: 'cold' } });
        if (!keep) return this.table.current(up);
        await this.warm.keep(this.table.current(up), w, emit, signal);
        try {
          await this.warm.writeContent(this.table.current(up), hooks, emit, signal);
        } catch (e) {
          await this.teardown
            .deleteLocked(this.table.current(up), true, () => undefined)
            .catch(() => undefined);
          throw e;
        }
        return this.table.current(up);
      });
    }
    return { vm: this.view(this.table.get(vm.id) ?? out), spec };
  }

  /** Boot a VM; a suspended one is resumed instead. */
  async start(ref: string, emit: ProgressSink, signal?: AbortSignal): Promise<VmView> {
    return this.view(
      await this.withVm(ref, (vm) =>
        vm.state === 'suspended'
          ? this.suspension.resumeLocked(vm, emit, signal)
          : this.boot.startLocked(vm, emit, signal),
      ),
    );
  }

  /** Stop a VM; a suspended one has its saved state discarded. */
  async stop(ref: string, timeoutMs: number, emit: ProgressSink): Promise<VmView> {
    return this.view(await this.withVm(ref, (vm) => this.stopLocked(vm, timeoutMs, emit)));
  }

  private stopLocked(vm: VmRecord, timeoutMs: number, emit: ProgressSink): Promise<VmRecord> {
    if (vm.state === 'suspended') return Promise.resolve(this.suspension.discardLocked(vm));
    return this.teardown.stopLocked(vm, timeoutMs, emit);
  }

  /** Save a running VM's memory and state to its directory and end its VMM (suspend.ts). */
  async suspend(ref: string, emit: ProgressSink): Promise<VmView> {
    return this.view(await this.withVm(ref, (vm) => this.suspension.suspendLocked(vm, emit)));
  }

  /** A suspended VM running again where it was (suspend.ts). */
  async resume(ref: string, emit: ProgressSink, signal?: AbortSignal): Promise<VmView> {
    return this.view(
      await this.withVm(ref, (vm) => this.suspension.resumeLocked(vm, emit, signal)),
    );
  }

  async restart(
    ref: string,
    timeoutMs: number,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<VmView> {
    return this.view(
      await this.withVm(ref, async (vm) => {
        const stopped = await this.stopLocked(vm, timeoutMs, emit);
        return this.boot.startLocked(stopped, emit, signal);
      }),
    );
  }

  async kill(ref: string, signalName: string): Promise<VmView> {
    return this.view(await this.withVm(ref, (vm) => this.teardown.killLocked(vm, signalName)));
  }

  async delete(ref: string, force: boolean, emit: ProgressSink): Promise<VmView> {
    const gone = await this.withVm(ref, (vm) => this.teardown.deleteLocked(vm, force, emit));
    return { ...this.view(gone), state: 'stopped' };
  }

  async set(ref: string, patch: VmPatch): Promise<VmView> {
    return this.view(await this.withVm(ref, (vm) => this.settings.setLocked(vm, patch)));
  }

  // ------------------------------------------------------------------ snapshots

  /** `vm snapshot`: pause, save, copy the disks, resume (snapshots.ts). */
  async snapshot(
    ref: string,
    name: string | undefined,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<SnapshotView> {
    const s = await this.withVm(ref, (vm) =>
      this.snapshots.takeLocked(vm, { name, kind: 'user' }, emit, signal),
    );
    return this.snapshots.view(s);
  }

  snapshotList(): SnapshotView[] {
    return this.snapshots.list().map((s) => this.snapshots.view(s));
  }

  snapshotShow(ref: string): SnapshotView {
    return this.snapshots.view(this.snapshots.resolve(ref));
  }

  /** `snapshot prune`: remove the boot snapshots (warm start) no restore is using now. */
  snapshotPrune(): { pruned: string[]; freedBytes: number; kept: string[] } {
    return this.warm.prune();
  }

  /** Remove snapshots and their files; refused while one is being restored from. */
  snapshotDelete(ref: string): { deleted: string[] } {
    return { deleted: [this.snapshots.delete(ref).name] };
  }

  /** `vm restore`: a new VM from a snapshot (restore.ts). */
  async restore(
    ref: string,
    name: string | undefined,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<{ vm: VmView; spec: VmSpec }> {
    const snap = this.snapshots.resolve(ref);
    const { vm, spec } = await this.restorer.restore(
      snap,
      { name, origin: { kind: 'restore' } },
      emit,
      signal,
    );
    return { vm: this.view(this.table.get(vm.id) ?? vm), spec };
  }

  /**
   * `vm fork`: a temporary snapshot of the running VM (under its lock), COUNT
   * new VMs restored from it (in parallel), the snapshot removed. The parent
   * keeps running. If any child fails, the others are removed too.
   */
  async fork(
    ref: string,
    o: { name?: string; count: number },
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<{ parent: string; children: { vm: VmView; spec: VmSpec }[] }> {
    const parent = this.table.resolve(ref);
    const taken = new Set(this.table.list().map((v) => v.name));
    const names = forkNames(parent.name, o.name, o.count, taken);
    // Crash-consistent (recoverSnapshots.ts): cut short before every child is there, the
    // children made so far and the temporary snapshot are removed; after, only the snapshot.
    return this.table.journal.run('fork', parent.id, { names }, async (intent) => {
      const snap = await this.withVm(parent.id, (vm) =>
        this.snapshots.takeLocked(
          vm,
          { name: this.snapshots.tempName(vm.name), kind: 'user', meta: { temporary: true } },
          emit,
          signal,
        ),
      );
      try {
        intent.step('after-snapshot', { snapshotId: snap.id });
        const settled = await Promise.allSettled(
          names.map((name) =>
            this.restorer.restore(
              snap,
              {
                name,
                nameSource: o.name ? 'flag' : `fork of ${parent.name}`,
                origin: { kind: 'fork' },
              },
              emit,
              signal,
            ),
          ),
        );
        const failed = settled.find((r) => r.status === 'rejected');
        if (failed) {
          for (const r of settled) {
            if (r.status !== 'fulfilled') continue;
            await this.withVm(r.value.vm.id, (vm) =>
              this.teardown.deleteLocked(vm, true, () => undefined),
            ).catch(() => undefined);
          }
          throw failed.reason;
        }
        intent.step('after-children');
        const children = settled.map((r) => {
          const { vm, spec } = (r as PromiseFulfilledResult<{ vm: VmRecord; spec: VmSpec }>).value;
          return { vm: this.view(this.table.get(vm.id) ?? vm), spec };
        });
        return { parent: parent.name, children };
      } finally {
        try {
          this.snapshots.delete(snap.id);
        } catch (e) {
          this.deps.logger.warn(
            { snapshot: snap.name, err: String(e) },
            'fork: temporary snapshot kept',
          );
        }
      }
    });
  }

  /**
   * The sampler found the VM idle for idleMs (its auto-stop delay is afterMs):
   * unless an operation holds its lock, take it, check again that no ssh
   * session is open (tunnels, the guest's own count), then stop it gracefully
   * and record why (`vm.idle_stop` event, `idleStop` in its view).
   */
  private async stopIdle(vm: VmRecord, idleMs: number, afterMs: number): Promise<void> {
    if (this.deps.locks.isLocked(vmLockKey(vm.id))) return;
    await this.locked(vm.id, async () => {
      const cur = this.table.get(vm.id);
      if (!cur || cur.state !== 'running' || cur.startedAt !== vm.startedAt) return;
      if ((this.tunnels.get(cur.id) ?? 0) > 0) return;
      const guest = await this.agents
        .get(cur)
        .stats({ timeoutMs: 3000 })
        .catch(() => undefined);
      if (!guest || (guest.sshSessions ?? 0) > 0) return;
      this.table.event('vm.idle_stop', cur, { idleMs, afterMs });
      // Recorded before the stop, for this boot: the view says why from the moment it is stopped.
      const marked = this.table.setMeta(cur, { idleStop: { idleMs, startedAt: cur.startedAt } });
      try {
        await this.teardown.stopLocked(marked, IDLE_STOP_TIMEOUT_MS, () => undefined);
      } catch (e) {
        const now = this.table.get(cur.id);
        if (now) this.table.setMeta(now, { idleStop: undefined });
        throw e;
      }
    });
  }

  /**
   * Another service's operation on a running VM (a workspace copy), run under
   * the VM's lock so that no start, stop or delete runs meanwhile. Refused
   * unless the VM is running once the lock is taken.
   */
  whileRunning<T>(ref: string, fn: (vm: VmView) => Promise<T>): Promise<T> {
    return this.withVm(ref, (vm) => {
      const state = vm.state === 'running' && !this.liveness.alive(vm) ? 'gone' : vm.state;
      if (state !== 'running') {
        throw new BangerError('precondition', `vm '${vm.name}' is not running (${state})`, {
          hint: `start it first: banger vm start ${vm.name}`,
        });
      }
      return fn(this.view(vm));
    });
  }

  /** Run one action over several refs concurrently; one failure does not stop the others. */
  async many(
    refs: string[],
    emit: ProgressSink,
    fn: (ref: string) => Promise<VmView>,
  ): Promise<{ results: VmResult[] }> {
    const results = await Promise.all(
      refs.map(async (ref): Promise<VmResult> => {
        let r: VmResult;
        try {
          r = { ref, ok: true, vm: await fn(ref) };
        } catch (e) {
          r = { ref, ok: false, error: toBangerError(e).toJSON() };
        }
        emit({ type: 'item', data: r });
        return r;
      }),
    );
    return { results };
  }

  // ------------------------------------------------------------------ daemon lifecycle

  /**
   * Daemon start, after the journal's recovery (store.journal.recover, which
   * runs recover.ts for VM operations): what no intent names is swept, then
   * VMMs that still run are adopted (see adopt.ts).
   */
  adopt(): Promise<void> {
    this.snapshots.removeOrphans();
    const swept = this.recovery.sweep();
    if (swept.dirs.length || swept.processes.length || swept.knownHosts.length)
      this.deps.logger.info({ swept }, 'VM orphans removed');
    return this.adoption.adopt({ reconcile: this.recovery.takeNetDirty() });
  }

  /** Resolves when every VM adopted at daemon start has settled (for tests and shutdown). */
  adopted(): Promise<void> {
    return this.adoption.settled();
  }

  /** Start the stats sampler and idle auto-stop (sampler.ts); the daemon does, after adopt(). */
  startSampler(): void {
    this.sampler.start();
  }

  /** One sampling round now (tests). */
  sampleNow(): Promise<void> {
    return this.sampler.runOnce();
  }

  /** Notice VMMs that died behind our back. */
  checkLiveness(): void {
    this.liveness.check();
  }

  shutdown(): void {
    this.sampler.stop();
    this.sshConfig.stop();
    this.adoption.shutdown();
    this.liveness.stopMonitor();
    this.agents.closeAll();
  }
}
