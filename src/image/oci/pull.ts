import fs from 'node:fs';
import type { ProgressSink } from '../../api/events.js';
import { BangerError } from '../../errors.js';
import { treeToExt4, type BuildExt4Options, type Ext4Result } from '../tree/toExt4.js';
import type { RootfsTree } from '../tree/rootfsTree.js';
import { resolveLimits, type TreeLimits } from '../tree/rules.js';
import { createStagedTree } from '../tree/staging.js';
import {
  credentialsFor,
  defaultDockerConfigPath,
  loadDockerConfig,
  type Credentials,
} from './auth.js';
import { BlobCache, type BlobRef } from './blobs.js';
import type { HttpOptions } from './http.js';
import {
  layerCompression,
  parseImageConfig,
  parseManifest,
  selectPlatform,
  WANT_PLATFORM,
  type Descriptor,
  type ImageConfig,
  type Platform,
} from './manifest.js';
import { formatReference, manifestReference, parseReference, type ImageRef } from './reference.js';
import { MAX_MANIFEST_BYTES, RegistryClient } from './registry.js';

/**
 * `pullOci`: reference → registry manifest (index resolved to linux/amd64) →
 * layers downloaded into the blob cache (in parallel, verified) → applied in
 * order into a RootfsTree. The tree is returned before any ext4 exists, so the
 * caller can inject the guest contract; `pullOciToExt4` does both steps.
 */
export interface PullOciOptions {
  /** `<cache>/oci` (blobs go to `<cacheDir>/blobs/sha256/`). */
  cacheDir: string;
  /** The image's work dir: the tree is staged inside (or on tmpfs when it fits). */
  workDir: string;
  insecure?: boolean;
  /** Docker config to read credentials from; null to use none. Default ~/.docker/config.json. */
  dockerConfigPath?: string | null;
  emit?: ProgressSink;
  signal?: AbortSignal;
  limits?: Partial<TreeLimits>;
  platform?: Platform;
  /** Where to stage the tree: `auto` (default), `disk`, or a parent dir. */
  staging?: 'auto' | 'disk' | string;
  /** Cap on how much a tmpfs-staged tree may hold before moving to disk (tests). */
  stagingBudgetBytes?: number;
  /** Parallel layer downloads. Default 3. */
  concurrency?: number;
  /** Test knobs for the HTTP helper. */
  http?: Pick<HttpOptions, 'timeoutMs' | 'idleTimeoutMs' | 'backoffMs' | 'retries'>;
}

export interface PulledLayer {
  digest: string;
  size: number;
  mediaType: string;
}

export interface PulledImage {
  tree: RootfsTree;
  /** Canonical reference, e.g. `docker.io/library/debian:bookworm`. */
  reference: string;
  /** Digest of the platform manifest the tree was built from. */
  digest: string;
  /** Digest of the index when the reference named one. */
  indexDigest?: string;
  layers: PulledLayer[];
  configDigest: string;
  config: ImageConfig;
  /** Compressed bytes of all layers (what a cold pull downloads). */
  sizeBytes: number;
  /** File bytes in the unpacked tree. */
  contentBytes: number;
}

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const MAX_LAYERS = 256;
const short = (digest: string) => digest.slice(7, 19);

