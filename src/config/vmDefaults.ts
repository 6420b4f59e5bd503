import type { VmDefaultsConfig } from './schema.js';

/**
 * Effective VM sizing with provenance (spec §3): explicit flag > config >
 * host heuristic > built-in floor. Pure: host facts are passed in.
 */

export type Provenance = 'flag' | 'config' | 'host' | 'builtin';

export interface Sourced<T> {
  value: T;
  source: Provenance;
}

export interface VmSizing {
  vcpu: Sourced<number>;
  memoryMib: Sourced<number>;
  diskSize: Sourced<number>;
}

export interface HostFacts {
  cpus: number;
  memoryBytes: number;
}

export const BUILTIN_FLOORS = { vcpu: 1, memoryMib: 512, diskSize: 8 * 1024 ** 3 } as const;
const GiB = 1024 ** 3;

export function hostHeuristics(host: HostFacts): {
  vcpu: number;
  memoryMib: number;
  diskSize: number;
} {
  return {
    vcpu: Math.min(4, Math.floor(host.cpus / 4)),
    memoryMib: Math.floor(Math.min(8 * GiB, host.memoryBytes / 8) / 1024 ** 2),
    diskSize: 8 * GiB,
  };
}

export function resolveVmSizing(
  flags: VmDefaultsConfig,
  config: VmDefaultsConfig,
  host: HostFacts | undefined,
): VmSizing {
  const heur = host ? hostHeuristics(host) : undefined;
  const pick = (key: keyof VmDefaultsConfig): Sourced<number> => {
    const flag = flags[key];
    if (flag !== undefined) return { value: flag, source: 'flag' };
    const conf = config[key];
    if (conf !== undefined) return { value: conf, source: 'config' };
    const h = heur?.[key];
    if (h !== undefined && h >= BUILTIN_FLOORS[key]) return { value: h, source: 'host' };
    return { value: BUILTIN_FLOORS[key], source: 'builtin' };
  };
  return { vcpu: pick('vcpu'), memoryMib: pick('memoryMib'), diskSize: pick('diskSize') };
}
