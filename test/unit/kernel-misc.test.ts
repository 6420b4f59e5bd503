import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { formatAge, formatCatalogTable, formatKernelTable } from '../../src/cli/commands/kernel.js';
import { BangerError } from '../../src/errors.js';
import {
  aptDownloadError,
  debFromStanza,
  kernelDependency,
  parseControl,
  resolveKernelPackage,
  verifyDeb,
  type Runner,
} from '../../src/image/kernel/apt.js';
import { kernelConfigFeatures, parseKernelConfig } from '../../src/image/kernel/kconfig.js';
import { kernelLayout } from '../../src/image/kernel/layout.js';
import {
  buildModulesDisk,
  debugfsOwnerCommands,
  ext4Size,
  prepareModulesTree,
} from '../../src/image/kernel/modulesDisk.js';
import { run, which } from '../../src/util/exec.js';
import { skipUnless } from '../helpers/ci.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-kmisc-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const need = (tool: string): { skip?: string } =>
  skipUnless(which(tool), `${tool} is not installed`);

const META = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
 continuation line

`;
const IMAGE = `Package: linux-image-6.1.0-56-cloud-amd64
Version: 6.1.192-2
Architecture: amd64
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb
Size: 26713492
SHA256: E7D02B943971EDCB8790E256C02CFAB3BCA6C3D37C1BF25392A57C71300615EE
`;

describe('apt parsing', () => {
  test('stanzas, folded continuation lines', () => {
    const s = parseControl(META + IMAGE);
    assert.equal(s.length, 2);
    assert.equal(s[0]!.Description, 'Linux for x86-64 cloud (meta-package)\ncontinuation line');
    assert.equal(s[1]!.Size, '26713492');
  });

  test('the kernel dependency of a metapackage', () => {
    assert.deepEqual(kernelDependency(parseControl(META)[0]!), {
      package: 'linux-image-6.1.0-56-cloud-amd64',
      version: '6.1.192-2',
    });
    assert.deepEqual(
      kernelDependency({ Depends: 'foo, linux-image-6.1.0-9-amd64 | linux-image-x' }),
      {
        package: 'linux-image-6.1.0-9-amd64',
        version: undefined,
      },
    );
    assert.equal(kernelDependency({ Depends: 'kmod' }), undefined);
  });

  test('archive facts; SHA256 lower-cased and validated', () => {
    const d = debFromStanza(parseControl(IMAGE)[0]!);
    assert.equal(d.size, 26713492);
    assert.equal(d.sha256, 'e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee');
    assert.throws(
      () => debFromStanza({ ...parseControl(IMAGE)[0]!, SHA256: 'xyz' }),
      /malformed SHA256/,
    );
    assert.throws(() => debFromStanza({ Package: 'p' }), /apt has no SHA256 for package p/);
  });

  test('resolve: one call with the candidate glob, a second when the glob misses', async () => {
    const calls: string[][] = [];
    const scripted =
      (outputs: string[]): Runner =>
      async (_cmd, args) => {
        calls.push(args);
        return { code: 0, signal: null, stdout: outputs[calls.length - 1] ?? '', stderr: '' };
      };
    const r = await resolveKernelPackage(
      scripted([META + IMAGE]),
      'linux-image-cloud-amd64',
      undefined,
      'linux-image-[0-9]*-cloud-amd64',
    );
    assert.equal(r.deb.package, 'linux-image-6.1.0-56-cloud-amd64');
    assert.deepEqual(r.meta, { package: 'linux-image-cloud-amd64', version: '6.1.192-2' });
    assert.deepEqual(calls, [
      ['show', '--no-all-versions', 'linux-image-cloud-amd64', 'linux-image-[0-9]*-cloud-amd64'],
    ]);
    calls.length = 0;
    await resolveKernelPackage(scripted([META, IMAGE]), 'linux-image-cloud-amd64');
    assert.deepEqual(calls[1], [
      'show',
      '--no-all-versions',
      'linux-image-6.1.0-56-cloud-amd64=6.1.192-2',
    ]);
  });

  test('missing apt lists: a precondition error that says to run apt-get update', async () => {
    const empty: Runner = async () => ({
      code: 100,
      signal: null,
      stdout: '',
      stderr: 'E: No packages found',
    });
    await assert.rejects(resolveKernelPackage(empty, 'linux-image-cloud-amd64'), (e: unknown) => {
      assert.ok(e instanceof BangerError);
      assert.equal(
        e.line,
        'package linux-image-cloud-amd64 is not in the apt lists: run sudo apt-get update (banger fetches kernels through the host apt lists)',
      );
      return true;
    });
  });

  test('apt-get download failures mapped to what to do', () => {
    const d = debFromStanza(parseControl(IMAGE)[0]!);
    const e404 = aptDownloadError(
      d,
      'Err:1 http://deb.debian.org/debian x\n  404  Not Found [IP: 1.2.3.4 80]\nE: Failed to fetch http://x  404  Not Found',
    );
    assert.equal(e404.code, 'precondition');
    assert.match(e404.line, /apt lists are out of date.*apt-get update/);
    const net = aptDownloadError(
      d,
      "Err:1 http://x\n  Temporary failure resolving 'deb.debian.org'\nE: Failed to fetch http://x  Temporary failure resolving 'deb.debian.org'",
    );
    assert.equal(net.code, 'network');
    assert.doesNotMatch(net.line, /\n/);
  });

  test('verifyDeb checks size and SHA256', async () => {
    const f = path.join(tmp, 'x.deb');
    fs.writeFileSync(f, 'hello');
    const deb = {
      package: 'x',
      version: '1',
      architecture: 'amd64',
      filename: 'pool/x.deb',
      size: 5,
      sha256: '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824',
    };
    assert.equal(await verifyDeb(f, deb), true);
    assert.equal(await verifyDeb(f, { ...deb, size: 6 }), false);
    assert.equal(await verifyDeb(f, { ...deb, sha256: '0'.repeat(64) }), false);
    assert.equal(await verifyDeb(path.join(tmp, 'none'), deb), false);
  });
});

describe('kernel config', () => {
  test('features of a Debian cloud config', () => {
    const cfg = parseKernelConfig(`CONFIG_PVH=y
