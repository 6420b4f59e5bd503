import type { ProgressSink } from '../api/events.js';
import type { Config } from '../config/schema.js';
import { BangerError, toBangerError } from '../errors.js';
import { kernelFeatures, modulesDiskPath } from '../image/kernel/service.js';
import type { Store } from '../store/index.js';
import { nowIso } from '../store/rows.js';
import type { VmRecord } from '../store/vms.js';
import type { ImageRecord } from '../store/images.js';
import type { KernelRecord } from '../store/kernels.js';
import type { Intent } from '../store/journal.js';
import type { Accel, LaunchSpec, VmHandle, VmmDriver } from '../vmm/driver.js';
import { buildLaunchSpec, kernelPathOf } from './launch.js';
import { consoleMark } from './logs.js';
import type { HostProbe, VmmDrivers, VmNetworking } from './needs.js';
import type { VmReadiness } from './ready.js';
import type { VmTable } from './records.js';

/** What starting a VM needs from the rest of the lifecycle. */
export interface BootNeeds {
  table: VmTable;
  store: Pick<Store, 'images' | 'kernels'>;
  drivers: VmmDrivers;
  network: Pick<VmNetworking, 'prepare' | 'started' | 'released'>;
  host: Pick<HostProbe, 'tscKhz'>;
  config(): Pick<Config, 'tcgAslr'>;
  liveness: {
    alive(vm: VmRecord): boolean;
    markGone(vm: VmRecord, state: 'stopped'): Promise<VmRecord>;
  };
  readiness: Pick<VmReadiness, 'bringUp' | 'abandon'>;
}

interface Launched {
  /** The row with its tap. */
  vm: VmRecord;
  launch: LaunchSpec;
  consoleStart: number;
  t0: number;
}

/**
 * Starting a VM: the driver's preflight, the bridge and a tap, the launch
 * spec, the VMM started detached, then readiness (ready.ts). A failure at
 * any step leaves the VM stopped-with-error, its tap released and no VMM.
 */
export class VmBoot {
  constructor(private readonly n: BootNeeds) {}

  /** The caller holds the VM's lock. */
  async startLocked(vm: VmRecord, emit: ProgressSink, signal?: AbortSignal): Promise<VmRecord> {
    if (vm.state === 'running' || vm.state === 'starting') {
      if (this.n.liveness.alive(vm)) return vm;
      vm = await this.n.liveness.markGone(vm, 'stopped');
    }
    const { image, kernel, driver } = await this.preflight(vm);
    // Crash-consistent (recover.ts): until the row records the VMM and its network, the start
    // is journaled; an interrupted one is rolled back (its VMM killed, its tap released).
    const { up, bringUp } = await this.n.table.journal.run('start', vm.id, {}, async (intent) => {
      let handle: VmHandle;
      let launched: Launched;
      try {
        launched = await this.launch(vm, image, kernel, emit, intent);
        emit({
          type: 'step',
          id: 'boot',
          label: `Booting (${driver.name}, ${vm.accel})`,
          state: 'start',
        });
        handle = await driver.start(launched.launch, signal);
        intent.step('after-spawn', {
          pid: handle.pid,
          pidStartTime: handle.pidStartTime,
          controlSocket: handle.controlSocket,
        });
      } catch (e) {
        throw await this.launchFailed(vm, 'error', e, emit);
      }
      const bringUp = {
        driver,
        handle,
        consoleStart: launched.consoleStart,
        bootStart: launched.t0,
        emit,
        signal,
      };
      const up = await this.started(launched.vm, driver, handle, launched);
      intent.step('after-row');
      if (up.netError !== undefined)
        throw await this.n.readiness.abandon(up.vm, bringUp, up.netError);
      intent.step('after-net');
      return { up, bringUp };
    });
    return this.n.readiness.bringUp(up.vm, bringUp);
  }

  /**
   * A suspended VM's VMM from its saved files instead of a boot (suspend.ts):
   * the same preflight, tap and launch spec; `restore` is the driver call.
   * A failure before the VMM runs leaves the VM suspended with the reason;
   * once it runs, the caller brings it up with `bringUp` options of its own.
   */
  async restoreLocked(
    vm: VmRecord,
    emit: ProgressSink,
    restore: (driver: VmmDriver, launch: LaunchSpec) => Promise<VmHandle>,
    intent?: Intent,
  ): Promise<{
    vm: VmRecord;
    driver: VmmDriver;
    handle: VmHandle;
    consoleStart: number;
    t0: number;
  }> {
    const { image, kernel, driver } = await this.preflight(vm);
    let handle: VmHandle;
    let launched: Launched;
    try {
      launched = await this.launch(vm, image, kernel, emit, intent);
      emit({
        type: 'step',
        id: 'boot',
        label: `Resuming (${driver.name}, ${vm.accel})`,
        state: 'start',
      });
      handle = await restore(driver, launched.launch);
      intent?.step('after-spawn', {
        pid: handle.pid,
        pidStartTime: handle.pidStartTime,
        controlSocket: handle.controlSocket,
      });
    } catch (e) {
      throw await this.launchFailed(vm, 'suspended', e, emit);
    }
    const up = await this.started(launched.vm, driver, handle, launched);
    intent?.step('after-starting');
    if (up.netError !== undefined) {
      await driver.kill(handle, 'SIGKILL').catch(() => undefined);
      this.n.table.update(vm.id, { pid: null, pidStartTime: null });
      throw await this.launchFailed(up.vm, 'suspended', up.netError, emit);
    }
    return { vm: up.vm, driver, handle, consoleStart: launched.consoleStart, t0: launched.t0 };
  }

