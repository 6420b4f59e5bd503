import path from 'node:path';

/**
 * The files of one snapshot, in `<state>/snapshots/<id>/`: the VMM's device
 * state, the guest memory, and sparse copies of the VM's overlay and work
 * disks taken while it was paused. The only place these names are spelled.
 */
export const SNAPSHOT_FILES = {
  state: 'vmstate',
  mem: 'memory',
  overlay: 'overlay.ext4',
  work: 'work.ext4',
} as const;

export type SnapshotLayout = { dir: string } & { [K in keyof typeof SNAPSHOT_FILES]: string };

export function snapshotLayout(dir: string): SnapshotLayout {
  const out: Record<string, string> = { dir };
  for (const [k, f] of Object.entries(SNAPSHOT_FILES)) out[k] = path.join(dir, f);
  return out as SnapshotLayout;
}
