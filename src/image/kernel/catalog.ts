import { GUEST_MODULES } from './modules.js';

/**
 * The built-in kernel catalog: banger names → Debian packages. Each entry
 * names a metapackage that apt resolves to the current concrete kernel
 * package (linux-image-cloud-amd64 → linux-image-6.1.0-56-cloud-amd64).
 */
export interface KernelCatalogItem {
  name: string;
  description: string;
  /** The Debian metapackage that tracks the latest kernel of this flavour. */
  package: string;
  /** apt-cache glob matching the concrete packages it may depend on (one lookup instead of two). */
  candidates: string;
  /** Modules the initramfs loads (built-in ones are skipped). */
  modules: readonly string[];
}

export const KERNEL_CATALOG: readonly KernelCatalogItem[] = [
  {
    name: 'debian-cloud-6.1',
    description: 'Debian 12 cloud kernel 6.1 (small, virtio built for VMs)',
    package: 'linux-image-cloud-amd64',
    candidates: 'linux-image-[0-9]*-cloud-amd64',
    modules: GUEST_MODULES,
  },
  {
    name: 'debian-generic-6.1',
    description: 'Debian 12 generic kernel 6.1 (all drivers, larger)',
    package: 'linux-image-amd64',
    candidates: 'linux-image-[0-9]*-amd64',
    modules: GUEST_MODULES,
  },
];

export const DEFAULT_KERNEL = 'debian-cloud-6.1';

export const catalogItem = (name: string): KernelCatalogItem | undefined =>
  KERNEL_CATALOG.find((k) => k.name === name);
