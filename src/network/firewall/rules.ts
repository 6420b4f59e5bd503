import net from 'node:net';
import { ipToInt } from '../../util/ipv4.js';
import { BangerError } from '../../errors.js';
import { isValidIfname, RULE_TAG } from '../names.js';

/**
 * The firewall rules banger wants, as text (pure). Each backend owns a
 * namespace of its own that is rebuilt wholesale on every apply, so the
 * installed rules always equal the desired set: no duplicates after
 * restarts, nothing left for VMs that are gone.
 *
 * Per VM with NAT: masquerade its address when leaving through a non-bridge
 * interface, and accept forwarding it out. Shared: accept guest↔guest
 * traffic on the bridge (br_netfilter may send bridged frames through the
 * FORWARD chain, where e.g. Docker's DROP policy would kill them), accept
 * replies back to guests, and drop everything else a guest tries to forward
 * out (VMs without NAT get no outbound access; VM↔host on the bridge is
 * INPUT/OUTPUT and unaffected).
 */

export interface FirewallVm {
  id: string;
  ip: string;
  nat: boolean;
}

export interface FirewallSpec {
  bridge: string;
  /** Running VMs on the bridge; all of them, with their NAT flag. */
  vms: FirewallVm[];
}

export const IPT_NAT_CHAIN = 'BANGER-POSTROUTING';
export const IPT_FILTER_CHAIN = 'BANGER-FORWARD';

export interface IptJump {
  table: 'nat' | 'filter';
  parent: string;
  chain: string;
}

/** Jumps from the built-in chains into banger's chains (inserted once, at the top). */
export const IPT_JUMPS: IptJump[] = [
  { table: 'nat', parent: 'POSTROUTING', chain: IPT_NAT_CHAIN },
  { table: 'filter', parent: 'FORWARD', chain: IPT_FILTER_CHAIN },
];

/** The rule spec of a jump (for -C / -I / -D). */
export const iptJumpSpec = (j: IptJump): string[] => [
  '-m',
  'comment',
  '--comment',
  RULE_TAG,
  '-j',
  j.chain,
];

export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'banger';

export const vmComment = (id: string): string => `${RULE_TAG} vm ${id}`;
const COMMENTS = {
  guestToGuest: `${RULE_TAG}: guest to guest on the bridge`,
  replies: `${RULE_TAG}: replies to guests`,
  noNat: `${RULE_TAG}: no outbound forwarding without nat`,
};

const vmIdRe = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Validates and orders the spec (stable output for the same set). */
export function normalizeSpec(spec: FirewallSpec): FirewallSpec {
  if (!isValidIfname(spec.bridge)) {
    throw new BangerError(
      'config_invalid',
      `bridge_name '${spec.bridge}' is not an interface name`,
      {
        hint: 'fix bridge_name in config.toml',
      },
    );
  }
  const seenIp = new Map<string, string>();
  const seenId = new Set<string>();
  for (const vm of spec.vms) {
    if (!vmIdRe.test(vm.id)) {
      throw new BangerError('internal', `VM id '${vm.id}' cannot label a firewall rule`, {
        hint: 'VM ids are letters, digits, dot, dash and underscore',
      });
    }
    if (!net.isIPv4(vm.ip)) {
      throw new BangerError('internal', `VM ${vm.id} has no valid IPv4 address ('${vm.ip}')`, {
        hint: 'recreate the VM',
      });
    }
    const other = seenIp.get(vm.ip);
    if (other !== undefined && other !== vm.id) {
      throw new BangerError('conflict', `VMs ${other} and ${vm.id} both have address ${vm.ip}`, {
        hint: 'stop one of them and recreate it to get a new address',
      });
    }
    if (seenId.has(vm.id)) {
      throw new BangerError('internal', `VM ${vm.id} is listed twice in the firewall set`, {
        hint: 'report this as a bug',
      });
    }
    seenIp.set(vm.ip, vm.id);
    seenId.add(vm.id);
  }
  const vms = [...spec.vms]
    .map((v) => ({ id: v.id, ip: v.ip, nat: Boolean(v.nat) }))
    .sort((a, b) => ipToInt(a.ip) - ipToInt(b.ip) || a.id.localeCompare(b.id));
  return { bridge: spec.bridge, vms };
}

const q = (s: string): string => `"${s}"`;

/**
 * Input for `iptables-restore --noflush`. Declaring a chain (`:CHAIN - [0:0]`)
 * flushes it even with --noflush, so the chains are rebuilt wholesale and
 * nothing else on the host is touched. Jumps are managed separately
 * (iptables-restore cannot "insert if missing").
 */
