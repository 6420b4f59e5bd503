import net from 'node:net';
import { ipToInt } from '../../util/ipv4.js';
import { BangerError } from '../../errors.js';
import { isBangerTap, isValidIfname, isValidMac, RULE_TAG, TAP_PREFIX } from '../names.js';

/**
 * The firewall rules banger wants, as text (pure). Each backend owns
 * chains/tables of its own that are rebuilt wholesale on every apply, so the
 * installed rules always equal the desired set: no duplicates after
 * restarts, nothing left for VMs that are gone.
 *
 * What the rules promise (docs/networking.md, "Isolation"):
 * - guests do not reach the host: packets from the bridge to a local address
 *   are dropped (IPv4 and IPv6) unless they answer a connection the host
 *   opened (the daemon reaches guest sshd from the host side);
 * - a guest sends only from its own MAC and IPv4 address (IPv6 only from
 *   link-local addresses), per tap, at the bridge; frames from banger taps
 *   that belong to no VM are dropped;
 * - guest↔guest traffic is dropped unless `guestToGuest`;
 * - only NAT VMs are forwarded out (masqueraded), never to 169.254.0.0/16;
 *   IPv6 is never forwarded for guests.
 *
 * Placement: drops are final wherever they sit (a dropped packet never
 * reaches a later hook or table), so banger's drops live where nobody else's
 * ACCEPT runs first — the iptables `mangle` table (before `filter`), or
 * banger's own nftables tables — and every jump is appended, never put above
 * the administrator's or Docker's rules. Only the ACCEPTs that let NAT
 * traffic past a DROP policy (Docker's) sit in `filter FORWARD`, appended:
 * a policy applies only after the last rule.
 */

export interface FirewallVm {
  id: string;
  ip: string;
  nat: boolean;
  /** The VM's tap on the bridge; with `mac`, enables its anti-spoofing rules. */
  tap?: string;
  /** The guest's MAC. */
  mac?: string;
}

export interface FirewallSpec {
  bridge: string;
  /** Running VMs on the bridge; all of them, with their NAT flag. */
  vms: FirewallVm[];
  /** Let guests on the bridge reach each other (config `guest_to_guest`). Default off. */
  guestToGuest?: boolean;
  /**
   * banger turned net.ipv4.ip_forward on (it was 0): recorded in the rules so
   * that it can be put back when the last VM goes, even after a daemon restart.
   */
  ipForwardWasOff?: boolean;
}

interface NormalSpec {
  bridge: string;
  vms: FirewallVm[];
  guestToGuest: boolean;
  ipForwardWasOff: boolean;
}

export const IPT_NAT_CHAIN = 'BANGER-POSTROUTING';
export const IPT_FILTER_CHAIN = 'BANGER-FORWARD';
/** mangle INPUT (IPv4 and IPv6): guests do not reach the host. */
export const IPT_INPUT_CHAIN = 'BANGER-INPUT';
/** mangle FORWARD (IPv4 and IPv6): what guests may not forward. */
export const IPT_GUARD_CHAIN = 'BANGER-GUARD';
/**
 * ebtables nat PREROUTING: per-tap anti-spoofing. PREROUTING runs before the
 * bridge learns the source MAC, so a spoofed frame cannot move another
 * VM's MAC to the spoofer's port (filter INPUT/FORWARD come after learning).
 */
export const EBT_CHAIN = 'BANGER-GUESTS';
/** ebtables filter FORWARD: guest↔guest (needs the output port). */
export const EBT_G2G_CHAIN = 'BANGER-G2G';

export type XtTool = 'iptables' | 'ip6tables' | 'ebtables';

export interface IptJump {
  tool: XtTool;
  table: 'nat' | 'filter' | 'mangle';
  parent: string;
  chain: string;
}

