import type { KernelFeatures } from '../../vmm/driver.js';

/**
 * Facts banger needs from a kernel's build configuration (/boot/config-<kver>).
 * Pure: config text in, features out. Recorded in the kernel's metadata so the
 * VMM drivers can check compatibility without reading the config again.
 */

export type Tristate = 'y' | 'm' | 'n';

/** `CONFIG_X=y|m|"str"|123` lines; `# CONFIG_X is not set` → 'n'. */
export function parseKernelConfig(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const set = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (set) {
      out.set(set[1]!, set[2]!.replace(/^"(.*)"$/, '$1'));
      continue;
    }
    const unset = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line);
    if (unset) out.set(unset[1]!, 'n');
  }
  return out;
}

export function tristate(config: Map<string, string>, key: string): Tristate {
  const v = config.get(key);
  return v === 'y' ? 'y' : v === 'm' ? 'm' : 'n';
}

/** What the kernel metadata records (KernelRecord.meta.features). */
export interface KernelConfigFeatures extends Required<KernelFeatures> {
  /** CONFIG_IP_PNP: the kernel applies `ip=` itself (Debian's do not; banger's init does). */
  ipPnp: boolean;
  /** CONFIG_DEVTMPFS_MOUNT: the kernel mounts /dev itself. */
  devtmpfsMount: boolean;
  /** CONFIG_PVH: the ELF vmlinux has a PVH entry point (direct boot of vmlinux). */
  pvh: boolean;
  /** Built in (y), module (m) or absent (n). */
  ext4: Tristate;
  overlay: Tristate;
  virtioMmio: Tristate;
  virtioBlk: Tristate;
  virtioNet: Tristate;
  virtioConsole: Tristate;
  /** CONFIG_VIRTIO_VSOCKETS: the virtio vsock transport (Firecracker's agent channel). */
  vsock: Tristate;
}

export function kernelConfigFeatures(config: Map<string, string>): KernelConfigFeatures {
  return {
    virtioMmioCmdline: config.get('CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES') === 'y',
    ipPnp: config.get('CONFIG_IP_PNP') === 'y',
    devtmpfsMount: config.get('CONFIG_DEVTMPFS_MOUNT') === 'y',
    pvh: config.get('CONFIG_PVH') === 'y',
    ext4: tristate(config, 'CONFIG_EXT4_FS'),
    overlay: tristate(config, 'CONFIG_OVERLAY_FS'),
    virtioMmio: tristate(config, 'CONFIG_VIRTIO_MMIO'),
    virtioBlk: tristate(config, 'CONFIG_VIRTIO_BLK'),
    virtioNet: tristate(config, 'CONFIG_VIRTIO_NET'),
    virtioConsole: tristate(config, 'CONFIG_VIRTIO_CONSOLE'),
    vsock: tristate(config, 'CONFIG_VIRTIO_VSOCKETS'),
  };
}
