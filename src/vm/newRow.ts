import type { Config } from '../config/schema.js';
import { BangerError } from '../errors.js';
import { allocateIp, macForVm } from '../network/index.js';
import type { Store } from '../store/index.js';
import type { VmRecord } from '../store/vms.js';

/** What a new VM's row is made from; the rest starts empty. */
export type NewVmFields = Pick<
  VmRecord,
  | 'id'
  | 'name'
  | 'imageId'
  | 'kernelName'
  | 'vmm'
  | 'accel'
  | 'vcpu'
  | 'memoryMib'
  | 'diskSize'
  | 'nat'
  | 'meta'
>;

/**
 * Insert a new VM's row in state `created`, its address allocated and its MAC
 * derived in the same transaction; a taken name is a conflict.
 */
export function insertNewVm(
  store: Pick<Store, 'db' | 'vms'>,
  config: Config,
  f: NewVmFields,
): VmRecord {
  try {
    return store.db.transaction(() =>
      store.vms.insert({
        ...f,
        state: 'created',
        ip: allocateIp({ cidr: config.cidr, bridgeIp: config.bridgeIp, used: store.vms.usedIps() }),
        mac: macForVm(f.id),
        tap: null,
        pid: null,
        pidStartTime: null,
        lastError: null,
        startedAt: null,
        stoppedAt: null,
      }),
    )();
  } catch (e) {
    if (/UNIQUE constraint failed: vms.name/.test((e as Error).message)) {
      throw new BangerError('conflict', `a VM named '${f.name}' already exists`, {
        hint: 'choose another --name',
      });
    }
    throw e;
  }
}
