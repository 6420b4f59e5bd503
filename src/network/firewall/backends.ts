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
  natVmIdsFromRules,
  NFT_BRIDGE_FAMILY,
  NFT_FAMILY,
  NFT_FORWARD_RECORD,
  NFT_TABLE,
  nftRuleset,
  nftTeardown,
  teardownRestoreInput,
  withMissingJumps,
  type FirewallSpec,
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

  /** `<tool>-save`: every table the kernel has ('' for none). */
  private async save(tool: XtTool): Promise<string> {
    const cmd = `${this.bin[tool]}-save`;
    const r = await this.run(cmd, []);
    if (r.code === 0) return r.stdout;
    if (/does not exist|Table .* not found/i.test(r.stderr)) return '';
    throw netFailure(`reading the ${tool} tables`, cmd, [], r);
  }

  private restore(tool: XtTool, what: string, input: string, hint?: string): Promise<unknown> {
    return mustRun(this.run, what, `${this.bin[tool]}-restore`, [...waitArg(tool), '--noflush'], {
      input,
      ...(hint ? { hint } : {}),
    });
  }

  /**
   * Per tool, one listing and one restore that replaces banger's chains and
   * appends the jumps into them that are missing; the three tools side by side.
   */
  async apply(spec: FirewallSpec): Promise<void> {
    const inputs: [XtTool, string, string][] = [
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
    await settleAll(
      inputs.map(async ([tool, what, input]) => {
        const listing = await this.save(tool);
        await this.restore(tool, `installing ${what}`, withMissingJumps(input, tool, listing));
      }),
    );
  }

  /**
   * Per tool, one listing and one restore that deletes the jumps into
   * banger's chains and the chains; read again and retried once when the
   * listing changed underneath (a jump gone meanwhile).
   */
  async teardown(): Promise<void> {
    await settleAll(
      XT_TOOLS.map(async (tool) => {
        for (let attempt = 0; ; attempt++) {
          const input = teardownRestoreInput(tool, await this.save(tool));
          if (!input) return;
          try {
            await this.restore(
              tool,
              `removing banger's ${tool} chains`,
              input,
              `something else may still jump to banger's chains: find it with ${this.bin[tool]}-save`,
            );
            return;
          } catch (e) {
            if (attempt > 0) throw e;
          }
        }
      }),
    );
  }

  async status(): Promise<FirewallStatus> {
    let text = '';
    for (const tool of XT_TOOLS) text += await this.save(tool);
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

/** Wait for every promise; then throw the first failure (none is left running). */
async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const rs = await Promise.allSettled(ps);
  const bad = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
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
