import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  formatImageSize,
  imageCatalogTable,
  imageTable,
  parsePackages,
} from '../../src/cli/commands/image.js';
import { isBangerError } from '../../src/errors.js';
import { failureLine, pruneBuildLogs } from '../../src/image/buildLog.js';
import { CATALOG, catalogEntry } from '../../src/image/catalog.js';
import { parseDpkgStatus } from '../../src/image/debian/build.js';
import { chooseMirror, parseDeb822, parseSourcesList } from '../../src/image/debian/mirror.js';
import {
  DPKG_NODOC_CFG,
  mmdebstrapArgs,
  mmdebstrapEnv,
  parseNeedToGet,
  parsePhase,
  parseTempdir,
} from '../../src/image/debian/mmdebstrap.js';
import { chooseBuildMode, subIdCount, type ModeFacts } from '../../src/image/debian/mode.js';
import {
  EXT_MAGIC_OFFSET,
  hasExtMagic,
  requireExt4,
  superblockInfo,
} from '../../src/image/files.js';
import { imageInputsKey } from '../../src/image/inputs.js';
import { packumentUrl, sri512 } from '../../src/image/mise.js';
import {
  debianRecipe,
  DEBIAN_BASE_PACKAGES,
  devRecipe,
  extendRecipe,
  includedPackages,
  MISE_PIN,
  parseRecipe,
  recipeOps,
} from '../../src/image/recipe.js';
import { defaultOciName } from '../../src/image/service.js';
import { seedEntries } from '../../src/image/workSeed.js';
import { TMUX_BLOCK_BEGIN, TMUX_BLOCK_END } from '../../src/image/devbox.js';
import { withBlock } from '../../src/guest/contract.js';

const HOST_BOOKWORM = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

