import type { Config } from '../config/schema.js';
import {
  guestDns,
  guestIpArg,
  HostNetwork,
  TapPool,
  type NetRunner,
  type RunningNets,
  type RunningVmNet,
} from '../network/index.js';
import type { VmRecord } from '../store/vms.js';
import type { VmNetworking } from './needs.js';
import type { Logger } from '../util/log.js';
import { lookupUser, type HostUser } from '../util/users.js';

/**
 * Who owns a VM's tap: the VMM user when a root daemon drops the VMM to one
 * (`vmm_user`), so the unprivileged VMM (QEMU after -runas, a jailed
 * Firecracker) may open it; nobody in particular otherwise. Pure.
 */
export function tapOwner(
  vmmUser: string,
  daemonUid: number | undefined,
  lookup: (name: string) => HostUser | undefined = lookupUser,
): number | undefined {
  if (daemonUid !== 0 || vmmUser === 'root') return undefined;
  return lookup(vmmUser)?.uid;
}

/** Told whenever the bridge is made sure of (`created`: it did not exist before). */
export type BridgeReadyHook = (bridge: string, created: boolean) => Promise<void>;

/**
 * The VM lifecycle's networking (VmNetworking) over src/network. Nothing touches the host
 * network until the first VM starts (a daemon that only pulls images never
 * creates a bridge). The HostNetwork is rebuilt when the bridge settings in
 * config.toml change.
 */
export class VmNetwork implements VmNetworking {
  private host?: HostNetwork;
  private pool?: TapPool;
  private key = '';

  constructor(
    private readonly config: () => Config,
    private readonly logger: Logger,
    private readonly runner?: NetRunner,
    private readonly onBridgeReady?: BridgeReadyHook,
  ) {}

  private async bridgeReady(created: boolean): Promise<void> {
    if (!this.onBridgeReady) return;
    await this.onBridgeReady(this.config().bridgeName, created).catch((e) =>
      this.logger.warn({ err: e }, 'bridge hook failed'),
    );
  }

  private current(): { host: HostNetwork; pool: TapPool } {
    const c = this.config();
    const owner = tapOwner(c.vmmUser, process.getuid?.());
    const key = `${c.bridgeName}|${c.bridgeIp}|${c.cidr}|${c.tapPoolSize}|${c.guestToGuest}|${owner}`;
    if (!this.host || !this.pool || key !== this.key) {
      this.host = HostNetwork.fromConfig(c, {
        guestToGuest: c.guestToGuest,
        ...(this.runner ? { run: this.runner } : {}),
      });
      this.pool = new TapPool(this.host, c.tapPoolSize, {
        onError: (e) => this.logger.warn({ err: e }, 'tap pool refill failed'),
        ...(owner !== undefined ? { owner } : {}),
      });
      this.key = key;
    }
    return { host: this.host, pool: this.pool };
  }

  get prefix(): number {
    return this.current().host.subnet.prefix;
  }

  /** Bridge up, a tap for the VM, and the guest's `ip=` argument. */
  async prepare(
    vm: Pick<VmRecord, 'id' | 'name' | 'ip'>,
  ): Promise<{ tap: string; ipArg: string | undefined }> {
    const { host, pool } = this.current();
    const bridge = await host.ensureBridge();
    await this.bridgeReady(bridge.created);
    const tap = await pool.take(vm.id);
    const c = this.config();
    const ipArg = vm.ip
      ? guestIpArg({
          ip: vm.ip,
          prefix: host.subnet.prefix,
          gateway: c.bridgeIp,
          hostname: vm.name,
          dns: guestDns(c.defaultDns).servers,
        })
      : undefined;
    return { tap, ipArg };
  }

  /** After the VMM runs: rules for every running VM, and the neighbour entry for this one. */
  async started(vm: Pick<VmRecord, 'ip' | 'mac'>, running: RunningNets): Promise<void> {
    const { host } = this.current();
    await host.applyNat(running);
    if (vm.ip && vm.mac)
      await host
        .neighbourSeed(vm.ip, vm.mac)
        .catch((e) => this.logger.debug({ err: e }, 'neighbour seed failed'));
  }

  /** After the VMM is gone: its tap back to the pool (or deleted), its rules removed. */
  async released(vm: Pick<VmRecord, 'ip' | 'tap'>, running: RunningNets): Promise<void> {
    const { host, pool } = this.current();
    if (vm.tap)
      await pool
        .give(vm.tap)
        .catch((e) => this.logger.warn({ err: e, tap: vm.tap }, 'tap cleanup failed'));
    await host.applyNat(running);
    if (vm.ip) await host.neighbourClear(vm.ip).catch(() => undefined);
  }

  /** Rules only (vm set --nat/--no-nat on a running VM). */
  async applyNat(running: RunningNets): Promise<void> {
    await this.current().host.applyNat(running);
  }

  /** Daemon start: bridge, taps and rules made to match the VMs that run. */
  async reconcile(running: RunningVmNet[]): Promise<void> {
    const { host, pool } = this.current();
    const report = await host.reconcile(running, { pool, seedNeighbours: true });
    this.logger.info({ report }, 'network reconciled');
    await this.bridgeReady(report.bridge.created);
    void pool.fill().catch((e) => this.logger.warn({ err: e }, 'tap pool fill failed'));
  }
}
