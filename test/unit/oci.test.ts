import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  credentialsFor,
  defaultDockerConfigPath,
  normalizeRegistryKey,
  parseChallenges,
} from '../../src/image/oci/auth.js';
import {
  layerCompression,
  MediaType,
  parseImageConfig,
  parseManifest,
  selectPlatform,
  WANT_PLATFORM,
  type Descriptor,
} from '../../src/image/oci/manifest.js';
import {
  defaultImageName,
  formatReference,
  isLoopbackHost,
  parseReference,
} from '../../src/image/oci/reference.js';

const D = (c: string) => `sha256:${c.repeat(64)}`;

describe('image references', () => {
  const cases: [string, Partial<ReturnType<typeof parseReference>>, string][] = [
    [
      'debian:bookworm',
      {
        registry: 'docker.io',
        endpoint: 'registry-1.docker.io',
        repository: 'library/debian',
        tag: 'bookworm',
      },
      'docker.io/library/debian:bookworm',
    ],
    ['debian', { repository: 'library/debian', tag: 'latest' }, 'docker.io/library/debian:latest'],
    [
      'docker.io/library/debian:12',
      { registry: 'docker.io', tag: '12' },
      'docker.io/library/debian:12',
    ],
    [
      'index.docker.io/user/app',
      { registry: 'docker.io', repository: 'user/app' },
      'docker.io/user/app:latest',
    ],
    [
      'user/app:v1',
      { registry: 'docker.io', repository: 'user/app', tag: 'v1' },
      'docker.io/user/app:v1',
    ],
    [
      'ghcr.io/org/team/tool:1.2.3',
      { registry: 'ghcr.io', endpoint: 'ghcr.io', repository: 'org/team/tool', tag: '1.2.3' },
      'ghcr.io/org/team/tool:1.2.3',
    ],
    [
      'localhost:5000/x:y',
      { registry: 'localhost:5000', endpoint: 'localhost:5000', repository: 'x', tag: 'y' },
      'localhost:5000/x:y',
    ],
    ['localhost/x', { registry: 'localhost', repository: 'x' }, 'localhost/x:latest'],
    [
      '127.0.0.1:5000/a/b',
      { registry: '127.0.0.1:5000', repository: 'a/b' },
      '127.0.0.1:5000/a/b:latest',
    ],
    ['[::1]:5000/a', { registry: '[::1]:5000', repository: 'a' }, '[::1]:5000/a:latest'],
    [
      `alpine@${D('a')}`,
      { repository: 'library/alpine', digest: D('a') },
      `docker.io/library/alpine@${D('a')}`,
    ],
    [`alpine:3@${D('b')}`, { tag: '3', digest: D('b') }, `docker.io/library/alpine:3@${D('b')}`],
  ];
  for (const [input, want, canonical] of cases) {
    test(input, () => {
      const r = parseReference(input);
      for (const [k, v] of Object.entries(want)) assert.equal(r[k as keyof typeof r], v, k);
      if (!want.tag && !want.digest) assert.equal(r.tag, 'latest');
      assert.equal(formatReference(r), canonical);
    });
  }
  test('bad references are usage errors', () => {
    for (const [bad, re] of [
      ['', /empty/],
      ['https://ghcr.io/x', /scheme/],
      ['Debian:12', /valid repository/],
      ['debian:bad tag', /valid tag|valid repository/],
      ['debian@sha512:abcd', /only sha256/],
      ['debian@sha256:abc', /64 lowercase/],
      ['ghcr.io/', /no repository|valid repository/],
    ] as const) {
      assert.throws(
        () => parseReference(bad),
        (e: Error & { code?: string }) => e.code === 'usage' && re.test(e.message),
        bad,
      );
    }
  });
  test('default names and loopback', () => {
    assert.equal(defaultImageName(parseReference('debian:bookworm')), 'debian-bookworm');
    assert.equal(defaultImageName(parseReference('ghcr.io/o/tool')), 'tool-latest');
    assert.equal(defaultImageName(parseReference(`x@${D('c')}`)), 'x-cccccccccccc');
    assert.ok(isLoopbackHost('127.0.0.1:5000'));
    assert.ok(isLoopbackHost('localhost'));
    assert.ok(isLoopbackHost('[::1]:80'));
    assert.ok(!isLoopbackHost('10.0.0.1:5000'));
    assert.ok(!isLoopbackHost('localhost.evil.com'));
  });
});

