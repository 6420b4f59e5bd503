import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type { ProgressSink } from '../api/events.js';
import type { VmSpec } from '../api/schemas/vms.js';
import type { Config } from '../config/schema.js';
import { BangerError } from '../errors.js';
import type { AgentClient } from '../guest/agentClient.js';
import { ed25519HostKey } from '../guest/hostKey.js';
import { kernelFeatures, modulesDiskPath } from '../image/kernel/service.js';
import { guestMachineId } from '../image/kernel/initScript.js';
import { GUEST_IFACE } from '../network/index.js';
import type { Store } from '../store/index.js';
import { nowIso } from '../store/rows.js';
import type { ImageRecord } from '../store/images.js';
import type { Intent } from '../store/journal.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import type { VmRecord } from '../store/vms.js';
import { parseCidr } from '../util/ipv4.js';
import type { Accel, VmHandle } from '../vmm/driver.js';
import { buildLaunchSpec, kernelPathOf } from './launch.js';
import { insertNewVm } from './newRow.js';
import { consoleMark } from './logs.js';
import { generateVmName, newVmId, validateVmName } from './names.js';
import { checkSaved, factsOf } from './savedState.js';
import type { HostProbe, VmNetworking } from './needs.js';
import type { ReadyFacts, VmReadiness } from './ready.js';
import type { VmTable } from './records.js';
import type { VmSnapshots } from './snapshots.js';

/** Where a restored VM came from (vms.meta.origin). */
export interface VmOrigin {
  kind: 'restore' | 'fork';
  snapshot: string;
  snapshotId: string;
  /** The VM the snapshot was taken of. */
  sourceVm: string;
}

/** `snapshot s1 of dev` / `fork of dev`, for `vm show` and the spec line. */
export function describeOrigin(o: VmOrigin): string {
  return o.kind === 'fork' ? `fork of ${o.sourceVm}` : `snapshot ${o.snapshot} of ${o.sourceVm}`;
}

/** How long a restored guest gets to take its new identity (new host keys, sshd reloaded). */
const IDENTITY_TIMEOUT_MS = 60_000;

/** What restoring a snapshot as a new VM needs from the rest of the lifecycle. */
export interface RestoreNeeds {
  table: VmTable;
  store: Pick<Store, 'db' | 'vms' | 'images' | 'kernels'>;
  config(): Config;
  network: Pick<VmNetworking, 'prepare' | 'started' | 'released'>;
  host: Pick<HostProbe, 'tscKhz'>;
  readiness: Pick<VmReadiness, 'bringUp'>;
  agents: { get(vm: VmRecord): Pick<AgentClient, 'setIdentity'> };
  snapshots: Pick<VmSnapshots, 'snapshotDriver' | 'layout' | 'beginRestore'>;
  copyDisk(src: string, dst: string, signal?: AbortSignal): Promise<void>;
  /** Run fn under the VM's lock. */
  locked<T>(vmId: string, fn: () => Promise<T>): Promise<T>;
  /** Remove a VM that never became ready: VMM, tap, directory, row (teardown). */
  discard(vm: VmRecord): Promise<void>;
}

export interface RestoreRequest {
  /** The new VM's name; default generated like `vm create`'s. */
  name?: string;
  /** What the spec line says about the name when it is given (`flag`, `fork`). */
  nameSource?: string;
  /** What `vm show` says it came from; none for a warm start (its `start` says so instead). */
  origin?: Omit<VmOrigin, 'snapshot' | 'snapshotId' | 'sourceVm'>;
  /** The spec line to report instead of the snapshot's (a warm start reports the create's). */
  spec?: VmSpec;
  /** More for the new row's meta. */
  meta?: Record<string, unknown>;
}

/**
 * `vm restore` (and each child of `vm fork`): a new VM — its own id, name,
 * address, MAC and tap — with copies of the snapshot's disks, started by the
 * driver from the snapshot's memory and device state. Before it is reported
 * ready the guest agent gets the VM's new identity (`set-identity`: clock,
 * entropy, machine-id, hostname, MAC, address, new SSH host keys) and the
 * host keys it answers go to the managed known_hosts like a booted VM's. A
 * restore that fails leaves no VM behind.
 */
export class VmRestore {
  constructor(private readonly n: RestoreNeeds) {}

