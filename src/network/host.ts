import net from 'node:net';
import type { Config } from '../config/schema.js';
import { BangerError } from '../errors.js';
import { which as whichOnPath } from '../util/exec.js';
import {
  makeFirewall,
  noFirewallError,
  resolveFirewall,
  type Firewall,
  type FirewallChoice,
  type FirewallName,
  type FirewallStatus,
} from './firewall/backends.js';
import type { FirewallVm } from './firewall/rules.js';
import { checkBridgeAddress, inSubnet, type Subnet } from './ipam.js';
import { isBangerTap, isValidMac, macForBridge, TAP_PREFIX } from './names.js';
import { defaultRunner, mustRun, Mutex, netFailure, type NetRunner } from './runner.js';

/**
 * The edge that changes the host's network: bridge, taps, firewall rules,
 * ip_forward, neighbour entries. Every command goes through the injected
 * runner (tests wrap it with `ip netns exec`). Decisions that can be pure
 * live in ipam.ts, names.ts, guest.ts and firewall/rules.ts.
 */

export interface HostNetworkOptions {
  bridgeName: string;
  bridgeIp: string;
  cidr: string;
  run?: NetRunner;
  /** Default 'auto' (iptables when present, else nft). */
  firewall?: FirewallChoice;
  /** Finds firewall tools for 'auto'; default searches PATH. */
  which?: (cmd: string) => string | undefined;
}

export interface BridgeInfo {
  name: string;
  kind: string | undefined;
  up: boolean;
  mac: string;
  /** IPv4 addresses as `ip/prefix`. */
  addresses: string[];
}

export interface TapInfo {
  name: string;
  master: string | undefined;
  /** Administratively up. */
  up: boolean;
  /** Carrier present: a process (the VMM) has the tap open. */
  inUse: boolean;
  multiQueue: boolean;
  vnetHdr: boolean;
}

export interface EnsureBridgeResult {
  created: boolean;
  /** What was changed on an existing bridge, e.g. 'removed address 10.0.0.1/24'. */
  changes: string[];
}

export interface NatResult {
  /** Backend used; undefined when no tool exists and no VM needs NAT. */
  backend: FirewallName | undefined;
  natVms: number;
  vms: number;
  /** 'enabled' when this call turned net.ipv4.ip_forward on. */
  ipForward: 'enabled' | 'already' | 'untouched';
}

export interface RunningVmNet extends FirewallVm {
  /** The VM's tap, when it has one. */
  tap?: string;
  /** The guest MAC (for neighbour seeding). */
  mac?: string;
}

export interface ReconcileOptions {
  /** Adopts idle pool taps instead of deleting them. */
  pool?: { adopt(names: string[]): string[] };
  /** Re-seed permanent neighbour entries for the VMs that have a mac. */
  seedNeighbours?: boolean;
}

export interface ReconcileReport {
  bridge: EnsureBridgeResult;
  reattachedTaps: string[];
  missingTaps: string[];
  adoptedTaps: string[];
  deletedTaps: string[];
  inUseTaps: string[];
  nat: NatResult;
  otherBackendRemoved: FirewallName | undefined;
  neighbours: { seeded: number; cleared: string[] };
}

const IP = 'ip';
const SYSCTL = 'sysctl';
const IP_FORWARD = 'net.ipv4.ip_forward';

interface IpLinkJson {
  ifname: string;
  flags?: string[];
  address?: string;
  master?: string;
  linkinfo?: {
    info_kind?: string;
    info_data?: { type?: string; multi_queue?: boolean; vnet_hdr?: boolean };
  };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

const parseJson = <T>(text: string): T[] => {
  const t = text.trim();
  if (!t) return [];
  try {
    return JSON.parse(t) as T[];
  } catch {
    throw new BangerError('tool_failed', `cannot parse \`ip -j\` output: ${t.slice(0, 80)}`, {
      hint: 'banger needs iproute2 with JSON output (iproute2 >= 4.14)',
    });
  }
};

const absent = (stderr: string): boolean =>
  /does not exist|Cannot find device|No such device/i.test(stderr);

export class HostNetwork {
  readonly bridge: string;
  readonly bridgeIp: string;
  readonly subnet: Subnet;
  private readonly run: NetRunner;
  private readonly firewallChoice: FirewallChoice;
  private readonly which: (cmd: string) => string | undefined;
  private readonly bridgeLock = new Mutex();
  private readonly firewallLock = new Mutex();
  private fw: { firewall: Firewall | undefined; reason: string } | undefined;

