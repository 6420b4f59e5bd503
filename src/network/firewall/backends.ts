import { BangerError } from '../../errors.js';
import { mustRun, netFailure, type NetRunner } from '../runner.js';
import {
  bangerRulesFromSave,
  EBT_CHAIN,
  EBT_G2G_CHAIN,
  ebtablesRestoreInput,
  FORWARD_RECORD_COMMENT,
  ip6tablesRestoreInput,
  IPT_FILTER_CHAIN,
  IPT_GUARD_CHAIN,
  IPT_INPUT_CHAIN,
  IPT_JUMPS,
  IPT_NAT_CHAIN,
  iptablesRestoreInput,
  iptJumpSpec,
  jumpDeletions,
  natVmIdsFromRules,
  NFT_BRIDGE_FAMILY,
  NFT_FAMILY,
  NFT_FORWARD_RECORD,
  NFT_TABLE,
  nftRuleset,
  nftTeardown,
  type FirewallSpec,
  type IptJump,
  type XtTool,
} from './rules.js';

/**
 * Firewall backends behind one small interface. Both replace banger's own
 * rules wholesale from the desired set; neither touches anyone else's rules.
 */

export const FIREWALL_CHOICES = ['auto', 'iptables', 'nft'] as const;
export type FirewallChoice = (typeof FIREWALL_CHOICES)[number];
export type FirewallName = Exclude<FirewallChoice, 'auto'>;

export interface FirewallStatus {
  backend: FirewallName;
  /** Anything of banger's is installed (chains/jumps or the nft table). */
  installed: boolean;
  /** VMs that currently have a masquerade rule. */
  natVmIds: string[];
  /** banger's rules as the tool prints them (for `doctor`, logs and tests). */
  rules: string[];
  /** The rules record that banger turned net.ipv4.ip_forward on (it was 0). */
  ipForwardWasOff: boolean;
}

export interface Firewall {
  readonly name: FirewallName;
  /** Make the installed rules equal `spec` (spec.vms non-empty). */
  apply(spec: FirewallSpec): Promise<void>;
  /** Remove every rule, chain, jump or table of banger's. Idempotent. */
  teardown(): Promise<void>;
  status(): Promise<FirewallStatus>;
}

const IPT_WHAT = `banger's iptables chains (${IPT_NAT_CHAIN}, ${IPT_INPUT_CHAIN}, ${IPT_GUARD_CHAIN}, ${IPT_FILTER_CHAIN})`;

export interface XtBins {
  iptables: string;
  ip6tables: string;
  ebtables: string;
}

/** The tools of the iptables backend: each of `<tool>`, `<tool>-restore`, `<tool>-save`. */
export const XT_TOOLS: XtTool[] = ['iptables', 'ip6tables', 'ebtables'];

/** ebtables has no `-w` (its nft flavour takes no lock). */
const waitArg = (tool: XtTool): string[] => (tool === 'ebtables' ? [] : ['-w']);

/** The (tool, table) pairs banger's jumps live in, in apply order. */
const jumpTables = (): { tool: XtTool; table: IptJump['table']; jumps: IptJump[] }[] => {
  const out: { tool: XtTool; table: IptJump['table']; jumps: IptJump[] }[] = [];
  for (const j of IPT_JUMPS) {
    const hit = out.find((o) => o.tool === j.tool && o.table === j.table);
    if (hit) hit.jumps.push(j);
    else out.push({ tool: j.tool, table: j.table, jumps: [j] });
  }
  return out;
};

export class IptablesFirewall implements Firewall {
  readonly name = 'iptables' as const;

  constructor(
    private readonly run: NetRunner,
    private readonly bin: XtBins = {
      iptables: 'iptables',
      ip6tables: 'ip6tables',
      ebtables: 'ebtables',
    },
  ) {}

  /** `<tool>-save -t <table>`; a table the kernel does not have is empty. */
  private async save(tool: XtTool, table: string): Promise<string> {
    const cmd = `${this.bin[tool]}-save`;
    const args = ['-t', table];
    const r = await this.run(cmd, args);
    if (r.code === 0) return r.stdout;
    if (/does not exist|Table .* not found/i.test(r.stderr)) return '';
    throw netFailure(`reading ${tool} table ${table}`, cmd, args, r);
  }

  async apply(spec: FirewallSpec): Promise<void> {
    const restores: [XtTool, string, string][] = [
      ['iptables', IPT_WHAT, iptablesRestoreInput(spec)],
      [
        'ip6tables',
        `banger's ip6tables chains (${IPT_INPUT_CHAIN}, ${IPT_GUARD_CHAIN})`,
        ip6tablesRestoreInput(spec),
      ],
      [
        'ebtables',
        `banger's ebtables chains (${EBT_CHAIN}, ${EBT_G2G_CHAIN})`,
        ebtablesRestoreInput(spec),
      ],
    ];
    for (const [tool, what, input] of restores) {
      await mustRun(
        this.run,
        `installing ${what}`,
        `${this.bin[tool]}-restore`,
        [...waitArg(tool), '--noflush'],
        {
          input,
        },
      );
    }
    for (const { tool, table, jumps } of jumpTables()) {
      const listing = await this.save(tool, table);
      for (const j of jumps) {
        if (jumpDeletions(listing, j.parent, j.chain).length > 0) continue;
        // Appended: never above the administrator's or Docker's rules (see rules.ts).
        await mustRun(
          this.run,
          `adding the jump ${j.parent} -> ${j.chain} (${tool}, table ${table})`,
          this.bin[tool],
          [...waitArg(tool), '-t', table, '-A', j.parent, ...iptJumpSpec(j)],
        );
      }
    }
  }

