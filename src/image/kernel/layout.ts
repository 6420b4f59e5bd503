import path from 'node:path';

/**
 * The files of one kernel, in `<state>/kernels/<name>/`. The only place
 * these names are spelled.
 */
export const KERNEL_FILES = {
  /** The compressed bzImage, as Debian ships it (QEMU -kernel). */
  vmlinuz: 'vmlinuz',
  /** Uncompressed ELF with a PVH entry (Firecracker; QEMU boots it faster too). */
  vmlinux: 'vmlinux',
  /** banger's initramfs (uncompressed newc cpio). */
  initrd: 'initrd.img',
  /** Read-only ext4 with /lib/modules/<kver>; attach as the `modules` disk. */
  modulesDisk: 'modules.ext4',
  /** The kernel's build configuration. */
  config: 'config',
  /** KernelMeta as JSON (also in the kernels table). */
  meta: 'meta.json',
} as const;

export type KernelFileKey = keyof typeof KERNEL_FILES;
export type KernelLayout = { dir: string } & Record<KernelFileKey, string>;

export function kernelLayout(kernelsDir: string, name: string): KernelLayout {
  const dir = path.join(kernelsDir, name);
  const out = { dir } as KernelLayout;
  for (const [k, f] of Object.entries(KERNEL_FILES)) out[k as KernelFileKey] = path.join(dir, f);
  return out;
}
