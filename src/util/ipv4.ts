import net from 'node:net';

/**
 * IPv4 arithmetic: addresses as 32-bit numbers, CIDR parsing and membership.
 * Pure; used by config validation and by the network layer.
 */

export function parseCidr(s: string): { network: string; prefix: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(s.trim());
  if (!m || !net.isIPv4(m[1]!) || Number(m[2]) > 30 || Number(m[2]) < 8) {
    throw new Error(
      `'${s}' is not an IPv4 CIDR with a prefix between /8 and /30 (e.g. 172.16.0.0/24)`,
    );
  }
  const prefix = Number(m[2]);
  const addr = ipToInt(m[1]!);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { network: intToIp((addr & mask) >>> 0), prefix };
}

export const ipToInt = (ip: string): number =>
  ip.split('.').reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);
export const intToIp = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');

export function cidrContains(cidr: string, ip: string): boolean {
  const { network, prefix } = parseCidr(cidr);
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  return (ipToInt(ip) & mask) >>> 0 === ipToInt(network);
}
