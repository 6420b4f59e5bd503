import { BangerError } from '../../errors.js';
import { MAX_UNIX_SOCKET_PATH } from '../../util/socket.js';
import type { DiskSpec, LaunchSpec } from '../driver.js';

/**
 * Pure builders for Firecracker API calls: LaunchSpec in, an ordered list of
 * HTTP requests out. The bodies mirror the definitions in
 * shared/firecracker/firecracker-api.yaml (Swagger 2.0); the contract tests
 * validate every request built here against that file.
 */

export type FcMethod = 'GET' | 'PUT' | 'PATCH';

export interface FcRequest {
  method: FcMethod;
  /** Concrete path, e.g. `/drives/base`. */
  path: string;
  body?: unknown;
}

/** `PUT /boot-source` for error messages and logs: the method and concrete path. */
export const stepName = (req: Pick<FcRequest, 'method' | 'path'>): string =>
  `${req.method} ${req.path}`;

// ---- request bodies (subset of the Swagger definitions banger uses) ----

export interface MachineConfiguration {
  vcpu_count: number;
  mem_size_mib: number;
  smt?: boolean;
  track_dirty_pages?: boolean;
  huge_pages?: 'None' | 'Transparent' | '2M';
}

export interface BootSource {
  kernel_image_path: string;
  initrd_path?: string;
  boot_args?: string;
}

export interface Drive {
  drive_id: string;
  is_root_device: boolean;
  is_read_only?: boolean;
  path_on_host?: string;
  cache_type?: 'Unsafe' | 'Writeback';
  io_engine?: 'Sync' | 'Async';
}

export interface NetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac?: string;
}

export interface Vsock {
  guest_cid: number;
  uds_path: string;
}

export interface Logger {
  log_path?: string;
  level?: 'Error' | 'Warning' | 'Info' | 'Debug' | 'Trace' | 'Off';
  show_level?: boolean;
  show_log_origin?: boolean;
}

export interface SerialDevice {
  serial_out_path?: string;
}

export type InstanceActionType = 'InstanceStart' | 'SendCtrlAltDel' | 'FlushMetrics';

export interface InstanceActionInfo {
  action_type: InstanceActionType;
}

export interface InstanceInfo {
  app_name: string;
  id: string;
  state: 'Not started' | 'Running' | 'Paused';
  vmm_version: string;
}

export interface SnapshotCreateParams {
  snapshot_path: string;
  mem_file_path: string;
  snapshot_type?: 'Full' | 'Diff';
}

export interface SnapshotLoadParams {
  snapshot_path: string;
  mem_backend: { backend_type: 'File' | 'Uffd'; backend_path: string };
  resume_vm?: boolean;
  track_dirty_pages?: boolean;
  network_overrides?: { iface_id: string; host_dev_name: string }[];
  vsock_override?: { uds_path: string };
}

// ---- limits Firecracker enforces, checked here so a bad spec fails before spawning ----

/** Firecracker accepts 1..32 vCPUs (Swagger: MachineConfiguration.vcpu_count). */
export const MAX_VCPUS = 32;
/** Device and interface ids: Firecracker allows only [A-Za-z0-9_], at most 64 chars. */
const DEVICE_ID = /^[A-Za-z0-9_]{1,64}$/;
/** `--id` of the instance: alphanumerics and `-`, at most 64 chars. */
const INSTANCE_ID = /^[A-Za-z0-9-]{1,64}$/;
/** Linux interface names are at most 15 bytes (IFNAMSIZ - 1). */
const MAX_IFNAME = 15;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
/** The first CID a guest may use (0-2 are reserved: hypervisor, local, host). */
export const MIN_GUEST_CID = 3;
export const DEFAULT_GUEST_CID = 3;
/** The interface id banger gives its single NIC. */
export const NET_IFACE_ID = 'eth0';

export const isValidInstanceId = (id: string): boolean => INSTANCE_ID.test(id);

/**
 * Kernel parameters Firecracker guests need in addition to banger's common
 * command line (the same builder as QEMU's produces `spec.kernel.cmdline`):
 * - `reboot=k`: a guest reboot resets through the i8042 keyboard controller,
 *   which makes Firecracker exit (there is no reboot in Firecracker);
 * - `panic=1`: a panicking guest reboots, i.e. the VMM exits instead of hanging;
 * - `i8042.*`: skip slow probing of the emulated keyboard controller, which is
 *   still used for `SendCtrlAltDel` (graceful stop).
 * Firecracker itself appends `pci=off` (and `root=/dev/vda` only when a drive is
 * marked as root device, which banger never does: its initramfs mounts the disks).
 * Parameters already present (by key) are left as the caller set them.
 */
export const FIRECRACKER_BOOT_ARGS = [
  'reboot=k',
  'panic=1',
  'i8042.noaux',
  'i8042.nomux',
  'i8042.nopnp',
  'i8042.dumbkbd',
] as const;

const argKey = (arg: string): string => arg.split('=', 1)[0]!;