/** Jumps from the built-in chains into banger's chains (appended once each). */
export const IPT_JUMPS: IptJump[] = [
  { tool: 'iptables', table: 'nat', parent: 'POSTROUTING', chain: IPT_NAT_CHAIN },
  { tool: 'iptables', table: 'mangle', parent: 'INPUT', chain: IPT_INPUT_CHAIN },
  { tool: 'iptables', table: 'mangle', parent: 'FORWARD', chain: IPT_GUARD_CHAIN },
  { tool: 'iptables', table: 'filter', parent: 'FORWARD', chain: IPT_FILTER_CHAIN },
  { tool: 'ip6tables', table: 'mangle', parent: 'INPUT', chain: IPT_INPUT_CHAIN },
  { tool: 'ip6tables', table: 'mangle', parent: 'FORWARD', chain: IPT_GUARD_CHAIN },
  { tool: 'ebtables', table: 'nat', parent: 'PREROUTING', chain: EBT_CHAIN },
  { tool: 'ebtables', table: 'filter', parent: 'FORWARD', chain: EBT_G2G_CHAIN },
];

/** The rule spec of a jump (for -A / -D); ebtables-nft has no comment match. */
export const iptJumpSpec = (j: IptJump): string[] =>
  j.tool === 'ebtables' ? ['-j', j.chain] : ['-m', 'comment', '--comment', RULE_TAG, '-j', j.chain];

export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'banger';
/** The bridge-family table (anti-spoofing, guest↔guest). */
export const NFT_BRIDGE_FAMILY = 'bridge';
/** An empty chain in `table inet banger` whose presence records ip_forward was 0. */
export const NFT_FORWARD_RECORD = 'ip_forward_was_0';

/** Link-local IPv4, which holds the cloud metadata address 169.254.169.254. */
export const LINK_LOCAL_V4 = '169.254.0.0/16';
/** The only IPv6 source a guest may use (its link-local address). */
export const LINK_LOCAL_V6 = 'fe80::/10';
/** Matches every banger tap (iptables/ebtables `+`, nft `*`). */
const TAPS_EBT = `${TAP_PREFIX}+`;
const TAPS_NFT = `${TAP_PREFIX}*`;

export const vmComment = (id: string): string => `${RULE_TAG} vm ${id}`;
export const FORWARD_RECORD_COMMENT = `${RULE_TAG}: ip_forward was 0`;
const COMMENTS = {
  guestToGuest: `${RULE_TAG}: guest to guest on the bridge`,
  noGuestToGuest: `${RULE_TAG}: no guest to guest`,
  replies: `${RULE_TAG}: replies to guests`,
  hostReplies: `${RULE_TAG}: replies to the host`,
  noHost: `${RULE_TAG}: guests do not reach the host`,
  linkLocal: `${RULE_TAG}: no link-local or metadata`,
  noNat: `${RULE_TAG}: no outbound forwarding without nat`,
  noV6: `${RULE_TAG}: no IPv6 forwarding for guests`,
  strayTap: `${RULE_TAG}: taps of no VM`,
};

