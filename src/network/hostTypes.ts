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
  /**
   * 'enabled': this call turned net.ipv4.ip_forward on; 'restored': it put it
   * back to 0 (banger had turned it on, and no NAT VM is left).
   */
  ipForward: 'enabled' | 'already' | 'untouched' | 'restored';
}

/** A running VM's network facts; `tap` and `mac` also pin its anti-spoofing rules. */
export type RunningVmNet = FirewallVm;

/**
 * The running VMs' facts, or how to read them: a function is called only once
 * the firewall lock is held, so of two VMs coming up at once the later rule
 * set always holds both (a list read before waiting could miss the other).
 */
export type RunningNets = RunningVmNet[] | (() => RunningVmNet[]);

export const resolveNets = (r: RunningNets): RunningVmNet[] => (typeof r === 'function' ? r() : r);