  async restore(
    snap: SnapshotRecord,
    req: RestoreRequest,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<{ vm: VmRecord; spec: VmSpec }> {
    const { table, store } = this.n;
    const driver = this.n.snapshots.snapshotDriver(
      { name: snap.name, vmm: snap.vmm },
      `snapshot '${snap.name}'`,
    );
    const taken = new Set(table.list().map((v) => v.name));
    const name = req.name ? validateVmName(req.name) : generateVmName(taken);
    if (taken.has(name)) {
      throw new BangerError('conflict', `a VM named '${name}' already exists`, {
        hint: 'choose another --name, or delete the old VM',
      });
    }
    const image = store.images.get(snap.imageId);
    if (!image) {
      throw new BangerError('precondition', `snapshot '${snap.name}': its image is gone`, {
        hint: `delete the snapshot: banger snapshot delete ${snap.name}`,
      });
    }
    const kernel = snap.kernelName ? store.kernels.get(snap.kernelName) : undefined;
    if (snap.kernelName && !kernel) {
      throw new BangerError(
        'precondition',
        `snapshot '${snap.name}': kernel '${snap.kernelName}' is gone`,
        { hint: `pull it again: banger kernel pull ${snap.kernelName}` },
      );
    }
    this.checkFiles(snap, image);
    const accel = snap.accel as Accel;
    await driver.preflight({
      vmName: name,
      accel,
      accelReason: `snapshot '${snap.name}' was taken with accel = "${accel}"`,
      kernel: kernel
        ? {
            name: kernel.name,
            path: kernelPathOf({ name }, image, kernel),
            features: kernelFeatures(kernel),
          }
        : undefined,
    });
    const origin: VmOrigin | undefined = req.origin && {
      ...req.origin,
      snapshot: snap.name,
      snapshotId: snap.id,
      sourceVm: snap.sourceVmName,
    };
    const from = `snapshot ${snap.name}`;
    const spec: VmSpec = req.spec ?? {
      name: { value: name, source: req.name ? (req.nameSource ?? 'flag') : 'generated' },
      sizing: {
        vcpu: { value: snap.vcpu, source: 'snapshot' },
        memoryMib: { value: snap.memoryMib, source: 'snapshot' },
        diskSize: { value: snap.diskSize, source: 'snapshot' },
      },
      image: { value: image.name, source: from },
      kernel: { value: kernel?.name ?? image.kernelPath ?? '?', source: from },
      vmm: { value: snap.vmm, source: from },
      accel: { value: snap.accel, source: from },
      nat: snap.nat,
      ...(origin ? { origin: describeOrigin(origin) } : {}),
    };
    emit({ type: 'item', data: { kind: 'spec', spec } });

    const done = this.n.snapshots.beginRestore(snap, name);
    try {
      // Crash-consistent (recoverSnapshots.ts): until the row records the VMM, an interrupted
      // restore is rolled back (VMM, tap, directory, row); after, adoption finishes it.
      const id = newVmId();
      return await table.journal.run(
        'restore',
        id,
        { name, snapshotId: snap.id },
        async (intent) => {
          const vm = this.insert(id, name, snap, {
            ...req.meta,
            ...(origin ? { origin } : {}),
          });
          intent.step('after-row');
          const l = table.layout(vm);
          const files = this.n.snapshots.layout(snap);
          const t0 = Date.now();
          emit({ type: 'step', id: 'disks', label: 'Copying disks', state: 'start' });
          try {
            fs.mkdirSync(l.dir, { recursive: true, mode: 0o700 });
            await this.n.copyDisk(files.overlay, l.overlayDisk, signal);
            await this.n.copyDisk(files.work, l.workDisk, signal);
          } catch (e) {
            fs.rmSync(l.dir, { recursive: true, force: true });
            table.delete(vm.id);
            emit({ type: 'step', id: 'disks', label: 'Copying disks', state: 'fail' });
            throw e;
          }
          intent.step('after-disks');
          emit({
            type: 'step',
            id: 'disks',
            label: 'Copying disks',
            state: 'done',
            ms: Date.now() - t0,
          });
          table.event('vm.created', vm, {
            snapshot: snap.name,
            origin: origin?.kind ?? snap.kind,
          });
          const ready = await this.n.locked(vm.id, async () => {
            try {
              return await this.start(table.current(vm), snap, driver, emit, intent, signal);
            } catch (e) {
              await this.n.discard(table.get(vm.id) ?? vm).catch(() => undefined);
              throw e;
            }
          });
          return { vm: ready, spec };
        },
      );
    } finally {
      done();
    }
  }

  /**
   * The checks of the saved files before anything is made: present, as long
   * as when they were written, and the image under them not replaced since.
   */
  private checkFiles(snap: SnapshotRecord, image: ImageRecord): void {
    const files = this.n.snapshots.layout(snap);
    checkSaved(
      `snapshot '${snap.name}'`,
      { statePath: files.state, memPath: files.mem },
      factsOf(snap.meta),
      image,
      `it cannot be restored; delete it: banger snapshot delete ${snap.name}`,
    );
  }

  /** The row, with an address allocated in the same transaction. */
  private insert(
    id: string,
    name: string,
    snap: SnapshotRecord,
    meta: Record<string, unknown>,
  ): VmRecord {
    return insertNewVm(this.n.store, this.n.config(), {
      id,
      name,
      imageId: snap.imageId,
      kernelName: snap.kernelName,
      vmm: snap.vmm,
      accel: snap.accel,
      vcpu: snap.vcpu,
      memoryMib: snap.memoryMib,
      diskSize: snap.diskSize,
      nat: snap.nat,
      meta,
    });
  }

  /** Tap, the VMM from the snapshot, the new identity, ready. The caller holds the VM's lock. */
  private async start(
    vm: VmRecord,
    snap: SnapshotRecord,
    driver: ReturnType<VmSnapshots['snapshotDriver']>,
    emit: ProgressSink,
    intent: Intent,
    signal?: AbortSignal,
  ): Promise<VmRecord> {
    const { table, store } = this.n;
    const t0 = Date.now();
    emit({ type: 'step', id: 'net', label: 'Preparing network', state: 'start' });
    const net = await this.n.network.prepare(vm);
    vm = table.update(vm.id, { tap: net.tap });
    intent.step('after-tap', { tap: net.tap, ip: vm.ip });
    emit({
      type: 'step',
      id: 'net',
      label: 'Preparing network',
      state: 'done',
      detail: `${vm.ip} on ${net.tap}`,
      ms: Date.now() - t0,
    });
    const image = store.images.get(vm.imageId)!;
    const kernel = vm.kernelName ? store.kernels.get(vm.kernelName) : undefined;
    const layout = table.layout(vm);
    const consoleStart = consoleMark(layout);
    const label = `Restoring (${driver.name}, ${vm.accel})`;
    const bootStart = Date.now();
    emit({ type: 'step', id: 'boot', label, state: 'start' });
    let handle: VmHandle;
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
    const files = this.n.snapshots.layout(snap);
    try {
      handle = await driver.restore(
        launch,
        { statePath: files.state, memPath: files.mem },
        { signal },
      );
    } catch (e) {
      await this.n.network.released(vm, () => table.runningNets(vm.id)).catch(() => undefined);
      table.update(vm.id, { tap: null });
      emit({ type: 'step', id: 'boot', label, state: 'fail' });
      throw e;
    }
    intent.step('after-spawn', {
      pid: handle.pid,
      pidStartTime: handle.pidStartTime,
      controlSocket: handle.controlSocket,
    });
    const startedAt = nowIso();
    vm = table.update(vm.id, {
      state: 'starting',
      pid: handle.pid,
      pidStartTime: handle.pidStartTime,
      startedAt,
      stoppedAt: null,
      lastError: null,
      meta: {
        ...vm.meta,
        controlSocket: handle.controlSocket,
        stopRequested: false,
        kernelPath: launch.kernel.path,
        consoleStart,
        // this start is a restore: an adopting daemon sends the identity, not a boot wait
        restoredAt: startedAt,
      },
    });
    table.event('vm.starting', vm, { pid: handle.pid, vmm: driver.name, restored: snap.name });
    intent.step('after-starting');
    // The rules for the new tap go in while the guest takes its identity: neither needs the
    // other, and the VM is ready only once both are done.
    const netUp = this.n.network.started(vm, () => table.runningNets());
    const restored = vm;
    return this.n.readiness.bringUp(vm, {
      driver,
      handle,
      consoleStart,
      bootStart,
      emit,
      signal,
      label,
      timeoutMs: IDENTITY_TIMEOUT_MS,
      facts: async () => {
        // Both settle before either failure is thrown: nothing of this start is still running
        // when the VM is abandoned.
        const [id, net] = await Promise.allSettled([this.identity(restored, signal), netUp]);
        if (id.status === 'rejected') throw id.reason;
        if (net.status === 'rejected') throw net.reason;
        intent.step('after-net');
        return id.value;
      },
    });
  }

  /** For a VM adopted while it was being restored: its identity step, if it is a restored VM. */
  factsFor(vm: VmRecord): (() => Promise<ReadyFacts>) | undefined {
    if ((vm.meta as { restoredAt?: string }).restoredAt !== vm.startedAt) return undefined;
    return () => this.identity(vm);
  }

  /** Send the guest its new identity; its answer holds the new host keys. */
  private async identity(vm: VmRecord, signal?: AbortSignal): Promise<ReadyFacts> {
    const agent = this.n.agents.get(vm);
    const config = this.n.config();
    // The ed25519 host key is made here: ssh-keygen in an emulated guest takes ~170 ms.
    // An older agent ignores it and runs ssh-keygen; either way its answer has the key in use.
    const hostKey = ed25519HostKey();
    // The client takes timeMs as the request leaves, after it has dialled.
    const r = await agent.setIdentity(
      {
        hostname: vm.name,
        machineId: guestMachineId(vm.id),
        iface: GUEST_IFACE,
        mac: vm.mac!,
        ip: vm.ip!,
        prefix: parseCidr(config.cidr).prefix,
        gateway: config.bridgeIp,
        entropy: randomBytes(64).toString('hex'),
        hostKeySeed: hostKey.seedHex,
        hostKeyPublic: hostKey.publicHex,
      },
      { timeoutMs: IDENTITY_TIMEOUT_MS, signal },
    );
    return { hostKeys: r.hostKeys };
  }
}
