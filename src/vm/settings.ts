import { BangerError } from '../errors.js';
import type { VmRecord } from '../store/vms.js';
import type { VmDisks } from './disks.js';
import type { VmNetworking } from './needs.js';
import { isActive, metaOf, type VmTable } from './records.js';

export interface VmPatch {
  vcpu?: number;
  memoryMib?: number;
  diskSize?: number;
  nat?: boolean;
  /** Idle auto-stop delay in ms (0 = never); null = follow auto_stop_stale_after. */
  autoStopMs?: number | null;
}

/** What `vm set` needs from the rest of the lifecycle. */
export interface SettingsNeeds {
  table: VmTable;
  disks: Pick<VmDisks, 'grow'>;
  network: Pick<VmNetworking, 'applyNat'>;
  alive(vm: VmRecord): boolean;
  /** A running VM's disks grown online (diskGrowth.ts: files, VMM, guest agent). */
  growOnline(vm: VmRecord, sizeBytes: number): Promise<void>;
}

/**
 * `vm set`: vCPUs and memory change only while the VM is stopped; disks only
 * grow, at any time (a running VM's filesystems grow online through its agent,
 * a stopped VM's at its next boot); NAT and the idle auto-stop delay at any
 * time (a running VM's rules change at once; the sampler reads the delay on
 * its next round).
 */
export class VmSettings {
  constructor(private readonly n: SettingsNeeds) {}

  /** The caller holds the VM's lock. */
  async setLocked(cur: VmRecord, patch: VmPatch): Promise<VmRecord> {
    const { table } = this.n;
    const running = isActive(cur) && this.n.alive(cur);
    const sizing = patch.vcpu !== undefined || patch.memoryMib !== undefined;
    if (sizing && running) {
      throw new BangerError(
        'precondition',
        `vm '${cur.name}' is running: vcpu and memory change only while it is stopped`,
        { hint: `stop it first: banger vm stop ${cur.name}` },
      );
    }
    const growing = patch.diskSize !== undefined && patch.diskSize > cur.diskSize;
    if ((sizing || growing) && cur.state === 'suspended') {
      throw new BangerError(
        'precondition',
        `vm '${cur.name}' is suspended: vcpu, memory and disk size change only while it is stopped`,
        {
          hint: `resume it (banger vm resume ${cur.name}), or discard its saved state: banger vm stop ${cur.name}`,
        },
      );
    }
    if (growing && running && cur.state !== 'running') {
      throw new BangerError(
        'precondition',
        `vm '${cur.name}' is ${cur.state}: its disks grow when it is running or stopped`,
        { hint: 'retry in a moment' },
      );
    }
    if (patch.diskSize !== undefined && patch.diskSize < cur.diskSize) {
      throw new BangerError(
        'usage',
        `vm '${cur.name}': disks only grow (now ${cur.diskSize} bytes, asked ${patch.diskSize})`,
        { hint: 'pass a --disk-size at least as large as the current one' },
      );
    }
    if (growing && running) {
      // Online: the VMM and the guest's agent grow the disks now; an error is the answer
      // (nothing to complete later: the files grow only as the VMM is told).
      await this.n.growOnline(cur, patch.diskSize!);
    } else if (growing) {
      // Journaled (recover.ts): a growth cut short is completed at the next daemon start.
      const sizing = { vcpu: patch.vcpu, memoryMib: patch.memoryMib, diskSize: patch.diskSize };
      const size = patch.diskSize!;
      return table.journal.run('set', cur.id, { patch: sizing }, async (intent) => {
        await this.n.disks.grow(table.layout(cur), size, (disk) => intent.step(`after-${disk}`));
        const next = await this.apply(cur, patch, running);
        intent.step('after-row');
        return next;
      });
    }
    return this.apply(cur, patch, running);
  }

  private async apply(cur: VmRecord, patch: VmPatch, running: boolean): Promise<VmRecord> {
    const { table } = this.n;
    const meta = { ...metaOf(cur) };
    if (patch.autoStopMs === null) delete meta.autoStopAfterMs;
    else if (patch.autoStopMs !== undefined) meta.autoStopAfterMs = patch.autoStopMs;
    const next = table.update(cur.id, {
      vcpu: patch.vcpu ?? cur.vcpu,
      memoryMib: patch.memoryMib ?? cur.memoryMib,
      diskSize: patch.diskSize ?? cur.diskSize,
      nat: patch.nat ?? cur.nat,
      meta: { ...meta },
    });
    if (patch.nat !== undefined && patch.nat !== cur.nat && running)
      await this.n.network.applyNat(() => table.runningNets());
    table.event('vm.updated', next, { ...patch });
    return next;
  }
}
