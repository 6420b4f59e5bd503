import { BangerError } from '../../errors.js';

/**
 * Image references as Docker reads them: `debian:bookworm` is
 * docker.io/library/debian:bookworm (API at registry-1.docker.io),
 * `ghcr.io/o/r@sha256:…`, `localhost:5000/x:y`. Pure.
 */
export interface ImageRef {
  /** Registry as users write it: `docker.io`, `ghcr.io`, `localhost:5000`. */
  registry: string;
  /** host[:port] the API is served from (`registry-1.docker.io` for docker.io). */
  endpoint: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
export const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;
const DOMAIN =
  /^(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::\d{1,5})?$/;

const bad = (input: string, why: string) =>
  new BangerError('usage', `invalid image reference '${input}': ${why}`, {
    hint: 'use REGISTRY/REPOSITORY:TAG or REPOSITORY@sha256:DIGEST, e.g. debian:bookworm',
  });

export function parseReference(input: string): ImageRef {
  const s = input.trim();
  if (!s) throw bad(input, 'empty');
  if (/^[a-z]+:\/\//i.test(s)) throw bad(input, 'leave out the URL scheme');
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(input, `'${digest}' is not a digest`);
    if (!digest.startsWith('sha256:')) throw bad(input, 'only sha256 digests are supported');
    if (!SHA256_DIGEST.test(digest))
      throw bad(input, 'a sha256 digest has 64 lowercase hex digits');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.indexOf(':', lastSlash + 1);
  if (colon !== -1) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(input, `'${tag}' is not a valid tag`);
  }
  let registry = DOCKER_HUB;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (/[.:]/.test(first) || first === 'localhost' || first.toLowerCase() !== first) {
      registry = first;
      path = rest.slice(slash + 1);
    }
  }
  if (!DOMAIN.test(registry)) throw bad(input, `'${registry}' is not a registry host`);
  const lower = registry.toLowerCase();
  if (DOCKER_HUB_ALIASES.has(lower)) {
    registry = DOCKER_HUB;
    if (!path.includes('/')) path = `library/${path}`;
  }
  if (!path) throw bad(input, 'no repository');
  for (const c of path.split('/')) {
    if (!PATH_COMPONENT.test(c)) {
      throw bad(
        input,
        `'${c}' is not a valid repository name part (lowercase letters, digits, . _ -)`,
      );
    }
  }
  if (path.length > 255) throw bad(input, 'repository name is too long');
  if (!tag && !digest) tag = 'latest';
  return {
    registry,
    endpoint: registry === DOCKER_HUB ? DOCKER_HUB_API : registry,
    repository: path,
    ...(tag ? { tag } : {}),
    ...(digest ? { digest } : {}),
  };
}

/** `docker.io/library/debian:bookworm`, `host/repo@sha256:…` (tag kept when both). */
export function formatReference(r: ImageRef): string {
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** What to ask the registry for: the digest when there is one, else the tag. */
export const manifestReference = (r: ImageRef): string => r.digest ?? r.tag ?? 'latest';

/** A default image name: `debian:bookworm` → `debian-bookworm`, `x@sha256:abcd…` → `x-abcdef012345`. */
export function defaultImageName(r: ImageRef): string {
  const base = r.repository.split('/').pop()!;
  const suffix = r.tag && r.tag !== 'latest' ? r.tag : r.digest ? r.digest.slice(7, 19) : r.tag;
  return `${base}-${suffix}`.replace(/[^a-zA-Z0-9_.-]/g, '-').replace(/^[^a-zA-Z0-9]+/, '');
}

/** Hosts whose registries may be spoken to over plain http without --insecure. */
export function isLoopbackHost(endpoint: string): boolean {
  const host = endpoint
    .replace(/:\d+$/, '')
    .replace(/^\[|\]$/g, '')
    .toLowerCase();
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
