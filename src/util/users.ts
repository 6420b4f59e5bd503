import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

/** Host accounts by name or uid: /etc/passwd first, then `getent` (NSS: LDAP, systemd-homed…). */
export interface HostUser {
  name: string;
  uid: number;
  gid: number;
}

/** One passwd line `name:x:uid:gid:…` (pure); undefined when malformed. */
export function parsePasswdLine(line: string): HostUser | undefined {
  const f = line.split(':');
  if (f.length < 4 || !f[0]) return undefined;
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) return undefined;
  return { name: f[0], uid, gid };
}

function find(match: (u: HostUser) => boolean, key: string): HostUser | undefined {
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const u = parsePasswdLine(line);
      if (u && match(u)) return u;
    }
  } catch {
    // no /etc/passwd: ask NSS
  }
  const r = spawnSync('getent', ['passwd', key], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 ? parsePasswdLine(r.stdout.trim().split('\n')[0] ?? '') : undefined;
}

export const lookupUser = (name: string): HostUser | undefined =>
  find((u) => u.name === name, name);

export const userByUid = (uid: number): HostUser | undefined =>
  find((u) => u.uid === uid, String(uid));
