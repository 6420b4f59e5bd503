import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ImageRecord } from '../../src/store/images.js';
import type { RunningVmNet } from '../../src/network/index.js';
import type { BangerError } from '../../src/errors.js';
import { dialUnix } from '../../src/util/socket.js';
import { isProcessAlive, processStartTime } from '../../src/util/proc.js';
import { sleep } from '../../src/util/sleep.js';
import type { VmDisks } from '../../src/vm/disks.js';
import type { VmNetworking } from '../../src/vm/needs.js';
import type {
  AgentChannel,
  DiskSpec,
  LaunchSpec,
  PreflightInput,
  SnapshotFiles,
  StopOptions,
  VmHandle,
  VmmCapabilities,
  VmmDriver,
  VmmStatus,
} from '../../src/vmm/driver.js';

/**
 * Stand-ins for the parts of the host the VM lifecycle drives, for unit tests
 * of src/vm: a VMM driver whose "VMM" is a real detached `sleep` process and
 * whose guest agent is a real Unix socket speaking the agent protocol, a
 * network that hands out tap names, and disks that are plain files. Each can
 * be told to fail at a given step.
 */

/** The host key every fake guest reports (known_hosts keeps type and key, not the comment). */
export const HOST_KEY =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForLifecycleTests0000000000';

export interface FakeGuest {
  /** Answer wait-ready this long after the VMM started (default 0); 'never' never. */
  readyAfterMs?: number | 'never';
  /** The "guest" dies this long after start, before it is ready. */
  dieAfterMs?: number;
  /** Answer wait-ready only once this settles (after readyAfterMs). */
  gate?: Promise<void>;
}

interface Running {
  pid: number;
  pidStartTime: number;
  server: net.Server;
  startedAt: number;
}

export class FakeDriver implements VmmDriver {
  readonly name = 'qemu' as const;
  readonly capabilities: VmmCapabilities = {
    accels: ['kvm', 'tcg'],
    kernelFormats: ['bzImage', 'elf'],
    agentTransport: 'virtio-serial',
    gracefulStop: 'acpi-powerdown',
    pauseResume: true,
    snapshot: true,
  };
  /** Every call, in order: `start <vm>`, `stop <vm>`, `kill <vm> SIG`, `preflight <vm>`. */
  readonly calls: string[] = [];
  /** The most driver operations that were ever in flight for one VM at once. */
  maxInFlight = 0;
  /** The most driver operations in flight at once over all VMs. */
  maxInFlightAll = 0;
  private inFlightAll = 0;
  private readonly inFlight = new Map<string, number>();
  readonly running = new Map<string, Running>();
  /** What the next guests do, by VM name ('*' for all). */
  readonly guests = new Map<string, FakeGuest>();
  failPreflight?: BangerError;
  failStart?: BangerError;
  /** How long start() takes (widens race windows in tests). */
  startDelayMs = 20;
  poweroffs = 0;
  /** save() fails with this (snapshots, suspend). */
  failSave?: BangerError;
  /** restore() fails with this for every VM. */
  failRestore?: BangerError;
  /** restore() of VMs with these names fails. */
  readonly failRestoreOf = new Set<string>();
  /** restore() waits for this before it returns (a restore in progress). */
  restoreGate?: Promise<void>;
  /** The set-identity requests each VM's agent got, by VM id. */
  readonly identities = new Map<string, Record<string, unknown>[]>();
  /** `set-time` requests the fake guests answered. */
  setTimes = 0;
  /** VM ids whose VMM is paused. */
  readonly paused = new Set<string>();

  /** Disk sizes the VMM was told by resizeDisk, by VM id (the fake agent's grow-fs reports them). */
  readonly resized = new Map<string, number>();
  /** Online disk resizing (vm set --disk-size on a running VM, warm starts): off unless enableResize(). */
  resizeDisk?: (h: VmHandle, d: Pick<DiskSpec, 'id' | 'path'>, sizeBytes: number) => Promise<void>;

  enableResize(): this {
    this.resizeDisk = async (h, d, sizeBytes) => {
      const vm = [...this.running].find(([, r]) => r.pid === h.pid)?.[0];
      this.calls.push(`resize ${vm ? this.names.get(vm) : '?'} ${d.id}`);
      if (vm) this.resized.set(vm, sizeBytes);
    };
    return this;
  }

  /** Turn on pause/resume and save/restore (capabilities.pauseResume, .snapshot). */
  enableSnapshots(): this {
    this.capabilities.pauseResume = true;
    this.capabilities.snapshot = true;
    return this;
  }