  constructor(opts: HostNetworkOptions) {
    if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(opts.bridgeName)) {
      throw new BangerError(
        'config_invalid',
        `bridge_name '${opts.bridgeName}' is not a valid interface name`,
        { hint: 'use up to 15 letters, digits, dots, dashes or underscores in config.toml' },
      );
    }
    this.bridge = opts.bridgeName;
    this.bridgeIp = opts.bridgeIp;
    this.subnet = checkBridgeAddress(opts.cidr, opts.bridgeIp);
    this.run = opts.run ?? defaultRunner;
    this.firewallChoice = opts.firewall ?? 'auto';
    this.which = opts.which ?? ((c) => whichOnPath(c));
  }

  static fromConfig(
    config: Pick<Config, 'bridgeName' | 'bridgeIp' | 'cidr'>,
    opts: Omit<HostNetworkOptions, 'bridgeName' | 'bridgeIp' | 'cidr'> = {},
  ): HostNetwork {
    return new HostNetwork({
      bridgeName: config.bridgeName,
      bridgeIp: config.bridgeIp,
      cidr: config.cidr,
      ...opts,
    });
  }

  /** `bridge_ip/prefix`, the address the bridge must carry. */
  get bridgeAddress(): string {
    return `${this.bridgeIp}/${this.subnet.prefix}`;
  }

  // ── bridge ──────────────────────────────────────────────────────────────

  async bridgeInfo(): Promise<BridgeInfo | undefined> {
    const args = ['-j', '-d', 'addr', 'show', 'dev', this.bridge];
    const r = await this.run(IP, args);
    if (r.code !== 0) {
      if (absent(r.stderr)) return undefined;
      throw netFailure(`reading bridge ${this.bridge}`, IP, args, r);
    }
    const link = parseJson<IpLinkJson>(r.stdout)[0];
    if (!link) return undefined;
    return {
      name: link.ifname,
      kind: link.linkinfo?.info_kind,
      up: (link.flags ?? []).includes('UP'),
      mac: link.address ?? '',
      addresses: (link.addr_info ?? [])
        .filter((a) => a.family === 'inet')
        .map((a) => `${a.local}/${a.prefixlen}`),
    };
  }

  /** Names of the interfaces attached to the bridge. */
  async bridgePorts(): Promise<string[]> {
    const args = ['-j', 'link', 'show', 'master', this.bridge];
    const r = await this.run(IP, args);
    if (r.code !== 0) {
      if (absent(r.stderr)) return [];
      throw netFailure(`listing ports of bridge ${this.bridge}`, IP, args, r);
    }
    return parseJson<IpLinkJson>(r.stdout).map((l) => l.ifname);
  }

