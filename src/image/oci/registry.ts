import { createHash } from 'node:crypto';
import { BangerError } from '../../errors.js';
import { basicAuth, parseChallenges, type Challenge, type Credentials } from './auth.js';
import { describe, httpRequest, type HttpOptions, type HttpResponse } from './http.js';
import { MANIFEST_ACCEPT } from './manifest.js';
import { isLoopbackHost, type ImageRef } from './reference.js';

/**
 * A registry API v2 client for pulling: scheme choice (https; http only for
 * loopback registries or --insecure), the WWW-Authenticate flow (anonymous or
 * credentialed Bearer tokens, Basic), manifests (digest-verified) and blob
 * streams. Every request goes through the one HTTP helper.
 */
export interface RegistryClientOptions {
  insecure?: boolean;
  credentials?: Credentials;
  signal?: AbortSignal;
  /** Test knobs for the HTTP helper (timeouts, backoff). */
  http?: Pick<HttpOptions, 'timeoutMs' | 'idleTimeoutMs' | 'backoffMs' | 'retries'>;
}

export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

interface Token {
  header: string;
  expires: number;
}

export class RegistryClient {
  private scheme: 'https' | 'http' | undefined;
  private readonly tokens = new Map<string, Token>();
  private basic = false;

  constructor(
    readonly ref: Pick<ImageRef, 'registry' | 'endpoint'>,
    private readonly opts: RegistryClientOptions = {},
  ) {
    if (!opts.insecure && !isLoopbackHost(ref.endpoint)) this.scheme = 'https';
  }

  private get mayUseHttp(): boolean {
    return !!this.opts.insecure || isLoopbackHost(this.ref.endpoint);
  }

  /** GET a path under /v2/ for a repository, authenticating as challenged. */
  async get(
    repo: string,
    apiPath: string,
    headers: Record<string, string> = {},
  ): Promise<HttpResponse> {
    const scope = `repository:${repo}:pull`;
    let res = await this.send(apiPath, headers, scope);
    if (res.status !== 401) return res;
    const challenges = parseChallenges(res.headers['www-authenticate']);
    res.discard();
    await this.authenticate(challenges, scope, repo);
    res = await this.send(apiPath, headers, scope);
    if (res.status === 401) {
      res.discard();
      throw this.authError(repo, true);
    }
    return res;
  }

  private async send(
    apiPath: string,
    headers: Record<string, string>,
    scope: string,
  ): Promise<HttpResponse> {
    const auth = this.authHeader(scope);
    if (auth?.startsWith('Basic ') && this.scheme === 'http')
      refuseCleartextCredentials(this.ref.registry, `http://${this.ref.endpoint}`);
    const h = { ...headers, ...(auth ? { authorization: auth } : {}) };
    const common: HttpOptions = {
      headers: h,
      signal: this.opts.signal,
      insecureTls: this.opts.insecure,
      ...this.opts.http,
    };
    if (this.scheme) return httpRequest(`${this.scheme}://${this.ref.endpoint}${apiPath}`, common);
    // Loopback or --insecure: https first, plain http if the server does not speak TLS.
    try {
      const r = await httpRequest(`https://${this.ref.endpoint}${apiPath}`, {
        ...common,
        retries: 0,
      });
      this.scheme = 'https';
      return r;
    } catch (e) {
      if (!this.mayUseHttp || !isTlsMismatch(e)) throw e;
      const r = await httpRequest(`http://${this.ref.endpoint}${apiPath}`, common);
      this.scheme = 'http';
      return r;
    }
  }

  private authHeader(scope: string): string | undefined {
    if (this.basic && this.opts.credentials) return basicAuth(this.opts.credentials);
    const t = this.tokens.get(scope);
    return t && t.expires > Date.now() ? t.header : undefined;
  }