  binary(): string {
    return '/usr/bin/fake-vmm';
  }
  async version(): Promise<string> {
    return '1.0.0';
  }
  versionWarning(): undefined {
    return undefined;
  }
  async preflight(input: PreflightInput): Promise<void> {
    this.calls.push(`preflight ${input.vmName}`);
    if (this.failPreflight) throw this.failPreflight;
  }
  socketPaths(vm: Pick<LaunchSpec, 'dir' | 'agentSocket'>): string[] {
    return [path.join(vm.dir, 'fake.sock'), vm.agentSocket];
  }

  private async op<T>(vm: string, fn: () => Promise<T>): Promise<T> {
    const n = (this.inFlight.get(vm) ?? 0) + 1;
    this.inFlight.set(vm, n);
    this.maxInFlight = Math.max(this.maxInFlight, n);
    this.maxInFlightAll = Math.max(this.maxInFlightAll, ++this.inFlightAll);
    try {
      return await fn();
    } finally {
      this.inFlight.set(vm, (this.inFlight.get(vm) ?? 1) - 1);
      this.inFlightAll--;
    }
  }

  private readonly names = new Map<string, string>();

  start(spec: LaunchSpec): Promise<VmHandle> {
    this.calls.push(`start ${spec.name}`);
    this.names.set(spec.vmId, spec.name);
    return this.op(spec.vmId, async () => {
      await sleep(this.startDelayMs);
      if (this.failStart) throw this.failStart;
      return this.launch(spec);
    });
  }

  async pause(h: VmHandle): Promise<void> {
    this.calls.push(`pause ${this.names.get(vmOf(h))}`);
    this.paused.add(vmOf(h));
  }

  async resume(h: VmHandle): Promise<void> {
    this.calls.push(`resume ${this.names.get(vmOf(h))}`);
    this.paused.delete(vmOf(h));
  }

  /** The "device state" names the VM it came from; the "memory" is a fixed text. */
  save(h: VmHandle, files: SnapshotFiles): Promise<void> {
    const vm = vmOf(h);
    this.calls.push(`save ${this.names.get(vm)}`);
    return this.op(vm, async () => {
      if (!this.paused.has(vm)) throw new Error('save of a VM that is not paused');
      fs.writeFileSync(files.statePath, JSON.stringify({ from: vm }));
      if (this.failSave) throw this.failSave;
      fs.writeFileSync(files.memPath, 'guest memory');
    });
  }

  restore(
    spec: LaunchSpec,
    files: SnapshotFiles,
    opts: { paused?: boolean } = {},
  ): Promise<VmHandle> {
    this.calls.push(`restore ${spec.name}${opts.paused ? ' paused' : ''}`);
    this.names.set(spec.vmId, spec.name);
    return this.op(spec.vmId, async () => {
      for (const f of [files.statePath, files.memPath])
        if (!fs.existsSync(f)) throw new Error(`fake restore: ${f} is missing`);
      JSON.parse(fs.readFileSync(files.statePath, 'utf8'));
      await this.restoreGate;
      if (this.failRestore) throw this.failRestore;
      if (this.failRestoreOf.has(spec.name)) throw new Error(`fake restore of ${spec.name} failed`);
      return this.launch(spec);
    });
  }

  private async launch(spec: LaunchSpec): Promise<VmHandle> {
    const guest = this.guests.get(spec.name) ?? this.guests.get('*') ?? {};
    // A process that runs until killed and, like a real VMM, names its control socket.
    const controlSocket = path.join(spec.dir, 'fake.sock');
    const child = spawn('tail', ['-f', '/dev/null', controlSocket], {
      detached: true,
      stdio: 'ignore',
    });
    child.unref();
    const pid = child.pid!;
    const pidStartTime = processStartTime(pid)!;
    fs.rmSync(spec.agentSocket, { force: true });
    const startedAt = Date.now();
    const server = net.createServer((sock) => this.agent(sock, spec.vmId, guest, startedAt));
    await new Promise<void>((r) => server.listen(spec.agentSocket, r));
    const running: Running = { pid, pidStartTime, server, startedAt };
    this.running.set(spec.vmId, running);
    child.once('exit', () => this.gone(spec.vmId, running));
    if (guest.dieAfterMs !== undefined) {
      setTimeout(() => process.kill(pid, 'SIGKILL'), guest.dieAfterMs).unref();
    }
    return { pid, pidStartTime, controlSocket };
  }

