import {
  DISK_MIN_BYTES,
  DISK_RULE,
  MEMORY_MIN_MIB,
  MEMORY_RULE,
  VCPU_MAX,
  VCPU_MIN,
  VCPU_RULE,
} from '../api/limits.js';
import { parseSize } from './units.js';

/**
 * VM sizes as users type them (flags, the TUI's create form), checked against
 * the API's limits without zod. A bad value gives the rule to show, phrased as
 * the fix (api/limits.ts).
 */
export type Parsed<T> = { ok: true; value: T } | { ok: false; rule: string };

const bad = (rule: string): Parsed<never> => ({ ok: false, rule });

/** A whole number of vCPUs within the limits. */
export function parseVcpu(s: string): Parsed<number> {
  const n = /^\d+$/.test(s.trim()) ? Number(s.trim()) : NaN;
  return n >= VCPU_MIN && n <= VCPU_MAX ? { ok: true, value: n } : bad(VCPU_RULE);
}

/** Bytes of a size; a bare number counts in `bareUnit` bytes. */
function size(s: string, bareUnit: number): number | undefined {
  const t = s.trim();
  if (/^\d+$/.test(t)) return Number(t) * bareUnit;
  try {
    return parseSize(t);
  } catch {
    return undefined;
  }
}

/** Memory in MiB; a bare number is MiB (like Docker's and QEMU's -m). */
export function parseMemoryMib(s: string): Parsed<number> {
  const bytes = size(s, 1024 ** 2);
  if (bytes === undefined) return bad(MEMORY_RULE);
  const mib = Math.floor(bytes / 1024 ** 2);
  return mib >= MEMORY_MIN_MIB ? { ok: true, value: mib } : bad(MEMORY_RULE);
}

/** Work disk size in bytes; a bare number is GiB. */
export function parseDiskSize(s: string): Parsed<number> {
  const bytes = size(s, 1024 ** 3);
  return bytes !== undefined && bytes >= DISK_MIN_BYTES
    ? { ok: true, value: bytes }
    : bad(DISK_RULE);
}
