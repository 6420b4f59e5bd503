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
import type { FirewallSpec, FirewallVm } from './firewall/rules.js';
import { checkBridgeAddress, type Subnet } from './ipam.js';
import { macForBridge } from './names.js';
import { absent, IP, parseJson, type IpLinkJson } from './iproute.js';
import { Neighbours } from './neighbours.js';
import { defaultRunner, mustRun, Mutex, netFailure, type NetRunner } from './runner.js';
import { reconcileHost, type ReconcileOptions, type ReconcileReport } from './reconcile.js';
import {
  resolveNets,
  type BridgeInfo,
  type EnsureBridgeResult,
  type NatResult,
  type RunningNets,
  type RunningVmNet,
} from './hostTypes.js';

export type {
  BridgeInfo,
  EnsureBridgeResult,
  NatResult,
  RunningNets,
  RunningVmNet,
} from './hostTypes.js';
import { Taps, type TapInfo } from './taps.js';

export type { ReconcileOptions, ReconcileReport } from './reconcile.js';

export type { TapInfo } from './taps.js';

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
  /** Let guests reach each other on the bridge (config `guest_to_guest`). Default off. */
  guestToGuest?: boolean;
}

const SYSCTL = 'sysctl';
const IP_FORWARD = 'net.ipv4.ip_forward';

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
  private readonly guestToGuest: boolean;
  /** banger turned ip_forward on (it was 0); read back from the rules after a restart. */
  private ipForwardWasOff: boolean | undefined;

  private readonly taps: Taps;
  private readonly neighbours: Neighbours;

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
    this.guestToGuest = Boolean(opts.guestToGuest);
    this.taps = new Taps(this.run, this.bridge);
    this.neighbours = new Neighbours(this.run, this.bridge);
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

  // ── taps (taps.ts) ──────────────────────────────────────────────────────

  tapInfo(name: string): Promise<TapInfo | undefined> {
    return this.taps.info(name);
  }

  /** Create (or reuse an idle) banger tap, attached to the bridge and up. */
  createTap(name: string, opts: { owner?: number } = {}): Promise<void> {
    return this.taps.create(name, opts);
  }

  /** Attaches an existing tap to the bridge and brings it up (pool reuse, reconcile). */
  attachTap(name: string): Promise<void> {
    return this.taps.attach(name);
  }

  /** Deletes a banger tap. False when it did not exist. */
  deleteTap(name: string): Promise<boolean> {
    return this.taps.delete(name);
  }

  /** banger's taps (by prefix), sorted by name. */
  listTaps(): Promise<TapInfo[]> {
    return this.taps.list();
  }

  /** Deletes banger taps that belong to no VM; taps still held open are reported. */
  cleanupOrphans(
    known: Iterable<string>,
    opts: { keep?: (name: string) => boolean; taps?: TapInfo[] } = {},
  ): Promise<{ deleted: string[]; inUse: string[] }> {
    return this.taps.cleanupOrphans(known, opts);
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
   * on the bridge with its NAT flag, tap and MAC: every VM is isolated (no
   * host access, no spoofing, no guest↔guest unless `guestToGuest`), NAT VMs
   * get masquerade + forward accept. An empty set removes everything
   * (chains, jumps, tables).
   *
   * net.ipv4.ip_forward (per network namespace) is turned on while a NAT VM
   * runs; when banger was the one to turn it on, that is recorded in the
   * rules and it is put back to 0 when the last NAT VM goes.
   */
  applyNat(vms: RunningNets): Promise<NatResult> {
    return this.firewallLock.lock(() => this.applyNatLocked(resolveNets(vms)));
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
      if (vms.length > 0) throw noFirewallError(reason, (natVms[0] ?? vms[0])!.id);
      return result;
    }
    const wasOff = (this.ipForwardWasOff ??= (await firewall.status()).ipForwardWasOff);
    if (natVms.length === 0) {
      // Forwarding off before the rules lose the record of it.
      if (wasOff) result.ipForward = await this.restoreIpForward();
      if (vms.length === 0) await firewall.teardown();
      else await firewall.apply(this.spec(vms, false));
      return result;
    }
    // Read every time: someone may have turned it off meanwhile.
    const on = await this.ipForward();
    const record = wasOff || !on;
    // Rules first (with the record), so forwarding is never on without banger's drops.
    await firewall.apply(this.spec(vms, record));
    this.ipForwardWasOff = record;
    result.ipForward = on ? 'already' : await this.enableIpForward();
    return result;
  }

  private spec(vms: FirewallVm[], ipForwardWasOff: boolean): FirewallSpec {
    return { bridge: this.bridge, vms, guestToGuest: this.guestToGuest, ipForwardWasOff };
  }

  /** Removes all of banger's firewall state, putting ip_forward back when banger turned it on. */
  teardownNat(): Promise<void> {
    return this.firewallLock.lock(async () => {
      const { firewall } = this.firewall();
      if (!firewall) return;
      if ((this.ipForwardWasOff ??= (await firewall.status()).ipForwardWasOff)) {
        await this.restoreIpForward();
      }
      await firewall.teardown();
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
    await mustRun(this.run, `enabling ${IP_FORWARD}`, SYSCTL, ['-q', '-w', `${IP_FORWARD}=1`], {
      hint: `run bangerd as root, or enable it yourself: sudo sysctl -w ${IP_FORWARD}=1`,
    });
    return 'enabled';
  }

  private async restoreIpForward(): Promise<NatResult['ipForward']> {
    await mustRun(this.run, `restoring ${IP_FORWARD}=0`, SYSCTL, ['-q', '-w', `${IP_FORWARD}=0`], {
      hint: `run bangerd as root, or turn it off yourself: sudo sysctl -w ${IP_FORWARD}=0`,
    });
    this.ipForwardWasOff = false;
    return 'restored';
  }

  // ── neighbours (neighbours.ts) ──────────────────────────────────────────

  /** Pins the host's neighbour entry for a guest; clear it when the VM stops. */
  neighbourSeed(ip: string, mac: string): Promise<void> {
    return this.neighbours.seed(ip, mac);
  }

  /** Removes a guest's neighbour entry. False when there was none. */
  neighbourClear(ip: string): Promise<boolean> {
    return this.neighbours.clear(ip);
  }

  /** Permanent neighbour entries on the bridge. */
  permanentNeighbours(): Promise<{ ip: string; mac: string }[]> {
    return this.neighbours.permanent();
  }

  // ── daemon start (reconcile.ts) ─────────────────────────────────────────

  /** Brings the host in line with the running VMs (daemon start); see reconcileHost. */
  reconcile(vms: RunningVmNet[], opts: ReconcileOptions = {}): Promise<ReconcileReport> {
    return reconcileHost(this, vms, opts);
  }

  /** After a `firewall` backend switch, the old backend's rules must not linger. */
  async removeOtherBackend(): Promise<FirewallName | undefined> {
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
