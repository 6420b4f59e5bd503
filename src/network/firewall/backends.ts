import { BangerError } from '../../errors.js';
import { mustRun, netFailure, type NetRunner } from '../runner.js';
import {
  bangerRulesFromSave,
  IPT_FILTER_CHAIN,
  IPT_JUMPS,
  IPT_NAT_CHAIN,
  iptablesRestoreInput,
  iptJumpSpec,
  jumpDeletions,
  natVmIdsFromRules,
  NFT_FAMILY,
  NFT_TABLE,
  nftRuleset,
  nftTeardown,
  type FirewallSpec,
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
}

export interface Firewall {
  readonly name: FirewallName;
  /** Make the installed rules equal `spec` (spec.vms non-empty). */
  apply(spec: FirewallSpec): Promise<void>;
  /** Remove every rule, chain, jump or table of banger's. Idempotent. */
  teardown(): Promise<void>;
  status(): Promise<FirewallStatus>;
}

const IPT_WHAT = `banger's iptables chains (${IPT_NAT_CHAIN}, ${IPT_FILTER_CHAIN})`;

export class IptablesFirewall implements Firewall {
  readonly name = 'iptables' as const;

  constructor(
    private readonly run: NetRunner,
    private readonly bin = {
      iptables: 'iptables',
      restore: 'iptables-restore',
      save: 'iptables-save',
    },
  ) {}

  async apply(spec: FirewallSpec): Promise<void> {
    const input = iptablesRestoreInput(spec);
    await mustRun(this.run, `installing ${IPT_WHAT}`, this.bin.restore, ['-w', '--noflush'], {
      input,
    });
    for (const j of IPT_JUMPS) {
      const spec = iptJumpSpec(j);
      const check = ['-w', '-t', j.table, '-C', j.parent, ...spec];
      const r = await this.run(this.bin.iptables, check);
      if (r.code === 0) continue;
      if (r.code !== 1) {
        throw netFailure(
          `checking the jump ${j.parent} -> ${j.chain}`,
          this.bin.iptables,
          check,
          r,
        );
      }
      await mustRun(
        this.run,
        `inserting the jump ${j.parent} -> ${j.chain} (table ${j.table})`,
        this.bin.iptables,
        ['-w', '-t', j.table, '-I', j.parent, '1', ...spec],
      );
    }
  }

  async teardown(): Promise<void> {
    for (const j of IPT_JUMPS) {
      // One listing of the whole table: the jumps and whether the chain exists.
      // (iptables-nft 1.8.9 reports `-S <missing chain>` as "incompatible".)
      const listArgs = ['-w', '-t', j.table, '-S'];
      const list = await this.run(this.bin.iptables, listArgs);
      if (list.code !== 0) {
        // A table the kernel does not have holds nothing of ours.
        if (/Table does not exist/i.test(list.stderr)) continue;
        throw netFailure(`listing iptables table ${j.table}`, this.bin.iptables, listArgs, list);
      }
      for (const del of jumpDeletions(list.stdout, j.parent, j.chain)) {
        const args = ['-w', '-t', j.table, ...del];
        const r = await this.run(this.bin.iptables, args);
        // Gone meanwhile is fine (exit 1: "does a matching rule exist").
        if (r.code !== 0 && r.code !== 1) {
          throw netFailure(
            `removing the jump ${j.parent} -> ${j.chain}`,
            this.bin.iptables,
            args,
            r,
          );
        }
      }
      if (!list.stdout.split('\n').some((l) => l.trim() === `-N ${j.chain}`)) continue;
      await mustRun(this.run, `flushing chain ${j.chain}`, this.bin.iptables, [
        '-w',
        '-t',
        j.table,
        '-F',
        j.chain,
      ]);
      await mustRun(
        this.run,
        `deleting chain ${j.chain}`,
        this.bin.iptables,
        ['-w', '-t', j.table, '-X', j.chain],
        {
          hint: `something else still jumps to ${j.chain}: find it with iptables -t ${j.table} -S`,
        },
      );
    }
  }

  async status(): Promise<FirewallStatus> {
    let text = '';
    for (const table of ['nat', 'filter']) {
      const r = await mustRun(this.run, `reading iptables table ${table}`, this.bin.save, [
        '-t',
        table,
      ]);
      text += r.stdout;
    }
    const rules = bangerRulesFromSave(text);
    const installed =
      rules.length > 0 ||
      new RegExp(`^:(${IPT_NAT_CHAIN}|${IPT_FILTER_CHAIN}) `, 'm').test(text) ||
      IPT_JUMPS.some((j) => text.includes(`-j ${j.chain}`));
    return { backend: this.name, installed, natVmIds: natVmIdsFromRules(text), rules };
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
      `replacing nftables table ${NFT_FAMILY} ${NFT_TABLE}`,
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
      `deleting nftables table ${NFT_FAMILY} ${NFT_TABLE}`,
      this.bin,
      ['-f', '-'],
      {
        input: nftTeardown(),
      },
    );
  }

  async status(): Promise<FirewallStatus> {
    const args = ['list', 'table', NFT_FAMILY, NFT_TABLE];
    const r = await this.run(this.bin, args);
    if (r.code !== 0) {
      if (/No such file or directory/i.test(r.stderr)) {
        return { backend: this.name, installed: false, natVmIds: [], rules: [] };
      }
      throw netFailure(`reading nftables table ${NFT_FAMILY} ${NFT_TABLE}`, this.bin, args, r);
    }
    const rules = r.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => / (accept|drop|masquerade)( |$)/.test(l));
    return { backend: this.name, installed: true, natVmIds: natVmIdsFromRules(r.stdout), rules };
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
  const ipt = Boolean(which('iptables') && which('iptables-restore'));
  const nft = Boolean(which('nft'));
  switch (choice) {
    case 'iptables':
      return ipt
        ? { backend: 'iptables', reason: 'firewall = "iptables"' }
        : {
            backend: undefined,
            reason: 'firewall = "iptables" but iptables/iptables-restore not found',
          };
    case 'nft':
      return nft
        ? { backend: 'nft', reason: 'firewall = "nft"' }
        : { backend: undefined, reason: 'firewall = "nft" but nft not found' };
    default:
      if (ipt) return { backend: 'iptables', reason: 'auto: iptables found' };
      if (nft) return { backend: 'nft', reason: 'auto: nft found (no iptables)' };
      return { backend: undefined, reason: 'auto: neither iptables nor nft found' };
  }
}

export function makeFirewall(name: FirewallName, run: NetRunner): Firewall {
  return name === 'iptables' ? new IptablesFirewall(run) : new NftFirewall(run);
}

export function noFirewallError(reason: string, vmId?: string): BangerError {
  return new BangerError(
    'tool_missing',
    `${vmId ? `NAT for VM ${vmId}` : 'NAT'} needs a firewall tool: ${reason}`,
    { hint: 'sudo apt-get install iptables (or nftables)' },
  );
}
