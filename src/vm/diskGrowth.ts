import fs from 'node:fs';
import { BangerError } from '../errors.js';
import type { GrowFsResult } from '../guest/agentProtocol.js';
import { diskFileSize, growDiskFile } from '../storage/growFile.js';
import { sleep } from '../util/sleep.js';
import type { DiskSpec, VmHandle, VmmDriver } from '../vmm/driver.js';
import type { VmLayout } from './layout.js';

/**
 * Growing a VM's writable disks without running e2fsprogs on the host over
 * filesystems the guest wrote: the host only makes the files larger; the
 * guest's agent grows each mounted filesystem with the kernel's online resize
 * (`grow-fs`), now for a running VM, at its next boot for a stopped one.
 */

/** The writable disks, as the launch spec names them (src/vm/launch.ts). */
export function growableDisks(l: VmLayout): Pick<DiskSpec, 'id' | 'path'>[] {
  return [
    { id: 'overlay', path: l.overlayDisk },
    { id: 'work', path: l.workDisk },
  ];
}

/** A stopped VM: the files grow; the agent grows the filesystems when the guest boots. */
export async function growDiskFiles(
  l: VmLayout,
  sizeBytes: number,
  grown?: (disk: 'work-disk' | 'overlay-disk') => void,
): Promise<void> {
  for (const d of growableDisks(l)) {
    await growDiskFile(d.path, sizeBytes);
    grown?.(d.id === 'work' ? 'work-disk' : 'overlay-disk');
  }
}

/**
 * What a grow-fs answer says, for disks grown to `sizeBytes`: `done`; `wait`
 * while the guest's kernel has not seen a device's new size yet (it learns it
 * from the VMM's config-change interrupt, a moment after the resize); or the
 * reason it failed. Pure.
 */
export function growFsVerdict(
  r: GrowFsResult,
  sizeBytes: number,
): { state: 'done' } | { state: 'wait'; why: string } | { state: 'failed'; why: string } {
  const want = diskFileSize(sizeBytes);
  const mounted = r.filesystems.filter((f) => f.mounted);
  if (mounted.length === 0)
    return { state: 'failed', why: 'the guest has none of banger’s disks mounted' };
  for (const f of mounted) {
    if (f.deviceBytes < want)
      return {
        state: 'wait',
        why: `the guest sees ${f.mount}'s disk at ${f.deviceBytes} bytes, not ${want} yet`,
      };
    if (f.error) return { state: 'failed', why: f.error };
  }
  return { state: 'done' };
}

export interface OnlineGrowth {
  vmName: string;
  layout: VmLayout;
  handle: VmHandle;
  driver: Pick<VmmDriver, 'name' | 'resizeDisk'>;
  /** The guest agent's grow-fs op. */
  growFs(): Promise<GrowFsResult>;
  sizeBytes: number;
  /** How long the guest may take to see the new sizes (default 20 s). */
  timeoutMs?: number;
}

/**
 * A running VM: grow its disk files, make the VMM and the guest see the new
 * sizes, and have the guest agent grow the mounted filesystems. Reusable by
 * anything that must grow a running VM's disks (vm set, warm starts).
 * Returns the agent's last answer.
 */
export async function growDisksOnline(o: OnlineGrowth): Promise<GrowFsResult> {
  const { driver } = o;
  if (!driver.resizeDisk) {
    throw new BangerError(
      'not_implemented',
      `vm '${o.vmName}': the ${driver.name} driver cannot resize a disk while the VM runs`,
      { hint: `stop it first: banger vm stop ${o.vmName}` },
    );
  }
  const size = diskFileSize(o.sizeBytes);
  const disks = growableDisks(o.layout);
  const before: number[] = [];
  let told = 0;
  try {
    for (const d of disks) before.push(await growDiskFile(d.path, size));
    for (const d of disks) {
      await driver.resizeDisk(o.handle, d, size);
      told++;
    }
  } catch (e) {
    // Nothing reached the guest yet: put the files back as they were.
    if (told === 0)
      for (const [i, d] of disks.entries())
        if (before[i] !== undefined)
          await fs.promises.truncate(d.path, before[i]!).catch(() => undefined);
    throw e instanceof BangerError
      ? e
      : new BangerError(
          'vmm_failed',
          `vm '${o.vmName}': the VMM could not resize its disks: ${(e as Error).message}`,
          {
            cause: e,
            hint: `see banger vm logs ${o.vmName}`,
          },
        );
  }
  const deadline = Date.now() + (o.timeoutMs ?? 20_000);
  for (;;) {
    const r = await o.growFs();
    const v = growFsVerdict(r, size);
    if (v.state === 'done') return r;
    if (v.state === 'failed' || Date.now() >= deadline) {
      throw new BangerError(
        'vmm_failed',
        `vm '${o.vmName}': the disk files are ${size} bytes but the guest did not grow its filesystems: ${v.why}`,
        { hint: 'the guest grows them at its next boot: banger vm restart ' + o.vmName },
      );
    }
    await sleep(250);
  }
}
