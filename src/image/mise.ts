import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ProgressSink } from '../api/events.js';
import { BangerError } from '../errors.js';
import { run } from '../util/exec.js';
import { MISE_PACKAGE, type MisePin } from './recipe.js';

/**
 * mise for images, from the npm registry's per-platform package
 * (`@jdxcode/mise-linux-x64`): the registry's metadata must report the pinned
 * integrity, the tarball must match it (sha512), and the binary is cached by
 * version under `<cache>/mise/<version>/mise`. Shipped unstripped (a stripped
 * mise segfaults). Downloads are atomic: temp file, verify, rename.
 */

export const DEFAULT_NPM_REGISTRY = 'https://registry.npmjs.org';

export interface MiseOptions {
  cacheDir: string;
  /** Progress events carry this id (the caller's step). */
  progressId?: string;
  /** Registry base URL (env npm_config_registry when set). */
  registry?: string;
  emit?: ProgressSink;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface MiseBinary {
  path: string;
  version: string;
  sha256: string;
  /** Bytes downloaded now (0 when cached). */
  downloaded: number;
}

export function npmRegistry(env: NodeJS.ProcessEnv = process.env): string {
  const r = env.npm_config_registry || env.NPM_CONFIG_REGISTRY || DEFAULT_NPM_REGISTRY;
  return r.replace(/\/+$/, '');
}

/** The registry's document URL of a (scoped) package. */
export const packumentUrl = (registry: string, pkg: string): string =>
  `${registry}/${pkg.replace('/', '%2f')}`;

/** sha512 SRI of a buffer or digest. */
export const sri512 = (digest: Buffer): string => `sha512-${digest.toString('base64')}`;

export function miseCacheDir(cacheDir: string, version: string): string {
  return path.join(cacheDir, 'mise', version);
}

const sha256File = (p: string): string =>
  createHash('sha256').update(fs.readFileSync(p)).digest('hex');

export async function ensureMise(pin: MisePin, o: MiseOptions): Promise<MiseBinary> {
  const dir = miseCacheDir(o.cacheDir, pin.version);
  const bin = path.join(dir, 'mise');
  const stamp = path.join(dir, 'integrity');
  if (fs.existsSync(bin) && readText(stamp) === pin.integrity) {
    return { path: bin, version: pin.version, sha256: sha256File(bin), downloaded: 0 };
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const registry = o.registry ?? npmRegistry();
  const signal = withTimeout(o.signal, o.timeoutMs ?? 10 * 60_000);
  const what = `${MISE_PACKAGE}@${pin.version}`;

  // 1. metadata: the tarball URL and the registry's integrity for the pinned version
  const metaUrl = packumentUrl(registry, MISE_PACKAGE);
  const res = await get(metaUrl, what, signal, {
    accept: 'application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8',
  });
  const doc = (await res.json()) as {
    versions?: Record<string, { dist?: { tarball?: string; integrity?: string } }>;
  };
  const dist = doc.versions?.[pin.version]?.dist;
  if (!dist?.tarball || !dist.integrity) {
    throw new BangerError('registry', `${what} is not in the npm registry at ${registry}`, {
      hint: 'check the registry (npm_config_registry) or update banger',
    });
  }
  if (dist.integrity !== pin.integrity) {
    throw new BangerError(
      'registry',
      `${what}: the registry reports integrity ${dist.integrity}, banger pins ${pin.integrity}`,
      {
        hint: 'the package was changed upstream or the registry is not trustworthy; do not use it',
      },
    );
  }

  // 2. tarball → temp file, hashed on the way, verified, then unpacked and renamed into place
  const tmp = path.join(dir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  fs.mkdirSync(tmp, { mode: 0o700 });
  try {
    const tgz = path.join(tmp, 'mise.tgz');
    const body = await get(dist.tarball, what, signal);
    const total = Number(body.headers.get('content-length')) || undefined;
    const h = createHash('sha512');
    const out = fs.createWriteStream(tgz);
    let n = 0;
    let last = 0;
    try {
      for await (const chunk of body.body as unknown as AsyncIterable<Uint8Array>) {
        h.update(chunk);
        n += chunk.length;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        if (n - last > 1 << 20 || n === total) {
          last = n;
          o.emit?.({
            type: 'progress',
            id: o.progressId ?? 'mise',
            current: n,
            total,
            unit: 'bytes',
          });
        }
      }
    } finally {
      await new Promise<void>((resolve, reject) =>
        out.end((e?: Error | null) => (e ? reject(e) : resolve())),
      );
    }
    const got = sri512(h.digest());
    if (got !== pin.integrity) {
      throw new BangerError(
        'registry',
        `${what}: downloaded tarball has integrity ${got}, expected ${pin.integrity}`,
        {
          hint: 'a proxy or mirror altered the download; retry, or check npm_config_registry',
        },
      );
    }
    await run('tar', ['-xzf', tgz, '-C', tmp, 'package/bin/mise'], {
      what: `unpacking ${what}`,
      signal,
    });
    const extracted = path.join(tmp, 'package', 'bin', 'mise');
    fs.chmodSync(extracted, 0o755);
    fs.renameSync(extracted, bin);
    fs.writeFileSync(stamp, pin.integrity);
    return { path: bin, version: pin.version, sha256: sha256File(bin), downloaded: n };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function readText(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function withTimeout(signal: AbortSignal | undefined, ms: number): AbortSignal {
  const t = AbortSignal.timeout(ms);
  return signal ? AbortSignal.any([signal, t]) : t;
}

async function get(
  url: string,
  what: string,
  signal: AbortSignal,
  headers: Record<string, string> = {},
): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { signal, headers, redirect: 'follow' });
  } catch (e) {
    if (signal.aborted) {
      throw new BangerError('cancelled', `downloading ${what} was cancelled or timed out`);
    }
    throw new BangerError(
      'network',
      `cannot reach ${new URL(url).host} for ${what}: ${(e as Error).message}`,
      {
        hint: 'check the network (or npm_config_registry for a local registry)',
        cause: e,
      },
    );
  }
  if (!res.ok) {
    throw new BangerError('registry', `${url} answered HTTP ${res.status} for ${what}`, {
      hint: 'check npm_config_registry, or retry later',
    });
  }
  return res;
}
