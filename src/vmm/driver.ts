import type { Duplex } from 'node:stream';
import type { BangerError } from '../errors.js';

/**
 * The VMM driver seam. The VM lifecycle (src/vm) talks to every VMM through
 * this interface and asks capability flags instead of checking which driver
 * it has; src/vmm/registry.ts maps names to drivers and is the only module
 * outside a driver's folder that imports one (test/unit/layers.test.ts holds
 * that). Everything VMM-specific lives behind it: preflight checks, the
 * agent transport, exit diagnosis, graceful stop, the files a driver keeps in
 * a VM's directory, and the optional pause/resume/save/restore. Command lines
 * and API requests are built by pure functions inside each driver folder; the
 * process plumbing they share is src/vmm/process.ts.
 */

export type VmmName = 'qemu' | 'firecracker';
/** Every driver, for what concerns them all (a VM's jail left without a row). */
export const VMM_NAMES: readonly VmmName[] = ['qemu', 'firecracker'];
export type Accel = 'kvm' | 'tcg';

export interface VmmCapabilities {
  /** Accelerators this driver can use. Firecracker is KVM-only. */
  accels: Accel[];
  /** Kernel formats accepted on x86_64. */
  kernelFormats: ('bzImage' | 'elf')[];
  /** How the guest agent channel is carried. */
  agentTransport: 'virtio-serial' | 'vsock';
  /** How a graceful stop is requested. */
  gracefulStop: 'acpi-powerdown' | 'ctrl-alt-del';
  /** `pause()` and `resume()` are implemented. */
  pauseResume: boolean;
  /** `save()` and `restore()` are implemented (memory + device state to files, and back). */
  snapshot: boolean;
}

/**
 * Kernel configuration facts the kernel catalog records per kernel entry
 * (read from the kernel's config when it is pulled or registered); drivers'
 * preflight checks decide from them.
 */
export interface KernelFeatures {
  /**
   * CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y: the kernel finds virtio-mmio devices
   * from `virtio_mmio.device=` on its command line (how Firecracker < 1.8
   * describes them). Debian's cloud and generic kernels lack it; they find the
   * devices through ACPI, which Firecracker provides from 1.8 on x86_64.
   * Unknown (undefined) is treated as false.
   */
  virtioMmioCmdline?: boolean;
}

/** What a driver checks before anything is made or spawned for a VM. */
export interface PreflightInput {
  vmName: string;
  accel: Accel;
  /** Why this accelerator was chosen, e.g. `auto: /dev/kvm is missing`. */
  accelReason: string;
  /**
   * The kernel the VM will boot. Absent when only the VM's settings are
   * checked (`vm create` before its disks are made); present before a start.
   */
  kernel?: { name: string; path: string; features?: KernelFeatures };
}

/** Opens one connected byte stream to the guest agent, or rejects; honours the signal. */
export type StreamDialer = (signal: AbortSignal) => Promise<Duplex>;

/** How the host reaches a VM's guest agent (capabilities.agentTransport). */
export interface AgentChannel {
  dial: StreamDialer;
  /**
   * Every dial failure means "not up yet, try again" (a vsock handshake
   * fails the same way whether the guest is booting or gone); otherwise only
   * the usual not-listening errors are retried.
   */
  retryAllFailures: boolean;
}

/** The files of a VM snapshot: the VMM's device state and the guest memory. */
export interface SnapshotFiles {
  statePath: string;
  memPath: string;
}

export interface DiskSpec {
  /** Stable id: 'base' (read-only image rootfs), 'overlay' (CoW upper for /), 'work' (/root). */
  id: 'base' | 'overlay' | 'work' | string;
  path: string;
  readOnly: boolean;
}

export interface NetSpec {
  tap: string;
  mac: string;
}

/** Everything needed to launch one VM; produced by the VM lifecycle, consumed by a driver. */
export interface LaunchSpec {
  vmId: string;
  name: string;
  /** The VM's state directory (vms/<id>/). */
  dir: string;
  vcpu: number;
  memoryMib: number;
  accel: Accel;
  kernel: {
    /** bzImage for QEMU, ELF vmlinux for Firecracker. */
    path: string;
    initrd?: string;
    cmdline: string;
  };
  /** In order: base first (it becomes /dev/vda). */
  disks: DiskSpec[];
  net?: NetSpec;
  /** Host end of the guest agent channel (a Unix socket path in `dir`). */
  agentSocket: string;
  /** Where the guest serial console is written. */
  consoleLog: string;
  /** Where the VMM's own stdout/stderr go. */
  vmmLog: string;
  /** Network namespace-independent extra args for experiments; not user-facing. */
  extraArgs?: string[];
}

/** What the store keeps to find a running VMM again after a daemon restart. */
export interface VmHandle {
  pid: number;
  /** /proc start time of pid, so a recycled pid is not mistaken for the VMM. */
  pidStartTime: number;
  /** QMP socket (qemu) or API socket (firecracker). */
  controlSocket: string;
}

