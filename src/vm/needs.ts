import type { ProgressSink } from '../api/events.js';
import type { RunningNets, RunningVmNet } from '../network/index.js';
import type { ImageRecord } from '../store/images.js';
import type { KernelRecord } from '../store/kernels.js';
import type { VmRecord } from '../store/vms.js';
import type { KvmFacts } from '../vmm/accel.js';
import type { VmmDriver } from '../vmm/driver.js';

/**
 * What the VM lifecycle needs from outside src/vm, declared here by the
 * consumer: the daemon passes the real parts (src/vm/service.ts wires the
 * defaults), tests pass fakes. Interfaces between the VM services themselves
 * are declared in the file of the service that uses them.
 */

/** VMM drivers by name (src/vmm/registry.ts). */
export interface VmmDrivers {
  driverFor(name: string): VmmDriver;
}

/** Host networking for VMs (src/vm/net.ts over src/network). */
export interface VmNetworking {
  /** Bridge up, a tap for the VM, and the guest's `ip=` kernel argument. */
  prepare(vm: Pick<VmRecord, 'id' | 'name' | 'ip'>): Promise<{ tap: string; ipArg?: string }>;
  /** After the VMM runs: rules for every running VM, the neighbour entry for this one. */
  started(vm: Pick<VmRecord, 'ip' | 'mac'>, running: RunningNets): Promise<void>;
  /** After the VMM is gone: its tap back to the pool, its rules removed. */
  released(vm: Pick<VmRecord, 'ip' | 'tap'>, running: RunningNets): Promise<void>;
  /** NAT rules only (`vm set --nat` on a running VM). */
  applyNat(running: RunningNets): Promise<void>;
  /** Daemon start: bridge, taps and rules made to match the VMs that run. */
  reconcile(running: RunningVmNet[]): Promise<void>;
}

/** Images by name, pulled or built on demand (src/image/service.ts). */
export interface ImageSource {
  ensure(name: string, emit: ProgressSink, signal?: AbortSignal): Promise<ImageRecord>;
}

/** Kernels by name, pulled on demand (src/image/kernel/service.ts). */
export interface KernelSource {
  ensure(name: string, emit: ProgressSink, signal?: AbortSignal): Promise<KernelRecord>;
}

/** Host facts the VMM and accelerator choice depend on. */
export interface HostProbe {
  which(cmd: string): string | undefined;
  kvmFacts(): KvmFacts;
  /** Host TSC frequency for TCG guests' `tsc_early_khz=`. */
  tscKhz(): number | undefined;
}