const vmIdRe = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Validates and orders the spec (stable output for the same set). */
export function normalizeSpec(spec: FirewallSpec): NormalSpec {
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
  const seenTap = new Map<string, string>();
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
    if (vm.tap !== undefined && !isBangerTap(vm.tap)) {
      throw new BangerError('internal', `VM ${vm.id} has tap '${vm.tap}', not a banger tap`, {
        hint: 'restart the VM',
      });
    }
    if (vm.mac !== undefined && !isValidMac(vm.mac)) {
      throw new BangerError('internal', `VM ${vm.id} has no valid MAC ('${vm.mac}')`, {
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
    const tapOwner = vm.tap === undefined ? undefined : seenTap.get(vm.tap);
    if (tapOwner !== undefined) {
      throw new BangerError('conflict', `VMs ${tapOwner} and ${vm.id} both have tap ${vm.tap}`, {
        hint: 'restart one of them',
      });
    }
    seenIp.set(vm.ip, vm.id);
    seenId.add(vm.id);
    if (vm.tap !== undefined) seenTap.set(vm.tap, vm.id);
  }
  const vms = [...spec.vms]
    .map((v) => {
      const out: FirewallVm = { id: v.id, ip: v.ip, nat: Boolean(v.nat) };
      if (v.tap !== undefined) out.tap = v.tap;
      if (v.mac !== undefined) out.mac = v.mac.toLowerCase();
      return out;
    })
    .sort((a, b) => ipToInt(a.ip) - ipToInt(b.ip) || a.id.localeCompare(b.id));
  return {
    bridge: spec.bridge,
    vms,
    guestToGuest: Boolean(spec.guestToGuest),
    ipForwardWasOff: Boolean(spec.ipForwardWasOff),
  };
}

const q = (s: string): string => `"${s}"`;
const cm = (s: string): string => `-m comment --comment ${q(s)}`;
/** VMs whose frames can be pinned to their tap (tap and MAC known). */
const pinned = (vms: FirewallVm[]): (FirewallVm & { tap: string; mac: string })[] =>
  vms.filter((v): v is FirewallVm & { tap: string; mac: string } => Boolean(v.tap && v.mac));

/**
 * Input for `iptables-restore --noflush` (IPv4). Declaring a chain
 * (`:CHAIN - [0:0]`) flushes it even with --noflush, so the chains are
 * rebuilt wholesale and nothing else on the host is touched. Jumps are
 * managed separately (iptables-restore cannot "append if missing").
 */
export function iptablesRestoreInput(input: FirewallSpec): string {
  const { bridge: br, vms, guestToGuest, ipForwardWasOff } = normalizeSpec(input);
  const nat = vms.filter((v) => v.nat);
  const lines: string[] = ['*nat', `:${IPT_NAT_CHAIN} - [0:0]`];
  for (const vm of nat) {
    lines.push(
      `-A ${IPT_NAT_CHAIN} -s ${vm.ip}/32 ! -o ${br} ${cm(vmComment(vm.id))} -j MASQUERADE`,
    );
  }
  lines.push('COMMIT', ...mangleLines(br, guestToGuest, 4, nat), '*filter');
  lines.push(`:${IPT_FILTER_CHAIN} - [0:0]`);
  if (guestToGuest) {
    lines.push(`-A ${IPT_FILTER_CHAIN} -i ${br} -o ${br} ${cm(COMMENTS.guestToGuest)} -j ACCEPT`);
  }
  lines.push(
    `-A ${IPT_FILTER_CHAIN} -o ${br} -m conntrack --ctstate RELATED,ESTABLISHED ${cm(COMMENTS.replies)} -j ACCEPT`,
  );
  for (const vm of nat) {
    lines.push(
      `-A ${IPT_FILTER_CHAIN} -s ${vm.ip}/32 -i ${br} ! -o ${br} ${cm(vmComment(vm.id))} -j ACCEPT`,
    );
  }
  if (ipForwardWasOff) {
    lines.push(`-A ${IPT_FILTER_CHAIN} ${cm(FORWARD_RECORD_COMMENT)} -j RETURN`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Input for `ip6tables-restore --noflush`: the same guards for IPv6 (never forwarded). */
export function ip6tablesRestoreInput(input: FirewallSpec): string {
  const { bridge: br, guestToGuest } = normalizeSpec(input);
  return [...mangleLines(br, guestToGuest, 6, []), ''].join('\n');
}

/** The mangle table: banger's drops, final before anyone's filter rules. */
function mangleLines(br: string, guestToGuest: boolean, v: 4 | 6, nat: FirewallVm[]): string[] {
  const I = IPT_INPUT_CHAIN;
  const G = IPT_GUARD_CHAIN;
  const lines = [
    '*mangle',
    `:${I} - [0:0]`,
    `:${G} - [0:0]`,
    `-A ${I} -i ${br} -m conntrack --ctstate RELATED,ESTABLISHED ${cm(COMMENTS.hostReplies)} -j RETURN`,
    `-A ${I} -i ${br} ${cm(COMMENTS.noHost)} -j DROP`,
  ];
  if (v === 4) lines.push(`-A ${G} -d ${LINK_LOCAL_V4} -i ${br} ${cm(COMMENTS.linkLocal)} -j DROP`);
  if (!guestToGuest) lines.push(`-A ${G} -i ${br} -o ${br} ${cm(COMMENTS.noGuestToGuest)} -j DROP`);
  for (const vm of nat) {
    lines.push(`-A ${G} -s ${vm.ip}/32 -i ${br} ! -o ${br} ${cm(vmComment(vm.id))} -j RETURN`);
  }
  lines.push(
    `-A ${G} -i ${br} ! -o ${br} ${cm(v === 4 ? COMMENTS.noNat : COMMENTS.noV6)} -j DROP`,
    'COMMIT',
  );
  return lines;
}

/**
 * Input for `ebtables-restore --noflush`: per-tap anti-spoofing at bridge
 * PREROUTING and the guest↔guest switch in FORWARD (both independent of
 * br_netfilter). User chains with policy RETURN.
 */
export function ebtablesRestoreInput(input: FirewallSpec): string {
  const { vms, guestToGuest } = normalizeSpec(input);
  const C = EBT_CHAIN;
  const lines = ['*nat', `:${C} RETURN`];
  for (const vm of pinned(vms)) {
    const i = `-i ${vm.tap}`;
    lines.push(
      `-A ${C} -s ! ${vm.mac} ${i} -j DROP`,
      `-A ${C} -p IPv4 ${i} --ip-src ${vm.ip} -j RETURN`,
      `-A ${C} -p ARP ${i} --arp-ip-src ${vm.ip} --arp-mac-src ${vm.mac} -j RETURN`,
      `-A ${C} -p IPv6 ${i} --ip6-src ${LINK_LOCAL_V6} -j RETURN`,
      `-A ${C} ${i} -j DROP`,
    );
  }
  lines.push(`-A ${C} -i ${TAPS_EBT} -j DROP`, 'COMMIT', '*filter', `:${EBT_G2G_CHAIN} RETURN`);
  if (!guestToGuest) lines.push(`-A ${EBT_G2G_CHAIN} -i ${TAPS_EBT} -o ${TAPS_EBT} -j DROP`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * Input for `nft -f -`: creates-then-deletes-then-recreates `table inet
 * banger` and `table bridge banger` in one transaction, so the replacement
 * is atomic and works whether or not the tables existed.
 */
export function nftRuleset(input: FirewallSpec): string {
  const { bridge, vms, guestToGuest, ipForwardWasOff } = normalizeSpec(input);
  const br = q(bridge);
  const nat = vms.filter((v) => v.nat);
  const t = `${NFT_FAMILY} ${NFT_TABLE}`;
  const b = `${NFT_BRIDGE_FAMILY} ${NFT_TABLE}`;
  const c = (s: string): string => `comment ${q(s)}`;
  const lines = [
    `table ${t}`,
    `delete table ${t}`,
    `table ${b}`,
    `delete table ${b}`,
    `table ${t} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    ...nat.map((vm) => `    ip saddr ${vm.ip} oifname != ${br} masquerade ${c(vmComment(vm.id))}`),
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    `    iifname ${br} ct state established,related accept ${c(COMMENTS.hostReplies)}`,
    `    iifname ${br} drop ${c(COMMENTS.noHost)}`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname ${br} ip daddr ${LINK_LOCAL_V4} drop ${c(COMMENTS.linkLocal)}`,
    guestToGuest
      ? `    iifname ${br} oifname ${br} accept ${c(COMMENTS.guestToGuest)}`
      : `    iifname ${br} oifname ${br} drop ${c(COMMENTS.noGuestToGuest)}`,
    `    oifname ${br} ct state established,related accept ${c(COMMENTS.replies)}`,
    ...nat.map(
      (vm) => `    iifname ${br} oifname != ${br} ip saddr ${vm.ip} accept ${c(vmComment(vm.id))}`,
    ),
    `    iifname ${br} oifname != ${br} drop ${c(COMMENTS.noNat)}`,
    '  }',
    ...(ipForwardWasOff ? [`  chain ${NFT_FORWARD_RECORD} {`, '  }'] : []),
    '}',
    `table ${b} {`,
    '  chain prerouting {',
    '    type filter hook prerouting priority filter; policy accept;',
  ];
  for (const vm of pinned(vms)) {
    const i = `iifname ${q(vm.tap)}`;
    lines.push(
      `    ${i} ether saddr != ${vm.mac} drop ${c(vmComment(vm.id))}`,
      `    ${i} ip saddr ${vm.ip} accept`,
      `    ${i} arp saddr ip ${vm.ip} arp saddr ether ${vm.mac} accept`,
      `    ${i} ip6 saddr ${LINK_LOCAL_V6} accept`,
      `    ${i} drop`,
    );
  }
  lines.push(
    `    iifname ${q(TAPS_NFT)} drop ${c(COMMENTS.strayTap)}`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    ...(guestToGuest
      ? []
      : [`    iifname ${q(TAPS_NFT)} oifname ${q(TAPS_NFT)} drop ${c(COMMENTS.noGuestToGuest)}`]),
    '  }',
    '}',
    '',
  );
  return lines.join('\n');
}

/** Input for `nft -f -` that removes banger's tables whether or not they exist. */
export const nftTeardown = (): string =>
  [NFT_FAMILY, NFT_BRIDGE_FAMILY]
    .map((f) => `table ${f} ${NFT_TABLE}\ndelete table ${f} ${NFT_TABLE}\n`)
    .join('');

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
    .filter((l) =>
      [
        IPT_NAT_CHAIN,
        IPT_FILTER_CHAIN,
        IPT_INPUT_CHAIN,
        IPT_GUARD_CHAIN,
        EBT_CHAIN,
        EBT_G2G_CHAIN,
      ].some((c) => l.startsWith(`-A ${c} `)),
    );
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
 * One table's lines from a whole `<tool>-save` listing: from its `*table`
 * header to the next header (ebtables-save writes no COMMIT). Pure.
 */
export function tableListing(save: string, table: string): string {
  const out: string[] = [];
  let inside = false;
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) inside = line.slice(1).trim() === table;
    else if (inside) out.push(line);
  }
  return out.join('\n');
}

/** The listing's rules (as written) in `parent` that jump to `chain`. */
function jumpLines(listing: string, parent: string, chain: string): string[] {
  return listing
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => {
      const argv = splitRuleLine(l);
      const j = argv.indexOf('-j');
      return argv[0] === '-A' && argv[1] === parent && j > 0 && argv[j + 1] === chain;
    });
}

/**
 * A `<tool>-restore --noflush` input with, before each table's COMMIT, the
 * jumps into banger's chains that `save` (the tool's whole listing) lacks:
 * the chains and the hooks into them go in as one transaction. Appended:
 * never above the administrator's or Docker's rules. Pure.
 */
export function withMissingJumps(input: string, tool: XtTool, save: string): string {
  const lines = input.split('\n');
  const out: string[] = [];
  let table = '';
  for (const line of lines) {
    if (line.startsWith('*')) table = line.slice(1).trim();
    if (line === 'COMMIT') {
      const listing = tableListing(save, table);
      for (const j of IPT_JUMPS) {
        if (j.tool !== tool || j.table !== table) continue;
        if (jumpLines(listing, j.parent, j.chain).length === 0)
          out.push(`-A ${j.parent} ${iptJumpSpec(j).join(' ')}`);
      }
    }
    out.push(line);
  }
  return out.join('\n');
}

/**
 * A `<tool>-restore --noflush` input that removes every jump into banger's
 * chains and then the chains, as `save` (the tool's whole listing) shows
 * them; '' when nothing of banger's is there. Pure.
 */
export function teardownRestoreInput(tool: XtTool, save: string): string {
  const out: string[] = [];
  const tables = [...new Set(IPT_JUMPS.filter((j) => j.tool === tool).map((j) => j.table))];
  for (const table of tables) {
    const listing = tableListing(save, table);
    const jumps = IPT_JUMPS.filter((j) => j.tool === tool && j.table === table);
    const body: string[] = [];
    for (const j of jumps)
      for (const l of jumpLines(listing, j.parent, j.chain)) body.push(l.replace(/^-A /, '-D '));
    for (const chain of new Set(jumps.map((j) => j.chain))) {
      if (!new RegExp(`^:${chain} `, 'm').test(listing)) continue;
      body.push(`-F ${chain}`, `-X ${chain}`);
    }
    if (body.length > 0) out.push(`*${table}`, ...body, 'COMMIT');
  }
  return out.length > 0 ? [...out, ''].join('\n') : '';
}