  private gone(vmId: string, r: Running): void {
    r.server.close();
    // A VMM restored for the same VM may already serve new connections: leave those be.
    if (this.running.get(vmId) !== r) return;
    for (const s of this.sockets.get(vmId) ?? []) s.destroy();
    this.running.delete(vmId);
  }

  private readonly sockets = new Map<string, Set<net.Socket>>();

  /** The guest agent: newline-delimited JSON requests, one answer each. */
  private agent(sock: net.Socket, vmId: string, guest: FakeGuest, startedAt: number): void {
    const set = this.sockets.get(vmId) ?? new Set();
    this.sockets.set(vmId, set);
    set.add(sock);
    sock.on('close', () => set.delete(sock));
    sock.on('error', () => undefined);
    let buf = '';
    const reply = (obj: unknown): void => {
      if (!sock.destroyed) sock.write(`${JSON.stringify(obj)}\n`);
    };
    sock.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const req = JSON.parse(line) as { id: number; op: string };
        switch (req.op) {
          case 'wait-ready': {
            if (guest.readyAfterMs === 'never') break;
            const wait = Math.max(0, startedAt + (guest.readyAfterMs ?? 0) - Date.now());
            const ready = (): void =>
              reply({
                id: req.id,
                ok: true,
                result: { hostKeys: [HOST_KEY], readyAtMs: 1, sshPort: 22 },
              });
            void (guest.gate ?? Promise.resolve()).then(() => setTimeout(ready, wait).unref());
            break;
          }
          case 'hello':
            reply({
              id: req.id,
              ok: true,
              result: {
                protocol: 1,
                agentVersion: 'fake',
                hostname: this.names.get(vmId) ?? '',
                bootId: null,
                uptimeMs: 1,
                ready: true,
                transport: 'unix',
                ops: [],
              },
            });
            break;
          case 'set-identity': {
            const args = req as unknown as Record<string, unknown>;
            const list = this.identities.get(vmId) ?? [];
            list.push(args);
            this.identities.set(vmId, list);
            reply({
              id: req.id,
              ok: true,
              result: {
                hostKeys: [identityHostKey(String(args.hostname))],
                hostname: args.hostname,
                dryRun: true,
              },
            });
            break;
          }
          case 'poweroff': {
            this.poweroffs++;
            reply({
              id: req.id,
              ok: true,
              result: { action: 'poweroff', method: 'fake', dryRun: false },
            });
            const r = this.running.get(vmId);
            if (r) setTimeout(() => killQuietly(r.pid, 'SIGTERM'), 10).unref();
            break;
          }
          case 'set-time':
            this.setTimes++;
            reply({ id: req.id, ok: true, result: { stepMs: 8000, dryRun: false } });
            break;
          case 'stats':
            reply({
              id: req.id,
              ok: true,
              result: {
                uptimeMs: 1000,
                load1: 0.5,
                load5: 0.4,
                load15: 0.3,
                memTotalKib: 1024,
                memAvailableKib: 512,
                memFreeKib: 256,
                cpus: 1,
                clockTicksPerSec: 100,
                cpuTicks: null,
                disks: [{ mount: '/', totalBytes: 100, freeBytes: 50, availBytes: 40 }],
              },
            });
            break;
          case 'grow-fs': {
            const size = this.resized.get(vmId) ?? 0;
            const fsOf = (mount: string) => ({
              mount,
              mounted: true,
              beforeBytes: 0,
              afterBytes: size,
              deviceBytes: size,
              error: null,
            });
            reply({
              id: req.id,
              ok: true,
              result: { filesystems: [fsOf('/root'), fsOf('/')], dryRun: true },
            });
            break;
          }
          default:
            reply({ id: req.id, ok: false, error: `unknown op ${req.op}`, code: 'unknown_op' });
        }
      }
    });
  }

  agentChannel(vm: Pick<LaunchSpec, 'agentSocket'>): AgentChannel {
    return { dial: (signal) => dialUnix(vm.agentSocket, signal), retryAllFailures: false };
  }

  diagnoseExit(): undefined {
    return undefined;
  }

  stop(h: VmHandle, opts: StopOptions): Promise<{ graceful: boolean }> {
    const vm = vmOf(h);
    this.calls.push(`stop ${this.names.get(vm)}`);
    return this.op(vm, async () => {
      const deadline = Date.now() + opts.timeoutMs;
      while (isProcessAlive(h.pid, h.pidStartTime) && Date.now() < deadline) await sleep(10);
      if (!isProcessAlive(h.pid, h.pidStartTime)) return { graceful: true };
      await this.killAndWait(h, 'SIGKILL');
      return { graceful: false };
    });
  }

  kill(h: VmHandle, signal: NodeJS.Signals): Promise<void> {
    const vm = vmOf(h);
    this.calls.push(`kill ${this.names.get(vm)} ${signal}`);
    return this.op(vm, () => this.killAndWait(h, signal));
  }

  private async killAndWait(h: VmHandle, signal: NodeJS.Signals): Promise<void> {
    if (!isProcessAlive(h.pid, h.pidStartTime)) return;
    killQuietly(h.pid, signal);
    for (let i = 0; i < 1000 && isProcessAlive(h.pid, h.pidStartTime); i++) await sleep(10);
  }

  async status(h: VmHandle): Promise<VmmStatus> {
    return isProcessAlive(h.pid, h.pidStartTime) ? 'running' : 'stopped';
  }

  /** Kill every "VMM" this driver started (test cleanup), by pid and start time. */
  async cleanup(): Promise<void> {
    for (const [id, r] of [...this.running]) {
      if (isProcessAlive(r.pid, r.pidStartTime)) killQuietly(r.pid, 'SIGKILL');
      this.gone(id, r);
    }
  }
}

