import { z } from 'zod';
import { BangerError } from '../../errors.js';
import type { Compression } from '../tree/decompress.js';
import { SHA256_DIGEST } from './reference.js';

/**
 * OCI / Docker v2 manifest documents: media types, validation, platform
 * selection from an index, layer compression, image config. Pure.
 */
export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

export const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.dockerList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
].join(', ');

const LAYER_TYPES: Record<string, Compression> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
};

/** How to decompress a layer of this media type; undefined when banger cannot unpack it. */
export const layerCompression = (mediaType: string): Compression | undefined =>
  LAYER_TYPES[mediaType];

const digest = z.string().regex(SHA256_DIGEST, 'a sha256 digest');
const size = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

const PlatformSchema = z.object({
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
  'os.version': z.string().optional(),
});

const DescriptorSchema = z.object({
  mediaType: z.string(),
  digest,
  size,
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  platform: PlatformSchema.optional(),
});

export type Descriptor = z.infer<typeof DescriptorSchema>;
export type Platform = z.infer<typeof PlatformSchema>;

const IndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(DescriptorSchema),
});

const ManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
});

export type ManifestDoc =
  | { kind: 'index'; mediaType: string; manifests: Descriptor[] }
  | { kind: 'manifest'; mediaType: string; config: Descriptor; layers: Descriptor[] };

const invalid = (what: string, why: string) =>
  new BangerError('image_invalid', `${what}: ${why}`, {
    hint: 'the registry sent something banger cannot use',
  });

/** Parse a manifest or index body. `what` names it in errors. */
export function parseManifest(
  body: Buffer,
  contentType: string | undefined,
  what: string,
): ManifestDoc {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw invalid(what, 'manifest is not JSON');
  }
  const obj = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
  const ct = contentType?.split(';')[0]!.trim();
  const mediaType = (typeof obj.mediaType === 'string' ? obj.mediaType : undefined) ?? ct ?? '';
  if (
    obj.schemaVersion === 1 ||
    mediaType === MediaType.dockerSchema1 ||
    mediaType === MediaType.dockerSchema1Signed
  ) {
    throw invalid(what, 'Docker schema 1 manifests are not supported (the image is too old)');
  }
  const isIndex =
    mediaType === MediaType.ociIndex ||
    mediaType === MediaType.dockerList ||
    Array.isArray(obj.manifests);
  if (isIndex) {
    const r = IndexSchema.safeParse(json);
    if (!r.success) throw invalid(what, `bad image index (${issue(r.error)})`);
    return {
      kind: 'index',
      mediaType: mediaType || MediaType.ociIndex,
      manifests: r.data.manifests,
    };
  }
  if (mediaType && mediaType !== MediaType.ociManifest && mediaType !== MediaType.dockerManifest) {
    throw invalid(what, `unsupported manifest media type '${mediaType}'`);
  }
  const r = ManifestSchema.safeParse(json);
  if (!r.success) throw invalid(what, `bad image manifest (${issue(r.error)})`);
  return {
    kind: 'manifest',
    mediaType: mediaType || MediaType.ociManifest,
    config: r.data.config,
    layers: r.data.layers,
  };
}

function issue(e: z.ZodError): string {
  const i = e.issues[0];
  return i ? `${i.path.join('.') || 'document'}: ${i.message}` : 'invalid';
}

export const WANT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

const platformString = (p?: Platform) =>
  p ? `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}` : 'unknown';

/** The manifest for `want` in an index (attestations and unknown platforms skipped). */
export function selectPlatform(manifests: Descriptor[], want: Platform, what: string): Descriptor {
  const candidates = manifests.filter(
    (m) =>
      m.platform &&
      m.platform.os === want.os &&
      m.platform.architecture === want.architecture &&
      (!want.variant || !m.platform.variant || m.platform.variant === want.variant) &&
      m.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest',
  );
  // Prefer an exact variant match, then no variant.
  const best =
    candidates.find((m) => want.variant && m.platform!.variant === want.variant) ??
    candidates.find((m) => !m.platform!.variant) ??
    candidates[0];
  if (!best) {
    const have = [...new Set(manifests.map((m) => platformString(m.platform)))].filter(
      (p) => p !== 'unknown/unknown',
    );
    throw new BangerError(
      'not_found',
      `${what} has no ${platformString(want)} image (it has ${have.join(', ') || 'none'})`,
      {
        hint: 'banger VMs are x86_64 Linux; pick an image built for linux/amd64',
      },
    );
  }
  if (best.mediaType !== MediaType.ociManifest && best.mediaType !== MediaType.dockerManifest) {
    throw invalid(
      what,
      `the ${platformString(want)} entry has unsupported media type '${best.mediaType}'`,
    );
  }
  return best;
}

const ConfigSchema = z.object({
  architecture: z.string().optional(),
  os: z.string().optional(),
  variant: z.string().optional(),
  config: z
    .object({
      Env: z.array(z.string()).nullish(),
      Entrypoint: z.array(z.string()).nullish(),
      Cmd: z.array(z.string()).nullish(),
      User: z.string().nullish(),
      WorkingDir: z.string().nullish(),
      ExposedPorts: z.record(z.string(), z.unknown()).nullish(),
      Labels: z.record(z.string(), z.string()).nullish(),
      StopSignal: z.string().nullish(),
    })
    .nullish(),
  rootfs: z.object({ type: z.string(), diff_ids: z.array(z.string()) }).optional(),
});

/** The parts of an image config banger uses. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  Env: string[];
  Entrypoint: string[];
  Cmd: string[];
  User: string;
  WorkingDir: string;
  ExposedPorts: string[];
  Labels: Record<string, string>;
  diffIds: string[];
}

export function parseImageConfig(body: Buffer, what: string): ImageConfig {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw invalid(what, 'image config is not JSON');
  }
  const r = ConfigSchema.safeParse(json);
  if (!r.success) throw invalid(what, `bad image config (${issue(r.error)})`);
  const c = r.data.config ?? {};
  return {
    architecture: r.data.architecture,
    os: r.data.os,
    Env: c.Env ?? [],
    Entrypoint: c.Entrypoint ?? [],
    Cmd: c.Cmd ?? [],
    User: c.User ?? '',
    WorkingDir: c.WorkingDir ?? '',
    ExposedPorts: Object.keys(c.ExposedPorts ?? {}),
    Labels: c.Labels ?? {},
    diffIds: r.data.rootfs?.diff_ids ?? [],
  };
}