export async function pullOci(reference: string, opts: PullOciOptions): Promise<PulledImage> {
  const ref = parseReference(reference);
  const canonical = formatReference(ref);
  const emit = opts.emit ?? (() => undefined);
  const cache = new BlobCache(opts.cacheDir);
  const limits = resolveLimits(opts.limits);
  const abort = new AbortController();
  const onAbort = () => abort.abort();
  if (opts.signal?.aborted) abort.abort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await pullInto(ref, canonical, cache, limits, abort, opts, emit);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

async function pullInto(
  ref: ImageRef,
  canonical: string,
  cache: BlobCache,
  limits: TreeLimits,
  abort: AbortController,
  opts: PullOciOptions,
  emit: ProgressSink,
): Promise<PulledImage> {
  const client = new RegistryClient(ref, {
    insecure: opts.insecure,
    credentials: lookupCredentials(ref, opts, emit),
    signal: abort.signal,
    http: opts.http,
  });

  emit({ type: 'step', id: 'resolve', label: `resolve ${canonical}`, state: 'start' });
  const t0 = Date.now();
  const resolved = await resolveManifest(
    client,
    cache,
    ref,
    canonical,
    opts.platform ?? WANT_PLATFORM,
  );
  const { manifest } = resolved;
  if (manifest.layers.length > MAX_LAYERS) {
    throw new BangerError(
      'image_invalid',
      `${canonical} has ${manifest.layers.length} layers (at most ${MAX_LAYERS})`,
    );
  }
  for (const l of manifest.layers) {
    if (!layerCompression(l.mediaType)) {
      throw new BangerError(
        'image_invalid',
        `${canonical}: layer ${l.digest} has media type '${l.mediaType}', which banger cannot unpack`,
        { hint: 'banger unpacks tar layers (uncompressed, gzip or zstd) of Linux images' },
      );
    }
    if (l.size > limits.maxTotalBytes) {
      throw new BangerError(
        'image_invalid',
        `${canonical}: layer ${l.digest} is ${l.size} bytes, over the limit of ${limits.maxTotalBytes}`,
      );
    }
  }
  const configBody = await fetchSmallBlob(
    client,
    cache,
    ref.repository,
    manifest.config,
    `config of ${canonical}`,
  );
  const config = parseImageConfig(configBody, `config of ${canonical}`);
  if (
    (config.os && config.os !== 'linux') ||
    (config.architecture && config.architecture !== 'amd64')
  ) {
    throw new BangerError(
      'image_invalid',
      `${canonical} is a ${config.os}/${config.architecture} image`,
      {
        hint: 'banger VMs are x86_64 Linux; pick an image built for linux/amd64',
      },
    );
  }
  emit({
    type: 'step',
    id: 'resolve',
    label: `resolve ${canonical}`,
    state: 'done',
    ms: Date.now() - t0,
    detail: resolved.digest,
  });

  const layers = manifest.layers.map((l) => ({
    digest: l.digest,
    size: l.size,
    mediaType: l.mediaType,
  }));
  const sizeBytes = layers.reduce((a, l) => a + l.size, 0);
  const downloads = startDownloads(client, cache, ref, canonical, manifest.layers, {
    concurrency: opts.concurrency ?? 3,
    emit,
    signal: abort.signal,
  });
  const build = async (staging: PullOciOptions['staging']): Promise<RootfsTree> => {
    const tree = await createStagedTree(opts.workDir, {
      expectedBytes: sizeBytes * 4,
      staging,
      limits: opts.limits,
      maxBudgetBytes: opts.stagingBudgetBytes,
    });
    try {
      for (const [i, l] of manifest.layers.entries()) {
        const file = await downloads[i]!;
        const id = `extract:${short(l.digest)}`;
        const label = `extract layer ${short(l.digest)}`;
        const ts = Date.now();
        emit({ type: 'step', id, label, state: 'start' });
        let last = 0;
        await tree.applyLayer(fs.createReadStream(file, { highWaterMark: 1 << 20 }), {
          compression: layerCompression(l.mediaType)!,
          label: `layer ${l.digest.slice(0, 19)} of ${canonical}`,
          devices: 'skip',
          emit,
          signal: abort.signal,
          onInputBytes: (n) => {
            if (n - last >= 1 << 20 || n === l.size) {
              last = n;
              emit({ type: 'progress', id, current: n, total: l.size, unit: 'bytes' });
            }
          },
        });
        emit({ type: 'step', id, label, state: 'done', ms: Date.now() - ts });
      }
      return tree;
    } catch (e) {
      await tree.dispose();
      throw e;
    }
  };
  try {
    let tree: RootfsTree;
    try {
      tree = await build(opts.staging);
    } catch (e) {
      // Staged on tmpfs and it grew past its share of memory: start again on disk.
      if (!(e instanceof BangerError && e.details?.stagingFull)) throw e;
      emit({
        type: 'log',
        level: 'info',
        message: `${canonical} is larger than expected; unpacking on disk`,
      });
      tree = await build('disk');
    }
    return {
      tree,
      reference: canonical,
      digest: resolved.digest,
      ...(resolved.indexDigest ? { indexDigest: resolved.indexDigest } : {}),
      layers,
      configDigest: manifest.config.digest,
      config,
      sizeBytes,
      contentBytes: tree.stats().fileBytes,
    };
  } catch (e) {
    abort.abort();
    await Promise.allSettled(downloads);
    throw e;
  }
}

function lookupCredentials(
  ref: ImageRef,
  opts: PullOciOptions,
  emit: ProgressSink,
): Credentials | undefined {
  if (opts.dockerConfigPath === null) return undefined;
  const file = opts.dockerConfigPath ?? defaultDockerConfigPath();
  const found = credentialsFor(loadDockerConfig(file), ref.registry);
  if (found.note) emit({ type: 'log', level: 'warn', message: found.note });
  return found.credentials;
}

interface Resolved {
  digest: string;
  indexDigest?: string;
  manifest: { config: Descriptor; layers: Descriptor[] };
}

/** Tag or digest → platform manifest. Manifests named by digest come from the cache when present. */
async function resolveManifest(
  client: RegistryClient,
  cache: BlobCache,
  ref: ImageRef,
  canonical: string,
  platform: Platform,
): Promise<Resolved> {
  const first = await getManifest(client, cache, ref.repository, manifestReference(ref), canonical);
  let doc = parseManifest(first.body, first.contentType, canonical);
  let digest = first.digest;
  let indexDigest: string | undefined;
  if (doc.kind === 'index') {
    indexDigest = digest;
    const pick = selectPlatform(doc.manifests, platform, canonical);
    const m = await getManifest(client, cache, ref.repository, pick.digest, canonical, pick.size);
    doc = parseManifest(m.body, m.contentType ?? pick.mediaType, `${canonical} (${pick.digest})`);
    if (doc.kind !== 'manifest')
      throw new BangerError('image_invalid', `${canonical}: an index points to another index`);
    digest = m.digest;
  }
  return { digest, ...(indexDigest ? { indexDigest } : {}), manifest: doc };
}

async function getManifest(
  client: RegistryClient,
  cache: BlobCache,
  repo: string,
  reference: string,
  what: string,
  size?: number,
): Promise<{ body: Buffer; contentType?: string; digest: string }> {
  if (reference.startsWith('sha256:')) {
    const cached = await cachedManifest(cache, reference, size);
    if (cached) return { body: cached, digest: reference };
  }
  const m = await client.manifest(repo, reference, what);
  if (size !== undefined && m.body.length !== size) {
    throw new BangerError(
      'image_invalid',
      `${what}: manifest ${reference} is ${m.body.length} bytes, the index says ${size}`,
    );
  }
  await cache.put(m.digest, m.body);
  return m;
}

async function cachedManifest(
  cache: BlobCache,
  digest: string,
  size?: number,
): Promise<Buffer | undefined> {
  try {
    const p = cache.path(digest);
    const st = await fs.promises.stat(p);
    if (size !== undefined && st.size !== size) return undefined;
    if (st.size > MAX_MANIFEST_BYTES) return undefined;
    return await fs.promises.readFile(p);
  } catch {
    return undefined;
  }
}

async function fetchSmallBlob(
  client: RegistryClient,
  cache: BlobCache,
  repo: string,
  d: BlobRef,
  what: string,
): Promise<Buffer> {
  if (d.size > MAX_CONFIG_BYTES)
    throw new BangerError('image_invalid', `${what} is ${d.size} bytes, too large`);
  const cached = await cache.read(d, MAX_CONFIG_BYTES);
  if (cached) return cached;
  const file = await cache.fetch(d, () => client.blob(repo, d.digest, what), { what });
  return fs.promises.readFile(file);
}

/** Start every layer download (at most `concurrency` at once); promises resolve to cached paths. */
function startDownloads(
  client: RegistryClient,
  cache: BlobCache,
  ref: ImageRef,
  canonical: string,
  layers: Descriptor[],
  o: { concurrency: number; emit: ProgressSink; signal: AbortSignal },
): Promise<string>[] {
  let active = 0;
  const queue: (() => void)[] = [];
  const slot = () =>
    new Promise<void>((resolve) => {
      if (active < o.concurrency) {
        active++;
        resolve();
      } else
        queue.push(() => {
          active++;
          resolve();
        });
    });
  const release = () => {
    active--;
    queue.shift()?.();
  };
  const promises = layers.map(async (l) => {
    const id = `layer:${short(l.digest)}`;
    const label = `layer ${short(l.digest)}`;
    const what = `layer ${l.digest} of ${canonical}`;
    if (await cache.has(l)) {
      o.emit({ type: 'step', id, label, state: 'skip', detail: 'cached' });
      return cache.path(l.digest);
    }
    await slot();
    try {
      if (o.signal.aborted) throw new BangerError('cancelled', `pull of ${canonical} cancelled`);
      const ts = Date.now();
      o.emit({ type: 'step', id, label, state: 'start' });
      o.emit({ type: 'progress', id, current: 0, total: l.size, unit: 'bytes' });
      let last = 0;
      try {
        const file = await cache.fetch(l, () => client.blob(ref.repository, l.digest, what), {
          what,
          signal: o.signal,
          onProgress: (n) => {
            if (n - last >= 256 * 1024 || n === l.size) {
              last = n;
              o.emit({ type: 'progress', id, current: n, total: l.size, unit: 'bytes' });
            }
          },
        });
        o.emit({ type: 'step', id, label, state: 'done', ms: Date.now() - ts });
        return file;
      } catch (e) {
        o.emit({ type: 'step', id, label, state: 'fail', ms: Date.now() - ts });
        throw e;
      }
    } finally {
      release();
    }
  });
  // Failures surface when the layer is awaited in order; never as unhandled rejections.
  for (const p of promises) p.catch(() => undefined);
  return promises;
}

export interface PullOciToExt4Options extends PullOciOptions {
  /** Inject or change files before the image is made (the guest contract). */
  prepare?: (image: PulledImage) => void | Promise<void>;
  ext4?: BuildExt4Options;
}

/** Pull and convert: the ext4 at `out`, plus what was pulled (the tree is disposed). */
export async function pullOciToExt4(
  reference: string,
  out: string,
  opts: PullOciToExt4Options,
): Promise<Omit<PulledImage, 'tree'> & { ext4: Ext4Result }> {
  const pulled = await pullOci(reference, opts);
  try {
    await opts.prepare?.(pulled);
    const ext4 = await treeToExt4(pulled.tree, out, {
      emit: opts.emit,
      signal: opts.signal,
      ...opts.ext4,
    });
    const { tree: _tree, ...rest } = pulled;
    return { ...rest, ext4 };
  } finally {
    await pulled.tree.dispose();
  }
}