export type VmmStatus = 'running' | 'paused' | 'stopped';

export interface StopOptions {
  /** How long to wait for the guest to power off before killing the VMM. */
  timeoutMs: number;
  signal?: AbortSignal;
}

export interface VmmDriver {
  readonly name: VmmName;
  readonly capabilities: VmmCapabilities;
  /** Absolute path of the VMM binary, or undefined when not installed. */
  binary(): string | undefined;
  version(): Promise<string>;
  /**
   * What `banger doctor` should warn about this version of the VMM (the first
   * line `<bin> --version` printed), or undefined when it is fine.
   */
  versionWarning(versionLine: string): { detail: string; hint: string } | undefined;
  /**
   * Can this VMM run this VM on this host (accelerator, and with a kernel:
   * KVM access, VMM version, kernel format)? Throws the one BangerError
   * describing the first problem; spawns nothing and changes nothing.
   */
  preflight(input: PreflightInput): Promise<void>;
  /**
   * The Unix sockets this driver creates in a VM's directory (control socket,
   * agent socket), so their length can be checked before the VM is created.
   */
  socketPaths(vm: Pick<LaunchSpec, 'dir' | 'agentSocket'>): string[];
  /**
   * Start the VMM detached (own session, survives daemon restarts) and return
   * once it runs and accepted the configuration. The guest may still be booting.
   */
  start(spec: LaunchSpec, signal?: AbortSignal): Promise<VmHandle>;
  /** How the host dials the guest agent of a VM this driver runs. */
  agentChannel(vm: Pick<LaunchSpec, 'name' | 'dir' | 'agentSocket'>): AgentChannel;
  /**
   * Why the VMM died, read from the end of its log (e.g. a KVM internal
   * error), as an actionable error; undefined when the log does not say.
   */
  diagnoseExit(vmName: string, vmmLogTail: string): BangerError | undefined;
  /** Graceful stop: ask the guest to power off, kill the VMM after the timeout. Resolves when the process is gone. */
  stop(handle: VmHandle, opts: StopOptions): Promise<{ graceful: boolean }>;
  /** Send a signal to the VMM process (SIGKILL: and wait until it is gone). */
  kill(handle: VmHandle, signal: NodeJS.Signals): Promise<void>;
  status(handle: VmHandle): Promise<VmmStatus>;

  /**
   * The VM's VMM is gone (stopped, crashed, killed) or the VM is being
   * deleted: remove what the driver kept for it outside the VM's directory
   * (Firecracker's jail and cgroup). Idempotent; never throws.
   */
  released?(vmId: string): void;

  /**
   * A sandbox the driver starts its VMM through (Firecracker's jailer), for
   * doctor: the binary when one is used, else why not. Throws the start's
   * error for a configured sandbox that cannot work.
   */
  sandbox?(): { bin?: string; detail: string };

  // ---- optional, gated by capabilities (use canPauseResume / canSnapshot) ----

  /**
   * A writable disk's file was made larger on the host while the VM runs:
   * make the VMM and the guest's block device see `sizeBytes`.
   */
  resizeDisk?(
    handle: VmHandle,
    disk: Pick<DiskSpec, 'id' | 'path'>,
    sizeBytes: number,
  ): Promise<void>;

  /** Freeze the vCPUs; the process and its memory stay. */
  pause?(handle: VmHandle): Promise<void>;
  resume?(handle: VmHandle): Promise<void>;
  /**
   * Write a paused VM's device state and memory to files (the disks are the
   * caller's to copy); the VM stays paused.
   */
  save?(handle: VmHandle, files: SnapshotFiles, signal?: AbortSignal): Promise<void>;
  /**
   * Start a VMM from saved files instead of booting `spec`'s kernel; the disks
   * must be as they were when the snapshot was saved. Resolves with the VM
   * running (or paused with `paused: true`).
   */
  restore?(
    spec: LaunchSpec,
    files: SnapshotFiles,
    opts?: { paused?: boolean; signal?: AbortSignal },
  ): Promise<VmHandle>;
}

type With<K extends keyof VmmDriver> = VmmDriver & Required<Pick<VmmDriver, K>>;

/** The driver can pause and resume (capabilities.pauseResume, methods present). */
export function canPauseResume(d: VmmDriver): d is With<'pause' | 'resume'> {
  return d.capabilities.pauseResume && d.pause !== undefined && d.resume !== undefined;
}

/** The driver can save and restore snapshots (capabilities.snapshot, methods present). */
export function canSnapshot(d: VmmDriver): d is With<'pause' | 'resume' | 'save' | 'restore'> {
  return (
    canPauseResume(d) && d.capabilities.snapshot && d.save !== undefined && d.restore !== undefined
  );
}
