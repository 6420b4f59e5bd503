import fs from 'node:fs';
import path from 'node:path';
import type { FileSync } from '../config/schema.js';
import type { Ext4Dir, Ext4File } from '../storage/ext4.js';

/**
 * `[[file_sync]]` entries → what goes onto a new VM's work disk (mounted at
 * /root, so `/root/x` is `/x` on the disk). A file gets `mode` (default 0600);
 * a directory is copied whole, its files keeping their host modes unless
 * `mode` is set. A host path that does not exist is skipped with a warning
 * (a laptop without `~/.npmrc` still gets its VMs). Symlinks are not followed
 * inside a directory.
 */

export const DEFAULT_FILE_SYNC_MODE = 0o600;

export interface FileSyncPlan {
  files: Ext4File[];
  dirs: Ext4Dir[];
  warnings: string[];
}

const onDisk = (guest: string): string => guest.replace(/^\/root(?=\/)/, '');

export function resolveFileSync(entries: FileSync[]): FileSyncPlan {
  const plan: FileSyncPlan = { files: [], dirs: [], warnings: [] };
  entries.forEach((f, i) => {
    const what = `[[file_sync]] entry ${i + 1}`;
    let st: fs.Stats;
    try {
      st = fs.statSync(f.host);
    } catch {
      plan.warnings.push(`${what}: ${f.host} does not exist on the host: skipped`);
      return;
    }
    const dest = onDisk(f.guest);
    if (st.isFile()) {
      plan.files.push({
        path: dest,
        hostPath: f.host,
        mode: f.mode ?? DEFAULT_FILE_SYNC_MODE,
        uid: 0,
        gid: 0,
      });
    } else if (st.isDirectory()) {
      let links = 0;
      const walk = (host: string, guest: string, mode: number): void => {
        plan.dirs.push({ path: guest, mode: mode & 0o7777, uid: 0, gid: 0 });
        for (const name of fs.readdirSync(host).sort()) {
          const h = path.join(host, name);
          const g = `${guest}/${name}`;
          const s = fs.lstatSync(h);
          if (s.isDirectory()) walk(h, g, s.mode);
          else if (s.isFile())
            plan.files.push({
              path: g,
              hostPath: h,
              mode: f.mode ?? s.mode & 0o7777,
              uid: 0,
              gid: 0,
            });
          else if (s.isSymbolicLink()) links++;
        }
      };
      walk(f.host, dest, st.mode);
      if (links)
        plan.warnings.push(
          `${what}: skipped ${links} symlink${links === 1 ? '' : 's'} in ${f.host}`,
        );
    } else {
      plan.warnings.push(`${what}: ${f.host} is not a file or directory: skipped`);
    }
  });
  return plan;
}
