import fs from 'node:fs';
import type { Check } from '../api/schemas/daemon.js';
import { isBangerError } from '../errors.js';
import {
  defaultRunner,
  HostNetwork,
  resolveFirewall,
  type FirewallChoice,
  type NetRunner,
} from '../network/index.js';
import { which as whichOnPath } from '../util/exec.js';
import type { CheckDef } from './checks.js';

/**
 * Doctor checks for bridge networking, as data. They only read host state
 * (no throwaway bridges or namespaces). CAP_NET_ADMIN, /dev/net/tun and the
 * iptables/nft binaries are already covered by the doctor's own checks
 * ('net-admin', 'tun', 'tool:firewall').
 */
export interface NetProbe {
  readFile(file: string): string | undefined;
  which(cmd: string): string | undefined;
  run: NetRunner;
}

export const hostNetProbe = (run: NetRunner = defaultRunner): NetProbe => ({
  readFile: (file) => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
  },
  which: (c) => whichOnPath(c),
  run,
});

type Result = Omit<Check, 'id' | 'title'>;
const pass = (detail: string): Result => ({ status: 'pass', detail });
const warn = (detail: string, hint: string): Result => ({ status: 'warn', detail, hint });
const fail = (detail: string, hint: string): Result => ({ status: 'fail', detail, hint });

const errorResult = (e: unknown, status: 'warn' | 'fail' = 'warn'): Result => {
  if (isBangerError(e)) {
    return { status, detail: e.message, hint: e.hint ?? 'see docs/networking.md' };
  }
  return { status, detail: String((e as Error)?.message ?? e), hint: 'see docs/networking.md' };
};

export function networkChecks(
  probe: NetProbe = hostNetProbe(),
  opts: { firewall?: FirewallChoice } = {},
): CheckDef[] {
  const choice = opts.firewall ?? 'auto';
  return [
    {
      id: 'net:ip-forward',
      title: 'IPv4 forwarding (for --nat)',
      run: ({ probe: hostProbe }) => {
        const v = probe.readFile('/proc/sys/net/ipv4/ip_forward')?.trim();
        if (v === '1') return pass('net.ipv4.ip_forward = 1');
        if (v === undefined)
          return warn('cannot read /proc/sys/net/ipv4/ip_forward', 'check that /proc is mounted');
        return hostProbe.hasNetAdmin()
          ? pass('net.ipv4.ip_forward = 0 (banger turns it on when the first --nat VM starts)')
          : warn(
              'net.ipv4.ip_forward = 0 and bangerd cannot turn it on (no CAP_NET_ADMIN)',
              'sudo sysctl -w net.ipv4.ip_forward=1 (or run bangerd as root)',
            );
      },
    },
    {
      id: 'net:sysctl',
      title: 'tool sysctl',
      run: () => {
        const p = probe.which('sysctl');
        return p
          ? pass(p)
          : fail(
              'sysctl not found (turns on IPv4 forwarding for --nat)',
              'sudo apt-get install procps',
            );
      },
    },
    {
      id: 'net:bridge',
      title: 'bridge',
      run: async ({ config }) => {
        let hn: HostNetwork;
        try {
          hn = HostNetwork.fromConfig(config, { run: probe.run, which: probe.which });
        } catch (e) {
          return errorResult(e, 'fail');
        }
        try {
          const info = await hn.bridgeInfo();
          if (!info)
            return pass(`${hn.bridge} does not exist yet (created when the first VM starts)`);
          if (info.kind !== 'bridge')
            return fail(
              `${hn.bridge} exists but is ${info.kind ? `a ${info.kind} device` : 'not a bridge'}`,
              `delete it (sudo ip link del ${hn.bridge}) or set bridge_name in config.toml`,
            );
          const ports = await hn.bridgePorts();
          const other = info.addresses.filter((a) => a !== hn.bridgeAddress);
          if (!info.addresses.includes(hn.bridgeAddress) || other.length > 0)
            return warn(
              `${hn.bridge} has ${info.addresses.join(', ') || 'no address'}, config wants ${hn.bridgeAddress}`,
              ports.length > 0
                ? 'stop the VMs on it; banger readdresses it at the next VM start'
                : 'banger readdresses it at the next VM start',
            );
          if (!info.up)
            return warn(`${hn.bridge} is down`, 'it is brought up at the next VM start');
          return pass(`${hn.bridge} ${hn.bridgeAddress}, ${ports.length} interface(s) attached`);
        } catch (e) {
          return errorResult(e);
        }
      },
    },
    {
      id: 'net:firewall',
      title: 'firewall backend (NAT rules)',
      run: async ({ config }) => {
        const r = resolveFirewall(choice, probe.which);
        if (!r.backend)
          return fail(
            `${r.reason}: VMs cannot start (their isolation and NAT are firewall rules)`,
            'sudo apt-get install iptables (or nftables)',
          );
        try {
          const hn = HostNetwork.fromConfig(config, {
            run: probe.run,
            which: probe.which,
            firewall: r.backend,
          });
          const status = await hn.firewallStatus();
          const rules = status?.installed
            ? `banger rules installed (${status.natVmIds.length} VM(s) with NAT)`
            : 'no banger rules installed';
          return pass(`${r.backend} (${r.reason}); ${rules}`);
        } catch (e) {
          return errorResult(e);
        }
      },
    },
    {
      id: 'net:br-netfilter',
      title: 'bridged traffic and netfilter',
      run: ({ config }) => {
        const v = probe.readFile('/proc/sys/net/bridge/bridge-nf-call-iptables')?.trim();
        if (v === undefined || v === '0')
          return pass('bridged traffic is filtered at the bridge only (isolation, anti-spoofing)');
        const backend = resolveFirewall(choice, probe.which).backend;
        if (backend === 'nft' && config.guestToGuest)
          return warn(
            "br_netfilter sends guest-to-guest traffic through FORWARD; with guest_to_guest = true a DROP policy in another table (e.g. Docker) cannot be overridden from banger's nft table",
            'use firewall = "iptables", or sudo sysctl -w net.bridge.bridge-nf-call-iptables=0 if nothing needs it',
          );
        return pass('br_netfilter is on; bridged traffic also passes the FORWARD rules');
      },
    },
  ];
}