  async teardown(): Promise<void> {
    for (const { tool, table, jumps } of jumpTables()) {
      const listing = await this.save(tool, table);
      const bin = this.bin[tool];
      const base = [...waitArg(tool), '-t', table];
      for (const j of jumps) {
        for (const del of jumpDeletions(listing, j.parent, j.chain)) {
          const args = [...base, ...del];
          const r = await this.run(bin, args);
          // Gone meanwhile is fine (exit 1: "does a matching rule exist").
          if (r.code !== 0 && r.code !== 1) {
            throw netFailure(`removing the jump ${j.parent} -> ${j.chain}`, bin, args, r);
          }
        }
      }
      for (const chain of new Set(jumps.map((j) => j.chain))) {
        if (!new RegExp(`^:${chain} `, 'm').test(listing)) continue;
        await mustRun(this.run, `flushing ${tool} chain ${chain}`, bin, [...base, '-F', chain]);
        await mustRun(this.run, `deleting ${tool} chain ${chain}`, bin, [...base, '-X', chain], {
          hint: `something else still jumps to ${chain}: find it with ${bin}-save -t ${table}`,
        });
      }
    }
  }

  async status(): Promise<FirewallStatus> {
    let text = '';
    for (const { tool, table } of jumpTables()) text += await this.save(tool, table);
    const rules = bangerRulesFromSave(text);
    const chains = [...new Set(IPT_JUMPS.map((j) => j.chain))];
    const installed =
      rules.length > 0 ||
      new RegExp(`^:(${chains.join('|')}) `, 'm').test(text) ||
      chains.some((c) => text.includes(`-j ${c}`));
    return {
      backend: this.name,
      installed,
      natVmIds: natVmIdsFromRules(text),
      rules,
      ipForwardWasOff: text.includes(FORWARD_RECORD_COMMENT),
    };
  }
}

export class NftFirewall implements Firewall {
  readonly name = 'nft' as const;

  constructor(
    private readonly run: NetRunner,
    private readonly bin = 'nft',
  ) {}

  async apply(spec: FirewallSpec): Promise<void> {
    await mustRun(
      this.run,
      `replacing nftables tables ${NFT_FAMILY} ${NFT_TABLE} and ${NFT_BRIDGE_FAMILY} ${NFT_TABLE}`,
      this.bin,
      ['-f', '-'],
      {
        input: nftRuleset(spec),
      },
    );
  }

  async teardown(): Promise<void> {
    await mustRun(
      this.run,
      `deleting nftables tables ${NFT_FAMILY} ${NFT_TABLE} and ${NFT_BRIDGE_FAMILY} ${NFT_TABLE}`,
      this.bin,
      ['-f', '-'],
      {
        input: nftTeardown(),
      },
    );
  }

  async status(): Promise<FirewallStatus> {
    let text = '';
    let installed = false;
    for (const family of [NFT_FAMILY, NFT_BRIDGE_FAMILY]) {
      const args = ['list', 'table', family, NFT_TABLE];
      const r = await this.run(this.bin, args);
      if (r.code !== 0) {
        if (/No such file or directory/i.test(r.stderr)) continue;
        throw netFailure(`reading nftables table ${family} ${NFT_TABLE}`, this.bin, args, r);
      }
      installed = true;
      text += r.stdout;
    }
    const rules = text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => / (accept|drop|masquerade)( |$)/.test(l));
    return {
      backend: this.name,
      installed,
      natVmIds: natVmIdsFromRules(text),
      rules,
      ipForwardWasOff: new RegExp(`^\\s*chain ${NFT_FORWARD_RECORD} `, 'm').test(text),
    };
  }
}

export interface FirewallResolution {
  backend: FirewallName | undefined;
  reason: string;
}

/**
 * `firewall = auto|iptables|nft`. Auto prefers iptables: on Debian it is
 * iptables-nft and shares the FORWARD chain with Docker's rules, so banger's
 * ACCEPTs run before Docker's DROP policy; an nftables table of its own
 * cannot override a drop in another table.
 */
export function resolveFirewall(
  choice: FirewallChoice,
  which: (cmd: string) => string | undefined,
): FirewallResolution {
  const missing = XT_TOOLS.flatMap((t) => [t, `${t}-restore`, `${t}-save`]).filter(
    (c) => !which(c),
  );
  const ipt = missing.length === 0;
  const nft = Boolean(which('nft'));
  switch (choice) {
    case 'iptables':
      return ipt
        ? { backend: 'iptables', reason: 'firewall = "iptables"' }
        : {
            backend: undefined,
            reason: `firewall = "iptables" but ${missing.join(', ')} not found`,
          };
    case 'nft':
      return nft
        ? { backend: 'nft', reason: 'firewall = "nft"' }
        : { backend: undefined, reason: 'firewall = "nft" but nft not found' };
    default:
      if (ipt) return { backend: 'iptables', reason: 'auto: iptables found' };
      if (nft) return { backend: 'nft', reason: 'auto: nft found (no iptables)' };
      return {
        backend: undefined,
        reason: `auto: nft not found, and the iptables backend lacks ${missing.join(', ')}`,
      };
  }
}

export function makeFirewall(name: FirewallName, run: NetRunner): Firewall {
  return name === 'iptables' ? new IptablesFirewall(run) : new NftFirewall(run);
}

export function noFirewallError(reason: string, vmId?: string): BangerError {
  return new BangerError(
    'tool_missing',
    `isolating ${vmId ? `VM ${vmId}` : 'VMs'} needs a firewall tool: ${reason}`,
    { hint: 'sudo apt-get install nftables (or iptables, which brings ip6tables and ebtables)' },
  );
}