export function firecrackerBootArgs(cmdline: string): string {
  const args = cmdline.split(/\s+/).filter(Boolean);
  const present = new Set(args.map(argKey));
  for (const extra of FIRECRACKER_BOOT_ARGS) {
    if (!present.has(argKey(extra))) args.push(extra);
  }
  return args.join(' ');
}

// ---- builders ----

export interface LaunchRequestOptions {
  /** Vsock guest CID (>= 3). Each Firecracker VM has its own vsock device, so 3 is fine for all. */
  guestCid?: number;
  /** Host end of the vsock device (Firecracker binds it). Defaults to spec.agentSocket. */
  vsockPath?: string;
  /** Configure Firecracker's logger to write to this (existing) file or FIFO. */
  logger?: { path: string; level?: Logger['level'] };
  /** Send the guest serial console to this file (`PUT /serial`; newer Firecracker only). */
  serialOutPath?: string;
  /** Enable dirty page tracking (needed for diff snapshots). */
  trackDirtyPages?: boolean;
}

const invalid = (spec: Pick<LaunchSpec, 'name'>, what: string, hint: string): BangerError =>
  new BangerError('invalid_request', `cannot launch vm '${spec.name}' on firecracker: ${what}`, {
    hint,
  });

export function machineConfig(spec: LaunchSpec, opts: LaunchRequestOptions = {}): FcRequest {
  if (!Number.isInteger(spec.vcpu) || spec.vcpu < 1 || spec.vcpu > MAX_VCPUS) {
    throw invalid(
      spec,
      `${spec.vcpu} vCPUs requested, firecracker supports 1 to ${MAX_VCPUS}`,
      `use --vcpu ${MAX_VCPUS} or less`,
    );
  }
  if (!Number.isInteger(spec.memoryMib) || spec.memoryMib < 1) {
    throw invalid(
      spec,
      `memory must be a whole number of MiB, got ${spec.memoryMib}`,
      'set --memory, e.g. --memory 1G',
    );
  }
  const body: MachineConfiguration = {
    vcpu_count: spec.vcpu,
    mem_size_mib: spec.memoryMib,
    smt: false,
    track_dirty_pages: opts.trackDirtyPages ?? false,
  };
  return { method: 'PUT', path: '/machine-config', body };
}

export function bootSource(spec: LaunchSpec): FcRequest {
  const body: BootSource = {
    kernel_image_path: spec.kernel.path,
    boot_args: firecrackerBootArgs(spec.kernel.cmdline),
  };
  if (spec.kernel.initrd) body.initrd_path = spec.kernel.initrd;
  return { method: 'PUT', path: '/boot-source', body };
}

export function drive(spec: LaunchSpec, disk: DiskSpec): FcRequest {
  if (!DEVICE_ID.test(disk.id)) {
    throw invalid(
      spec,
      `disk id '${disk.id}' is not a valid firecracker drive id`,
      'use letters, digits and _ (at most 64)',
    );
  }
  // The base image must never be written: a base mounted read-write once has a dirty
  // journal and then fails to mount read-only (machine-facts.md).
  const readOnly = disk.readOnly || disk.id === 'base';
  const body: Drive = {
    drive_id: disk.id,
    path_on_host: disk.path,
    // banger's initramfs mounts base + overlay itself; a root device would make
    // Firecracker append `root=/dev/vda` and reorder the drives.
    is_root_device: false,
    is_read_only: readOnly,
  };
  // Writable disks keep data across stop/start: honour the guest's flushes.
  if (!readOnly) body.cache_type = 'Writeback';
  return { method: 'PUT', path: `/drives/${disk.id}`, body };
}

export function networkInterface(spec: LaunchSpec): FcRequest | undefined {
  if (!spec.net) return undefined;
  const { tap, mac } = spec.net;
  if (tap.length === 0 || Buffer.byteLength(tap) > MAX_IFNAME) {
    throw invalid(
      spec,
      `tap name '${tap}' must be 1 to ${MAX_IFNAME} bytes`,
      'this is a banger bug: report it',
    );
  }
  if (!MAC.test(mac)) {
    throw invalid(
      spec,
      `MAC address '${mac}' is not of the form aa:bb:cc:dd:ee:ff`,
      'this is a banger bug: report it',
    );
  }
  const body: NetworkInterface = {
    iface_id: NET_IFACE_ID,
    host_dev_name: tap,
    guest_mac: mac.toLowerCase(),
  };
  return { method: 'PUT', path: `/network-interfaces/${NET_IFACE_ID}`, body };
}

export function vsock(spec: LaunchSpec, opts: LaunchRequestOptions = {}): FcRequest {
  const guestCid = opts.guestCid ?? DEFAULT_GUEST_CID;
  const udsPath = opts.vsockPath ?? spec.agentSocket;
  if (!Number.isInteger(guestCid) || guestCid < MIN_GUEST_CID || guestCid > 0xffffffff) {
    throw invalid(
      spec,
      `vsock guest CID ${guestCid} is reserved or out of range`,
      `use a CID of ${MIN_GUEST_CID} or more`,
    );
  }
  checkSocketPath(spec, udsPath, 'vsock socket');
  const body: Vsock = { guest_cid: guestCid, uds_path: udsPath };
  return { method: 'PUT', path: '/vsock', body };
}