/** The host key a fake guest answers after set-identity: one per hostname. */
export function identityHostKey(hostname: string): string {
  return `ssh-ed25519 ${Buffer.from(`identity-${hostname}`).toString('base64').replace(/=+$/, '')}`;
}

/** The VM id of a handle: its control socket lives in vms/<id>/. */
const vmOf = (h: VmHandle): string => path.basename(path.dirname(h.controlSocket));

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Taps by name; records what the lifecycle asked for. */
export class FakeNetwork implements VmNetworking {
  readonly taps = new Set<string>();
  readonly calls: string[] = [];
  failPrepare?: BangerError;
  failStarted?: BangerError;
  reconciled: RunningVmNet[][] = [];
  private next = 0;

  async prepare(vm: { id: string; name: string }): Promise<{ tap: string; ipArg?: string }> {
    this.calls.push(`prepare ${vm.name}`);
    if (this.failPrepare) throw this.failPrepare;
    const tap = `bgrtest${this.next++}`;
    this.taps.add(tap);
    return { tap, ipArg: 'ip=fake' };
  }
  async started(): Promise<void> {
    this.calls.push('started');
    if (this.failStarted) throw this.failStarted;
  }
  async released(vm: { tap: string | null }): Promise<void> {
    this.calls.push(`released ${vm.tap}`);
    if (vm.tap) this.taps.delete(vm.tap);
  }
  async applyNat(): Promise<void> {
    this.calls.push('applyNat');
  }
  async reconcile(running: RunningVmNet[]): Promise<void> {
    this.reconciled.push(running);
    // Taps of VMs that no longer run are deleted, as HostNetwork.reconcile does.
    const keep = new Set(running.map((r) => r.tap));
    for (const t of [...this.taps]) if (!keep.has(t)) this.taps.delete(t);
  }
}

/** Disks as small plain files; `fail` makes the next make() fail after creating the directory. */
export class FakeDisks implements VmDisks {
  fail?: BangerError;
  /** How long make() takes between its two files (widens race windows in tests). */
  makeDelayMs = 0;
  readonly grown: number[] = [];
  async make(l: { dir: string; overlayDisk: string; workDisk: string }): Promise<void> {
    fs.mkdirSync(l.dir, { recursive: true });
    fs.writeFileSync(l.overlayDisk, 'overlay');
    if (this.fail) throw this.fail;
    if (this.makeDelayMs) await new Promise((r) => setTimeout(r, this.makeDelayMs));
    fs.writeFileSync(l.workDisk, 'work');
  }
  async grow(_l: unknown, size: number): Promise<void> {
    this.grown.push(size);
  }
}

/** An image row whose files exist, for VMs to be created from. */
export function fakeImage(dir: string): Omit<ImageRecord, 'createdAt' | 'updatedAt'> {
  fs.mkdirSync(dir, { recursive: true });
  const rootfs = path.join(dir, 'rootfs.ext4');
  const kernel = path.join(dir, 'vmlinuz');
  fs.writeFileSync(rootfs, '');
  fs.writeFileSync(kernel, '');
  return {
    id: 'img-test',
    name: 'test-image',
    source: 'register:test',
    digest: null,
    kernelName: null,
    kernelPath: kernel,
    initrdPath: null,
    rootfsPath: rootfs,
    workSeedPath: null,
    managed: false,
    sizeBytes: null,
    meta: {},
  };
}