  /**
   * Creates the bridge when missing (fixed MAC, bridge_ip/prefix, up).
   * Idempotent: an existing correct bridge costs one read. A bridge with
   * another IPv4 address is readdressed when no interface is attached (or
   * when only the prefix changed); otherwise it is an error.
   */
  ensureBridge(): Promise<EnsureBridgeResult> {
    return this.bridgeLock.lock(async () => {
      const br = this.bridge;
      const want = this.bridgeAddress;
      const changes: string[] = [];
      let info = await this.bridgeInfo();
      let created = false;
      if (!info) {
        await mustRun(
          this.run,
          `creating bridge ${br}`,
          IP,
          ['link', 'add', 'name', br, 'address', macForBridge(br), 'type', 'bridge'],
          {
            hint: 'check that no other interface uses that name (ip link) and the bridge module loads',
          },
        );
        created = true;
        info = { name: br, kind: 'bridge', up: false, mac: macForBridge(br), addresses: [] };
      } else if (info.kind !== 'bridge') {
        throw new BangerError(
          'conflict',
          `interface ${br} exists but is ${info.kind ? `a ${info.kind} device` : 'not a bridge'}`,
          { hint: `delete it (sudo ip link del ${br}) or set bridge_name in config.toml` },
        );
      }
      const wrong = info.addresses.filter((a) => a !== want);
      if (wrong.length > 0) {
        const onlyPrefix = wrong.every((a) => a.split('/')[0] === this.bridgeIp);
        if (!onlyPrefix) {
          const ports = await this.bridgePorts();
          if (ports.length > 0) {
            throw new BangerError(
              'conflict',
              `bridge ${br} has address ${wrong.join(', ')} but config wants ${want} (bridge_ip/cidr)`,
              {
                hint: `stop the VMs attached to it (${ports.join(', ')}) so banger can readdress it, or restore bridge_ip and cidr in config.toml`,
              },
            );
          }
        }
        for (const a of wrong) {
          await mustRun(this.run, `removing address ${a} from bridge ${br}`, IP, [
            'addr',
            'del',
            a,
            'dev',
            br,
          ]);
          changes.push(`removed address ${a}`);
        }
      }
      if (!info.addresses.includes(want)) {
        await mustRun(
          this.run,
          `adding address ${want} to bridge ${br}`,
          IP,
          ['addr', 'add', want, 'brd', '+', 'dev', br],
          { hint: 'another interface may use that subnet: pick another cidr in config.toml' },
        );
        if (!created) changes.push(`added address ${want}`);
      }
      if (!info.up) {
        await mustRun(this.run, `bringing bridge ${br} up`, IP, ['link', 'set', 'dev', br, 'up']);
        if (!created) changes.push('brought it up');
      }
      return { created, changes };
    });
  }

  /** Removes the bridge (uninstall, tests). False when it did not exist. */
  async deleteBridge(): Promise<boolean> {
    return this.bridgeLock.lock(async () => {
      const info = await this.bridgeInfo();
      if (!info) return false;
      if (info.kind !== 'bridge') {
        throw new BangerError(
          'conflict',
          `interface ${this.bridge} is not a bridge; not deleting it`,
          {
            hint: 'check bridge_name in config.toml',
          },
        );
      }
      await mustRun(this.run, `deleting bridge ${this.bridge}`, IP, [
        'link',
        'del',
        'dev',
        this.bridge,
      ]);
      return true;
    });
  }

  // ── taps ────────────────────────────────────────────────────────────────

  private checkTapName(name: string): void {
    if (!isBangerTap(name)) {
      throw new BangerError(
        'internal',
        `'${name}' is not a banger tap name (must start with '${TAP_PREFIX}', max 15 chars)`,
        { hint: 'banger only creates and deletes its own taps' },
      );
    }
  }

  async tapInfo(name: string): Promise<TapInfo | undefined> {
    const args = ['-j', '-d', 'link', 'show', 'dev', name];
    const r = await this.run(IP, args);
    if (r.code !== 0) {
      if (absent(r.stderr)) return undefined;
      throw netFailure(`reading tap ${name}`, IP, args, r);
    }
    const link = parseJson<IpLinkJson>(r.stdout)[0];
    return link && link.linkinfo?.info_kind === 'tun' ? toTapInfo(link) : undefined;
  }