  /** Bridge and tap, then the launch spec (pure). */
  private async launch(
    vm: VmRecord,
    image: ImageRecord,
    kernel: KernelRecord | undefined,
    emit: ProgressSink,
    intent?: Intent,
  ): Promise<Launched> {
    const { table } = this.n;
    const t0 = Date.now();
    emit({ type: 'step', id: 'net', label: 'Preparing network', state: 'start' });
    const net = await this.n.network.prepare(vm);
    vm = table.update(vm.id, { tap: net.tap });
    intent?.step('after-tap', { tap: net.tap });
    emit({
      type: 'step',
      id: 'net',
      label: 'Preparing network',
      state: 'done',
      detail: `${vm.ip} on ${net.tap}`,
      ms: Date.now() - t0,
    });
    const layout = table.layout(vm);
    const consoleStart = consoleMark(layout);
    const launch = buildLaunchSpec({
      vm,
      image,
      kernel,
      modulesDisk: kernel ? modulesDiskPath(kernel) : undefined,
      layout,
      net,
      tscKhz: this.n.host.tscKhz(),
      tcgAslr: this.n.config().tcgAslr,
    });
    return { vm, launch, consoleStart, t0: Date.now() };
  }

  /** No VMM came up: the tap back, the VM left in `state` with the reason. */
  private async launchFailed(
    vm: VmRecord,
    state: 'error' | 'suspended',
    e: unknown,
    emit: ProgressSink,
  ): Promise<unknown> {
    const { table } = this.n;
    const cur = table.get(vm.id) ?? vm;
    await this.n.network.released(cur, () => table.runningNets(vm.id)).catch(() => undefined);
    table.update(vm.id, { state, tap: null, lastError: toBangerError(e).message });
    emit({
      type: 'step',
      id: 'boot',
      label: state === 'error' ? 'Booting' : 'Resuming',
      state: 'fail',
    });
    return e;
  }

  /**
   * The VMM runs: the row says so, then the network rules for it (a failure
   * of those is thrown with the row already `starting`; the caller cleans up).
   */
  private async started(
    vm: VmRecord,
    driver: VmmDriver,
    handle: VmHandle,
    l: Launched,
  ): Promise<{ vm: VmRecord; netError?: unknown }> {
    const { table } = this.n;
    vm = table.update(vm.id, {
      state: 'starting',
      pid: handle.pid,
      pidStartTime: handle.pidStartTime,
      startedAt: nowIso(),
      stoppedAt: null,
      lastError: null,
      meta: {
        ...vm.meta,
        controlSocket: handle.controlSocket,
        stopRequested: false,
        kernelPath: l.launch.kernel.path,
        consoleStart: l.consoleStart,
      },
    });
    table.event('vm.starting', vm, { pid: handle.pid, vmm: driver.name, accel: vm.accel });
    try {
      await this.n.network.started(vm, () => table.runningNets());
      return { vm };
    } catch (e) {
      return { vm, netError: e };
    }
  }

  /** The VM's image, kernel and driver, and the driver's checks of them; nothing changes yet. */
  private async preflight(
    vm: VmRecord,
  ): Promise<{ image: ImageRecord; kernel: KernelRecord | undefined; driver: VmmDriver }> {
    const image = this.n.store.images.get(vm.imageId);
    if (!image)
      throw new BangerError('precondition', `vm '${vm.name}': its image is gone`, {
        hint: 'delete the VM',
      });
    const kernel = vm.kernelName ? this.n.store.kernels.get(vm.kernelName) : undefined;
    if (vm.kernelName && !kernel) {
      throw new BangerError('precondition', `vm '${vm.name}': kernel '${vm.kernelName}' is gone`, {
        hint: `pull it again: banger kernel pull ${vm.kernelName}`,
      });
    }
    const driver = this.n.drivers.driverFor(vm.vmm);
    const accel = (vm.accel ?? 'tcg') as Accel;
    await driver.preflight({
      vmName: vm.name,
      accel,
      accelReason: `vm '${vm.name}' was created with accel = "${accel}"`,
      kernel: kernel
        ? {
            name: kernel.name,
            path: kernelPathOf(vm, image, kernel),
            features: kernelFeatures(kernel),
          }
        : undefined,
    });
    return { image, kernel, driver };
  }
}
