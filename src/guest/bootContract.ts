/**
 * The contract between the host (VMM drivers, VM service), banger's
 * initramfs /init and the image's guest files. Both sides import these
 * names; nobody spells them twice.
 *
 * Boot flow: VMM → kernel → banger's initramfs /init (loads modules, finds the
 * disks, mounts base RO + overlay upper as /, the work disk at /root and the
 * kernel's modules disk at /lib/modules/<kver>, applies identity and network
 * from the command line, installs /shutdown into /run/initramfs) →
 * switch_root → the image's /sbin/init (systemd, trimmed) → sshd + agent.
 */

/** Virtio-blk serial numbers (QEMU `serial=`) and ext4 labels (Firecracker has no serials). */
export const DISKS = {
  base: { serial: 'banger-base', label: 'banger-base' },
  overlay: { serial: 'banger-overlay', label: 'banger-overlay' },
  work: { serial: 'banger-work', label: 'banger-work' },
  modules: { serial: 'banger-modules', label: 'banger-modules' },
} as const;

export type DiskRole = keyof typeof DISKS;

/** Kernel command line parameters banger's /init reads (besides the standard `ip=`). */
export const CMDLINE = {
  /** VM id; /init derives /etc/machine-id from it. */
  id: 'banger.id',
  /** Extra debugging output from /init when set to 1. */
  debug: 'banger.debug',
} as const;

/** Name of the virtio-serial port of the guest agent (QEMU). */
export { AGENT_VIRTIO_PORT_NAME, AGENT_VSOCK_PORT } from './agentProtocol.js';

/** Where /init leaves the lower and upper filesystems visible in the running guest. */
export const GUEST_RUN_DIR = '/run/banger';

/** Marker /init prints on the console when it fails; the host reports the line after it. */
export const INIT_ERROR_MARKER = 'BANGER-INIT-ERROR:';
/** Marker /init prints right before switch_root. */
export const INIT_DONE_MARKER = 'banger-init: switching root';

/**
 * Symlink /init makes to the ACPI power button's evdev node (QMP
 * system_powerdown → "Power Button"); the image's power-key unit watches it.
 */
export const POWER_BUTTON_DEVICE = '/dev/input/power-button';