# CONFIG_IP_PNP is not set
# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set
# CONFIG_DEVTMPFS_MOUNT is not set
CONFIG_EXT4_FS=y
CONFIG_OVERLAY_FS=m
CONFIG_VIRTIO_MMIO=m
CONFIG_VIRTIO_BLK=m
CONFIG_VIRTIO_NET=m
CONFIG_VIRTIO_CONSOLE=m
CONFIG_VIRTIO_VSOCKETS=m
CONFIG_LOCALVERSION="-cloud"
`);
    assert.equal(cfg.get('CONFIG_LOCALVERSION'), '-cloud');
    assert.deepEqual(kernelConfigFeatures(cfg), {
      virtioMmioCmdline: false,
      ipPnp: false,
      devtmpfsMount: false,
      pvh: true,
      ext4: 'y',
      overlay: 'm',
      virtioMmio: 'm',
      virtioBlk: 'm',
      virtioNet: 'm',
      virtioConsole: 'm',
      vsock: 'm',
    });
    const fc = kernelConfigFeatures(
      parseKernelConfig('CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\nCONFIG_IP_PNP=y\n'),
    );
    assert.equal(fc.virtioMmioCmdline, true);
    assert.equal(fc.ipPnp, true);
    assert.equal(fc.ext4, 'n');
  });
});

describe('modules disk', () => {
  test('size estimate covers data, directories and inodes', () => {
    const entries = [
      { path: 'kernel', type: 'dir' as const, size: 0 },
      { path: 'kernel/a.ko', type: 'file' as const, size: 10_000 },
      { path: 'kernel/b.ko', type: 'file' as const, size: 4096 },
      { path: 'modules.dep', type: 'file' as const, size: 1 },
    ];
    const s = ext4Size(entries);
    assert.ok(s.blocks >= 3 + 1 + 1 + 512, String(s.blocks));
    assert.ok(s.inodes >= 64);
    const big = Array.from({ length: 5000 }, (_, i) => ({
      path: `d/m${i}.ko`,
      type: 'file' as const,
      size: 20_000,
    }));
    const sb = ext4Size(big);
    assert.ok(sb.blocks > 5000 * 5 && sb.blocks < 5000 * 5 * 1.2 + 2000, String(sb.blocks));
    assert.ok(sb.inodes > 5000);
  });

  test('debugfs owner commands for non-root builds', () => {
    const cmds = debugfsOwnerCommands([{ path: 'kernel/a.ko', type: 'file', size: 1 }]);
    assert.equal(
      cmds,
      'sif / uid 0\nsif / gid 0\nsif "/kernel/a.ko" uid 0\nsif "/kernel/a.ko" gid 0\n',
    );
    assert.throws(
      () => debugfsOwnerCommands([{ path: 'a b', type: 'file', size: 1 }]),
      /unsupported file name in modules tree: a b$/,
    );
  });

  test(
    'a real tree becomes a clean read-only ext4 labelled banger-modules',
    need('mkfs.ext4'),
    async () => {
      const tree = path.join(tmp, 'tree');
      fs.mkdirSync(path.join(tree, 'kernel/fs'), { recursive: true });
      fs.writeFileSync(path.join(tree, 'kernel/fs/x.ko'), Buffer.alloc(300_000, 1), {
        mode: 0o600,
      });
      fs.writeFileSync(path.join(tree, 'modules.dep'), 'kernel/fs/x.ko:\n');
      fs.symlinkSync('/usr/src/linux-headers', path.join(tree, 'build'));
      const entries = await prepareModulesTree(tree);
      assert.deepEqual(
        entries.map((e) => e.path),
        ['kernel', 'kernel/fs', 'kernel/fs/x.ko', 'modules.dep'],
      );
      assert.equal(fs.statSync(path.join(tree, 'kernel/fs/x.ko')).mode & 0o777, 0o644);
      const img = path.join(tmp, 'modules.ext4');
      const r = await buildModulesDisk(run, tree, entries, img, { tmpDir: tmp });
      assert.ok(r.sizeBytes < 8 * 1024 * 1024, `sized to content: ${r.sizeBytes}`);
      execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' });
      const label = execFileSync('e2label', [img], { encoding: 'utf8' }).trim();
      assert.equal(label, 'banger-modules');
      const ls = execFileSync('debugfs', ['-R', 'ls -l /kernel/fs', img], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      assert.match(ls, /100644 \(1\)\s+0\s+0\s+300000 .* x\.ko/);
      const features = execFileSync('dumpe2fs', ['-h', img], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      assert.doesNotMatch(features, /has_journal/);
    },
  );
  test(
    'files owned by another user end up root-owned (the path for non-root builds)',
    need('debugfs'),
    async () => {
      const tree = path.join(tmp, 'tree2');
      fs.mkdirSync(path.join(tree, 'kernel'), { recursive: true });
      fs.writeFileSync(path.join(tree, 'kernel/y.ko'), 'y');
      fs.writeFileSync(path.join(tree, 'modules.dep'), 'kernel/y.ko:\n');
      if (process.getuid?.() === 0) {
        for (const p of ['kernel', 'kernel/y.ko', 'modules.dep'])
          fs.chownSync(path.join(tree, p), 1000, 1000);
      }
      const entries = await prepareModulesTree(tree);
      const img = path.join(tmp, 'owners.ext4');
      const r = await buildModulesDisk(run, tree, entries, img, { tmpDir: tmp, fixOwners: true });
      assert.equal(r.ownersFixed, true);
      for (const p of ['/kernel', '/kernel/y.ko', '/modules.dep']) {
        const st = execFileSync('debugfs', ['-R', `stat ${p}`, img], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
        });
        assert.match(st, /User:\s+0\s+Group:\s+0\s/, p);
      }
      execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' });
    },
  );
});

describe('kernel CLI rendering', () => {
  test('age', () => {
    const now = Date.parse('2026-11-24T12:00:00Z');
    assert.equal(formatAge('2026-11-24T11:59:30Z', now), 'just now');
    assert.equal(formatAge('2026-11-24T11:55:00Z', now), '5 minutes ago');
    assert.equal(formatAge('2026-11-24T11:00:00Z', now), '1 hour ago');
    assert.equal(formatAge('2026-11-20T12:00:00Z', now), '4 days ago');
  });

  test('list and catalog tables', () => {
    const t = formatKernelTable(
      [
        {
          name: 'debian-cloud-6.1',
          version: '6.1.0-56-cloud-amd64',
          source: 'debian:linux-image-6.1.0-56-cloud-amd64=6.1.192-2',
          dir: '/k',
          kernelPath: '/k/vmlinuz',
          vmlinuxPath: '/k/vmlinux',
          initrdPath: '/k/initrd.img',
          managed: true,
          createdAt: '2026-11-24T11:00:00Z',
          meta: { sizes: { total: 174063616 } },
        },
      ],
      Date.parse('2026-11-24T12:00:00Z'),
    ).split('\n');
    assert.match(t[0]!, /^NAME\s+VERSION\s+SOURCE\s+SIZE\s+CREATED$/);
    assert.match(
      t[1]!,
      /^debian-cloud-6\.1\s+6\.1\.0-56-cloud-amd64\s+debian:\S+\s+166 MiB\s+1 hour ago$/,
    );
    const c = formatCatalogTable([
      {
        name: 'debian-cloud-6.1',
        package: 'linux-image-cloud-amd64',
        installed: true,
        default: true,
        description: 'd',
      },
    ]).split('\n');
    assert.match(c[0]!, /^NAME\s+PACKAGE\s+INSTALLED\s+DEFAULT\s+DESCRIPTION$/);
    assert.match(c[1]!, /^debian-cloud-6\.1\s+linux-image-cloud-amd64\s+yes\s+yes\s+d$/);
  });

  test('layout names', () => {
    const l = kernelLayout('/s/kernels', 'k');
    assert.deepEqual(
      [l.dir, l.vmlinuz, l.vmlinux, l.initrd, l.modulesDisk, l.config, l.meta],
      [
        '/s/kernels/k',
        '/s/kernels/k/vmlinuz',
        '/s/kernels/k/vmlinux',
        '/s/kernels/k/initrd.img',
        '/s/kernels/k/modules.ext4',
        '/s/kernels/k/config',
        '/s/kernels/k/meta.json',
      ],
    );
  });
});
