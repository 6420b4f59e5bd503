import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { runProcess } from './sandbox.js';

/**
 * A real registry for tests: Debian's docker-registry (distribution 2.8) on
 * 127.0.0.1 with a temp storage dir, optionally behind htpasswd (Basic) or
 * token (Bearer) auth; plus push helpers speaking the registry API, a token
 * server, and a counting / tampering reverse proxy.
 */

export const TEST_USER = 'banger';
export const TEST_PASSWORD = 'banger-test-password';
// bcrypt of TEST_PASSWORD (cost 5), made once with Python's crypt (no htpasswd here).
const TEST_BCRYPT = '$2b$05$Py6R3UPYm7o7nUr1W10WR.IEHWMa2EVb3MkZIoJvcWdOv0M6y41/u';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export type RegistryAuth =
  | { kind: 'none' }
  | { kind: 'htpasswd' }
  | { kind: 'token'; realm: string; service: string; issuer: string; certFile: string };

export interface Registry {
  host: string;
  dir: string;
  /** Authorization header value for pushes (tests pass it explicitly). */
  pushAuth?: string;
  stop(): Promise<void>;
  log(): string;
}

export async function startRegistry(auth: RegistryAuth = { kind: 'none' }): Promise<Registry> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-registry-'));
  let lastErr = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const lines = [
      'version: 0.1',
      'log:',
      '  level: info',
      '  accesslog:',
      '    disabled: false',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${dir}/data`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${randomBytes(8).toString('hex')}`,
    ];
    if (auth.kind === 'htpasswd') {
      fs.writeFileSync(path.join(dir, 'htpasswd'), `${TEST_USER}:${TEST_BCRYPT}\n`);
      lines.push('auth:', '  htpasswd:', '    realm: banger-test', `    path: ${dir}/htpasswd`);
    } else if (auth.kind === 'token') {
      lines.push(
        'auth:',
        '  token:',
        `    realm: ${auth.realm}`,
        `    service: ${auth.service}`,
        `    issuer: ${auth.issuer}`,
        `    rootcertbundle: ${auth.certFile}`,
      );
    }
    const cfg = path.join(dir, 'config.yml');
    fs.writeFileSync(cfg, lines.join('\n') + '\n');
    const logFile = path.join(dir, 'registry.log');
    const out = fs.openSync(logFile, 'a');
    const child: ChildProcess = spawn('docker-registry', ['serve', cfg], {
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const host = `127.0.0.1:${port}`;
    const up = await waitUp(host, child);
    if (up) {
      return {
        host,
        dir,
        pushAuth: auth.kind === 'htpasswd' ? basic(TEST_USER, TEST_PASSWORD) : undefined,
        log: () => fs.readFileSync(logFile, 'utf8'),
        async stop() {
          if (child.exitCode === null && child.pid) {
            process.kill(child.pid, 'SIGTERM');
            const t = setTimeout(
              () => child.pid && child.exitCode === null && process.kill(child.pid, 'SIGKILL'),
              5000,
            );
            await exited;
            clearTimeout(t);
          }
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    lastErr = fs.readFileSync(logFile, 'utf8');
    if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
    await exited;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  throw new Error(`docker-registry did not start: ${lastErr.slice(-2000)}`);
}

async function waitUp(host: string, child: ChildProcess): Promise<boolean> {
  const until = Date.now() + 15_000;
  while (Date.now() < until) {
    if (child.exitCode !== null) return false;
    try {
      const r = await fetch(`http://${host}/v2/`);
      if (r.status === 200 || r.status === 401) return true;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

export const basic = (u: string, p: string): string =>
  `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
export const sha256 = (b: Buffer): string =>
  `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function pushBlob(host: string, repo: string, data: Buffer, auth?: string): Promise<string> {
  const digest = sha256(data);
  const headers: Record<string, string> = auth ? { authorization: auth } : {};
  const start = await fetch(`http://${host}/v2/${repo}/blobs/uploads/`, {
    method: 'POST',
    headers,
  });
  if (start.status !== 202)
    throw new Error(`blob upload start: HTTP ${start.status} ${await start.text()}`);
  const loc = new URL(start.headers.get('location')!, `http://${host}`);
  loc.searchParams.set('digest', digest);
  const put = await fetch(loc, {
    method: 'PUT',
    headers: { ...headers, 'content-type': 'application/octet-stream' },
    body: data,
  });
  if (put.status !== 201) throw new Error(`blob upload: HTTP ${put.status} ${await put.text()}`);
  return digest;
}

export async function pushManifest(
  host: string,
  repo: string,
  ref: string,
  body: Buffer,
  mediaType: string,
  auth?: string,
): Promise<string> {
  const r = await fetch(`http://${host}/v2/${repo}/manifests/${ref}`, {
    method: 'PUT',
    headers: { 'content-type': mediaType, ...(auth ? { authorization: auth } : {}) },
    body,
  });
  if (r.status !== 201) throw new Error(`manifest push: HTTP ${r.status} ${await r.text()}`);
  return sha256(body);
}

export interface TestLayer {
  data: Buffer;
  mediaType?: string;
  /** sha256 of the uncompressed tar (computed when not given). */
  diffId?: string;
}

function diffIdOf(l: TestLayer, mediaType: string): string {
  if (l.diffId) return l.diffId;
  if (mediaType.endsWith('gzip')) {
    try {
      return sha256(zlib.gunzipSync(l.data));
    } catch {
      return sha256(l.data);
    }
  }
  if (mediaType.endsWith('zstd')) {
    const r = spawnSync('zstd', ['-d', '-c', '-q'], { input: l.data, maxBuffer: 1 << 30 });
    return sha256(r.status === 0 ? r.stdout : l.data);
  }
  return sha256(l.data);
}

export interface PushedImage {
  digest: string;
  manifest: Buffer;
  mediaType: string;
  size: number;
  layers: { digest: string; size: number; mediaType: string }[];
  configDigest: string;
}

/** Push an image: blobs, config and manifest (OCI by default, or Docker v2). */
export async function pushImage(
  host: string,
  repo: string,
  ref: string,
  layers: TestLayer[],
  o: {
    docker?: boolean;
    auth?: string;
    arch?: string;
    config?: Record<string, unknown>;
    /** Declared sizes/digests to put in the manifest instead of the real ones. */
    lie?: (
      l: { digest: string; size: number; mediaType: string },
      i: number,
    ) => Partial<{ digest: string; size: number; mediaType: string }>;
  } = {},
): Promise<PushedImage> {
  const layerMt = o.docker
    ? 'application/vnd.docker.image.rootfs.diff.tar.gzip'
    : 'application/vnd.oci.image.layer.v1.tar+gzip';
  const descs = [];
  const diffIds: string[] = [];
  for (const [i, l] of layers.entries()) {
    const digest = await pushBlob(host, repo, l.data, o.auth);
    const d = { mediaType: l.mediaType ?? layerMt, digest, size: l.data.length };
    descs.push({ ...d, ...(o.lie?.(d, i) ?? {}) });
    diffIds.push(diffIdOf(l, d.mediaType));
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: o.arch ?? 'amd64',
      os: 'linux',
      config: {
        Env: ['PATH=/usr/local/bin:/usr/bin:/bin'],
        Cmd: ['/bin/sh'],
        WorkingDir: '/',
        ...(o.config ?? {}),
      },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const configDigest = await pushBlob(host, repo, config, o.auth);
  const mediaType = o.docker
    ? 'application/vnd.docker.distribution.manifest.v2+json'
    : 'application/vnd.oci.image.manifest.v1+json';
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: {
        mediaType: o.docker
          ? 'application/vnd.docker.container.image.v1+json'
          : 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: descs,
    }),
  );
  const digest = await pushManifest(host, repo, ref, manifest, mediaType, o.auth);
  return { digest, manifest, mediaType, size: manifest.length, layers: descs, configDigest };
}

/** Push an OCI index over already pushed manifests. */
export async function pushIndex(
  host: string,
  repo: string,
  ref: string,
  entries: { image: PushedImage; platform: Record<string, string> }[],
  auth?: string,
): Promise<string> {
  const mt = 'application/vnd.oci.image.index.v1+json';
  const body = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: mt,
      manifests: entries.map((e) => ({
        mediaType: e.image.mediaType,
        digest: e.image.digest,
        size: e.image.size,
        platform: e.platform,
      })),
    }),
  );
  return pushManifest(host, repo, ref, body, mt, auth);
}

// ------------------------------------------------------------------ token auth

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
  /** Requests the token server saw: scope, and whether credentials were valid. */
  requests: { scope: string | null; service: string | null; authorized: boolean }[];
  /** A push token for the test itself. */
  token(scope: string): string;
  stop(): Promise<void>;
}

/** A token server issuing ES256 JWTs the registry trusts (x5c chain to a test CA). */
export async function startTokenServer(o: { requireLogin: boolean }): Promise<TokenServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-token-'));
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  const r = await runProcess('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '2',
    '-subj',
    '/CN=banger-test-token',
  ]);
  if (r.code !== 0) throw new Error(`openssl: ${r.stderr}`);
  const key = createPrivateKey(fs.readFileSync(keyFile));
  const certDer = new X509Certificate(fs.readFileSync(certFile)).raw;
  const service = 'banger-test-registry';
  const issuer = 'banger-test-issuer';
  const b64u = (b: Buffer | string) => Buffer.from(b).toString('base64url');
  const makeToken = (scopes: string[]) => {
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer.toString('base64')] };
    const now = Math.floor(Date.now() / 1000);
    const access = scopes.map((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop()!.split(',');
      return { type, name: rest.join(':'), actions };
    });
    const claims = {
      iss: issuer,
      sub: TEST_USER,
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    };
    const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    return `${input}.${b64u(sig)}`;
  };
  const requests: TokenServer['requests'] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    const authorized = req.headers.authorization === basic(TEST_USER, TEST_PASSWORD);
    requests.push({
      scope: url.searchParams.get('scope'),
      service: url.searchParams.get('service'),
      authorized,
    });
    if ((o.requireLogin && !authorized) || (req.headers.authorization && !authorized)) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"details":"bad credentials"}');
      return;
    }
    const scopes = url.searchParams.getAll('scope');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token: makeToken(scopes), expires_in: 300 }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    requests,
    token: (scope) => `Bearer ${makeToken([scope])}`,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------ proxy

