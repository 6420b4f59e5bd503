import type { Config } from '../config/schema.js';
import { BangerError } from '../errors.js';
import type { VmmDriver, VmmName } from './driver.js';
import { createFirecrackerDriver } from './firecracker/index.js';
import { QemuDriver } from './qemu/driver.js';

/** VMM name → driver. The VM service never imports a concrete driver. */
export function createVmmDriver(
  name: VmmName,
  config: Pick<Config, 'qemuBin' | 'firecrackerBin'>,
): VmmDriver {
  switch (name) {
    case 'qemu':
      return new QemuDriver({ bin: config.qemuBin });
    case 'firecracker':
      return createFirecrackerDriver({ bin: config.firecrackerBin ?? 'firecracker' });
    default:
      throw new BangerError('internal', `unknown VMM '${String(name)}'`);
  }
}
