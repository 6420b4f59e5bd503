import net from 'node:net';
import { intToIp, ipToInt, parseCidr } from '../util/ipv4.js';
import { BangerError } from '../errors.js';

/** Guest address allocation from `cidr` (pure). */

export interface Subnet {
  /** Normalised `network/prefix`. */
  cidr: string;
  network: string;
  prefix: number;
  netmask: string;
  broadcast: string;
  /** First and last usable host addresses. */
  first: string;
  last: string;
}

export const prefixToNetmask = (prefix: number): string =>
  intToIp(prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

export function subnet(cidr: string): Subnet {
  let parsed: { network: string; prefix: number };
  try {
    parsed = parseCidr(cidr);
  } catch (e) {
    throw new BangerError('config_invalid', `cidr ${(e as Error).message}`, {
      hint: 'fix cidr in config.toml',
    });
  }
  const { network, prefix } = parsed;
  const base = ipToInt(network);
  const size = 2 ** (32 - prefix);
  return {
    cidr: `${network}/${prefix}`,
    network,
    prefix,
    netmask: prefixToNetmask(prefix),
    broadcast: intToIp(base + size - 1),
    first: intToIp(base + 1),
    last: intToIp(base + size - 2),
  };
}

export function inSubnet(s: Subnet, ip: string): boolean {
  if (!net.isIPv4(ip)) return false;
  const n = ipToInt(ip);
  return n >= ipToInt(s.network) && n <= ipToInt(s.broadcast);
}

/** Checks bridge_ip against cidr; returns the subnet. Errors name both keys. */
export function checkBridgeAddress(cidr: string, bridgeIp: string): Subnet {
  const s = subnet(cidr);
  if (!net.isIPv4(bridgeIp)) {
    throw new BangerError('config_invalid', `bridge_ip '${bridgeIp}' is not an IPv4 address`, {
      hint: 'fix bridge_ip in config.toml',
    });
  }
  if (!inSubnet(s, bridgeIp) || bridgeIp === s.network || bridgeIp === s.broadcast) {
    throw new BangerError(
      'config_invalid',
      `bridge_ip ${bridgeIp} is not a host address of cidr ${s.cidr}`,
      { hint: `set bridge_ip to an address between ${s.first} and ${s.last} in config.toml` },
    );
  }
  return s;
}

export interface AllocateIpInput {
  cidr: string;
  bridgeIp: string;
  /** Addresses already held by VMs (any outside the cidr are ignored). */
  used: Iterable<string>;
  /** Returned when it is a free host address of the cidr (e.g. the VM's persisted IP). */
  preferred?: string;
}

/**
 * The first free host address of `cidr`, skipping the network and broadcast
 * addresses and `bridgeIp`. Throws a BangerError when the range is full.
 */
export function allocateIp({ cidr, bridgeIp, used, preferred }: AllocateIpInput): string {
  const s = checkBridgeAddress(cidr, bridgeIp);
  const taken = new Set<number>();
  for (const ip of used) if (net.isIPv4(ip)) taken.add(ipToInt(ip));
  taken.add(ipToInt(bridgeIp));
  if (preferred !== undefined && inSubnet(s, preferred)) {
    const p = ipToInt(preferred);
    if (p > ipToInt(s.network) && p < ipToInt(s.broadcast) && !taken.has(p)) return preferred;
  }
  const last = ipToInt(s.last);
  for (let n = ipToInt(s.first); n <= last; n++) {
    if (!taken.has(n)) return intToIp(n);
  }
  const hosts = last - ipToInt(s.first) + 1;
  const wider = s.prefix > 8 ? parseCidr(`${s.network}/${Math.max(8, s.prefix - 4)}`) : undefined;
  throw new BangerError(
    'precondition',
    `no free guest address in ${s.cidr}: all ${hosts - 1} guest addresses are in use`,
    {
      hint: wider
        ? `widen cidr in config.toml (e.g. cidr = "${wider.network}/${wider.prefix}") or delete unused VMs`
        : 'delete unused VMs',
      details: { cidr: s.cidr, inUse: hosts - 1 },
    },
  );
}
