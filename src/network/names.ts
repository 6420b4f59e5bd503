import { createHash, randomBytes } from 'node:crypto';
import { BangerError } from '../errors.js';

/**
 * Names and addresses banger gives to host-side network objects. Everything
 * banger creates on the host starts with TAP_PREFIX, so `listTaps` and
 * `cleanupOrphans` can find banger's taps and never touch anyone else's.
 */

/** Prefix of every tap banger creates (VM taps and warm pool taps). */
export const TAP_PREFIX = 'bgr';
/** Pool taps: `bgr-` + random hex. VM taps never have a '-' there (only id alphanumerics). */
export const POOL_TAP_PREFIX = `${TAP_PREFIX}-`;
/** Linux IFNAMSIZ - 1. */
export const IFNAME_MAX = 15;

/** Comment/label on every firewall rule banger owns. */
export const RULE_TAG = 'banger';

const ifnameRe = /^[a-zA-Z0-9_.-]{1,15}$/;

export const isValidIfname = (name: string): boolean => ifnameRe.test(name);

/** True for interface names banger created (and may delete). */
export const isBangerTap = (name: string): boolean =>
  name.startsWith(TAP_PREFIX) && name.length > TAP_PREFIX.length && isValidIfname(name);

const idChars = (vmId: string): string => vmId.toLowerCase().replace(/[^a-z0-9]/g, '');

/**
 * The tap for a VM when it is not taken from the warm pool: `bgr` + the first
 * 12 alphanumerics of the id (15 chars, the kernel's limit).
 */
export function tapNameForVm(vmId: string): string {
  const chars = idChars(vmId);
  if (!chars) {
    throw new BangerError('internal', `cannot derive a tap name from VM id '${vmId}'`, {
      hint: 'VM ids must contain letters or digits',
    });
  }
  return `${TAP_PREFIX}${chars.slice(0, IFNAME_MAX - TAP_PREFIX.length)}`;
}

/** A fresh name for a warm pool tap: `bgr-` + 11 random hex digits. */
export function poolTapName(random: () => Buffer = () => randomBytes(6)): string {
  return `${POOL_TAP_PREFIX}${random()
    .toString('hex')
    .slice(0, IFNAME_MAX - POOL_TAP_PREFIX.length)}`;
}

export const isPoolTap = (name: string): boolean =>
  name.startsWith(POOL_TAP_PREFIX) && isBangerTap(name);

/**
 * The guest's MAC: stable for a VM id, locally administered (bit 0x02 of the
 * first octet) and unicast (bit 0x01 clear): `02:` + 5 bytes of sha256(id).
 */
export function macForVm(vmId: string): string {
  if (!vmId) throw new BangerError('internal', 'cannot derive a MAC from an empty VM id');
  return macFromSeed(`vm:${vmId}`);
}

/**
 * A fixed MAC for the bridge. Without one, Linux gives a bridge the lowest MAC
 * of its ports, so the guests' gateway MAC would change as taps come and go.
 */
export function macForBridge(bridgeName: string): string {
  return macFromSeed(`bridge:${bridgeName}`);
}

function macFromSeed(seed: string): string {
  const h = createHash('sha256').update(seed).digest();
  const bytes = [0x02, h[0]!, h[1]!, h[2]!, h[3]!, h[4]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export const isValidMac = (mac: string): boolean => /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac);
