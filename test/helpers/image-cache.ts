import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CATALOG, catalogEntry } from '../../src/image/catalog.js';
import { defaultAgentBinary, imageInputsKey } from '../../src/image/inputs.js';
import { which } from '../../src/util/exec.js';
import {
  E2E_DIR,
  isAlive,
  makeSandbox,
  networkEnv,
  REPO_ROOT,
  sleep,
  type Sandbox,
} from './sandbox.js';

/**
 * The real catalog images (the default `debian-bookworm`, and
 * `debian-bookworm-slim` when a test or bench asks for it), each built once
 * per change of its inputs and reused by every e2e test that needs one
 * (docs/images.md, "Tests").
 *
 *  - `<repo>/.cache/e2e-images/<key>/` holds rootfs.ext4, work-seed.ext4 and
 *    image.json; `<key>` = imageInputsKey(recipe, agent binary): a change to
 *    the recipe, the guest contract, the agent or the mise pin builds anew.
 *  - `<repo>/.cache/e2e/cache/` (E2E_DIR of test/helpers/e2e.ts) is the
 *    BANGER_CACHE_DIR of those builds (.deb cache, mise), shared with the VM
 *    e2e tests, so a rebuild after a contract change downloads nothing.
 *  - The build goes through the real CLI and daemon (`image pull
 *    debian-bookworm` in a throwaway sandbox); a lock file keeps parallel test
 *    files from building twice.
 *  - Tests reuse it with `registerDefaultImage(sb)`: `image register` of the
 *    cached files into their own sandbox (unmanaged: deleting the image there
 *    never touches the cache).
 */

export const E2E_CACHE = path.join(REPO_ROOT, '.cache');
export const IMAGE_CACHE = path.join(E2E_CACHE, 'e2e-images');
/** The same cache dir the VM e2e tests use (test/helpers/e2e.ts): one .deb and mise cache. */
export const BUILD_CACHE = path.join(E2E_DIR, 'cache');

export interface CachedImage {
  key: string;
  dir: string;
  rootfs: string;
  workSeed: string;
  /** Written when the image was built: the daemon's view + build figures. */
  info: CachedImageInfo;
  /** True when this call built it. */
  built: boolean;
}

export interface CachedImageInfo {
  key: string;
  builtAt: string;
  buildMs: number;
  view: Record<string, unknown>;
  buildLog: string;
}

export const IMAGE_BUILD_TOOLS = ['mmdebstrap', 'mkfs.ext4', 'debugfs', 'e2fsck', 'tar'];

export const missingTools = (tools = IMAGE_BUILD_TOOLS): string[] => tools.filter((t) => !which(t));

export const DEFAULT_IMAGE = 'debian-bookworm';
export const SLIM_IMAGE = 'debian-bookworm-slim';

export function catalogImageKey(name: string): string {
  const entry = catalogEntry(name);
  if (!entry) throw new Error(`${name} is not a catalog image`);
  return imageInputsKey(entry.recipe, defaultAgentBinary());
}

function readCached(key: string): CachedImage | undefined {
  const dir = path.join(IMAGE_CACHE, key);
  try {
    const info = JSON.parse(
      fs.readFileSync(path.join(dir, 'image.json'), 'utf8'),
    ) as CachedImageInfo;
    const rootfs = path.join(dir, 'rootfs.ext4');
    const workSeed = path.join(dir, 'work-seed.ext4');
    if (!fs.existsSync(rootfs) || !fs.existsSync(workSeed)) return undefined;
    return { key, dir, rootfs, workSeed, info, built: false };
  } catch {
    return undefined;
  }
}

/** Exclusive lock by pid file; waits while a live process holds it. */
async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  for (;;) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      break;
    } catch {
      const pid = Number(fs.readFileSync(file, 'utf8').trim());
      if (!pid || !isAlive(pid)) {
        fs.rmSync(file, { force: true });
        continue;
      }
      await sleep(1000);
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** The cached default image (debian-bookworm), building it through the CLI when missing. */
export const defaultImage = (opts: { timeoutMs?: number } = {}): Promise<CachedImage> =>
  catalogImage(DEFAULT_IMAGE, opts);

/** A cached catalog image, building it through the CLI (`image pull NAME`) when missing. */
export async function catalogImage(
  name: string,
  opts: { timeoutMs?: number } = {},
): Promise<CachedImage> {
  const key = catalogImageKey(name);
  const hit = readCached(key);
  if (hit) return hit;
  return withLock(path.join(IMAGE_CACHE, `${key}.lock`), async () => {
    const again = readCached(key);
    if (again) return again;
    fs.mkdirSync(BUILD_CACHE, { recursive: true });
    const sb = await makeSandbox({ env: { ...networkEnv(), BANGER_CACHE_DIR: BUILD_CACHE } });
    try {
      const t0 = Date.now();
      const r = await sb.run(['image', 'pull', name], {
        timeoutMs: opts.timeoutMs ?? 20 * 60_000,
      });
      const buildMs = Date.now() - t0;
      if (r.code !== 0) {
        throw new Error(`image pull ${name} failed (exit ${r.code}):\n${r.stderr.slice(-4000)}`);
      }
      const show = await sb.run(['image', 'show', name, '--json']);
      const view = JSON.parse(show.stdout) as Record<string, unknown> & {
        rootfsPath: string;
        workSeedPath: string;
        meta: { build?: { log?: string } };
      };
      const tmp = path.join(IMAGE_CACHE, `${key}.tmp-${process.pid}`);
      fs.rmSync(tmp, { recursive: true, force: true });
      fs.mkdirSync(tmp, { recursive: true });
      execFileSync('cp', ['--sparse=always', view.rootfsPath, path.join(tmp, 'rootfs.ext4')]);
      execFileSync('cp', ['--sparse=always', view.workSeedPath, path.join(tmp, 'work-seed.ext4')]);
      const logFile = view.meta.build?.log;
      const buildLog = path.join(tmp, 'build.log');
      if (logFile && fs.existsSync(logFile)) fs.copyFileSync(logFile, buildLog);
      const info: CachedImageInfo = {
        key,
        builtAt: new Date().toISOString(),
        buildMs,
        view,
        buildLog: path.join(IMAGE_CACHE, key, 'build.log'),
      };
      fs.writeFileSync(path.join(tmp, 'image.json'), JSON.stringify(info, null, 2));
      fs.renameSync(tmp, path.join(IMAGE_CACHE, key));
      pruneStale();
      return { ...readCached(key)!, built: true };
    } finally {
      await sb.cleanup();
    }
  });
}

/** Images of older inputs are of no use any more (0.4–1 GB each): keep the catalog's current keys. */
function pruneStale(): void {
  const current = new Set(CATALOG.map((c) => catalogImageKey(c.name)));
  for (const n of fs.readdirSync(IMAGE_CACHE)) {
    if (
      /^[0-9a-f]{64}$/.test(n) &&
      !current.has(n) &&
      !fs.existsSync(path.join(IMAGE_CACHE, `${n}.lock`))
    ) {
      fs.rmSync(path.join(IMAGE_CACHE, n), { recursive: true, force: true });
    }
  }
}

/** Register a cached image into a sandbox as `name` (default debian-bookworm). */
export async function registerDefaultImage(
  sb: Sandbox,
  img: CachedImage,
  name = DEFAULT_IMAGE,
): Promise<void> {
  const r = await sb.run([
    'image',
    'register',
    '--name',
    name,
    '--rootfs',
    img.rootfs,
    '--work-seed',
    img.workSeed,
  ]);
  if (r.code !== 0) throw new Error(`image register failed: ${r.stderr}`);
}
