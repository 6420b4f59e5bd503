import type { ProgressSink } from '../api/events.js';
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
import type { BringUp, VmReadiness } from './ready.js';
import type { VmTable } from './records.js';

/** What starting a VM needs from the rest of the lifecycle. */
export interface BootNeeds {
  table: VmTable;
  store: Pick<Store, 'images' | 'kernels'>;
  drivers: VmmDrivers;
  network: Pick<VmNetworking, 'prepare' | 'started' | 'released'>;
  host: Pick<HostProbe, 'tscKhz'>;
  liveness: {
    alive(vm: VmRecord): boolean;
    markGone(vm: VmRecord, state: 'stopped'): Promise<VmRecord>;
  };
  readiness: Pick<VmReadiness, 'bringUp' | 'abandon'>;
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
    const { table } = this.n;
    if (vm.state === 'running' || vm.state === 'starting') {
      if (this.n.liveness.alive(vm)) return vm;
      vm = await this.n.liveness.markGone(vm, 'stopped');
    }
    const { image, kernel, driver } = await this.preflight(vm);
    // Crash-consistent (recover.ts): until the row records the VMM and its network, the start
    // is journaled; an interrupted one is rolled back (its VMM killed, its tap released).
    const launched = await table.journal.run('start', vm.id, {}, (intent) =>
      this.launch(vm, { image, kernel, driver }, intent, emit, signal),
    );
    return this.n.readiness.bringUp(launched.vm, launched.bringUp);
  }

  /** Network, VMM and row, each step recorded in the start's intent. */
  private async launch(
    vm: VmRecord,
    {
      image,
      kernel,
      driver,
    }: { image: ImageRecord; kernel: KernelRecord | undefined; driver: VmmDriver },
    intent: Intent,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<{ vm: VmRecord; bringUp: BringUp }> {
    const { table } = this.n;
    const t0 = Date.now();
    emit({ type: 'step', id: 'net', label: 'Preparing network', state: 'start' });
    const net = await this.n.network.prepare(vm);
    vm = table.update(vm.id, { tap: net.tap });
    intent.step('after-tap', { tap: net.tap });
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
    let launch: LaunchSpec;
    let handle: VmHandle;
    const bootStart = Date.now();
    try {
      launch = buildLaunchSpec({
        vm,
        image,
        kernel,
        modulesDisk: kernel ? modulesDiskPath(kernel) : undefined,
        layout,
        net,
        tscKhz: this.n.host.tscKhz(),
      });
      emit({
        type: 'step',
        id: 'boot',
        label: `Booting (${driver.name}, ${vm.accel})`,
        state: 'start',
      });
      handle = await driver.start(launch, signal);
      intent.step('after-spawn', {
        pid: handle.pid,
        pidStartTime: handle.pidStartTime,
        controlSocket: handle.controlSocket,
      });
    } catch (e) {
      await this.n.network.released(vm, table.runningNets(vm.id)).catch(() => undefined);
      table.update(vm.id, { state: 'error', tap: null, lastError: toBangerError(e).message });
      emit({ type: 'step', id: 'boot', label: 'Booting', state: 'fail' });
      throw e;
    }
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
        kernelPath: launch.kernel.path,
        consoleStart,
      },
    });
    intent.step('after-row');
    table.event('vm.starting', vm, { pid: handle.pid, vmm: driver.name, accel: vm.accel });
    const bringUp = { driver, handle, consoleStart, bootStart, emit, signal };
    try {
      await this.n.network.started(vm, table.runningNets());
    } catch (e) {
      throw await this.n.readiness.abandon(vm, bringUp, e);
    }
    intent.step('after-net');
    return { vm, bringUp };
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
