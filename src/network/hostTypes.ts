import type { FirewallName } from './firewall/backends.js';
import type { FirewallVm } from './firewall/rules.js';

/** What the host network edge (host.ts) reports and takes. */

export interface BridgeInfo {
  name: string;
  kind: string | undefined;
  up: boolean;
  mac: string;
  /** IPv4 addresses as `ip/prefix`. */
  addresses: string[];
}

export interface EnsureBridgeResult {
  created: boolean;
  /** What was changed on an existing bridge, e.g. 'removed address 10.0.0.1/24'. */
  changes: string[];
}

export interface NatResult {
  /** Backend used; undefined when no tool exists and no VM needs NAT. */
  backend: FirewallName | undefined;
  natVms: number;
  vms: number;
  /** 'enabled' when this call turned net.ipv4.ip_forward on. */
  ipForward: 'enabled' | 'already' | 'untouched';
}

export interface RunningVmNet extends FirewallVm {
  /** The VM's tap, when it has one. */
  tap?: string;
  /** The guest MAC (for neighbour seeding). */
  mac?: string;
}