  /**
   * Creates a persistent tap (mode tap, single queue, no vnet_hdr: the VMM
   * turns vnet_hdr on when it opens it), attaches it to the bridge and
   * brings it up. QEMU opens it with `-netdev tap,ifname=<name>,script=no,downscript=no`
   * (a multi_queue tap would make QEMU fail with EINVAL). `owner` lets a
   * non-root VMM open it. An existing idle tap of that name is reused.
   */
  async createTap(name: string, opts: { owner?: number } = {}): Promise<void> {
    this.checkTapName(name);
    const args = ['tuntap', 'add', 'dev', name, 'mode', 'tap'];
    if (opts.owner !== undefined) args.push('user', String(opts.owner));
    const r = await this.run(IP, args);
    if (r.code !== 0) {
      const existing = /busy|exists/i.test(r.stderr) ? await this.tapInfo(name) : undefined;
      if (!existing) throw netFailure(`creating tap ${name}`, IP, args, r);
      if (existing.inUse || existing.multiQueue) {
        throw new BangerError(
          'conflict',
          `tap ${name} already exists and is ${existing.inUse ? 'in use by another process' : 'multi-queue'}`,
          { hint: `stop whatever holds it or delete it (sudo ip link del ${name})` },
        );
      }
    }
    const attach = ['link', 'set', 'dev', name, 'master', this.bridge, 'up'];
    const a = await this.run(IP, attach);
    if (a.code !== 0) {
      await this.run(IP, ['link', 'del', 'dev', name]).catch(() => undefined);
      throw netFailure(`attaching tap ${name} to bridge ${this.bridge}`, IP, attach, a, {
        hint: absent(a.stderr)
          ? `bridge ${this.bridge} is missing: it is created by the daemon at VM start (ensureBridge)`
          : undefined,
      });
    }
  }

  /** Attaches an existing tap to the bridge and brings it up (pool reuse, reconcile). */
  async attachTap(name: string): Promise<void> {
    this.checkTapName(name);
    await mustRun(this.run, `attaching tap ${name} to bridge ${this.bridge}`, IP, [
      'link',
      'set',
      'dev',
      name,
      'master',
      this.bridge,
      'up',
    ]);
  }

  /** Deletes a banger tap. False when it did not exist. */
  async deleteTap(name: string): Promise<boolean> {
    this.checkTapName(name);
    const args = ['link', 'del', 'dev', name];
    const r = await this.run(IP, args);
    if (r.code === 0) return true;
    if (absent(r.stderr)) return false;
    throw netFailure(`deleting tap ${name}`, IP, args, r);
  }

