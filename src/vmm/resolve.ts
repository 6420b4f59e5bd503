import type { VmmResolution } from '../api/schemas/daemon.js';
import type { Config } from '../config/schema.js';

/**
 * Which VMM `vmm = auto|firecracker|qemu` means on this host. Pure: the
 * caller passes a lookup for binaries. `auto` prefers Firecracker when found.
 */
export function resolveVmm(
  config: Pick<Config, 'vmm' | 'firecrackerBin' | 'qemuBin'>,
  find: (cmd: string) => string | undefined,
): VmmResolution {
  const fc = find(config.firecrackerBin ?? 'firecracker');
  const qemu = find(config.qemuBin ?? 'qemu-system-x86_64');
  switch (config.vmm) {
    case 'firecracker':
      return fc
        ? {
            configured: 'firecracker',
            resolved: 'firecracker',
            binary: fc,
            reason: 'vmm = "firecracker"',
          }
        : {
            configured: 'firecracker',
            resolved: null,
            binary: null,
            reason: `vmm = "firecracker" but ${config.firecrackerBin ?? 'firecracker'} was not found`,
          };
    case 'qemu':
      return qemu
        ? { configured: 'qemu', resolved: 'qemu', binary: qemu, reason: 'vmm = "qemu"' }
        : {
            configured: 'qemu',
            resolved: null,
            binary: null,
            reason: `vmm = "qemu" but ${config.qemuBin ?? 'qemu-system-x86_64'} was not found`,
          };
    default:
      if (fc)
        return {
          configured: 'auto',
          resolved: 'firecracker',
          binary: fc,
          reason: 'auto: firecracker found',
        };
      if (qemu)
        return {
          configured: 'auto',
          resolved: 'qemu',
          binary: qemu,
          reason: 'auto: firecracker not found, using qemu',
        };
      return {
        configured: 'auto',
        resolved: null,
        binary: null,
        reason: 'auto: neither firecracker nor qemu-system-x86_64 found',
      };
  }
}
