/**
 * Bridge networking for VMs: pure builders (addresses, names, guest `ip=`,
 * firewall rule text) and the HostNetwork edge that applies them.
 * See docs/networking.md.
 */
export {
  allocateIp,
  checkBridgeAddress,
  inSubnet,
  prefixToNetmask,
  subnet,
  type AllocateIpInput,
  type Subnet,
} from './ipam.js';
export {
  IFNAME_MAX,
  isBangerTap,
  isPoolTap,
  isValidMac,
  macForBridge,
  macForVm,
  POOL_TAP_PREFIX,
  poolTapName,
  TAP_PREFIX,
  tapNameForVm,
} from './names.js';
export {
  GUEST_IFACE,
  guestDns,
  guestIpArg,
  MAX_GUEST_DNS,
  parseGuestIpArg,
  parseResolvConf,
  readHostDns,
  resolveGuestDns,
  type GuestDns,
  type GuestIpInput,
} from './guest.js';
export {
  iptablesRestoreInput,
  IPT_FILTER_CHAIN,
  IPT_JUMPS,
  IPT_NAT_CHAIN,
  nftRuleset,
  NFT_FAMILY,
  NFT_TABLE,
  type FirewallSpec,
  type FirewallVm,
} from './firewall/rules.js';
export {
  FIREWALL_CHOICES,
  resolveFirewall,
  type FirewallChoice,
  type FirewallName,
  type FirewallStatus,
} from './firewall/backends.js';
export {
  HostNetwork,
  type BridgeInfo,
  type EnsureBridgeResult,
  type HostNetworkOptions,
  type NatResult,
  type ReconcileReport,
  type RunningNets,
  type RunningVmNet,
  type TapInfo,
} from './host.js';
export { TapPool } from './pool.js';
export { defaultRunner, netnsRunner, type NetRunner } from './runner.js';
