import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import type { Duplex } from 'node:stream';
import type { ProgressSink } from '../api/events.js';
import type { VmResult, VmSpec, VmStats, VmView } from '../api/schemas/vms.js';
import { resolveVmSizing, type HostFacts } from '../config/vmDefaults.js';
import type { ServiceDeps } from '../daemon/services.js';
import { BangerError, toBangerError } from '../errors.js';
import { AgentClient } from '../guest/agentClient.js';
import { DISKS, INIT_DONE_MARKER, INIT_ERROR_MARKER } from '../guest/bootContract.js';
import { CMDLINE_NAT } from '../guest/firstboot.js';
import { ensureSshKey, hostAlias, removeKnownHost, setKnownHost } from '../guest/ssh.js';
import type { ImageService } from '../image/service.js';
import { kernelFeatures, modulesDiskPath, type KernelService } from '../image/kernel/service.js';
import { allocateIp, macForVm } from '../network/index.js';
import {
  cloneSparse,
  createSparseExt4,
  growExt4,
  writeFilesExt4,
  type Ext4File,
} from '../storage/ext4.js';
import type { ImageRecord } from '../store/images.js';
import type { KernelRecord } from '../store/kernels.js';
import type { VmRecord, VmState } from '../store/vms.js';
import { nowIso } from '../store/rows.js';
import { which } from '../util/exec.js';
import { isProcessAlive } from '../util/proc.js';
import { hostTscKhz, readKvmFacts, resolveAccel } from '../vmm/accel.js';
import type { DiskSpec, LaunchSpec, VmHandle, VmmDriver, VmmName } from '../vmm/driver.js';
import {
  checkFirecrackerCompat,
  connectVsock,
  AGENT_VSOCK_PORT,
} from '../vmm/firecracker/index.js';
import { kvmError, kvmFailure } from '../vmm/qemu/driver.js';
import { createVmmDriver } from '../vmm/registry.js';
import { resolveVmm } from '../vmm/resolve.js';
import { buildKernelCmdline } from './kernelArgs.js';
import { MAX_SOCKET_PATH, vmLayout, type VmLayout } from './layout.js';
import { generateVmName, newVmId, validateVmName } from './names.js';
import { netOf, VmNetwork } from './net.js';
import { resolveVmRef } from './resolve.js';

/**
 * The VM lifecycle: create, start, stop, restart, kill, delete, set, and the
 * views, logs, stats and ssh tunnel. One VM's operations run one at a time
 * (a per-VM lock); different VMs proceed in parallel. Everything host-side
 * goes through the VMM driver, the storage helpers and VmNetwork.
 */

export interface VmServiceDeps extends ServiceDeps {
  kernels: KernelService;
  images: ImageService;
  host: HostFacts;
  network?: VmNetwork;
}

export interface CreateRequest {
  name?: string;
  image?: string;
  kernel?: string;
  vcpu?: number;
  memoryMib?: number;
  diskSize?: number;
  nat: boolean;
  start: boolean;
}

const ACTIVE: VmState[] = ['starting', 'running', 'stopping'];

/** How long a boot may take before the VM is declared failed. */
const bootTimeoutMs = (accel: string): number => (accel === 'kvm' ? 60_000 : 180_000);
/** A boot whose console and agent show nothing new for this long has hung. */
const BOOT_STALL_MS = 90_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Meta {
  controlSocket?: string;
  bootMs?: number;
  stopRequested?: boolean;
  kernelPath?: string;
}

export class VmService {
  readonly network: VmNetwork;
  private readonly agents = new Map<string, AgentClient>();
  private monitorTimer?: NodeJS.Timeout;
  private readonly cpuSamples = new Map<string, { ticks: number; at: number }>();

  constructor(private readonly deps: VmServiceDeps) {
    this.network = deps.network ?? new VmNetwork(deps.config, deps.logger);
  }

  private get store() {
    return this.deps.store;
  }

  // ------------------------------------------------------------------ views

  layout(vm: Pick<VmRecord, 'id'>): VmLayout {
    return vmLayout(this.deps.paths.vmsDir, vm.id);
  }

  view(vm: VmRecord): VmView {
    const meta = vm.meta as Meta;
    return {
      id: vm.id,
      name: vm.name,
      state: vm.state,
      image: this.store.images.get(vm.imageId)?.name ?? vm.imageId,
      imageId: vm.imageId,
      kernel: vm.kernelName,
      vmm: vm.vmm,
      accel: vm.accel,
      vcpu: vm.vcpu,
      memoryMib: vm.memoryMib,
      diskSize: vm.diskSize,
      nat: vm.nat,
      ip: vm.ip,
      mac: vm.mac,
      tap: vm.tap,
      pid: ACTIVE.includes(vm.state) ? vm.pid : null,
      createdAt: vm.createdAt,
      startedAt: vm.startedAt,
      stoppedAt: vm.stoppedAt,
      lastError: vm.lastError,
      sshHost: hostAlias(vm.name),
      dir: this.layout(vm).dir,
      bootMs: meta.bootMs ?? null,
    };
  }

