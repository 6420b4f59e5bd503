import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BangerError } from '../../errors.js';
import { DOCKER_HUB } from './reference.js';

/**
 * Registry authentication pieces, pure where possible: `WWW-Authenticate`
 * challenges (Bearer token flow and Basic), and credentials from the user's
 * Docker config (`auths.<registry>.auth`, base64 `user:password`).
 */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parse one or more WWW-Authenticate values (RFC 7235): `Bearer realm="…",
 * service="…",scope="…"`, `Basic realm="…"`, several challenges per header.
 */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (!header) return [];
  const out: Challenge[] = [];
  for (const h of Array.isArray(header) ? header : [header]) {
    let i = 0;
    const s = h;
    let cur: Challenge | undefined;
    const skipWs = () => {
      while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
    };
    const token = () => {
      const m = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/.exec(s.slice(i));
      if (!m) return '';
      i += m[0].length;
      return m[0];
    };
    while (i < s.length) {
      skipWs();
      if (s[i] === ',') {
        i++;
        continue;
      }
      const t = token();
      if (!t) {
        i++;
        continue;
      }
      skipWs();
      if (s[i] === '=' && cur) {
        i++;
        skipWs();
        let v = '';
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === '\\' && i + 1 < s.length) i++;
            v += s[i++];
          }
          i++;
        } else {
          v = token();
        }
        cur.params[t.toLowerCase()] = v;
      } else {
        // a new scheme
        cur = { scheme: t.toLowerCase(), params: {} };
        out.push(cur);
      }
    }
  }
  return out;
}

export interface Credentials {
  username: string;
  password: string;
}

export interface DockerConfig {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string }
  >;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

/** `https://index.docker.io/v1/` → `docker.io`; `https://host:5000/v2/` → `host:5000`. */
export function normalizeRegistryKey(key: string): string {
  let k = key.trim().replace(/^[a-z]+:\/\//i, '');
  k = k.split('/')[0]!.toLowerCase();
  if (k === 'index.docker.io' || k === 'registry-1.docker.io' || k === 'docker.io')
    return DOCKER_HUB;
  return k;
}

export interface CredentialLookup {
  credentials?: Credentials;
  /** Why credentials that seem configured were not used (credential helpers). */
  note?: string;
}

export function credentialsFor(cfg: DockerConfig, registry: string): CredentialLookup {
  const want = normalizeRegistryKey(registry);
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (normalizeRegistryKey(key) !== want) continue;
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0)
        return {
          credentials: { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) },
        };
    }
    if (entry.username && entry.password) {
      return { credentials: { username: entry.username, password: entry.password } };
    }
    if (entry.identitytoken) {
      return {
        note: `the Docker config holds an identity token for ${want}, which banger does not use`,
      };
    }
  }
  const helper = cfg.credHelpers?.[want] ?? cfg.credHelpers?.[registry] ?? cfg.credsStore;
  if (helper) {
    return {
      note: `credentials for ${want} are kept by docker-credential-${helper}, which banger does not call`,
    };
  }
  return {};
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function defaultDockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DOCKER_CONFIG || path.join(env.HOME || os.homedir(), '.docker');
  return path.join(dir, 'config.json');
}

/** Read a Docker config; a missing file is an empty config, a broken one an error. */
export function loadDockerConfig(file: string): DockerConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw e;
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as DockerConfig;
  } catch (e) {
    throw new BangerError(
      'config_invalid',
      `Docker config ${file} is not valid JSON: ${(e as Error).message}`,
      {
        hint: 'fix the file or remove it',
      },
    );
  }
}

export const basicAuth = (c: Credentials): string =>
  `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
