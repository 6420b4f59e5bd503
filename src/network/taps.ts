import { BangerError } from '../errors.js';
import { absent, IP, parseJson, type IpLinkJson } from './iproute.js';
import { isBangerTap, TAP_PREFIX } from './names.js';
import { mustRun, netFailure, type NetRunner } from './runner.js';

/**
 * banger's taps on the host: create (or reuse an idle one), attach to the
 * bridge, list, delete, and clean up the ones no VM owns. Only names with
 * banger's prefix are ever touched.
 */

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

export class Taps {
  constructor(
    private readonly run: NetRunner,
    private readonly bridge: string,
  ) {}

  private checkName(name: string): void {
    if (!isBangerTap(name)) {
      throw new BangerError(
        'internal',
        `'${name}' is not a banger tap name (must start with '${TAP_PREFIX}', max 15 chars)`,
        { hint: 'banger only creates and deletes its own taps' },
      );
    }
  }

  async info(name: string): Promise<TapInfo | undefined> {
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
  async create(name: string, opts: { owner?: number } = {}): Promise<void> {
    this.checkName(name);
    const args = ['tuntap', 'add', 'dev', name, 'mode', 'tap'];
    if (opts.owner !== undefined) args.push('user', String(opts.owner));
    const r = await this.run(IP, args);
    if (r.code !== 0) {
      const existing = /busy|exists/i.test(r.stderr) ? await this.info(name) : undefined;
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
  async attach(name: string): Promise<void> {
    this.checkName(name);
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
  async delete(name: string): Promise<boolean> {
    this.checkName(name);
    const args = ['link', 'del', 'dev', name];
    const r = await this.run(IP, args);
    if (r.code === 0) return true;
    if (absent(r.stderr)) return false;
    throw netFailure(`deleting tap ${name}`, IP, args, r);
  }

  /** banger's taps (by prefix), sorted by name. */
  async list(): Promise<TapInfo[]> {
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
    for (const tap of opts.taps ?? (await this.list())) {
      if (keep.has(tap.name) || opts.keep?.(tap.name)) continue;
      if (tap.inUse) {
        inUse.push(tap.name);
        continue;
      }
      if (await this.delete(tap.name)) deleted.push(tap.name);
    }
    return { deleted, inUse };
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