  list(): VmView[] {
    this.checkLiveness();
    return this.store.vms.list().map((v) => this.view(v));
  }

  resolve(ref: string): VmRecord {
    return resolveVmRef(this.store.vms, ref);
  }

  show(ref: string): VmView {
    this.checkLiveness();
    return this.view(this.resolve(ref));
  }

  private update(id: string, patch: Partial<Omit<VmRecord, 'id' | 'createdAt'>>): VmRecord {
    return this.store.vms.update(id, patch);
  }

  private setMeta(vm: VmRecord, patch: Partial<Meta>): VmRecord {
    return this.update(vm.id, { meta: { ...vm.meta, ...patch } });
  }

  private event(
    kind: string,
    vm: Pick<VmRecord, 'id' | 'name'>,
    data: Record<string, unknown> = {},
  ): void {
    this.store.events.append(kind, { type: 'vm', id: vm.id }, { name: vm.name, ...data });
    this.deps.logger.info({ vm: vm.name, id: vm.id, ...data }, kind);
  }

  // ------------------------------------------------------------------ create

  private driverFor(name: VmmName): VmmDriver {
    return createVmmDriver(name, this.deps.config());
  }

  async create(
    req: CreateRequest,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<{ vm: VmView; spec: VmSpec }> {
    const config = this.deps.config();
    const taken = new Set(this.store.vms.list().map((v) => v.name));
    const name = req.name ? validateVmName(req.name) : generateVmName(taken);
    if (taken.has(name)) {
      throw new BangerError('conflict', `a VM named '${name}' already exists`, {
        hint: 'choose another --name, or delete the old VM',
      });
    }
    const vmm = resolveVmm(config, (c) => which(c));
    if (!vmm.resolved)
      throw new BangerError('tool_missing', `no VMM available: ${vmm.reason}`, {
        hint: 'see `banger doctor`',
      });
    const accel = resolveAccel(config.accel, readKvmFacts());
    if (vmm.resolved === 'firecracker' && accel.accel !== 'kvm') {
      throw new BangerError('precondition', `firecracker needs KVM, but ${accel.reason}`, {
        hint: 'set vmm = "qemu" in config.toml to use software emulation',
      });
    }
    if (accel.warning) emit({ type: 'log', level: 'warn', message: accel.warning });
    const sizing = resolveVmSizing(
      { vcpu: req.vcpu, memoryMib: req.memoryMib, diskSize: req.diskSize },
      config.vmDefaults,
      this.deps.host,
    );
    const imageName = req.image ?? config.defaultImageName;
    const image = await this.deps.images.ensure(imageName, emit, signal);
    const kernelName =
      req.kernel ?? image.kernelName ?? (image.kernelPath ? null : config.defaultKernel);
    const kernel = kernelName
      ? await this.deps.kernels.ensure(kernelName, emit, signal)
      : undefined;
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
    emit({ type: 'item', data: { kind: 'spec', spec } });
    if (signal?.aborted) throw new BangerError('cancelled', 'vm create was cancelled');

    const id = newVmId();
    const layout = this.layout({ id });
    const socketLen = Math.max(
      layout.agentSocket.length,
      layout.qmpSocket.length,
      layout.firecrackerSocket.length,
    );
    if (socketLen > MAX_SOCKET_PATH) {
      throw new BangerError(
        'precondition',
        `VM socket paths under ${this.deps.paths.vmsDir} are too long (${socketLen} > ${MAX_SOCKET_PATH} bytes)`,
        {
          hint: 'set BANGER_STATE_DIR to a shorter directory',
        },
      );
    }
    const keyPath = config.sshKeyPath ?? this.deps.paths.sshKey;
    const pubKey = await ensureSshKey(keyPath);
    const syncFiles = this.fileSyncFiles();

    let vm: VmRecord;
    const started = Date.now();
    emit({ type: 'step', id: 'disks', label: 'Creating disks', state: 'start' });
    try {
      vm = this.store.db.transaction(() => {
        const ip = allocateIp({
          cidr: config.cidr,
          bridgeIp: config.bridgeIp,
          used: this.store.vms.usedIps(),
        });
        return this.store.vms.insert({
          id,
          name,
          imageId: image.id,
          kernelName: kernel?.name ?? null,
          state: 'created',
          vmm: vmm.resolved!,
          accel: accel.accel,
          vcpu: sizing.vcpu.value,
          memoryMib: sizing.memoryMib.value,
          diskSize: sizing.diskSize.value,
          nat: req.nat,
          ip,
          mac: macForVm(id),
          tap: null,
          pid: null,
          pidStartTime: null,
          lastError: null,
          meta: {},
          startedAt: null,
          stoppedAt: null,
        });
      })();
    } catch (e) {
      if (/UNIQUE constraint failed: vms.name/.test((e as Error).message)) {
        throw new BangerError('conflict', `a VM named '${name}' already exists`, {
          hint: 'choose another --name',
        });
      }
      throw e;
    }
    try {
      await this.makeDisks(vm, image, pubKey, syncFiles, signal);
    } catch (e) {
      fs.rmSync(layout.dir, { recursive: true, force: true });
      this.store.vms.delete(vm.id);
      throw e;
    }
    emit({
      type: 'step',
      id: 'disks',
      label: 'Creating disks',
      state: 'done',
      ms: Date.now() - started,
    });
    this.event('vm.created', vm, { image: image.name, kernel: kernel?.name });
    if (req.start) {
      vm = await this.deps.locks.run(vm.id, () =>
        this.startLocked(this.store.vms.get(id)!, emit, signal),
      );
    }
    return { vm: this.view(this.store.vms.get(id) ?? vm), spec };
  }

  private fileSyncFiles(): Ext4File[] {
    const out: Ext4File[] = [];
    this.deps.config().fileSync.forEach((f, i) => {
      if (!fs.existsSync(f.host) || !fs.statSync(f.host).isFile()) {
        throw new BangerError(
          'precondition',
          `[[file_sync]] entry ${i + 1}: host file ${f.host} does not exist`,
          {
            hint: `create it or remove the entry from ${this.deps.paths.configFile}`,
          },
        );
      }
      out.push({
        path: f.guest.replace(/^\/root\//, '/'),
        hostPath: f.host,
        mode: f.mode,
        uid: 0,
        gid: 0,
      });
    });
    return out;
  }

  private async makeDisks(
    vm: VmRecord,
    image: ImageRecord,
    pubKey: string,
    syncFiles: Ext4File[],
    signal?: AbortSignal,
  ): Promise<void> {
    const l = this.layout(vm);
    fs.mkdirSync(l.dir, { recursive: true, mode: 0o700 });
    // Copy-on-write for /: an empty sparse ext4; the guest's /init stacks it over the read-only base.
    await createSparseExt4(l.overlayDisk, vm.diskSize, { label: DISKS.overlay.label, signal });
    // /root: the image's seed, cloned sparsely and grown; else a fresh filesystem.
    if (image.workSeedPath) {
      await cloneSparse(image.workSeedPath, l.workDisk, signal);
      await growExt4(l.workDisk, vm.diskSize, signal);
    } else {
      await createSparseExt4(l.workDisk, vm.diskSize, { label: DISKS.work.label, signal });
    }
    await writeFilesExt4(
      l.workDisk,
      [
        { path: '/.ssh/authorized_keys', content: `${pubKey}\n`, mode: 0o600, uid: 0, gid: 0 },
        ...syncFiles,
      ],
      [
        { path: '/', mode: 0o700, uid: 0, gid: 0 },
        { path: '/.ssh', mode: 0o700, uid: 0, gid: 0 },
      ],
      signal,
    );
  }

  // ------------------------------------------------------------------ start

  private launchSpec(
    vm: VmRecord,
    image: ImageRecord,
    kernel: KernelRecord | undefined,
    net: { tap: string; ipArg?: string },
  ): LaunchSpec {
    const l = this.layout(vm);
    const driverName = vm.vmm as VmmName;
    let kernelPath: string;
    if (kernel) {
      kernelPath =
        driverName === 'firecracker'
          ? (kernel.vmlinuxPath ?? kernel.kernelPath)
          : (kernel.vmlinuxPath ?? kernel.kernelPath);
    } else if (image.kernelPath) {
      kernelPath = image.kernelPath;
    } else {
      throw new BangerError('precondition', `vm '${vm.name}' has no kernel`, {
        hint: 'pass --kernel, or register the image with --kernel-ref',
      });
    }
    const initrd = kernel?.initrdPath ?? image.initrdPath ?? undefined;
    const disks: DiskSpec[] = [
      { id: 'base', path: image.rootfsPath, readOnly: true },
      { id: 'overlay', path: l.overlayDisk, readOnly: false },
      { id: 'work', path: l.workDisk, readOnly: false },
    ];
    const modulesDisk = kernel ? modulesDiskPath(kernel) : undefined;
    if (modulesDisk) disks.push({ id: 'modules', path: modulesDisk, readOnly: true });
    // Container images without systemd/sshd boot through banger's first-boot step (image meta `init`).
    const init = typeof image.meta.init === 'string' ? image.meta.init : undefined;
    const cmdline = buildKernelCmdline({
      vmId: vm.id,
      ipArg: net.ipArg,
      accel: (vm.accel ?? 'tcg') as 'kvm' | 'tcg',
      tscKhz: hostTscKhz(),
      extra: [...(init ? [`init=${init}`] : []), ...(vm.nat ? [CMDLINE_NAT] : [])],
    });
    return {
      vmId: vm.id,
      name: vm.name,
      dir: l.dir,
      vcpu: vm.vcpu,
      memoryMib: vm.memoryMib,
      accel: (vm.accel ?? 'tcg') as 'kvm' | 'tcg',
      kernel: { path: kernelPath, initrd, cmdline },
      disks,
      net: vm.mac ? { tap: net.tap, mac: vm.mac } : undefined,
      agentSocket: l.agentSocket,
      consoleLog: l.consoleLog,
      vmmLog: l.vmmLog,
    };
  }

  private runningNets(except?: string): ReturnType<typeof netOf>[] {
    return this.store.vms
      .list()
      .filter((v) => v.id !== except && ACTIVE.includes(v.state) && v.ip)
      .map(netOf);
  }

  /** The agent channel of a VM (one per VM: QEMU serves one client per socket). */
  agentFor(vm: VmRecord): AgentClient {
    let a = this.agents.get(vm.id);
    if (!a) {
      const label = `vm '${vm.name}'`;
      if (vm.vmm === 'firecracker') {
        const sock = this.layout(vm).agentSocket;
        a = AgentClient.fromDialer(
          (signal) =>
            connectVsock(sock, AGENT_VSOCK_PORT, { vmName: vm.name, timeoutMs: 2000, signal }),
          {
            label,
            isRetryable: () => true,
          },
        );
      } else {
        a = AgentClient.unix(this.layout(vm).agentSocket, { label });
      }
      a.on('disconnect', () => undefined);
      this.agents.set(vm.id, a);
    }
    return a;
  }

  private dropAgent(vmId: string): void {
    this.agents.get(vmId)?.close();
    this.agents.delete(vmId);
  }

  private async startLocked(
    vm: VmRecord,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<VmRecord> {
    if (vm.state === 'running' || vm.state === 'starting') {
      if (this.alive(vm)) return vm;
      vm = await this.markGone(vm, 'stopped');
    }
    const image = this.store.images.get(vm.imageId);
    if (!image)
      throw new BangerError('precondition', `vm '${vm.name}': its image is gone`, {
        hint: 'delete the VM',
      });
    const kernel = vm.kernelName ? this.store.kernels.get(vm.kernelName) : undefined;
    if (vm.kernelName && !kernel) {
      throw new BangerError('precondition', `vm '${vm.name}': kernel '${vm.kernelName}' is gone`, {
        hint: `pull it again: banger kernel pull ${vm.kernelName}`,
      });
    }
    const driver = this.driverFor(vm.vmm as VmmName);
    if (driver.name === 'firecracker' && kernel) {
      await checkFirecrackerCompat({
        kernel: {
          name: kernel.name,
          path: kernel.vmlinuxPath ?? kernel.kernelPath,
          features: kernelFeatures(kernel) ?? { virtioMmioCmdline: false },
        },
        version: await driver.version(),
      });
    }
    const t0 = Date.now();
    emit({ type: 'step', id: 'net', label: 'Preparing network', state: 'start' });
    const net = await this.network.prepare(vm);
    vm = this.update(vm.id, { tap: net.tap });
    emit({
      type: 'step',
      id: 'net',
      label: 'Preparing network',
      state: 'done',
      detail: `${vm.ip} on ${net.tap}`,
      ms: Date.now() - t0,
    });

    const l = this.layout(vm);
    fs.appendFileSync(l.consoleLog, '');
    const consoleStart = fs.statSync(l.consoleLog).size;
    const launch = this.launchSpec(vm, image, kernel, net);
    emit({
      type: 'step',
      id: 'boot',
      label: `Booting (${driver.name}, ${vm.accel})`,
      state: 'start',
    });
    const bootStart = Date.now();
    let handle: VmHandle;
    try {
      handle = await driver.start(launch, signal);
    } catch (e) {
      await this.network.released(vm, this.runningNets(vm.id)).catch(() => undefined);
      this.update(vm.id, { state: 'error', tap: null, lastError: toBangerError(e).message });
      emit({ type: 'step', id: 'boot', label: 'Booting', state: 'fail' });
      throw e;
    }
    vm = this.update(vm.id, {
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
      },
    });
    this.event('vm.starting', vm, { pid: handle.pid, vmm: driver.name, accel: vm.accel });
    try {
      await this.network.started(vm, this.runningNets());
      const ready = await this.waitForBoot(vm, handle, consoleStart, emit, signal);
      setKnownHost(this.deps.paths.knownHosts, hostAlias(vm.name), ready.hostKeys);
      const bootMs = Date.now() - bootStart;
      vm = this.update(vm.id, { state: 'running', meta: { ...vm.meta, bootMs } });
      emit({
        type: 'step',
        id: 'boot',
        label: `Booting (${driver.name}, ${vm.accel})`,
        state: 'done',
        detail: 'ssh ready',
        ms: bootMs,
      });
      this.event('vm.running', vm, { bootMs });
      this.ensureMonitor();
      return vm;
    } catch (e) {
      const err = toBangerError(e);
      emit({ type: 'step', id: 'boot', label: 'Booting', state: 'fail', detail: err.message });
      await driver.kill(handle, 'SIGKILL').catch(() => undefined);
      this.dropAgent(vm.id);
      await this.network.released(vm, this.runningNets(vm.id)).catch(() => undefined);
      this.update(vm.id, {
        state: 'error',
        pid: null,
        tap: null,
        stoppedAt: nowIso(),
        lastError: err.message,
      });
      this.event('vm.boot_failed', vm, { error: err.message });
      throw err;
    }
  }

  /**
   * Wait for the guest agent's readiness signal (sshd listening, host keys),
   * while watching the VMM process, the console and the VMM log for failures.
   */
  private async waitForBoot(
    vm: VmRecord,
    handle: VmHandle,
    consoleStart: number,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<{ hostKeys: string[] }> {
    const l = this.layout(vm);
    const agent = this.agentFor(vm);
    const ac = new AbortController();
    const onAbort = (): void => ac.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const timeoutMs = bootTimeoutMs(vm.accel ?? 'tcg');
    const ready = agent.waitReady({ timeoutMs, signal: ac.signal });
    let failure: BangerError | undefined;
    let lastSize = consoleStart;
    let lastProgress = Date.now();
    const milestones: [RegExp | string, string][] = [
      [INIT_DONE_MARKER, 'init done, starting systemd'],
      ['banger-agent: started', 'guest agent started'],
    ];
    const seen = new Set<string>();
    const watch = (async () => {
      while (!ac.signal.aborted) {
        await sleep(250);
        if (ac.signal.aborted) return;
        const found = this.bootFailure(vm, handle, consoleStart);
        if (found) {
          failure = found;
          ac.abort();
          return;
        }
        const size = fileSize(l.consoleLog);
        if (size !== lastSize) {
          lastSize = size;
          lastProgress = Date.now();
          const text = readFrom(l.consoleLog, consoleStart);
          for (const [pat, label] of milestones) {
            if (!seen.has(label) && text.includes(pat as string)) {
              seen.add(label);
              emit({ type: 'log', level: 'debug', message: `${vm.name}: ${label}` });
            }
          }
        } else if (Date.now() - lastProgress > BOOT_STALL_MS && !agent.connected) {
          failure = new BangerError(
            'boot_failed',
            `vm '${vm.name}': boot made no progress for ${BOOT_STALL_MS / 1000}s${lastConsoleLine(l.consoleLog, consoleStart)}`,
            {
              hint: `see \`banger vm logs ${vm.name}\``,
            },
          );
          ac.abort();
          return;
        }
      }
    })();
    try {
      const r = await ready;
      return { hostKeys: r.hostKeys };
    } catch (e) {
      // The agent channel often notices a dead guest first: let the console and the process say why.
      failure ??= this.bootFailure(vm, handle, consoleStart);
      if (failure) throw failure;
      if (signal?.aborted)
        throw new BangerError('cancelled', `starting vm '${vm.name}' was cancelled`);
      const err = toBangerError(e);
      if (err.code === 'timeout') {
        throw new BangerError(
          'timeout',
          `vm '${vm.name}' did not become ready within ${timeoutMs / 1000}s${lastConsoleLine(l.consoleLog, consoleStart)}`,
          {
            hint: `see \`banger vm logs ${vm.name}\``,
            details: { bootTimeout: true },
          },
        );
      }
      throw err;
    } finally {
      ac.abort();
      signal?.removeEventListener('abort', onAbort);
      await watch;
    }
  }

  /** Why a boot failed, when the console or the VMM process says so; undefined while it looks healthy. */
  private bootFailure(
    vm: VmRecord,
    handle: VmHandle,
    consoleStart: number,
  ): BangerError | undefined {
    const l = this.layout(vm);
    const text = readFrom(l.consoleLog, consoleStart);
    const err = text.indexOf(INIT_ERROR_MARKER);
    if (err >= 0) {
      const line = text
        .slice(err + INIT_ERROR_MARKER.length)
        .split('\n')[0]!
        .trim();
      return new BangerError('boot_failed', `vm '${vm.name}': banger's init failed: ${line}`, {
        hint: `see \`banger vm logs ${vm.name}\``,
      });
    }
    if (!isProcessAlive(handle.pid, handle.pidStartTime)) {
      const kvm = kvmFailure(tail(l.vmmLog));
      return kvm
        ? kvmError(vm.name, kvm)
        : new BangerError(
            'boot_failed',
            `vm '${vm.name}': the VMM exited during boot${lastConsoleLine(l.consoleLog, consoleStart)}`,
            {
              hint: `see \`banger vm logs ${vm.name}\``,
            },
          );
    }
    return undefined;
  }

  // ------------------------------------------------------------------ liveness

  private handleOf(vm: VmRecord): VmHandle | undefined {
    const meta = vm.meta as Meta;
    if (!vm.pid || !meta.controlSocket) return undefined;
    return { pid: vm.pid, pidStartTime: vm.pidStartTime ?? 0, controlSocket: meta.controlSocket };
  }

  private alive(vm: VmRecord): boolean {
    return vm.pid !== null && isProcessAlive(vm.pid, vm.pidStartTime);
  }

  /**
   * The VMM is gone: record it (synchronously, so readers see it at once) and
   * release the VM's tap and firewall rules; resolves once they are released.
   */
  private async markGone(
    vm: VmRecord,
    state: 'stopped' | 'crashed',
    error?: string,
  ): Promise<VmRecord> {
    this.dropAgent(vm.id);
    const updated = this.update(vm.id, {
      state,
      pid: null,
      pidStartTime: null,
      tap: null,
      stoppedAt: nowIso(),
      lastError: error ?? vm.lastError,
    });
    this.event(state === 'crashed' ? 'vm.crashed' : 'vm.stopped', vm, error ? { error } : {});
    await this.network
      .released(vm, this.runningNets(vm.id))
      .catch((e) => this.deps.logger.warn({ err: e }, 'network release failed'));
    return updated;
  }

  /** Notice VMMs that died behind our back (kill -9, OOM, guest poweroff). */
  checkLiveness(): void {
    for (const vm of this.store.vms.list()) {
      if (!ACTIVE.includes(vm.state) || this.deps.locks.isLocked(vm.id)) continue;
      if (this.alive(vm)) continue;
      const meta = vm.meta as Meta;
      const log = tail(this.layout(vm).consoleLog, 4096);
      const poweredOff = /reboot: Power down|System halted/.test(log);
      if (meta.stopRequested || poweredOff) void this.markGone(vm, 'stopped');
      else
        void this.markGone(
          vm,
          'crashed',
          'the VMM process exited unexpectedly (see `banger vm logs`)',
        );
    }
  }

  private ensureMonitor(): void {
    if (this.monitorTimer) return;
    this.monitorTimer = setInterval(() => {
      try {
        this.checkLiveness();
        if (!this.store.vms.list().some((v) => ACTIVE.includes(v.state))) {
          clearInterval(this.monitorTimer);
          this.monitorTimer = undefined;
        }
      } catch (e) {
        this.deps.logger.warn({ err: e }, 'liveness check failed');
      }
    }, 1000);
    this.monitorTimer.unref();
  }

  /**
   * Daemon start: VMs whose VMM still runs are adopted, vanished ones are
   * marked stopped, and bridge/taps/rules are made to match.
   */
  async adopt(): Promise<void> {
    let anyNet = false;
    for (const vm of this.store.vms.list()) {
      if (vm.tap) anyNet = true;
      if (!ACTIVE.includes(vm.state)) continue;
      if (this.alive(vm)) {
        if (vm.state !== 'running') this.update(vm.id, { state: 'running' });
        this.deps.logger.info({ vm: vm.name, pid: vm.pid }, 'adopted running VM');
      } else {
        await this.markGone(vm, 'stopped');
      }
    }
    const running = this.runningNets();
    if (running.length > 0 || anyNet) await this.network.reconcile(running);
    if (running.length > 0) this.ensureMonitor();
  }

  shutdown(): void {
    if (this.monitorTimer) clearInterval(this.monitorTimer);
    for (const id of [...this.agents.keys()]) this.dropAgent(id);
  }

  // ------------------------------------------------------------------ actions

  async start(ref: string, emit: ProgressSink, signal?: AbortSignal): Promise<VmView> {
    const vm = this.resolve(ref);
    return this.view(
      await this.deps.locks.run(vm.id, () =>
        this.startLocked(this.store.vms.get(vm.id)!, emit, signal),
      ),
    );
  }

  private async stopLocked(vm: VmRecord, timeoutMs: number, emit: ProgressSink): Promise<VmRecord> {
    if (!ACTIVE.includes(vm.state)) return vm;
    const handle = this.handleOf(vm);
    if (!handle || !this.alive(vm)) return this.markGone(vm, 'stopped');
    vm = this.update(vm.id, { state: 'stopping', meta: { ...vm.meta, stopRequested: true } });
    const t0 = Date.now();
    emit({ type: 'step', id: `stop:${vm.name}`, label: `Stopping ${vm.name}`, state: 'start' });
    // Ask the guest first (works at any boot stage once the agent runs); the VMM's power button too.
    const agent = this.agents.get(vm.id);
    if (agent?.connected) await agent.poweroff({ timeoutMs: 2000 }).catch(() => undefined);
    const { graceful } = await this.driverFor(vm.vmm as VmmName).stop(handle, { timeoutMs });
    vm = await this.markGone(this.store.vms.get(vm.id)!, 'stopped');
    emit({
      type: 'step',
      id: `stop:${vm.name}`,
      label: `Stopping ${vm.name}`,
      state: 'done',
      detail: graceful ? 'guest powered off' : `killed after ${timeoutMs / 1000}s`,
      ms: Date.now() - t0,
    });
    return vm;
  }

  async stop(ref: string, timeoutMs: number, emit: ProgressSink): Promise<VmView> {
    const vm = this.resolve(ref);
    return this.view(
      await this.deps.locks.run(vm.id, () =>
        this.stopLocked(this.store.vms.get(vm.id)!, timeoutMs, emit),
      ),
    );
  }

  async restart(
    ref: string,
    timeoutMs: number,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<VmView> {
    const vm = this.resolve(ref);
    return this.view(
      await this.deps.locks.run(vm.id, async () => {
        const stopped = await this.stopLocked(this.store.vms.get(vm.id)!, timeoutMs, emit);
        return this.startLocked(stopped, emit, signal);
      }),
    );
  }

  async kill(ref: string, signalName: string): Promise<VmView> {
    const sig = (signalName.startsWith('SIG') ? signalName : `SIG${signalName}`) as NodeJS.Signals;
    const vm = this.resolve(ref);
    return this.view(
      await this.deps.locks.run(vm.id, async () => {
        const cur = this.store.vms.get(vm.id)!;
        const handle = this.handleOf(cur);
        if (!ACTIVE.includes(cur.state) || !handle) {
          throw new BangerError('precondition', `vm '${cur.name}' is not running (${cur.state})`, {
            hint: `start it with \`banger vm start ${cur.name}\``,
          });
        }
        if (!(sig in os.constants.signals)) {
          throw new BangerError('usage', `unknown signal '${signalName}'`, {
            hint: 'use e.g. SIGKILL, SIGTERM, SIGINT',
          });
        }
        this.setMeta(cur, { stopRequested: true });
        await this.driverFor(cur.vmm as VmmName).kill(handle, sig);
        const after = this.store.vms.get(vm.id)!;
        return this.alive(after) ? after : this.markGone(after, 'stopped');
      }),
    );
  }

  async delete(ref: string, force: boolean, emit: ProgressSink): Promise<VmView> {
    const vm = this.resolve(ref);
    return this.deps.locks.run(vm.id, async () => {
      let cur = this.store.vms.get(vm.id)!;
      if (ACTIVE.includes(cur.state) && this.alive(cur)) {
        if (!force) {
          throw new BangerError('precondition', `vm '${cur.name}' is running`, {
            hint: `stop it first (banger vm stop ${cur.name}) or use --force`,
          });
        }
        const handle = this.handleOf(cur);
        this.setMeta(cur, { stopRequested: true });
        if (handle) await this.driverFor(cur.vmm as VmmName).kill(handle, 'SIGKILL');
        cur = await this.markGone(this.store.vms.get(vm.id)!, 'stopped');
      } else if (ACTIVE.includes(cur.state)) {
        cur = await this.markGone(cur, 'stopped');
      }
      const view = this.view(cur);
      fs.rmSync(this.layout(cur).dir, { recursive: true, force: true });
      removeKnownHost(this.deps.paths.knownHosts, hostAlias(cur.name));
      this.store.vms.delete(cur.id);
      this.cpuSamples.delete(cur.id);
      this.event('vm.deleted', cur);
      emit({ type: 'log', level: 'debug', message: `deleted ${cur.name}` });
      return { ...view, state: 'stopped' as const };
    });
  }

  async set(
    ref: string,
    patch: { vcpu?: number; memoryMib?: number; diskSize?: number; nat?: boolean },
  ): Promise<VmView> {
    const vm = this.resolve(ref);
    return this.view(
      await this.deps.locks.run(vm.id, async () => {
        const cur = this.store.vms.get(vm.id)!;
        const running = ACTIVE.includes(cur.state) && this.alive(cur);
        const sizing =
          patch.vcpu !== undefined || patch.memoryMib !== undefined || patch.diskSize !== undefined;
        if (sizing && running) {
          throw new BangerError(
            'precondition',
            `vm '${cur.name}' is running: vcpu, memory and disk size change only while it is stopped`,
            {
              hint: `stop it first: banger vm stop ${cur.name}`,
            },
          );
        }
        if (patch.diskSize !== undefined && patch.diskSize < cur.diskSize) {
          throw new BangerError(
            'usage',
            `vm '${cur.name}': disks only grow (now ${cur.diskSize} bytes, asked ${patch.diskSize})`,
            {
              hint: 'pass a --disk-size at least as large as the current one',
            },
          );
        }
        if (patch.diskSize !== undefined && patch.diskSize > cur.diskSize) {
          const l = this.layout(cur);
          await growExt4(l.workDisk, patch.diskSize);
          await growExt4(l.overlayDisk, patch.diskSize);
        }
        const next = this.update(cur.id, {
          vcpu: patch.vcpu ?? cur.vcpu,
          memoryMib: patch.memoryMib ?? cur.memoryMib,
          diskSize: patch.diskSize ?? cur.diskSize,
          nat: patch.nat ?? cur.nat,
        });
        if (patch.nat !== undefined && patch.nat !== cur.nat && running)
          await this.network.applyNat(this.runningNets());
        this.event('vm.updated', next, patch);
        return next;
      }),
    );
  }

  /** Run one action over several refs concurrently; one failure does not stop the others. */
  async many(
    refs: string[],
    emit: ProgressSink,
    fn: (ref: string) => Promise<VmView>,
  ): Promise<{ results: VmResult[] }> {
    const results = await Promise.all(
      refs.map(async (ref): Promise<VmResult> => {
        try {
          const vm = await fn(ref);
          const r: VmResult = { ref, ok: true, vm };
          emit({ type: 'item', data: r });
          return r;
        } catch (e) {
          const r: VmResult = { ref, ok: false, error: toBangerError(e).toJSON() };
          emit({ type: 'item', data: r });
          return r;
        }
      }),
    );
    return { results };
  }

  // ------------------------------------------------------------------ io

  /** A byte tunnel to a TCP port of the guest (ssh goes through here). */
  async tunnel(ref: string, port = 22): Promise<Duplex> {
    this.checkLiveness();
    const vm = this.resolve(ref);
    if (vm.state !== 'running' || !vm.ip) {
      throw new BangerError('precondition', `vm '${vm.name}' is ${vm.state}, not running`, {
        hint: `start it with \`banger vm start ${vm.name}\``,
      });
    }
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: vm.ip!, port });
      const t = setTimeout(() => {
        s.destroy();
        reject(
          new BangerError('timeout', `vm '${vm.name}': no answer from ${vm.ip}:${port}`, {
            hint: `see \`banger vm logs ${vm.name}\``,
          }),
        );
      }, 10_000);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(
          new BangerError(
            'network',
            `vm '${vm.name}': cannot connect to ${vm.ip}:${port}: ${e.message}`,
            { hint: `see \`banger vm logs ${vm.name}\`` },
          ),
        );
      });
    });
  }

  logFiles(ref: string): { vm: VmRecord; console: string; vmm: string } {
    const vm = this.resolve(ref);
    const l = this.layout(vm);
    return { vm, console: l.consoleLog, vmm: l.vmmLog };
  }

  async stats(refs: string[]): Promise<VmStats[]> {
    this.checkLiveness();
    const vms = refs.length
      ? refs.map((r) => this.resolve(r))
      : this.store.vms.list().filter((v) => ACTIVE.includes(v.state));
    return Promise.all(vms.map((vm) => this.statsOf(vm)));
  }

  private async statsOf(vm: VmRecord): Promise<VmStats> {
    const l = this.layout(vm);
    const blocks = (f: string): number => {
      try {
        return fs.statSync(f).blocks * 512;
      } catch {
        return 0;
      }
    };
    const size = (f: string): number => {
      try {
        return fs.statSync(f).size;
      } catch {
        return 0;
      }
    };
    let cpuPercent: number | null = null;
    let rssBytes: number | null = null;
    let guest: VmStats['guest'] = null;
    if (vm.state === 'running' && vm.pid && this.alive(vm)) {
      const p = procStat(vm.pid);
      if (p) {
        rssBytes = p.rssBytes;
        const prev = this.cpuSamples.get(vm.id);
        const now = { ticks: p.ticks, at: Date.now() };
        if (!prev) {
          await sleep(300);
          const again = procStat(vm.pid);
          if (again) {
            cpuPercent = (((again.ticks - p.ticks) / 100) * 1000 * 100) / 300;
            now.ticks = again.ticks;
            now.at = Date.now();
          }
        } else if (now.at > prev.at) {
          cpuPercent = (((now.ticks - prev.ticks) / 100) * 1000 * 100) / (now.at - prev.at);
        }
        this.cpuSamples.set(vm.id, now);
      }
      try {
        const s = await this.agentFor(vm).stats({ timeoutMs: 3000 });
        guest = {
          memTotalBytes: s.memTotalKib * 1024,
          memAvailableBytes: s.memAvailableKib * 1024,
          load1: s.load1,
          uptimeMs: s.uptimeMs,
          disks: s.disks.map((d) => ({
            mount: d.mount,
            totalBytes: d.totalBytes,
            freeBytes: d.freeBytes,
          })),
        };
      } catch {
        guest = null;
      }
    }
    return {
      id: vm.id,
      name: vm.name,
      state: vm.state,
      cpuPercent: cpuPercent === null ? null : Math.round(cpuPercent * 10) / 10,
      rssBytes,
      memoryMib: vm.memoryMib,
      guest,
      disk: {
        overlayBytes: blocks(l.overlayDisk),
        workBytes: blocks(l.workDisk),
        workSizeBytes: size(l.workDisk),
      },
    };
  }
}

