import { BangerError } from '../../errors.js';

/**
 * How mmdebstrap gets root inside the chroot. Pure decision from host facts:
 *
 *  - root that may unshare a mount namespace → `unshare`: mmdebstrap's mounts
 *    live in a private namespace, so an interrupted build leaves none behind;
 *  - root that may not (some containers) → `root`;
 *  - anyone else → `unshare` (user namespaces + /etc/subuid, /etc/subgid), or
 *    an error that says exactly what to set up.
 */
export type BuildMode = 'root' | 'unshare';

export interface ModeFacts {
  uid: number;
  user: string;
  /** Contents of /etc/subuid and /etc/subgid (null when unreadable/missing). */
  subuid: string | null;
  subgid: string | null;
  /** newuidmap and newgidmap found (package uidmap). */
  hasIdmapTools: boolean;
  /** `unshare --mount --propagation unchanged true` worked (root only). */
  canUnshareMount: boolean;
  /** /proc/sys/kernel/unprivileged_userns_clone ('0' disables user namespaces on some kernels). */
  unprivilegedUsernsClone?: string | null;
  /** /proc/sys/kernel/apparmor_restrict_unprivileged_userns (Ubuntu ≥ 23.10). */
  apparmorRestrictUserns?: string | null;
  /** /proc/sys/user/max_user_namespaces. */
  maxUserNamespaces?: string | null;
}

/** At least this many subordinate ids are needed for a Debian chroot (uids up to 65534). */
export const MIN_SUBIDS = 65536;

/** Count subordinate ids granted to `user` (by name or uid) in /etc/subuid-style text. */
export function subIdCount(text: string | null, user: string, uid: number): number {
  if (!text) return 0;
  let n = 0;
  for (const line of text.split('\n')) {
    const [who, , count] = line.trim().split(':');
    if (!who || count === undefined) continue;
    if (who === user || who === String(uid)) n += Number(count) || 0;
  }
  return n;
}

export function chooseBuildMode(f: ModeFacts): BuildMode {
  if (f.uid === 0) return f.canUnshareMount ? 'unshare' : 'root';
  const fix = `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${f.user}`;
  if (!f.hasIdmapTools) {
    throw new BangerError(
      'tool_missing',
      'newuidmap/newgidmap not found (needed to build images without root)',
      { hint: 'install them: sudo apt-get install uidmap' },
    );
  }
  if (
    subIdCount(f.subuid, f.user, f.uid) < MIN_SUBIDS ||
    subIdCount(f.subgid, f.user, f.uid) < MIN_SUBIDS
  ) {
    throw new BangerError(
      'precondition',
      `user ${f.user} has no subordinate ids in /etc/subuid and /etc/subgid (needed to build images without root)`,
      { hint: `grant ${MIN_SUBIDS} of each: ${fix}` },
    );
  }
  if (f.unprivilegedUsernsClone === '0') {
    throw new BangerError(
      'precondition',
      'unprivileged user namespaces are disabled on this host',
      {
        hint: 'enable them: sudo sysctl kernel.unprivileged_userns_clone=1',
      },
    );
  }
  if (f.maxUserNamespaces === '0') {
    throw new BangerError(
      'precondition',
      'user namespaces are disabled on this host (user.max_user_namespaces=0)',
      {
        hint: 'enable them: sudo sysctl user.max_user_namespaces=15000',
      },
    );
  }
  if (f.apparmorRestrictUserns === '1') {
    throw new BangerError(
      'precondition',
      'AppArmor restricts unprivileged user namespaces on this host',
      {
        hint: 'allow them for mmdebstrap (an AppArmor profile with "userns,") or: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0',
      },
    );
  }
  return 'unshare';
}
