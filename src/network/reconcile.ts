import type { FirewallName } from './firewall/backends.js';
import type { EnsureBridgeResult, NatResult, RunningVmNet } from './hostTypes.js';
import { inSubnet, type Subnet } from './ipam.js';
import type { TapInfo } from './taps.js';

/** What reconciling needs of the host network (HostNetwork, host.ts). */
export interface ReconcilableHost {
  readonly bridge: string;
  readonly subnet: Subnet;
  ensureBridge(): Promise<EnsureBridgeResult>;
  listTaps(): Promise<TapInfo[]>;
  attachTap(name: string): Promise<void>;
  cleanupOrphans(
    known: Iterable<string>,
    opts: { taps?: TapInfo[] },
  ): Promise<{ deleted: string[]; inUse: string[] }>;
  applyNat(vms: RunningVmNet[]): Promise<NatResult>;
  /** After a firewall backend switch: the other backend's rules removed; which one, if any. */
  removeOtherBackend(): Promise<FirewallName | undefined>;
  permanentNeighbours(): Promise<{ ip: string; mac: string }[]>;
  neighbourClear(ip: string): Promise<boolean>;
  neighbourSeed(ip: string, mac: string): Promise<void>;
}

export interface ReconcileOptions {
  /** Adopts idle pool taps instead of deleting them. */
  pool?: { adopt(names: string[]): string[] };
  /** Re-seed permanent neighbour entries for the VMs that have a mac. */
  seedNeighbours?: boolean;
}

export interface ReconcileReport {
  bridge: EnsureBridgeResult;
  reattachedTaps: string[];
  missingTaps: string[];
  adoptedTaps: string[];
  deletedTaps: string[];
  inUseTaps: string[];
  nat: NatResult;
  otherBackendRemoved: FirewallName | undefined;
  neighbours: { seeded: number; cleared: string[] };
}

/**
 * Brings the host in line with the running VMs (call at daemon start,
 * after re-adopting VMs): bridge present and addressed, the VMs' taps
 * attached, idle pool taps adopted, other banger taps deleted, firewall
 * rules equal to the set (and a previous backend's leftovers removed),
 * neighbour entries re-seeded.
 */
export async function reconcileHost(
  host: ReconcilableHost,
  vms: RunningVmNet[],
  opts: ReconcileOptions = {},
): Promise<ReconcileReport> {
  const bridge = await host.ensureBridge();
  const taps = await host.listTaps();
  const byName = new Map(taps.map((t) => [t.name, t]));
  const known = vms.map((v) => v.tap).filter((t): t is string => Boolean(t));
  const reattachedTaps: string[] = [];
  const missingTaps: string[] = [];
  for (const name of known) {
    const t = byName.get(name);
    if (!t) {
      missingTaps.push(name);
    } else if (t.master !== host.bridge || !t.up) {
      await host.attachTap(name);
      reattachedTaps.push(name);
    }
  }
  const knownSet = new Set(known);
  const idle = taps.filter((t) => !knownSet.has(t.name) && !t.inUse).map((t) => t.name);
  const adoptedTaps = opts.pool ? opts.pool.adopt(idle) : [];
  for (const name of adoptedTaps) {
    const t = byName.get(name);
    if (t && (t.master !== host.bridge || !t.up)) await host.attachTap(name);
  }
  const { deleted, inUse } = await host.cleanupOrphans([...known, ...adoptedTaps], { taps });

  const nat = await host.applyNat(vms);
  const otherBackendRemoved = await host.removeOtherBackend();

  const cleared: string[] = [];
  let seeded = 0;
  if (opts.seedNeighbours) {
    const want = new Map(vms.filter((v) => v.mac).map((v) => [v.ip, v.mac!.toLowerCase()]));
    for (const n of await host.permanentNeighbours()) {
      if (!inSubnet(host.subnet, n.ip) || want.get(n.ip) === n.mac.toLowerCase()) continue;
      if (await host.neighbourClear(n.ip)) cleared.push(n.ip);
    }
    for (const [ip, mac] of want) {
      await host.neighbourSeed(ip, mac);
      seeded++;
    }
  }
  return {
    bridge,
    reattachedTaps,
    missingTaps,
    adoptedTaps,
    deletedTaps: deleted,
    inUseTaps: inUse,
    nat,
    otherBackendRemoved,
    neighbours: { seeded, cleared },
  };
}
