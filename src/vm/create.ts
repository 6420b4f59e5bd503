import fs from 'node:fs';
import type { ProgressSink } from '../api/events.js';
import type { VmSpec, VmView } from '../api/schemas/vms.js';
import type { Paths } from '../config/paths.js';
import type { Config } from '../config/schema.js';
import { resolveVmSizing, type HostFacts } from '../config/vmDefaults.js';
import { BangerError } from '../errors.js';
import { ensureSshKey } from '../guest/ssh.js';
import type { Store } from '../store/index.js';
import type { ImageRecord } from '../store/images.js';
import type { KernelRecord } from '../store/kernels.js';
import type { VmRecord } from '../store/vms.js';
import { MAX_UNIX_SOCKET_PATH } from '../util/socket.js';
import { resolveAccel } from '../vmm/accel.js';
import type { Accel, VmmDriver, VmmName } from '../vmm/driver.js';
import { resolveVmm } from '../vmm/resolve.js';
import type { VmDisks } from './disks.js';
import { insertNewVm } from './newRow.js';
import { resolveFileSync } from './fileSync.js';
import type { HostProbe, ImageSource, KernelSource, VmmDrivers } from './needs.js';
import type { VmLayout } from './layout.js';
import { generateVmName, newVmId, validateVmName } from './names.js';
import type { VmTable } from './records.js';

export interface CreateRequest {
  name?: string;
  image?: string;
  kernel?: string;
  vcpu?: number;
  memoryMib?: number;
  diskSize?: number;
  nat: boolean;
  start: boolean;
  /** Boot even when a boot snapshot could be restored (warm start, service.ts). */
  cold?: boolean;
}

/** Steps other services add to a create (e.g. a workspace written onto the work disk before boot). */
export interface CreateHooks {
  /** Runs after the disks are made and before the first start; a failure undoes the create. */
  populateWorkDisk?: (workDisk: string) => Promise<void>;
  /**
   * The same content written into the running guest instead (through ssh),
   * for a VM that was restored from a boot snapshot or keeps one (warm start):
   * runs under the VM's lock once it is ready; a failure removes the VM.
   */
  populateRunning?: (vm: VmView) => Promise<void>;
}

/** What creating a VM needs from the rest of the daemon. */
export interface CreationNeeds {
  table: VmTable;
  store: Pick<Store, 'db' | 'vms'>;
  paths: Pick<Paths, 'vmsDir' | 'sshKey'>;
  config(): Config;
  hostFacts: HostFacts;
  host: Pick<HostProbe, 'which' | 'kvmFacts'>;
  drivers: VmmDrivers;
  images: ImageSource;
  kernels: KernelSource;
  disks: VmDisks;
  /** Run fn holding the VM's lock (service.ts): the row is visible before its disks exist. */
  locked<T>(vmId: string, fn: () => Promise<T>): Promise<T>;
}

/**
 * `vm create`: the spec with where each value came from (name, sizing, image
 * and kernel — pulled on demand —, VMM, accelerator), the driver's preflight,
 * an address, the row, and the disks. Everything that can be refused is
 * checked before the row exists; a failure while making the disks removes
 * the row and the VM's directory again. Starting is the caller's (boot.ts).
 */
/** Everything decided before anything is made. */
export interface CreatePlan {
  spec: VmSpec;
  name: string;
  vmm: VmmName;
  accel: Accel;
  driver: VmmDriver;
  image: ImageRecord;
  kernel: KernelRecord | undefined;
}

export class VmCreation {
  constructor(private readonly n: CreationNeeds) {}

