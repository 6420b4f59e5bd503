import type { Config } from '../../config/schema.js';
import { toBangerError } from '../../errors.js';
import type { Logger } from '../../util/log.js';
import { defaultRunner, type NetRunner } from '../runner.js';
import { answerQuery, buildRecords, type VmAddress, type ZoneRecords } from './records.js';
import {
  probeResolved,
  ResolvedRouting,
  type ResolvedFacts,
  type RoutingState,
} from './resolved.js';
import { DnsServer } from './server.js';

/**
 * The daemon's DNS: the `vm` zone built from the vms table (rebuilt on every
 * change), the server on `dns_listen`, and the systemd-resolved routing on
 * the bridge. A listener that cannot bind does not stop the daemon: the
 * reason is kept for `daemon status` and `doctor`, and binding is tried
 * again when they ask (at most every few seconds) or when dns_listen changes.
 */

/** What the DNS service needs from the VM table. */
export interface VmAddressSource {
  list(): VmAddress[];
  onChange(fn: () => void): () => void;
}

export interface DnsServiceDeps {
  config(): Config;
  vms: VmAddressSource;
  logger: Logger;
  /** Runs resolvectl (the daemon's namespace is the bridge's). */
  run?: NetRunner;
  probeResolved?: () => ResolvedFacts;
}

export interface DnsListenerStatus {
  /** What config.toml asks for. */
  configured: string;
  /** Where it listens now (the real port when dns_listen asks for port 0). */
  address: string | null;
  state: 'listening' | 'failed' | 'stopped';
  /** One line: why it is not listening. */
  error: string | null;
  names: number;
}

export interface DnsStatus {
  listener: DnsListenerStatus;
  routing: RoutingState;
}

const RETRY_BIND_MS = 5_000;

const addr = (a: { host: string; port: number }): string => `${a.host}:${a.port}`;

export class DnsService {
  private records: ZoneRecords = buildRecords([]);
  private readonly server: DnsServer;
  private readonly routing: ResolvedRouting;
  private unsubscribe?: () => void;
  private wanted = '';
  private error: string | null = null;
  private lastAttempt = 0;
  private binding?: Promise<void>;
  private stopped = false;
  /** The bridge the routing was last applied to (once a VM started). */
  private bridge?: string;

  constructor(private readonly deps: DnsServiceDeps) {
    this.server = new DnsServer({
      answer: (q) => answerQuery(this.records, q),
      onError: (e) => deps.logger.debug({ err: e }, 'dns: dropped a message'),
    });
    this.routing = new ResolvedRouting(
      deps.run ?? defaultRunner,
      deps.probeResolved ?? (() => probeResolved()),
    );
  }

  /** Build the zone, follow the vms table, bind the listener. Never throws. */
  async start(): Promise<void> {
    this.rebuild();
    this.unsubscribe = this.deps.vms.onChange(() => this.rebuild());
    await this.ensureListening(true);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    await this.binding?.catch(() => undefined);
    await this.server.close();
  }

  /** The records now (for tests and status). */
  zone(): ZoneRecords {
    return this.records;
  }

  private rebuild(): void {
    try {
      this.records = buildRecords(this.deps.vms.list());
    } catch (e) {
      this.deps.logger.warn({ err: e }, 'dns: rebuilding the vm zone failed');
    }
  }

  /**
   * (Re)bind when dns_listen changed, or when the last bind failed and a
   * retry is due (`now` forces it).
   */
  ensureListening(now = false): Promise<void> {
    if (this.binding) return this.binding;
    let want: { host: string; port: number };
    try {
      want = this.deps.config().dnsListen;
    } catch {
      return Promise.resolve(); // a broken config.toml: keep what runs
    }
    const key = addr(want);
    const same = key === this.wanted;
    if (this.stopped) return Promise.resolve();
    if (same && this.server.address) return Promise.resolve();
    if (same && !now && Date.now() - this.lastAttempt < RETRY_BIND_MS) return Promise.resolve();
    this.binding = (async () => {
      this.lastAttempt = Date.now();
      await this.server.close();
      this.wanted = key;
      try {
        const bound = await this.server.listen(want.host, want.port);
        this.error = null;
        this.deps.logger.info({ listen: addr(bound) }, 'dns: listening');
        // A new address: the bridge's resolved settings must follow.
        if (this.bridge) await this.routeBridge(this.bridge, false);
      } catch (e) {
        this.error = toBangerError(e).message;
        this.deps.logger.warn({ listen: key, err: e }, 'dns: not listening');
      }
    })().finally(() => {
      this.binding = undefined;
    });
    return this.binding;
  }

  /**
   * The bridge is up (just created when `created`): route `~vm` on it. Never
   * throws; the outcome shows in status and doctor.
   */
  async routeBridge(bridge: string, created: boolean): Promise<void> {
    this.bridge = bridge;
    try {
      const before = this.routing.state();
      const after = await this.routing.apply(
        this.deps.config().dnsRouting,
        bridge,
        this.server.address,
        created,
      );
      if (before?.state !== after.state || before.detail !== after.detail) {
        const log = after.state === 'failed' ? 'warn' : 'info';
        this.deps.logger[log]({ bridge, routing: after }, 'dns: .vm routing');
      }
    } catch (e) {
      this.deps.logger.warn({ err: e }, 'dns: routing .vm failed');
    }
  }

  async status(): Promise<DnsStatus> {
    await this.ensureListening();
    const c = this.deps.config();
    const bound = this.server.address;
    const listener: DnsListenerStatus = {
      configured: addr(c.dnsListen),
      address: bound ? addr(bound) : null,
      state: bound ? 'listening' : this.error ? 'failed' : 'stopped',
      error: bound ? null : this.error,
      names: this.records.byName.size,
    };
    return { listener, routing: this.routingStatus(c) };
  }

  /** The routing state; before the bridge exists, what will happen when it does. */
  private routingStatus(c: Config): RoutingState {
    const last = this.routing.state();
    if (last) return last;
    const plan = this.routing.plan(c.dnsRouting, c.bridgeName, this.server.address);
    if (!plan.apply)
      return { state: c.dnsRouting === 'off' ? 'off' : 'not-routed', detail: plan.reason };
    return {
      state: 'pending',
      detail: `will route *.vm through systemd-resolved on ${c.bridgeName} when the first VM starts`,
    };
  }
}
