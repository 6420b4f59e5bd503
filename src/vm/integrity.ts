import fs from 'node:fs';
import path from 'node:path';
import type { Paths } from '../config/paths.js';
import type { Store } from '../store/index.js';
import { isProcessAlive } from '../util/proc.js';
import { vmLayout } from './layout.js';
import { isActive } from './records.js';

/**
 * The store's integrity, checked against the files it describes: what the
 * fault-injection suite asserts after every recovery, and what a daemon that
 * is idle should always satisfy (docs/reliability.md). Returns one line per
 * problem; empty when consistent. Reads only.
 *
 *  - no open intent (every operation finished, or was recovered);
 *  - every VM row has its directory and both disks, an image row, a unique
 *    address, MAC and tap; an active row's VMM runs (pid + start time);
 *  - every managed image row has its root filesystem (and work seed), every
 *    managed kernel row its directory and kernel;
 *  - no VM, image or kernel directory without a row; nothing in the scratch dir.
 */
export function checkIntegrity(
  store: Pick<Store, 'vms' | 'images' | 'kernels' | 'journal'>,
  paths: Pick<Paths, 'vmsDir' | 'imagesDir' | 'kernelsDir' | 'tmpDir'>,
): string[] {
  const problems: string[] = [];
  for (const i of store.journal.open())
    problems.push(`open intent ${i.op} ${i.subject} at ${i.step} (daemon pid ${i.pid})`);

  const vms = store.vms.list();
  const seen = {
    ip: new Map<string, string>(),
    mac: new Map<string, string>(),
    tap: new Map<string, string>(),
  };
  for (const vm of vms) {
    const l = vmLayout(paths.vmsDir, vm.id);
    for (const f of [l.dir, l.overlayDisk, l.workDisk])
      if (!fs.existsSync(f)) problems.push(`vm ${vm.name}: ${f} is missing`);
    if (!store.images.get(vm.imageId))
      problems.push(`vm ${vm.name}: image ${vm.imageId} has no row`);
    for (const k of ['ip', 'mac', 'tap'] as const) {
      const v = vm[k];
      if (!v) continue;
      const other = seen[k].get(v);
      if (other) problems.push(`vm ${vm.name}: ${k} ${v} is also vm ${other}'s`);
      seen[k].set(v, vm.name);
    }
    if (isActive(vm) && !(vm.pid && isProcessAlive(vm.pid, vm.pidStartTime)))
      problems.push(`vm ${vm.name}: ${vm.state} but its VMM (pid ${vm.pid}) does not run`);
    if (!isActive(vm) && (vm.pid || vm.tap))
      problems.push(
        `vm ${vm.name}: ${vm.state} but still has ${vm.pid ? `pid ${vm.pid}` : `tap ${vm.tap}`}`,
      );
  }
  problems.push(...strayDirs(paths.vmsDir, new Set(vms.map((v) => v.id)), 'vm'));

  const images = store.images.list();
  for (const img of images) {
    if (!img.managed) continue;
    for (const f of [img.rootfsPath, img.workSeedPath])
      if (f && !fs.existsSync(f)) problems.push(`image ${img.name}: ${f} is missing`);
  }
  problems.push(...strayDirs(paths.imagesDir, new Set(images.map((i) => i.id)), 'image'));

  const kernels = store.kernels.list();
  for (const k of kernels) {
    if (!k.managed) continue;
    for (const f of [k.dir, k.kernelPath])
      if (!fs.existsSync(f)) problems.push(`kernel ${k.name}: ${f} is missing`);
  }
  problems.push(...strayDirs(paths.kernelsDir, new Set(kernels.map((k) => k.name)), 'kernel'));

  for (const n of readdir(paths.tmpDir))
    problems.push(`scratch ${path.join(paths.tmpDir, n)} is left`);
  return problems;
}

function strayDirs(dir: string, known: Set<string>, what: string): string[] {
  return readdir(dir)
    .filter((n) => !known.has(n))
    .map((n) => `${path.join(dir, n)} belongs to no ${what} row`);
}

function readdir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