export function logger(path: string, level: Logger['level'] = 'Info'): FcRequest {
  const body: Logger = { log_path: path, level, show_level: true, show_log_origin: false };
  return { method: 'PUT', path: '/logger', body };
}

export function serial(path: string): FcRequest {
  const body: SerialDevice = { serial_out_path: path };
  return { method: 'PUT', path: '/serial', body };
}

export const action = (action_type: InstanceActionType): FcRequest => ({
  method: 'PUT',
  path: '/actions',
  body: { action_type } satisfies InstanceActionInfo,
});

export const instanceStart = (): FcRequest => action('InstanceStart');
/** Graceful stop: Ctrl+Alt+Del through the emulated i8042; systemd reboots, Firecracker exits. */
export const sendCtrlAltDel = (): FcRequest => action('SendCtrlAltDel');
export const describeInstance = (): FcRequest => ({ method: 'GET', path: '/' });
export const getVersion = (): FcRequest => ({ method: 'GET', path: '/version' });

/**
 * `PATCH /drives/{id}` with the same file: Firecracker reads the file's size
 * again and tells the guest the disk grew (vm set --disk-size while running).
 */
export function driveRescan(disk: Pick<DiskSpec, 'id' | 'path'>): FcRequest {
  if (!DEVICE_ID.test(disk.id)) throw new Error(`invalid firecracker drive id '${disk.id}'`);
  return {
    method: 'PATCH',
    path: `/drives/${disk.id}`,
    body: { drive_id: disk.id, path_on_host: disk.path },
  };
}

/** Prepared for suspend/fork (capabilities.pauseResume). */
export const pauseVm = (): FcRequest => ({
  method: 'PATCH',
  path: '/vm',
  body: { state: 'Paused' },
});
export const resumeVm = (): FcRequest => ({
  method: 'PATCH',
  path: '/vm',
  body: { state: 'Resumed' },
});

/** Prepared for suspend/fork (capabilities.snapshot). The VM must be paused first. */
export function snapshotCreate(p: {
  snapshotPath: string;
  memFilePath: string;
  diff?: boolean;
}): FcRequest {
  const body: SnapshotCreateParams = {
    snapshot_path: p.snapshotPath,
    mem_file_path: p.memFilePath,
    snapshot_type: p.diff ? 'Diff' : 'Full',
  };
  return { method: 'PUT', path: '/snapshot/create', body };
}

/**
 * Prepared for suspend/fork (capabilities.snapshot). Only valid on a fresh
 * Firecracker process (nothing but the logger configured). The tap and the
 * vsock socket can be re-pointed, since a restored VM usually gets new ones.
 */
export function snapshotLoad(p: {
  snapshotPath: string;
  memFilePath: string;
  resume?: boolean;
  tap?: string;
  vsockPath?: string;
}): FcRequest {
  const body: SnapshotLoadParams = {
    snapshot_path: p.snapshotPath,
    mem_backend: { backend_type: 'File', backend_path: p.memFilePath },
    resume_vm: p.resume ?? true,
  };
  if (p.tap) body.network_overrides = [{ iface_id: NET_IFACE_ID, host_dev_name: p.tap }];
  if (p.vsockPath) body.vsock_override = { uds_path: p.vsockPath };
  return { method: 'PUT', path: '/snapshot/load', body };
}

export function checkSocketPath(spec: Pick<LaunchSpec, 'name'>, p: string, what: string): void {
  if (Buffer.byteLength(p) > MAX_UNIX_SOCKET_PATH) {
    throw invalid(
      spec,
      `${what} path is ${Buffer.byteLength(p)} bytes, Unix sockets allow ${MAX_UNIX_SOCKET_PATH}: ${p}`,
      'set BANGER_STATE_DIR to a shorter directory',
    );
  }
}

/**
 * Everything sent to a fresh Firecracker process to boot a VM, in order: the
 * logger first (so later failures are logged), then machine, kernel, disks in
 * spec order (base first: it becomes /dev/vda), network, vsock, and finally
 * InstanceStart.
 */
export function launchRequests(spec: LaunchSpec, opts: LaunchRequestOptions = {}): FcRequest[] {
  if (spec.disks.length === 0) {
    throw invalid(spec, 'no disks', 'this is a banger bug: report it');
  }
  const ids = new Set<string>();
  for (const d of spec.disks) {
    if (ids.has(d.id))
      throw invalid(spec, `disk id '${d.id}' is used twice`, 'this is a banger bug: report it');
    ids.add(d.id);
  }
  const out: FcRequest[] = [];
  if (opts.logger) out.push(logger(opts.logger.path, opts.logger.level));
  out.push(machineConfig(spec, opts), bootSource(spec));
  for (const d of spec.disks) out.push(drive(spec, d));
  const net = networkInterface(spec);
  if (net) out.push(net);
  out.push(vsock(spec, opts));
  if (opts.serialOutPath) out.push(serial(opts.serialOutPath));
  out.push(instanceStart());
  return out;
}