  /** banger's taps (by prefix), sorted by name. */
  async listTaps(): Promise<TapInfo[]> {
    const args = ['-j', '-d', 'link', 'show', 'type', 'tun'];
    const r = await mustRun(this.run, 'listing taps', IP, args);
    return parseJson<IpLinkJson>(r.stdout)
      .filter((l) => isBangerTap(l.ifname) && l.linkinfo?.info_data?.type !== 'tun')
      .map(toTapInfo)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Deletes banger taps that belong to no VM (not in `known`, not kept by
   * `keep`). Taps a process still holds open are left alone and reported.
   */
  async cleanupOrphans(
    known: Iterable<string>,
    opts: { keep?: (name: string) => boolean; taps?: TapInfo[] } = {},
  ): Promise<{ deleted: string[]; inUse: string[] }> {
    const keep = new Set(known);
    const deleted: string[] = [];
    const inUse: string[] = [];
    for (const tap of opts.taps ?? (await this.listTaps())) {
      if (keep.has(tap.name) || opts.keep?.(tap.name)) continue;
      if (tap.inUse) {
        inUse.push(tap.name);
        continue;
      }
      if (await this.deleteTap(tap.name)) deleted.push(tap.name);
    }
    return { deleted, inUse };
  }

  // ── firewall / NAT ─────────────────────────────────────────────────────

  private firewall(): { firewall: Firewall | undefined; reason: string } {
    if (!this.fw) {
      const r = resolveFirewall(this.firewallChoice, this.which);
      this.fw = {
        firewall: r.backend ? makeFirewall(r.backend, this.run) : undefined,
        reason: r.reason,
      };
    }
    return this.fw;
  }

  get firewallBackend(): FirewallName | undefined {
    return this.firewall().firewall?.name;
  }

  /**
   * Makes banger's firewall rules equal the given set. Pass every running VM
   * on the bridge with its NAT flag: NAT VMs get masquerade + forward accept,
   * the others get no outbound forwarding. An empty set removes everything
   * (chains, jumps, table). Turns net.ipv4.ip_forward on when a VM has NAT
   * (per network namespace; never turned off, other software may need it).
   */
  applyNat(vms: FirewallVm[]): Promise<NatResult> {
    return this.firewallLock.lock(() => this.applyNatLocked(vms));
  }

  private async applyNatLocked(vms: FirewallVm[]): Promise<NatResult> {
    const natVms = vms.filter((v) => v.nat);
    const { firewall, reason } = this.firewall();
    const result: NatResult = {
      backend: firewall?.name,
      natVms: natVms.length,
      vms: vms.length,
      ipForward: 'untouched',
    };
    if (!firewall) {
      if (natVms.length > 0) throw noFirewallError(reason, natVms[0]!.id);
      return result;
    }
    if (vms.length === 0) {
      await firewall.teardown();
      return result;
    }
    // Rules first, so forwarding is never on without banger's DROP in place.
    await firewall.apply({ bridge: this.bridge, vms });
    if (natVms.length > 0) result.ipForward = await this.enableIpForward();
    return result;
  }

  /** Removes all of banger's firewall state (both backends' when present). */
  teardownNat(): Promise<void> {
    return this.firewallLock.lock(async () => {
      await this.firewall().firewall?.teardown();
    });
  }

  async firewallStatus(): Promise<FirewallStatus | undefined> {
    return this.firewall().firewall?.status();
  }

  async ipForward(): Promise<boolean> {
    const r = await mustRun(this.run, `reading ${IP_FORWARD}`, SYSCTL, ['-n', IP_FORWARD]);
    return r.stdout.trim() === '1';
  }

  private async enableIpForward(): Promise<NatResult['ipForward']> {
    if (await this.ipForward()) return 'already';
    await mustRun(this.run, `enabling ${IP_FORWARD}`, SYSCTL, ['-q', '-w', `${IP_FORWARD}=1`], {
      hint: `run bangerd as root, or enable it yourself: sudo sysctl -w ${IP_FORWARD}=1`,
    });
    return 'enabled';
  }

  // ── neighbours ──────────────────────────────────────────────────────────

  /**
   * Pins the host's neighbour entry for a guest (saves ARP round trips on the
   * first packets). Optional; clear it when the VM stops.
   */
  async neighbourSeed(ip: string, mac: string): Promise<void> {
    if (!net.isIPv4(ip) || !isValidMac(mac)) {
      throw new BangerError('internal', `cannot seed neighbour ${ip} -> ${mac}: bad address`, {
        hint: 'report this as a bug',
      });
    }
    await mustRun(this.run, `seeding neighbour ${ip} (${mac}) on ${this.bridge}`, IP, [
      'neigh',
      'replace',
      ip,
      'lladdr',
      mac,
      'dev',
      this.bridge,
      'nud',
      'permanent',
    ]);
  }

  /** Removes a guest's neighbour entry. False when there was none. */
  async neighbourClear(ip: string): Promise<boolean> {
    const args = ['neigh', 'del', ip, 'dev', this.bridge];
    const r = await this.run(IP, args);
    if (r.code === 0) return true;
    if (/No such file or directory|Cannot find device|does not exist/i.test(r.stderr)) return false;
    throw netFailure(`removing neighbour ${ip} from ${this.bridge}`, IP, args, r);
  }

  /** Permanent neighbour entries on the bridge. */
  async permanentNeighbours(): Promise<{ ip: string; mac: string }[]> {
    const args = ['-j', 'neigh', 'show', 'dev', this.bridge, 'nud', 'permanent'];
    const r = await this.run(IP, args);
    if (r.code !== 0) {
      if (absent(r.stderr)) return [];
      throw netFailure(`listing neighbours on ${this.bridge}`, IP, args, r);
    }
    return parseJson<{ dst: string; lladdr?: string }>(r.stdout)
      .filter((n) => net.isIPv4(n.dst))
      .map((n) => ({ ip: n.dst, mac: n.lladdr ?? '' }));
  }

  // ── daemon start ────────────────────────────────────────────────────────

  /**
   * Brings the host in line with the running VMs (call at daemon start,
   * after re-adopting VMs): bridge present and addressed, the VMs' taps
   * attached, idle pool taps adopted, other banger taps deleted, firewall
   * rules equal to the set (and a previous backend's leftovers removed),
   * neighbour entries re-seeded.
   */
  async reconcile(vms: RunningVmNet[], opts: ReconcileOptions = {}): Promise<ReconcileReport> {
    const bridge = await this.ensureBridge();
    const taps = await this.listTaps();
    const byName = new Map(taps.map((t) => [t.name, t]));
    const known = vms.map((v) => v.tap).filter((t): t is string => Boolean(t));
    const reattachedTaps: string[] = [];
    const missingTaps: string[] = [];
    for (const name of known) {
      const t = byName.get(name);
      if (!t) {
        missingTaps.push(name);
      } else if (t.master !== this.bridge || !t.up) {
        await this.attachTap(name);
        reattachedTaps.push(name);
      }
    }
    const knownSet = new Set(known);
    const idle = taps.filter((t) => !knownSet.has(t.name) && !t.inUse).map((t) => t.name);
    const adoptedTaps = opts.pool ? opts.pool.adopt(idle) : [];
    for (const name of adoptedTaps) {
      const t = byName.get(name);
      if (t && (t.master !== this.bridge || !t.up)) await this.attachTap(name);
    }
    const { deleted, inUse } = await this.cleanupOrphans([...known, ...adoptedTaps], { taps });

    const nat = await this.applyNat(vms.map((v) => ({ id: v.id, ip: v.ip, nat: v.nat })));
    const otherBackendRemoved = await this.removeOtherBackend();

    const cleared: string[] = [];
    let seeded = 0;
    if (opts.seedNeighbours) {
      const want = new Map(vms.filter((v) => v.mac).map((v) => [v.ip, v.mac!.toLowerCase()]));
      for (const n of await this.permanentNeighbours()) {
        if (!inSubnet(this.subnet, n.ip) || want.get(n.ip) === n.mac.toLowerCase()) continue;
        if (await this.neighbourClear(n.ip)) cleared.push(n.ip);
      }
      for (const [ip, mac] of want) {
        await this.neighbourSeed(ip, mac);
        seeded++;
      }
    }
    return {
      bridge,
      reattachedTaps,
      missingTaps,
      adoptedTaps,
      deletedTaps: deleted,
      inUseTaps: inUse,
      nat,
      otherBackendRemoved,
      neighbours: { seeded, cleared },
    };
  }

  /** After a `firewall` backend switch, the old backend's rules must not linger. */
  private async removeOtherBackend(): Promise<FirewallName | undefined> {
    const current = this.firewall().firewall?.name;
    const other: FirewallName | undefined =
      current === 'iptables' ? 'nft' : current === 'nft' ? 'iptables' : undefined;
    if (!other) return undefined;
    const present = resolveFirewall(other, this.which).backend;
    if (!present) return undefined;
    const fw = makeFirewall(other, this.run);
    return this.firewallLock.lock(async () => {
      const status = await fw.status().catch(() => undefined);
      if (!status?.installed) return undefined;
      await fw.teardown();
      return other;
    });
  }
}

function toTapInfo(l: IpLinkJson): TapInfo {
  const flags = l.flags ?? [];
  return {
    name: l.ifname,
    master: l.master,
    up: flags.includes('UP'),
    // A tap has carrier while a process has it open (only visible when up).
    inUse: flags.includes('LOWER_UP'),
    multiQueue: Boolean(l.linkinfo?.info_data?.multi_queue),
    vnetHdr: Boolean(l.linkinfo?.info_data?.vnet_hdr),
  };
}
