import fs from 'node:fs';
import { fileSize } from '../util/tail.js';
import type { VmLayout } from './layout.js';

/**
 * Caps on what a guest (or its VMM) can write to the host: when a log passes
 * the cap it is copied to `<log>.1` (replacing the older copy) and truncated
 * in place. The writers open their logs with O_APPEND (QEMU's console with
 * `append=on`, the VMM's stdout by the daemon), so they carry on at the new,
 * short end. Bytes written between the copy and the truncation are lost —
 * the logrotate `copytruncate` trade-off, chosen because the VMM keeps its
 * file open and cannot be asked to reopen it.
 */
export function capLog(file: string, maxBytes: number): boolean {
  if (fileSize(file) <= maxBytes) return false; // 0 when missing
  fs.copyFileSync(file, `${file}.1`);
  fs.truncateSync(file, 0);
  return true;
}

/** Cap a VM's console and VMM logs; returns the files that were rotated. */
export function capVmLogs(l: Pick<VmLayout, 'consoleLog' | 'vmmLog'>, maxBytes: number): string[] {
  return [l.consoleLog, l.vmmLog].filter((f) => capLog(f, maxBytes));
}