// ------------------------------------------------------------------ small file helpers

function fileSize(f: string): number {
  try {
    return fs.statSync(f).size;
  } catch {
    return 0;
  }
}

function readFrom(f: string, from: number, max = 256 * 1024): string {
  try {
    const fd = fs.openSync(f, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const start = Math.max(from, size - max);
      const buf = Buffer.alloc(Math.max(0, size - start));
      fs.readSync(fd, buf, 0, buf.length, start);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

function tail(f: string, bytes = 8192): string {
  return readFrom(f, Math.max(0, fileSize(f) - bytes));
}

const ANSI_RE = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*[A-Za-z]`, 'g');

function lastConsoleLine(f: string, from: number): string {
  const lines = readFrom(f, from)
    .split('\n')
    .map((l) => l.replace(ANSI_RE, '').trim())
    .filter(Boolean);
  const last = lines[lines.length - 1];
  return last ? ` (last console line: ${last.slice(0, 160)})` : ' (no console output)';
}

/** CPU ticks (utime+stime, USER_HZ=100) and RSS of a process. */
function procStat(pid: number): { ticks: number; rssBytes: number } | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]);
    const rssPages = Number(f[21]);
    return { ticks, rssBytes: rssPages * 4096 };
  } catch {
    return undefined;
  }
}