export function iptablesRestoreInput(input: FirewallSpec): string {
  const { bridge, vms } = normalizeSpec(input);
  const br = bridge;
  const nat = vms.filter((v) => v.nat);
  const lines: string[] = ['*nat', `:${IPT_NAT_CHAIN} - [0:0]`];
  for (const vm of nat) {
    lines.push(
      `-A ${IPT_NAT_CHAIN} -s ${vm.ip}/32 ! -o ${br} -m comment --comment ${q(vmComment(vm.id))} -j MASQUERADE`,
    );
  }
  lines.push('COMMIT', '*filter', `:${IPT_FILTER_CHAIN} - [0:0]`);
  lines.push(
    `-A ${IPT_FILTER_CHAIN} -i ${br} -o ${br} -m comment --comment ${q(COMMENTS.guestToGuest)} -j ACCEPT`,
    `-A ${IPT_FILTER_CHAIN} -o ${br} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment ${q(COMMENTS.replies)} -j ACCEPT`,
  );
  for (const vm of nat) {
    lines.push(
      `-A ${IPT_FILTER_CHAIN} -s ${vm.ip}/32 -i ${br} ! -o ${br} -m comment --comment ${q(vmComment(vm.id))} -j ACCEPT`,
    );
  }
  lines.push(
    `-A ${IPT_FILTER_CHAIN} -i ${br} ! -o ${br} -m comment --comment ${q(COMMENTS.noNat)} -j DROP`,
    'COMMIT',
    '',
  );
  return lines.join('\n');
}

/**
 * Input for `nft -f -`: creates-then-deletes-then-recreates `table inet banger`
 * in one transaction, so the replacement is atomic and works whether or not
 * the table existed.
 */
export function nftRuleset(input: FirewallSpec): string {
  const { bridge, vms } = normalizeSpec(input);
  const br = q(bridge);
  const nat = vms.filter((v) => v.nat);
  const t = `${NFT_FAMILY} ${NFT_TABLE}`;
  const lines = [
    `table ${t}`,
    `delete table ${t}`,
    `table ${t} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    ...nat.map(
      (vm) => `    ip saddr ${vm.ip} oifname != ${br} masquerade comment ${q(vmComment(vm.id))}`,
    ),
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname ${br} oifname ${br} accept comment ${q(COMMENTS.guestToGuest)}`,
    `    oifname ${br} ct state established,related accept comment ${q(COMMENTS.replies)}`,
    ...nat.map(
      (vm) =>
        `    iifname ${br} oifname != ${br} ip saddr ${vm.ip} accept comment ${q(vmComment(vm.id))}`,
    ),
    `    iifname ${br} oifname != ${br} drop comment ${q(COMMENTS.noNat)}`,
    '  }',
    '}',
    '',
  ];
  return lines.join('\n');
}

/** Input for `nft -f -` that removes banger's table whether or not it exists. */
export const nftTeardown = (): string =>
  `table ${NFT_FAMILY} ${NFT_TABLE}\ndelete table ${NFT_FAMILY} ${NFT_TABLE}\n`;

/** VM ids that have a masquerade rule in iptables-save / nft list output. */
export function natVmIdsFromRules(text: string): string[] {
  const ids = new Set<string>();
  for (const line of text.split('\n')) {
    if (!/MASQUERADE|masquerade/.test(line)) continue;
    const m = new RegExp(`"${RULE_TAG} vm ([^"]+)"`).exec(line);
    if (m) ids.add(m[1]!);
  }
  return [...ids].sort();
}

/** `-A CHAIN ...` lines of banger's chains in iptables-save output. */
export function bangerRulesFromSave(save: string): string[] {
  return save
    .split('\n')
    .filter((l) => l.startsWith(`-A ${IPT_NAT_CHAIN} `) || l.startsWith(`-A ${IPT_FILTER_CHAIN} `));
}

/**
 * Split one `iptables -S` line into argv (handles the double quotes
 * iptables puts around comments).
 */
export function splitRuleLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inQuote = false;
  let has = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (inQuote) {
      if (c === '\\' && i + 1 < line.length) {
        cur += line[++i];
      } else if (c === '"') inQuote = false;
      else cur += c;
    } else if (c === '"') {
      inQuote = true;
      has = true;
    } else if (c === ' ' || c === '\t') {
      if (has || cur) out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += c;
    }
  }
  if (has || cur) out.push(cur);
  return out;
}

/**
 * From `iptables -S <parent>` output, the `-D` argv of every rule that jumps
 * to `chain` (with or without banger's comment), for teardown.
 */
export function jumpDeletions(listing: string, parent: string, chain: string): string[][] {
  const out: string[][] = [];
  for (const line of listing.split('\n')) {
    const argv = splitRuleLine(line.trim());
    if (argv[0] !== '-A' || argv[1] !== parent) continue;
    const j = argv.indexOf('-j');
    if (j < 0 || argv[j + 1] !== chain) continue;
    out.push(['-D', ...argv.slice(1)]);
  }
  return out;
}