describe('registry auth', () => {
  test('challenges', () => {
    assert.deepEqual(
      parseChallenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"',
      ),
      [
        {
          scheme: 'bearer',
          params: {
            realm: 'https://auth.docker.io/token',
            service: 'registry.docker.io',
            scope: 'repository:library/debian:pull',
          },
        },
      ],
    );
    assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
    ]);
    assert.deepEqual(
      parseChallenges([
        'Basic realm="a, b"',
        'Bearer realm="https://t/x",error="invalid_token"',
      ]).map((c) => [c.scheme, c.params.realm]),
      [
        ['basic', 'a, b'],
        ['bearer', 'https://t/x'],
      ],
    );
    assert.deepEqual(
      parseChallenges('Basic realm="x", Bearer realm="y", service=reg').map((c) => c.scheme),
      ['basic', 'bearer'],
    );
    assert.deepEqual(parseChallenges(undefined), []);
  });
  test('Docker config credentials', () => {
    const cfg = {
      auths: {
        'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw1').toString('base64') },
        'localhost:5000': { auth: Buffer.from('me:p:w').toString('base64') },
        'https://ghcr.io/v2/': { username: 'u', password: 'tok' },
        'quay.io': { identitytoken: 'x' },
      },
      credHelpers: { 'gcr.io': 'gcloud' },
    };
    assert.deepEqual(credentialsFor(cfg, 'docker.io').credentials, {
      username: 'hub',
      password: 'pw1',
    });
    assert.deepEqual(credentialsFor(cfg, 'localhost:5000').credentials, {
      username: 'me',
      password: 'p:w',
    });
    assert.deepEqual(credentialsFor(cfg, 'ghcr.io').credentials, {
      username: 'u',
      password: 'tok',
    });
    assert.match(credentialsFor(cfg, 'quay.io').note!, /identity token/);
    assert.match(credentialsFor(cfg, 'gcr.io').note!, /docker-credential-gcloud/);
    assert.deepEqual(credentialsFor(cfg, 'localhost:5001'), {});
    assert.equal(normalizeRegistryKey('https://Registry-1.docker.io/v2/'), 'docker.io');
    assert.equal(defaultDockerConfigPath({ DOCKER_CONFIG: '/d' }), '/d/config.json');
    assert.equal(defaultDockerConfigPath({ HOME: '/h' }), '/h/.docker/config.json');
  });
});