describe('recipes and the catalog', () => {
  test('debian-bookworm-slim: minbase bookworm with the minimal set, mise pinned, no Docker', () => {
    const e = catalogEntry('debian-bookworm-slim')!;
    assert.equal(e.recipe.suite, 'bookworm');
    assert.equal(e.recipe.variant, 'minbase');
    assert.deepEqual(e.recipe.packages, [
      'systemd-sysv',
      'openssh-server',
      'iproute2',
      'iputils-ping',
      'ca-certificates',
      'curl',
      'git',
      'tmux',
      'less',
      'vim-tiny',
      'sudo',
      'procps',
      'kmod',
      'netbase',
      'xz-utils',
      'unzip',
    ]);
    assert.equal(e.recipe.docker, false);
    assert.equal(e.recipe.tmuxPersistence, false);
    assert.deepEqual(e.recipe.mise, MISE_PIN);
    assert.match(MISE_PIN.integrity, /^sha512-/);
    assert.deepEqual(recipeOps(e.recipe), []);
  });

  test('debian-bookworm (the default, first in the catalog): the slim set + dev tools, Docker, tmux persistence', () => {
    assert.deepEqual(
      CATALOG.map((c) => c.name),
      ['debian-bookworm', 'debian-bookworm-slim'],
    );
    const e = catalogEntry('debian-bookworm')!;
    const slim = catalogEntry('debian-bookworm-slim')!;
    const all = includedPackages(e.recipe);
    for (const p of [
      ...slim.recipe.packages,
      'docker.io',
      'jq',
      'make',
      'build-essential',
      'pkg-config',
      'python3',
      'openssh-client',
      'rsync',
      'htop',
      'strace',
      'file',
      'tmux-plugin-manager',
    ]) {
      assert.ok(all.includes(p), p);
    }
    assert.ok(!all.includes('udev'), 'no udev: the initramfs does its job, the boot is faster');
    assert.deepEqual([e.recipe.docker, e.recipe.tmuxPersistence], [true, true]);
    assert.deepEqual(e.recipe.mise, MISE_PIN);
    assert.ok(e.approxSize.sizeBytes > slim.approxSize.sizeBytes);
  });

  test('extendRecipe adds packages once and turns Docker on; tmux persistence is kept', () => {
    const r = extendRecipe(debianRecipe(), { packages: ['make', 'git', 'make'], docker: true });
    assert.deepEqual(r.packages, [...DEBIAN_BASE_PACKAGES, 'make']);
    assert.equal(r.docker, true);
    assert.ok(includedPackages(r).includes('docker.io'));
    assert.ok(includedPackages(r).includes('dbus') && includedPackages(r).includes('apparmor'));
    assert.ok(!includedPackages(r).includes('tmux-plugin-manager'));
    assert.equal(extendRecipe(r, {}).docker, true, 'docker stays on');
    assert.equal(extendRecipe(devRecipe(), { packages: ['gdb'] }).tmuxPersistence, true);
  });

  test('Docker images: dockerd, containerd, AppArmor and D-Bus start on first use, logind never; data dir on ext4', () => {
    const ops = recipeOps(debianRecipe({ docker: true }));
    assert.deepEqual(
      ops.filter((o) => o.kind === 'remove').map((o) => o.path),
      [
        '/etc/systemd/system/multi-user.target.wants/docker.service',
        '/etc/systemd/system/multi-user.target.wants/containerd.service',
        '/etc/systemd/system/sysinit.target.wants/apparmor.service',
        '/lib/systemd/system/multi-user.target.wants/dbus.service',
      ],
    );
    assert.ok(
      !ops.some((o) => o.path.includes('docker.socket')),
      'docker.socket stays enabled: the first docker command starts dockerd',
    );
    const logind = ops.find((o) => o.path === '/etc/systemd/system/systemd-logind.service');
    assert.ok(logind?.kind === 'symlink' && logind.target === '/dev/null', 'logind masked');
    const files = Object.fromEntries(
      ops.flatMap((o) => (o.kind === 'file' && 'content' in o ? [[o.path, o.content]] : [])),
    );
    const unit = files['/etc/systemd/system/banger-docker-data.service']!;
    assert.match(unit, /^ConditionPathIsMountPoint=\/run\/banger\/overlay$/m);
    assert.match(
      unit,
      /^ExecStart=\/bin\/mkdir -p \/run\/banger\/overlay\/docker \/var\/lib\/docker$/m,
    );
    assert.match(
      unit,
      /^ExecStart=\/bin\/mount --bind \/run\/banger\/overlay\/docker \/var\/lib\/docker$/m,
    );
    const dropin = files['/etc/systemd/system/docker.service.d/banger.conf']!;
    assert.match(dropin, /^Requires=banger-docker-data\.service$/m);
    assert.match(dropin, /^After=banger-docker-data\.service$/m);
  });

  test('tmux persistence: TPM, resurrect and continuum in one fenced block of /root/.tmux.conf', () => {
    const ops = recipeOps(debianRecipe({ tmuxPersistence: true }));
    assert.ok(
      includedPackages(debianRecipe({ tmuxPersistence: true })).includes('tmux-plugin-manager'),
    );
    const block = ops.find((o) => o.kind === 'block');
    assert.ok(block && block.kind === 'block');
    assert.equal(block.path, '/root/.tmux.conf');
    assert.equal(block.begin, TMUX_BLOCK_BEGIN);
    assert.equal(block.end, TMUX_BLOCK_END);
    assert.deepEqual(block.lines.slice(0, 4), [
      "set -g @plugin 'tmux-plugins/tmux-resurrect'",
      "set -g @plugin 'tmux-plugins/tmux-continuum'",
      "set -g @continuum-save-interval '15'",
      "set -g @continuum-restore 'off'",
    ]);
    // TPM is loaded last, in the background (tmux never waits for it), then the
    // plugins are fetched only when missing, and loaded
    assert.equal(
      block.lines.at(-1),
      "run-shell -b '{ /usr/share/tmux-plugin-manager/tpm; test -d /root/.tmux/plugins/tmux-continuum || " +
        "{ /usr/share/tmux-plugin-manager/bin/install_plugins && /usr/share/tmux-plugin-manager/tpm; }; } >/dev/null 2>&1'",
    );
    assert.deepEqual(
      block.lines.filter((l) => /^run(-shell)?\b/.test(l) && !l.startsWith('run-shell -b ')),
      [],
      'no foreground run-shell',
    );
    assert.ok(
      ops.some((o) => o.kind === 'dir' && o.path === '/root/.tmux/plugins'),
      'TPM clones into an existing directory',
    );
    // the block is rewritten, not duplicated
    const once = withBlock('set -g mouse on\n', block);
    assert.equal(withBlock(once, block), once);
    assert.equal(once.split(TMUX_BLOCK_BEGIN).length, 2);
  });

  test('stored recipes parse back (older ones without tmuxPersistence too); junk does not', () => {
    const r = devRecipe();
    assert.deepEqual(parseRecipe(JSON.parse(JSON.stringify(r))), r);
    const { tmuxPersistence: _t, ...old } = debianRecipe();
    assert.deepEqual(parseRecipe(old), debianRecipe());
    assert.equal(parseRecipe({ kind: 'oci' }), undefined);
    assert.equal(parseRecipe(undefined), undefined);
  });

  test('the inputs key changes with the recipe and the agent, nothing else', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-key-'));
    try {
      const agent = path.join(dir, 'agent');
      fs.writeFileSync(agent, 'v1');
      const k = imageInputsKey(debianRecipe(), agent);
      assert.match(k, /^[0-9a-f]{64}$/);
      assert.equal(imageInputsKey(debianRecipe(), agent), k);
      assert.notEqual(
        imageInputsKey(extendRecipe(debianRecipe(), { packages: ['make'] }), agent),
        k,
      );
      assert.notEqual(imageInputsKey(debianRecipe({ docker: true }), agent), k);
      assert.notEqual(imageInputsKey(debianRecipe({ tmuxPersistence: true }), agent), k);
      assert.notEqual(
        imageInputsKey(debianRecipe({ mise: { ...MISE_PIN, version: '1' } }), agent),
        k,
      );
      fs.writeFileSync(agent, 'v2');
      assert.notEqual(imageInputsKey(debianRecipe(), agent), k);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('mmdebstrap command line', () => {
  const base = {
    recipe: debianRecipe(),
    mode: 'unshare' as const,
    mirror: { kind: 'file' as const, path: '/etc/apt/sources.list.d/debian.sources', reason: '' },
    output: '/s/tmp/img/rootfs.tar',
    debCacheDir: "/home/u/.cache/banger/debs it's",
    dpkgOptFile: '/s/tmp/img/dpkg-nodoc.cfg',
    contractHooks: ['--customize-hook=HOOK1', '--customize-hook=HOOK2'],
  };

  test('mode, variant, packages, no docs, tar output, suite, target, mirror last', () => {
    const a = mmdebstrapArgs(base);
    assert.equal(a[0], '--mode=unshare');
    assert.ok(a.includes('--variant=minbase'));
    assert.ok(a.includes('--format=tar'));
    assert.ok(a.includes(`--include=${DEBIAN_BASE_PACKAGES.join(',')}`));
    assert.ok(a.includes('--dpkgopt=/s/tmp/img/dpkg-nodoc.cfg'));
    assert.ok(a.includes('--aptopt=Acquire::Languages "none"'));
    assert.deepEqual(a.slice(-3), [
      'bookworm',
      '/s/tmp/img/rootfs.tar',
      '/etc/apt/sources.list.d/debian.sources',
    ]);
  });

  test('persistent .deb cache: sync-in before downloads, sync-out before cleanup, quoted for shellwords', () => {
    const a = mmdebstrapArgs(base);
    const q = `'/home/u/.cache/banger/debs it'\\''s'`;
    const syncIn = a.indexOf(`--setup-hook=sync-in ${q} /var/cache/apt/archives/`);
    const syncOut = a.indexOf(`--customize-hook=sync-out /var/cache/apt/archives ${q}`);
    assert.ok(
      a.indexOf('--setup-hook=mkdir -p "$1"/var/cache/apt/archives/') < syncIn && syncIn > 0,
    );
    assert.ok(a.includes('--skip=essential/unlink'), 'essential .debs kept for the cache');
    assert.ok(syncOut > 0 && syncOut < a.indexOf('--customize-hook=HOOK1'));
    assert.ok(a.indexOf('--customize-hook=HOOK1') < a.indexOf('--customize-hook=HOOK2'));
  });

  test('docker, root mode and generated mirror lines', () => {
    const a = mmdebstrapArgs({
      ...base,
      mode: 'root',
      recipe: debianRecipe({ docker: true }),
      mirror: {
        kind: 'lines',
        lines: ['deb http://m/debian bookworm main', 'deb http://m/s bookworm-security main'],
        reason: '',
      },
    });
    assert.equal(a[0], '--mode=root');
    assert.match(
      a.find((x) => x.startsWith('--include='))!,
      /,docker\.io,dbus,apparmor$/,
    );
    assert.deepEqual(a.slice(-2), [
      'deb http://m/debian bookworm main',
      'deb http://m/s bookworm-security main',
    ]);
  });

  test('environment: SOURCE_DATE_EPOCH and TMPDIR', () => {
    const env = mmdebstrapEnv(debianRecipe(), '/var/tmp');
    assert.equal(env.SOURCE_DATE_EPOCH, '1767225600');
    assert.equal(env.TMPDIR, '/var/tmp');
  });

  test('dpkg excludes docs but keeps copyright files', () => {
    assert.match(DPKG_NODOC_CFG, /^path-exclude=\/usr\/share\/doc\/\*$/m);
    assert.match(DPKG_NODOC_CFG, /^path-include=\/usr\/share\/doc\/\*\/copyright$/m);
    assert.match(DPKG_NODOC_CFG, /^path-exclude=\/usr\/share\/man\/\*$/m);
  });

  test('output parsers: download size, chroot dir, phases, failure line', () => {
    assert.equal(parseNeedToGet('Need to get 42.2 MB of archives.'), 42_200_000);
    assert.equal(parseNeedToGet('Need to get 0 B/29.7 MB of archives.'), 0);
    assert.equal(parseNeedToGet('Need to get 1,234 kB of archives.'), 1_234_000);
    assert.equal(parseNeedToGet('Get:1 http://x'), undefined);
    assert.equal(
      parseTempdir('I: using /tmp/mmdebstrap.Od_wm as tempdir'),
      '/tmp/mmdebstrap.Od_wm',
    );
    assert.equal(
      parsePhase('I: installing remaining packages inside the chroot...'),
      'install packages',
    );
    assert.equal(parsePhase('I: creating tarball...'), 'write rootfs tar');
    assert.equal(parsePhase('Setting up x'), undefined);
    assert.equal(
      failureLine([
        'x',
        'E: Unable to locate package nosuchpkg',
        'E: apt-get install failed',
        'E: mmdebstrap failed to run',
      ]),
      'Unable to locate package nosuchpkg',
    );
    assert.equal(failureLine(['only line']), 'only line');
  });

  test('installed packages from dpkg status', () => {
    const status = [
      'Package: a\nStatus: install ok installed\nVersion: 1.0',
      'Package: b\nStatus: deinstall ok config-files\nVersion: 2',
      'Package: c\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3:1.2-1',
    ].join('\n\n');
    assert.deepEqual(parseDpkgStatus(status), ['a=1.0', 'c=3:1.2-1']);
  });
});

describe('mirror from the host apt sources', () => {
  test('a bookworm host: its debian.sources is used as it is', () => {
    const m = chooseMirror(
      [{ path: '/etc/apt/sources.list.d/debian.sources', content: HOST_BOOKWORM }],
      'bookworm',
    );
    assert.deepEqual(m, {
      kind: 'file',
      path: '/etc/apt/sources.list.d/debian.sources',
      reason: 'host apt sources /etc/apt/sources.list.d/debian.sources',
    });
  });

  test('another release: the host mirror URIs with our suite', () => {
    const trixie = HOST_BOOKWORM.replaceAll('bookworm', 'trixie').replaceAll(
      'deb.debian.org',
      'mirror.local',
    );
    const m = chooseMirror(
      [{ path: '/etc/apt/sources.list.d/debian.sources', content: trixie }],
      'bookworm',
    );
    assert.equal(m.kind, 'lines');
    assert.deepEqual(m.kind === 'lines' && m.lines, [
      'deb http://mirror.local/debian bookworm main',
      'deb http://mirror.local/debian bookworm-updates main',
      'deb http://mirror.local/debian-security bookworm-security main',
    ]);
  });

  test('third-party entries never reach the image', () => {
    const list = [
      'deb http://ftp.de.debian.org/debian bookworm main contrib',
      'deb http://ftp.de.debian.org/debian bookworm-updates main',
      'deb http://security.debian.org/debian-security bookworm-security main',
      'deb [arch=amd64 signed-by=/k.gpg] https://download.docker.com/linux/debian bookworm stable',
      'deb https://deb.nodesource.com/node_20.x nodistro main',
    ].join('\n');
    const m = chooseMirror([{ path: '/etc/apt/sources.list', content: list }], 'bookworm');
    assert.equal(m.kind, 'lines', 'the file has foreign entries: not passed as is');
    assert.deepEqual(m.kind === 'lines' && m.lines, [
      'deb http://ftp.de.debian.org/debian bookworm main',
      'deb http://ftp.de.debian.org/debian bookworm-updates main',
      'deb http://security.debian.org/debian-security bookworm-security main',
    ]);
  });

  test('no Debian sources (another distro): deb.debian.org', () => {
    const m = chooseMirror(
      [
        {
          path: '/etc/apt/sources.list',
          content: 'deb http://archive.ubuntu.com/ubuntu noble main restricted',
        },
      ],
      'bookworm',
    );
    assert.equal(m.kind, 'lines');
    assert.match(m.reason, /default mirror/);
    assert.equal(
      m.kind === 'lines' && m.lines[0],
      'deb http://deb.debian.org/debian bookworm main',
    );
    assert.equal(chooseMirror([], 'bookworm').kind, 'lines');
  });

  test('parsers: deb822 continuation lines, Enabled: no, one-line options', () => {
    const e = parseDeb822(
      'Types: deb deb-src\nURIs: http://a\n http://b\nSuites: x\nComponents: main\n\nEnabled: no\nTypes: deb\nURIs: http://c\nSuites: y\nComponents: main\n',
    );
    assert.deepEqual(e, [
      {
        types: ['deb', 'deb-src'],
        uris: ['http://a', 'http://b'],
        suites: ['x'],
        components: ['main'],
      },
    ]);
    assert.deepEqual(parseSourcesList('# c\ndeb [trusted=yes] http://a x main # tail\n'), [
      { types: ['deb'], uris: ['http://a'], suites: ['x'], components: ['main'] },
    ]);
  });
});

describe('build mode', () => {
  const user: ModeFacts = {
    uid: 1000,
    user: 'dev',
    subuid: 'dev:100000:65536\n',
    subgid: 'dev:100000:65536\n',
    hasIdmapTools: true,
    canUnshareMount: false,
  };
  const code = (f: ModeFacts): string => {
    try {
      chooseBuildMode(f);
      return 'ok';
    } catch (e) {
      assert.ok(isBangerError(e));
      assert.ok(e.hint, 'every refusal says what to do');
      return e.code;
    }
  };

  test('root: unshare (private mount namespace) when possible, else root', () => {
    assert.equal(
      chooseBuildMode({ ...user, uid: 0, user: 'root', canUnshareMount: true }),
      'unshare',
    );
    assert.equal(
      chooseBuildMode({ ...user, uid: 0, user: 'root', canUnshareMount: false }),
      'root',
    );
  });

  test('users: unshare with subordinate ids; each missing piece named with its fix', () => {
    assert.equal(chooseBuildMode(user), 'unshare');
    assert.equal(
      chooseBuildMode({ ...user, subuid: '1000:100000:65536', subgid: '1000:100000:65536' }),
      'unshare',
    );
    assert.equal(code({ ...user, subuid: null }), 'precondition');
    assert.equal(code({ ...user, subgid: 'dev:100000:1000' }), 'precondition');
    assert.equal(code({ ...user, hasIdmapTools: false }), 'tool_missing');
    assert.equal(code({ ...user, unprivilegedUsernsClone: '0' }), 'precondition');
    assert.equal(code({ ...user, apparmorRestrictUserns: '1' }), 'precondition');
    try {
      chooseBuildMode({ ...user, subuid: '' });
    } catch (e) {
      assert.match(
        (e as Error & { hint: string }).hint,
        /usermod --add-subuids 100000-165535 --add-subgids 100000-165535 dev/,
      );
    }
  });

  test('subordinate id counting', () => {
    assert.equal(subIdCount('a:1:5\ndev:100000:65536\ndev:200000:10\n', 'dev', 1000), 65546);
    assert.equal(subIdCount(null, 'dev', 1000), 0);
  });
});

describe('image files and helpers', () => {
  test('ext4 superblock magic, label, journal flag', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-sb-'));
    try {
      const buf = Buffer.alloc(4096);
      assert.equal(hasExtMagic(buf), false);
      buf.writeUInt16LE(0xef53, EXT_MAGIC_OFFSET);
      buf.write('banger-base', 1024 + 0x78);
      assert.equal(hasExtMagic(buf), true);
      assert.deepEqual(superblockInfo(buf), { label: 'banger-base', journal: false });
      const good = path.join(dir, 'good');
      fs.writeFileSync(good, buf);
      assert.equal(requireExt4(good, 'rootfs'), good);
      const bad = path.join(dir, 'bad');
      fs.writeFileSync(bad, 'not ext4');
      assert.throws(() => requireExt4(bad, 'rootfs'), /rootfs .*bad is not an ext4 file system/);
      assert.throws(
        () => requireExt4(path.join(dir, 'nope'), 'work-seed'),
        /work-seed .*nope does not exist/,
      );
      assert.throws(() => requireExt4(dir, 'rootfs'), /is not a regular file/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('work-seed entries: /root content re-rooted, nothing else', () => {
    const e = (p: string) => ({
      path: p,
      type: 'file' as const,
      uid: 0,
      gid: 0,
      mode: 0o644,
      mtime: 0,
      size: 0,
    });
    assert.deepEqual(
      seedEntries([e('/root'), e('/root/.bashrc'), e('/root/.ssh'), e('/rootfs'), e('/etc/x')]).map(
        (x) => x.path,
      ),
      ['/.bashrc', '/.ssh'],
    );
  });

  test('build logs: newest five kept per image', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-logs-'));
    try {
      for (let i = 0; i < 7; i++)
        fs.writeFileSync(path.join(dir, `img-2026112${i}-101010.log`), '');
      fs.writeFileSync(path.join(dir, 'img-other-20261120-101010.log'), '');
      pruneBuildLogs(dir, 'img');
      assert.deepEqual(fs.readdirSync(dir).sort(), [
        'img-20261122-101010.log',
        'img-20261123-101010.log',
        'img-20261124-101010.log',
        'img-20261125-101010.log',
        'img-20261126-101010.log',
        'img-other-20261120-101010.log',
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('npm registry helpers', () => {
    assert.equal(
      packumentUrl('https://registry.npmjs.org', '@jdxcode/mise-linux-x64'),
      'https://registry.npmjs.org/@jdxcode%2fmise-linux-x64',
    );
    assert.equal(sri512(Buffer.from([1, 2])), 'sha512-AQI=');
  });

  test('OCI default names', () => {
    assert.equal(defaultOciName('ghcr.io/org/tool:1.2'), 'tool-1.2');
    assert.equal(defaultOciName('debian'), 'debian');
    assert.equal(defaultOciName('docker.io/library/alpine:latest'), 'alpine');
    assert.equal(defaultOciName('r.example/x/Y@sha256:abcd'), 'y');
  });

  test('CLI formatting: sizes, packages list, table', () => {
    assert.equal(
      formatImageSize({ sizeBytes: 434110464, allocatedBytes: 373964800 }),
      '414M/356.6M',
    );
    assert.equal(formatImageSize({ sizeBytes: null, allocatedBytes: null }), '-');
    assert.deepEqual(parsePackages(' make, gcc,,libssl-dev '), ['make', 'gcc', 'libssl-dev']);
    const now = Date.parse('2026-11-24T12:00:00Z');
    const t = imageTable(
      [
        {
          id: 'a'.repeat(16),
          name: 'debian-bookworm',
          source: 'catalog:debian-bookworm',
          digest: null,
          kernel: 'debian-cloud-6.1',
          kernelPath: null,
          initrdPath: null,
          rootfsPath: '/r',
          workSeedPath: null,
          managed: true,
          sizeBytes: 434110464,
          allocatedBytes: 373964800,
          createdAt: '2026-11-24T11:00:00Z',
          updatedAt: '2026-11-24T11:00:00Z',
          meta: {},
        },
      ],
      now,
    );
    assert.deepEqual(t.split('\n'), [
      'NAME              SOURCE                    KERNEL             SIZE          CREATED',
      'debian-bookworm   catalog:debian-bookworm   debian-cloud-6.1   414M/356.6M   1h ago',
    ]);
  });

  test("image list --available: built sizes, or a build's measured sizes marked ~", () => {
    const t = imageCatalogTable([
      {
        name: 'debian-bookworm',
        description: 'dev box',
        installed: false,
        default: true,
        sizeBytes: 1073741824,
        allocatedBytes: 943718400,
        estimated: true,
        docker: true,
      },
      {
        name: 'debian-bookworm-slim',
        description: 'minbase',
        installed: true,
        default: false,
        sizeBytes: 434110464,
        allocatedBytes: 373964800,
        estimated: false,
        docker: false,
      },
    ]);
    assert.deepEqual(t.split('\n'), [
      'NAME                   INSTALLED   DEFAULT   SIZE          DESCRIPTION',
      'debian-bookworm        no          yes       ~1G/~900M     dev box',
      'debian-bookworm-slim   yes                   414M/356.6M   minbase',
    ]);
  });
});