  private async authenticate(challenges: Challenge[], scope: string, repo: string): Promise<void> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer) {
      this.tokens.set(scope, await this.fetchToken(bearer, scope, repo));
      return;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      if (!this.opts.credentials) throw this.authError(repo, false);
      this.basic = true;
      return;
    }
    throw new BangerError(
      'registry',
      `registry ${this.ref.registry} asked for an unsupported kind of authentication`,
      {
        hint: `it sent: ${challenges.map((c) => c.scheme).join(', ') || 'no WWW-Authenticate challenge'}`,
      },
    );
  }

  private async fetchToken(c: Challenge, scope: string, repo: string): Promise<Token> {
    const realm = c.params.realm;
    if (!realm)
      throw new BangerError(
        'registry',
        `registry ${this.ref.registry} sent a Bearer challenge without a realm`,
      );
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new BangerError(
        'registry',
        `registry ${this.ref.registry} sent a bad token realm '${realm}'`,
      );
    }
    if (
      url.protocol !== 'https:' &&
      !(url.protocol === 'http:' && (this.mayUseHttp || isLoopbackHost(url.host)))
    ) {
      throw new BangerError(
        'registry',
        `registry ${this.ref.registry} wants tokens from ${describe(url)}, which is not https`,
        {
          hint: 'use --insecure only if you trust this network',
        },
      );
    }
    if (c.params.service) url.searchParams.set('service', c.params.service);
    url.searchParams.append('scope', scope);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.credentials) {
      if (url.protocol === 'http:') refuseCleartextCredentials(this.ref.registry, describe(url));
      headers.authorization = basicAuth(this.opts.credentials);
    }
    const res = await httpRequest(url, {
      headers,
      signal: this.opts.signal,
      // --insecure is about the registry named on the command line, not a token server elsewhere
      insecureTls: skipsTlsChecks(url, this.ref.endpoint, this.opts.insecure),
      ...this.opts.http,
    });
    if (res.status === 401 || res.status === 403) {
      res.discard();
      throw this.authError(repo, !!this.opts.credentials);
    }
    if (res.status !== 200) {
      const text = await res.text(64 * 1024).catch(() => '');
      throw new BangerError(
        'registry',
        `token request to ${describe(url)} failed: HTTP ${res.status} ${text.slice(0, 200)}`.trim(),
      );
    }
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(await res.text(1024 * 1024)) as typeof body;
    } catch {
      throw new BangerError('registry', `token server ${describe(url)} did not answer JSON`);
    }
    const token = body.token ?? body.access_token;
    if (!token) throw new BangerError('registry', `token server ${describe(url)} sent no token`);
    const ttl = Math.max(30, Number(body.expires_in) || 60);
    return { header: `Bearer ${token}`, expires: Date.now() + (ttl - 10) * 1000 };
  }

  private authError(repo: string, rejected: boolean): BangerError {
    const reg = this.ref.registry;
    if (rejected && this.opts.credentials) {
      return new BangerError('permission', `registry ${reg} refused the credentials for ${repo}`, {
        hint: `check the login in your Docker config (docker login ${reg})`,
      });
    }
    return new BangerError('permission', `registry ${reg} requires a login to pull ${repo}`, {
      hint: `log in with \`docker login ${reg}\` (banger reads ~/.docker/config.json), or check the image name`,
    });
  }

  /** A manifest or index by tag or digest, verified against the digest when one is known. */
  async manifest(
    repo: string,
    reference: string,
    what: string,
  ): Promise<{ body: Buffer; contentType?: string; digest: string }> {
    const res = await this.get(repo, `/v2/${repo}/manifests/${encodeURIComponent(reference)}`, {
      accept: MANIFEST_ACCEPT,
    });
    if (res.status === 404) {
      res.discard();
      throw new BangerError('not_found', `${what} not found in registry ${this.ref.registry}`, {
        hint: 'check the repository name and tag',
      });
    }
    await this.expectOk(res, what);
    const body = await res.bytes(MAX_MANIFEST_BYTES);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new BangerError('image_invalid', `${what}: manifest digest mismatch (got ${digest})`, {
        hint: 'the registry or a proxy altered the manifest; try again or use another registry',
      });
    }
    const header = res.headers['docker-content-digest'];
    if (typeof header === 'string' && header.startsWith('sha256:') && header !== digest) {
      throw new BangerError(
        'image_invalid',
        `${what}: manifest does not match the registry's digest ${header}`,
        {
          hint: 'a proxy may have altered it; try again',
        },
      );
    }
    const ct = res.headers['content-type'];
    return { body, contentType: typeof ct === 'string' ? ct : undefined, digest };
  }

  /** A blob's response (status 200, body not read yet). */
  async blob(repo: string, digest: string, what: string): Promise<HttpResponse> {
    const res = await this.get(repo, `/v2/${repo}/blobs/${digest}`);
    if (res.status === 404) {
      res.discard();
      throw new BangerError('not_found', `${what} is missing from registry ${this.ref.registry}`, {
        hint: 'the image is incomplete on the registry',
      });
    }
    await this.expectOk(res, what);
    return res;
  }

  private async expectOk(res: HttpResponse, what: string): Promise<void> {
    if (res.status === 200) return;
    const text = await res.text(64 * 1024).catch(() => '');
    let detail = text.trim().slice(0, 200);
    try {
      const j = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
      if (j.errors?.length)
        detail = j.errors.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
    } catch {
      // not JSON
    }
    if (res.status === 403) {
      throw new BangerError(
        'permission',
        `registry ${this.ref.registry} denied access to ${what}${detail ? ` (${detail})` : ''}`,
        {
          hint: 'check that your login may pull this repository',
        },
      );
    }
    if (res.status === 429) {
      throw new BangerError(
        'registry',
        `registry ${this.ref.registry} is rate limiting pulls of ${what}`,
        {
          hint: 'wait a while, or log in to get a higher limit',
        },
      );
    }
    throw new BangerError(
      'registry',
      `registry ${this.ref.registry} answered HTTP ${res.status} for ${what}${detail ? `: ${detail}` : ''}`,
    );
  }
}

function isTlsMismatch(e: unknown): boolean {
  const code =
    (e instanceof BangerError
      ? (e.details?.code as string | undefined)
      : (e as NodeJS.ErrnoException)?.code) ?? '';
  return (
    code === 'EPROTO' ||
    code.startsWith('ERR_SSL') ||
    code === 'ECONNRESET' ||
    (e instanceof Error && /wrong version number|ssl/i.test(e.message))
  );
}

/** Certificate checks are skipped only for the registry the user marked --insecure itself. */
export function skipsTlsChecks(url: URL, endpoint: string, insecure: boolean | undefined): boolean {
  return !!insecure && url.host.toLowerCase() === endpoint.toLowerCase();
}

/**
 * Credentials (Basic, or the login a token request carries) never cross a
 * network in clear text: plain http is allowed with them only to loopback.
 */
export function refuseCleartextCredentials(registry: string, where: string): void {
  const host = where.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '');
  if (isLoopbackHost(host)) return;
  throw new BangerError(
    'registry',
    `refusing to send the login for ${registry} to ${where} over plain http`,
    { hint: 'use the registry over https, or pull without credentials' },
  );
}