describe('manifests', () => {
  const desc = (
    platform?: Descriptor['platform'],
    extra: Partial<Descriptor> = {},
  ): Descriptor => ({
    mediaType: MediaType.ociManifest,
    digest: D('1'),
    size: 10,
    ...(platform ? { platform } : {}),
    ...extra,
  });
  test('platform selection skips attestations and prefers no variant', () => {
    const list = [
      desc({ os: 'linux', architecture: 'arm64', variant: 'v8' }, { digest: D('a') }),
      desc({ os: 'unknown', architecture: 'unknown' }, { digest: D('b') }),
      desc(
        { os: 'linux', architecture: 'amd64' },
        { digest: D('c'), annotations: { 'vnd.docker.reference.type': 'attestation-manifest' } },
      ),
      desc({ os: 'linux', architecture: 'amd64', variant: 'v3' }, { digest: D('d') }),
      desc({ os: 'linux', architecture: 'amd64' }, { digest: D('e') }),
    ];
    assert.equal(selectPlatform(list, WANT_PLATFORM, 'img').digest, D('e'));
    assert.equal(selectPlatform(list.slice(0, 4), WANT_PLATFORM, 'img').digest, D('d'));
    assert.throws(
      () => selectPlatform(list.slice(0, 2), WANT_PLATFORM, 'img'),
      /img has no linux\/amd64 image \(it has linux\/arm64\/v8\)/,
    );
  });
  test('documents', () => {
    const m = {
      schemaVersion: 2,
      mediaType: MediaType.dockerManifest,
      config: { mediaType: MediaType.dockerConfig, digest: D('2'), size: 5 },
      layers: [
        { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: D('3'), size: 7 },
      ],
    };
    const doc = parseManifest(Buffer.from(JSON.stringify(m)), undefined, 'x');
    assert.equal(doc.kind, 'manifest');
    const idx = parseManifest(
      Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [desc()] })),
      `${MediaType.ociIndex}; charset=utf-8`,
      'x',
    );
    assert.equal(idx.kind, 'index');
    assert.throws(
      () => parseManifest(Buffer.from('{"schemaVersion":1}'), undefined, 'old'),
      /schema 1/,
    );
    assert.throws(() => parseManifest(Buffer.from('nope'), undefined, 'x'), /not JSON/);
    assert.throws(
      () =>
        parseManifest(
          Buffer.from(JSON.stringify({ ...m, layers: [{ ...m.layers[0], digest: 'md5:x' }] })),
          undefined,
          'x',
        ),
      /layers.0.digest/,
    );
    assert.throws(
      () =>
        parseManifest(
          Buffer.from(JSON.stringify({ ...m, mediaType: 'application/vnd.foo' })),
          undefined,
          'x',
        ),
      /unsupported manifest media type/,
    );
  });
  test('layer media types', () => {
    assert.equal(layerCompression('application/vnd.oci.image.layer.v1.tar+zstd'), 'zstd');
    assert.equal(layerCompression('application/vnd.oci.image.layer.v1.tar+gzip'), 'gzip');
    assert.equal(layerCompression('application/vnd.oci.image.layer.v1.tar'), 'none');
    assert.equal(layerCompression('application/vnd.docker.image.rootfs.diff.tar.gzip'), 'gzip');
    assert.equal(
      layerCompression('application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'),
      undefined,
    );
    assert.equal(layerCompression('application/x-tar+bzip2'), undefined);
  });
  test('image config', () => {
    const c = parseImageConfig(
      Buffer.from(
        JSON.stringify({
          architecture: 'amd64',
          os: 'linux',
          config: {
            Env: ['PATH=/usr/bin'],
            Cmd: ['bash'],
            Entrypoint: null,
            User: '1000',
            ExposedPorts: { '80/tcp': {} },
          },
          rootfs: { type: 'layers', diff_ids: [D('4')] },
        }),
      ),
      'cfg',
    );
    assert.deepEqual(c.Env, ['PATH=/usr/bin']);
    assert.deepEqual(c.Entrypoint, []);
    assert.deepEqual(c.Cmd, ['bash']);
    assert.equal(c.User, '1000');
    assert.equal(c.WorkingDir, '');
    assert.deepEqual(c.ExposedPorts, ['80/tcp']);
    assert.deepEqual(c.diffIds, [D('4')]);
    assert.deepEqual(parseImageConfig(Buffer.from('{}'), 'cfg').Cmd, []);
  });
});

describe('registry transport safety', () => {
  test('--insecure skips certificate checks for the named registry only, never for a token server elsewhere', async () => {
    const { skipsTlsChecks } = await import('../../src/image/oci/registry.js');
    assert.equal(skipsTlsChecks(new URL('https://reg.lan:5000/v2/'), 'reg.lan:5000', true), true);
    assert.equal(
      skipsTlsChecks(new URL('https://auth.example.com/token'), 'reg.lan:5000', true),
      false,
    );
    assert.equal(
      skipsTlsChecks(new URL('https://reg.lan:5000/token'), 'reg.lan:5000', false),
      false,
    );
  });

  test('credentials go over plain http only to loopback', async () => {
    const { refuseCleartextCredentials } = await import('../../src/image/oci/registry.js');
    assert.doesNotThrow(() =>
      refuseCleartextCredentials('127.0.0.1:5000', 'http://127.0.0.1:5000/token'),
    );
    assert.doesNotThrow(() =>
      refuseCleartextCredentials('localhost:5000', 'http://localhost:5000'),
    );
    assert.throws(
      () => refuseCleartextCredentials('reg.lan:5000', 'http://reg.lan:5000/token'),
      (e: Error) =>
        e.message ===
        'refusing to send the login for reg.lan:5000 to http://reg.lan:5000/token over plain http',
    );
  });
});
