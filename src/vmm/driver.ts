/**
 * The VMM driver seam. The VM service talks to every VMM through this small
 * interface and asks capability flags instead of checking which driver it
 * has; a registry maps names to drivers. Command lines / API requests are
 * built by pure functions inside each driver folder.
 */

export type VmmName = 'qemu' | 'firecracker';
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
  pauseResume: boolean;
  snapshot: boolean;
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

/** Everything needed to launch one VM; produced by the VM service, consumed by a driver. */
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
  /** Host end of the guest agent channel (Unix socket path). */
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
   * Start the VMM detached (own session, survives daemon restarts) and return
   * once it runs and accepted the configuration. The guest may still be booting.
   */
  start(spec: LaunchSpec, signal?: AbortSignal): Promise<VmHandle>;
  /** Graceful stop: ask the guest to power off, kill the VMM after the timeout. Resolves when the process is gone. */
  stop(handle: VmHandle, opts: StopOptions): Promise<{ graceful: boolean }>;
  /** Send a signal to the VMM process. */
  kill(handle: VmHandle, signal: NodeJS.Signals): Promise<void>;
  status(handle: VmHandle): Promise<VmmStatus>;
}