  async create(
    req: CreateRequest,
    emit: ProgressSink,
    signal?: AbortSignal,
    hooks: CreateHooks = {},
    o: {
      /** Decided already (prepare). */
      plan?: CreatePlan;
      /** The spec line to report (default the plan's). */
      spec?: VmSpec;
      /**
       * Leave [[file_sync]] and populateWorkDisk off the disks: the caller
       * writes them into the running guest (a VM that keeps a boot snapshot).
       */
      deferContent?: boolean;
    } = {},
  ): Promise<{ vm: VmRecord; spec: VmSpec }> {
    const config = this.n.config();
    const plan = o.plan ?? (await this.prepare(req, emit, signal));
    const spec = o.spec ?? plan.spec;
    emit({ type: 'item', data: { kind: 'spec', spec } });
    if (signal?.aborted) throw new BangerError('cancelled', 'vm create was cancelled');

    const id = newVmId();
    const layout = this.n.table.layout({ id });
    this.checkSocketPaths(plan.driver, layout);
    const pubKey = await ensureSshKey(config.sshKeyPath ?? this.n.paths.sshKey);
    const sync = o.deferContent
      ? { files: [], dirs: [], warnings: [] }
      : resolveFileSync(config.fileSync);
    for (const w of sync.warnings) emit({ type: 'log', level: 'warn', message: w });

    const started = Date.now();
    emit({ type: 'step', id: 'disks', label: 'Creating disks', state: 'start' });
    // The row is listed from here on: another client's stop, set or delete of
    // this name waits for its disks (the VM's lock, taken before the row exists).
    // Crash-consistent (recover.ts): an interrupted create is rolled back at the next daemon start.
    const vm = await this.n.locked(id, () =>
      this.n.table.journal.run('create', id, { dir: layout.dir }, async (intent) => {
        const row = this.insert(id, plan, req.nat, config);
        try {
          intent.step('after-row', { name: row.name, ip: row.ip });
          await this.n.disks.make(
            layout,
            {
              image: plan.image,
              sizeBytes: row.diskSize,
              pubKey,
              files: sync.files,
              dirs: sync.dirs,
            },
            signal,
          );
          intent.step('after-disks');
          if (hooks.populateWorkDisk && !o.deferContent) {
            await hooks.populateWorkDisk(layout.workDisk);
            intent.step('after-populate');
          }
        } catch (e) {
          fs.rmSync(layout.dir, { recursive: true, force: true });
          this.n.table.delete(row.id);
          throw e;
        }
        return row;
      }),
    );
    emit({
      type: 'step',
      id: 'disks',
      label: 'Creating disks',
      state: 'done',
      ms: Date.now() - started,
    });
    this.n.table.event('vm.created', vm, { image: plan.image.name, kernel: plan.kernel?.name });
    return { vm, spec };
  }

  /** The name, VMM, accelerator (the driver's preflight), sizing, image and kernel, with where each came from. */
  async prepare(req: CreateRequest, emit: ProgressSink, signal?: AbortSignal): Promise<CreatePlan> {
    const config = this.n.config();
    const taken = new Set(this.n.table.list().map((v) => v.name));
    const name = req.name ? validateVmName(req.name) : generateVmName(taken);
    if (taken.has(name)) {
      throw new BangerError('conflict', `a VM named '${name}' already exists`, {
        hint: 'choose another --name, or delete the old VM',
      });
    }
    const vmm = resolveVmm(config, (c) => this.n.host.which(c));
    if (!vmm.resolved)
      throw new BangerError('tool_missing', `no VMM available: ${vmm.reason}`, {
        hint: 'see `banger doctor`',
      });
    const driver = this.n.drivers.driverFor(vmm.resolved);
    const accel = resolveAccel(config.accel, this.n.host.kvmFacts());
    await driver.preflight({ vmName: name, accel: accel.accel, accelReason: accel.reason });
    if (accel.warning) emit({ type: 'log', level: 'warn', message: accel.warning });
    const sizing = resolveVmSizing(
      { vcpu: req.vcpu, memoryMib: req.memoryMib, diskSize: req.diskSize },
      config.vmDefaults,
      this.n.hostFacts,
    );
    const image = await this.n.images.ensure(req.image ?? config.defaultImageName, emit, signal);
    const kernelName =
      req.kernel ?? image.kernelName ?? (image.kernelPath ? null : config.defaultKernel);
    const kernel = kernelName ? await this.n.kernels.ensure(kernelName, emit, signal) : undefined;
    const spec: VmSpec = {
      name: { value: name, source: req.name ? 'flag' : 'generated' },
      sizing,
      image: { value: image.name, source: req.image ? 'flag' : 'config default_image_name' },
      kernel: {
        value: kernel?.name ?? image.kernelPath ?? '?',
        source: req.kernel
          ? 'flag'
          : image.kernelName || image.kernelPath
            ? 'image'
            : 'config default_kernel',
      },
      vmm: { value: vmm.resolved, source: vmm.reason },
      accel: { value: accel.accel, source: accel.reason },
      nat: req.nat,
    };
    return { spec, name, vmm: vmm.resolved, accel: accel.accel, driver, image, kernel };
  }

  private checkSocketPaths(driver: VmmDriver, layout: VmLayout): void {
    const longest = Math.max(...driver.socketPaths(layout).map((p) => Buffer.byteLength(p)));
    if (longest > MAX_UNIX_SOCKET_PATH) {
      throw new BangerError(
        'precondition',
        `VM socket paths under ${this.n.paths.vmsDir} are too long (${longest} > ${MAX_UNIX_SOCKET_PATH} bytes)`,
        { hint: 'set BANGER_STATE_DIR to a shorter directory' },
      );
    }
  }

  /** The row, with an address allocated in the same transaction. */
  private insert(id: string, p: CreatePlan, nat: boolean, config: Config): VmRecord {
    return insertNewVm(this.n.store, config, {
      id,
      name: p.name,
      imageId: p.image.id,
      kernelName: p.kernel?.name ?? null,
      vmm: p.vmm,
      accel: p.accel,
      vcpu: p.spec.sizing.vcpu.value,
      memoryMib: p.spec.sizing.memoryMib.value,
      diskSize: p.spec.sizing.diskSize.value,
      nat,
      meta: {},
    });
  }
}
