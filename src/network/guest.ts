import fs from 'node:fs';
import net from 'node:net';
import { BangerError } from '../errors.js';
import { prefixToNetmask } from './ipam.js';

/**
 * What the guest is told about its network: the kernel `ip=` argument that
 * banger's initramfs parses (Debian kernels lack CONFIG_IP_PNP and ignore it
 * themselves), and which DNS servers go into it.
 */

/** The kernel `ip=` format carries at most two DNS servers. */
export const MAX_GUEST_DNS = 2;
export const GUEST_IFACE = 'eth0';

export interface GuestIpInput {
  ip: string;
  prefix: number;
  gateway: string;
  hostname: string;
  dns: string[];
}

const hostnameRe = /^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$/i;

/**
 * `ip=<client>::<gw>:<netmask>:<hostname>:eth0:off[:<dns0>[:<dns1>]]`
 * (the kernel's nfsroot.txt format; empty server field; autoconf off).
 * Only the first two DNS servers fit the format.
 */
export function guestIpArg({ ip, prefix, gateway, hostname, dns }: GuestIpInput): string {
  const bad = (what: string, value: string, hint: string) =>
    new BangerError('internal', `invalid guest network ${what} '${value}'`, { hint });
  if (!net.isIPv4(ip)) throw bad('address', ip, 'the VM record needs an IPv4 address');
  if (!net.isIPv4(gateway)) throw bad('gateway', gateway, 'check bridge_ip in config.toml');
  if (!Number.isInteger(prefix) || prefix < 1 || prefix > 31)
    throw bad('prefix', String(prefix), 'check cidr in config.toml');
  if (!hostnameRe.test(hostname))
    throw bad('hostname', hostname, 'VM names must be letters, digits and dashes');
  for (const d of dns) if (!net.isIPv4(d)) throw bad('DNS server', d, 'check default_dns');
  const fields = [ip, '', gateway, prefixToNetmask(prefix), hostname, GUEST_IFACE, 'off'];
  fields.push(...dns.slice(0, MAX_GUEST_DNS));
  return `ip=${fields.join(':')}`;
}

export interface ParsedGuestIp {
  ip: string;
  gateway: string;
  netmask: string;
  hostname: string;
  device: string;
  autoconf: string;
  dns: string[];
}

/** Inverse of guestIpArg (what the initramfs does), for tests and `vm show`. */
export function parseGuestIpArg(arg: string): ParsedGuestIp | undefined {
  const m = /^ip=(.*)$/.exec(arg.trim());
  if (!m) return undefined;
  const f = m[1]!.split(':');
  if (f.length < 7) return undefined;
  return {
    ip: f[0]!,
    gateway: f[2]!,
    netmask: f[3]!,
    hostname: f[4]!,
    device: f[5]!,
    autoconf: f[6]!,
    dns: f.slice(7, 7 + MAX_GUEST_DNS).filter(Boolean),
  };
}

/**
 * IPv4 nameservers from resolv.conf text, without loopback ones (a guest
 * cannot reach the host's 127.0.0.53 stub) and without duplicates.
 */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)$/.exec(line);
    if (!m) continue;
    const ip = m[1]!;
    if (!net.isIPv4(ip) || ip.startsWith('127.') || ip === '0.0.0.0') continue;
    if (!out.includes(ip)) out.push(ip);
  }
  return out;
}

export type DnsSource = 'config' | 'host' | 'none';

export interface GuestDns {
  servers: string[];
  source: DnsSource;
  /** The resolv.conf the servers came from when source = 'host'. */
  file?: string;
}

/** default_dns from config, else the host's nameservers, else none (pure). */
export function resolveGuestDns(
  configured: string[],
  host: { servers: string[]; file?: string } | undefined,
): GuestDns {
  if (configured.length > 0)
    return { servers: configured.slice(0, MAX_GUEST_DNS), source: 'config' };
  if (host && host.servers.length > 0)
    return { servers: host.servers.slice(0, MAX_GUEST_DNS), source: 'host', file: host.file };
  return { servers: [], source: 'none' };
}

/**
 * Files read for the host's nameservers, in order. systemd-resolved's
 * /etc/resolv.conf only names its loopback stub; the upstream servers are in
 * the second file.
 */
export const RESOLV_CONF_FILES = ['/etc/resolv.conf', '/run/systemd/resolve/resolv.conf'];

/** Edge: the host's usable nameservers (first file that has any). */
export function readHostDns(
  readFile: (file: string) => string = (f) => fs.readFileSync(f, 'utf8'),
  files: string[] = RESOLV_CONF_FILES,
): { servers: string[]; file?: string } {
  for (const file of files) {
    let text: string;
    try {
      text = readFile(file);
    } catch {
      continue;
    }
    const servers = parseResolvConf(text);
    if (servers.length > 0) return { servers, file };
  }
  return { servers: [] };
}

/** Edge + decision: the DNS servers a new guest gets. */
export function guestDns(configured: string[], readFile?: (file: string) => string): GuestDns {
  return resolveGuestDns(configured, configured.length > 0 ? undefined : readHostDns(readFile));
}
