import path from 'node:path';
import type { Config } from '../config/schema.js';
import { BangerError } from '../errors.js';
import type { VmmDriver, VmmName } from './driver.js';
import { JAIL_BASE_NAME } from './jail.js';
import { createFirecrackerDriver } from './firecracker/index.js';
import { QemuDriver } from './qemu/driver.js';
import { DEFAULT_SHM_DIR, ramFilePath, sweepMigrationDirs } from './qemu/ramFile.js';

/**
 * VMM name → driver. The one module outside src/vmm/<driver>/ that imports a
 * concrete driver (test/unit/layers.test.ts fails otherwise): the lifecycle
 * gets drivers from here and decides by their capabilities.
 */
export function createVmmDriver(
  name: VmmName,
  config: Pick<Config, 'qemuBin' | 'firecrackerBin'> &
    Partial<Pick<Config, 'vmmUser' | 'jailerBin'>>,
  paths?: { stateDir: string },
): VmmDriver {
  switch (name) {
    case 'qemu':
      return new QemuDriver({ bin: config.qemuBin, vmmUser: config.vmmUser });
    case 'firecracker':
      return createFirecrackerDriver({
        bin: config.firecrackerBin ?? 'firecracker',
        // Jails live under the state directory: the VM's files are hard links into them.
        ...(paths
          ? {
              jailer: {
                bin: config.jailerBin,
                chrootBase: path.join(paths.stateDir, JAIL_BASE_NAME),
                vmmUser: config.vmmUser ?? 'banger-vmm',
              },
            }
          : {}),
      });
    default:
      throw new BangerError('internal', `unknown VMM '${String(name)}'`);
  }
}

/**
 * Files on the host that a VMM of this VM uses only while it is being
 * spawned or restored (QEMU's guest RAM file on /dev/shm before it is
 * unlinked): when no VMM is being started — at daemon start — any that
 * exists is left over. `shmDir` overrides /dev/shm.
 */
export function transientVmmFiles(vmId: string, shmDir = DEFAULT_SHM_DIR): string[] {
  return [ramFilePath(shmDir, vmId)];
}

/** Scratch the VMMs' drivers keep outside VM directories whose daemon is gone (swept at start). */
export function sweepVmmScratch(shmDir = DEFAULT_SHM_DIR): string[] {
  return sweepMigrationDirs(shmDir);
}
