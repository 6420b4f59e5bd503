import fs from 'node:fs';
import type { DnsRoutingChoice } from '../../config/schema.js';
import { which as whichOnPath } from '../../util/exec.js';
import { netFailure, type NetRunner } from '../runner.js';
import { DNS_ZONE } from './records.js';

/**
 * Routing `.vm` names to banger's DNS server through systemd-resolved, per
 * link: the bridge gets banger's listener as its DNS server and `~vm` as a
 * routing-only domain, and is never a default route. Only banger's bridge is
 * touched, never resolved's global settings; the settings vanish with the
 * bridge and are applied again when it is created. The commands are built by
 * pure functions; the host is reached through a probe and the injected runner.
 */

export type DnsRoutingMode = DnsRoutingChoice;

export const ROUTING_DOC = 'docs/dns-routing.md';

export interface NetCommand {
  cmd: string;
  args: string[];
}

/** What the host looks like to the routing decision. */
export interface ResolvedFacts {
  /** Path of `resolvectl`, if on PATH. */
  resolvectl: string | undefined;
  /** Pid of a running systemd-resolved, if any. */
  resolvedPid: number | undefined;
  /**
   * Whether that systemd-resolved shares this process's network namespace;
   * undefined when it cannot be told (not allowed to read its namespace).
   */
  sameNetns: boolean | undefined;
}

export type RoutingPlan =
  { apply: true; commands: NetCommand[] } | { apply: false; reason: string };

/** The resolvectl commands that route `~vm` on `link` to `server` (host:port). */
export function resolvedCommands(
  link: string,
  server: { host: string; port: number },
): NetCommand[] {
  return [
    { cmd: 'resolvectl', args: ['dns', link, `${server.host}:${server.port}`] },
    { cmd: 'resolvectl', args: ['domain', link, `~${DNS_ZONE}`] },
    { cmd: 'resolvectl', args: ['default-route', link, 'false'] },
  ];
}

/** Whether to route, and how; the reason when not. */
export function planRouting(input: {
  mode: DnsRoutingMode;
  facts: ResolvedFacts;
  link: string;
  /** Where banger's DNS server listens; undefined when it is not listening. */
  server: { host: string; port: number } | undefined;
}): RoutingPlan {
  const { mode, facts, link, server } = input;
  if (mode === 'off') return { apply: false, reason: 'dns_routing = "off" in config.toml' };
  if (facts.resolvedPid === undefined)
    return { apply: false, reason: 'systemd-resolved is not running on this host' };
  if (!facts.resolvectl) return { apply: false, reason: 'resolvectl is not on PATH' };
  if (facts.sameNetns === false)
    return {
      apply: false,
      reason: 'systemd-resolved runs in another network namespace than bangerd',
    };
  if (!server) return { apply: false, reason: "banger's DNS server is not listening" };
  return { apply: true, commands: resolvedCommands(link, server) };
}

/** Reads the facts from /proc and PATH. */
export function probeResolved(
  procDir = '/proc',
  which: (c: string) => string | undefined = (c) => whichOnPath(c),
): ResolvedFacts {
  let pid: number | undefined;
  try {
    for (const d of fs.readdirSync(procDir)) {
      if (!/^\d+$/.test(d)) continue;
      let comm: string;
      try {
        comm = fs.readFileSync(`${procDir}/${d}/comm`, 'utf8').trim();
      } catch {
        continue;
      }
      // comm is cut at 15 characters: "systemd-resolve".
      if (comm === 'systemd-resolve' || comm === 'systemd-resolved') {
        pid = Number(d);
        break;
      }
    }
  } catch {
    // no /proc: nothing runs that we can see
  }
  let sameNetns: boolean | undefined;
  if (pid !== undefined) {
    try {
      sameNetns =
        fs.readlinkSync(`${procDir}/self/ns/net`) === fs.readlinkSync(`${procDir}/${pid}/ns/net`);
    } catch {
      sameNetns = undefined;
    }
  }
  return { resolvectl: which('resolvectl'), resolvedPid: pid, sameNetns };
}

export type RoutingState =
  | { state: 'applied'; link: string; server: string; detail: string }
  | { state: 'not-routed'; detail: string }
  | { state: 'off'; detail: string }
  | { state: 'failed'; detail: string }
  | { state: 'pending'; detail: string };

/**
 * Applies the plan on the bridge; remembers the outcome for status and
 * doctor. Each call re-reads the facts (resolved may have started or stopped).
 */
export class ResolvedRouting {
  private last: RoutingState | undefined;
  private appliedKey = '';

  constructor(
    private readonly run: NetRunner,
    private readonly probe: () => ResolvedFacts = () => probeResolved(),
  ) {}

  /** What a call would do now, without doing it. */
  plan(
    mode: DnsRoutingMode,
    link: string,
    server: { host: string; port: number } | undefined,
  ): RoutingPlan {
    return planRouting({ mode, facts: this.probe(), link, server });
  }

  /** The outcome of the last apply; 'pending' before the bridge exists. */
  state(): RoutingState | undefined {
    return this.last;
  }

  /**
   * Route `~vm` on `link` when the plan says so. `force` re-applies even when
   * the same settings were applied before (the link was just created).
   */
  async apply(
    mode: DnsRoutingMode,
    link: string,
    server: { host: string; port: number } | undefined,
    force: boolean,
  ): Promise<RoutingState> {
    const plan = this.plan(mode, link, server);
    if (!plan.apply) {
      this.appliedKey = '';
      const state: RoutingState = {
        state: mode === 'off' ? 'off' : 'not-routed',
        detail: plan.reason,
      };
      this.last = state;
      return state;
    }
    const key = `${link}|${server!.host}:${server!.port}`;
    if (!force && key === this.appliedKey && this.last?.state === 'applied') return this.last!;
    for (const c of plan.commands) {
      const r = await this.run(c.cmd, c.args);
      if (r.code !== 0) {
        const e = netFailure(`${c.cmd} ${c.args.join(' ')}`, c.cmd, c.args, r);
        this.appliedKey = '';
        const state: RoutingState = { state: 'failed', detail: e.message };
        this.last = state;
        return state;
      }
    }
    this.appliedKey = key;
    const srv = `${server!.host}:${server!.port}`;
    const state: RoutingState = {
      state: 'applied',
      link,
      server: srv,
      detail: `systemd-resolved sends *.${DNS_ZONE} to ${srv} (per-link on ${link})`,
    };
    this.last = state;
    return state;
  }
}
