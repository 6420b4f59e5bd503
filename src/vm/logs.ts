import fs from 'node:fs';
import { INIT_ERROR_MARKER } from '../guest/bootContract.js';
import { fileSize, readFrom, tailBytes } from '../util/tail.js';
import { terminalSafe } from '../util/terminal.js';
import type { VmLayout } from './layout.js';

/**
 * Reading a VM's own logs: the serial console (what the guest printed) and
 * the VMM log (what the VMM printed). Each boot appends to the console log,
 * so a boot remembers where its output starts (`consoleStart`).
 */

/** Make sure the console log exists and return where the next boot's output will start. */
export function consoleMark(l: Pick<VmLayout, 'consoleLog'>): number {
  fs.appendFileSync(l.consoleLog, '');
  return fileSize(l.consoleLog);
}

/** This boot's console output (at most the last 256 KiB). */
export function consoleSince(l: Pick<VmLayout, 'consoleLog'>, from: number): string {
  return readFrom(l.consoleLog, from);
}

export const consoleSize = (l: Pick<VmLayout, 'consoleLog'>): number => fileSize(l.consoleLog);

/** The end of the VMM's log, for exit diagnosis. */
export const vmmLogTail = (l: Pick<VmLayout, 'vmmLog'>): string => tailBytes(l.vmmLog);

/** ` (last console line: …)` for error messages, or ` (no console output)`. */
export function lastConsoleLine(l: Pick<VmLayout, 'consoleLog'>, from: number): string {
  const lines = consoleSince(l, from)
    .split('\n')
    .map((s) => terminalSafe(s).trim())
    .filter(Boolean);
  const last = lines[lines.length - 1];
  return last ? ` (last console line: ${last.slice(0, 160)})` : ' (no console output)';
}

/** The line banger's init printed after its failure marker, if it printed one this boot. */
export function initFailure(l: Pick<VmLayout, 'consoleLog'>, from: number): string | undefined {
  const text = consoleSince(l, from);
  const at = text.indexOf(INIT_ERROR_MARKER);
  if (at < 0) return undefined;
  return text
    .slice(at + INIT_ERROR_MARKER.length)
    .split('\n')[0]!
    .trim();
}

/** The guest powered itself off (its kernel said so at the end of the console log). */
export function guestPoweredOff(l: Pick<VmLayout, 'consoleLog'>): boolean {
  return /reboot: Power down|System halted/.test(tailBytes(l.consoleLog, 4096));
}
