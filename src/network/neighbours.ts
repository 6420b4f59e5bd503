import net from 'node:net';
import { BangerError } from '../errors.js';
import { absent, IP, parseJson } from './iproute.js';
import { isValidMac } from './names.js';
import { mustRun, netFailure, type NetRunner } from './runner.js';

/** Permanent neighbour (ARP) entries for guests on the bridge. */
export class Neighbours {
  constructor(
    private readonly run: NetRunner,
    private readonly bridge: string,
  ) {}

  /**
   * Pins the host's neighbour entry for a guest (saves ARP round trips on the
   * first packets). Optional; clear it when the VM stops.
   */
  async seed(ip: string, mac: string): Promise<void> {
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
  async clear(ip: string): Promise<boolean> {
    const args = ['neigh', 'del', ip, 'dev', this.bridge];
    const r = await this.run(IP, args);
    if (r.code === 0) return true;
    if (/No such file or directory|Cannot find device|does not exist/i.test(r.stderr)) return false;
    throw netFailure(`removing neighbour ${ip} from ${this.bridge}`, IP, args, r);
  }

  /** Permanent neighbour entries on the bridge. */
  async permanent(): Promise<{ ip: string; mac: string }[]> {
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
}