export type Tamper = 'corrupt' | 'short' | 'cut' | 'redirect';

export interface Proxy {
  host: string;
  requests: { method: string; path: string; auth: boolean }[];
  /** Requests to the fake storage host that blob redirects point at. */
  storage: { path: string; auth: boolean }[];
  tamper: Map<string, Tamper>;
  stop(): Promise<void>;
}

/**
 * A reverse proxy in front of a registry that records every request and can
 * damage chosen blobs (by digest) or redirect them to another origin
 * (`localhost` instead of `127.0.0.1`), the way registries hand blobs to storage.
 */
export async function startProxy(target: string, o: { storageAuth?: string } = {}): Promise<Proxy> {
  const requests: Proxy['requests'] = [];
  const storage: Proxy['storage'] = [];
  const tamper = new Map<string, Tamper>();
  const forward = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    upstreamPath: string,
    headers: http.OutgoingHttpHeaders,
    mode?: Tamper,
  ) => {
    const up = http.request(
      `http://${target}${upstreamPath}`,
      { method: req.method, headers: { ...headers, host: target } },
      (ur) => {
        if (!mode || ur.statusCode !== 200) {
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          ur.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('end', () => {
          const body = Buffer.concat(chunks);
          const h = { ...ur.headers };
          if (mode === 'corrupt') {
            body[body.length >> 1] ^= 0xff;
            res.writeHead(200, h);
            res.end(body);
          } else if (mode === 'short') {
            const half = body.subarray(0, body.length >> 1);
            res.writeHead(200, { ...h, 'content-length': String(half.length) });
            res.end(half);
          } else {
            res.writeHead(200, h);
            res.write(body.subarray(0, body.length >> 1), () => res.destroy());
          }
        });
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  let port = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    if (url.pathname.startsWith('/_storage/')) {
      storage.push({ path: url.pathname, auth: !!req.headers.authorization });
      const headers = { ...req.headers };
      delete headers.authorization;
      if (o.storageAuth) headers.authorization = o.storageAuth;
      forward(req, res, url.pathname.replace('/_storage', ''), headers);
      return;
    }
    requests.push({ method: req.method!, path: url.pathname, auth: !!req.headers.authorization });
    const m = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    const mode = m ? tamper.get(m[1]!) : undefined;
    if (mode === 'redirect' && req.method === 'GET') {
      // Only redirect once the client is authorized, as real registries do.
      if (req.headers.authorization || !o.storageAuth) {
        res.writeHead(307, { location: `http://localhost:${port}/_storage${url.pathname}?sig=x` });
        res.end();
        return;
      }
    }
    forward(req, res, req.url!, req.headers, mode === 'redirect' ? undefined : mode);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    storage,
    tamper,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
