import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ProgressSink } from '../../api/events.js';
import { BangerError, isBangerError, toBangerError } from '../../errors.js';
import { which } from '../../util/exec.js';
import { aptDownload, debCacheName, verifyDeb, type DebPackage, type Runner } from './apt.js';
import type { KernelCatalogItem } from './catalog.js';
import { extractVmlinux, type VmlinuxInfo } from './extract.js';
import { loadBusybox, buildInitramfs } from './initramfs.js';
import { buildInitScript, buildShutdownScript } from './initScript.js';
import { kernelConfigFeatures, parseKernelConfig, type KernelConfigFeatures } from './kconfig.js';
import { KERNEL_FILES } from './layout.js';
import { buildModulesDisk, prepareModulesTree } from './modulesDisk.js';
import { moduleIndex, planModules } from './modules.js';

/**
 * Building one kernel directory from a Debian kernel package: download (or
 * reuse the verified cached .deb), unpack without installing, extract the
 * ELF vmlinux, build the modules disk and banger's initramfs, write the
 * metadata. Everything happens in a work directory the caller renames into
 * place; nothing here touches `<state>/kernels`.
 */

/** Bump when the files or the metadata of a kernel directory change shape. */
export const KERNEL_LAYOUT_VERSION = 1;

/** What KernelRecord.meta (and meta.json) holds for a kernel banger built. */
export interface KernelMeta {
  layoutVersion: number;
  /** `uname -r` of the kernel. */
  kernelRelease: string;
  catalogName: string;
  metapackage: string;
  metapackageVersion: string;
  package: string;
  packageVersion: string;
  debSha256: string;
  debSize: number;
  /** File sizes in the kernel directory (apparent bytes), and the total. */
  sizes: Record<keyof typeof KERNEL_FILES, number> & {
    total: number;
    modulesDiskAllocated: number;
  };
  vmlinux: VmlinuxInfo;
  features: KernelConfigFeatures;
  initramfs: {
    /** Module files in load order (relative to /lib/modules/<kver>). */
    modules: string[];
    /** Wanted modules that are built in. */
    builtin: string[];
    busyboxSha256: string;
    /** sha256 of the generated /init and /shutdown: tells a stale initramfs apart. */
    scriptHash: string;
  };
  /** The modules disk's files are root-owned (built as root, or fixed with debugfs). */
  modulesDiskRootOwned: boolean;
  buildLog: string;
  builtAt: string;
}

/** Hash of the init scripts this banger generates for a kernel. Pure. */
export function initScriptHash(kernelRelease: string, modules: readonly string[]): string {
  return createHash('sha256')
    .update(buildInitScript({ kernelRelease, modules }))
    .update('\0')
    .update(buildShutdownScript())
    .digest('hex')
    .slice(0, 16);
}

export interface BuildContext {
  item: KernelCatalogItem;
  metapackage: { package: string; version: string };
  deb: DebPackage;
  debCacheDir: string;
  /** A fresh directory for this build (removed by the caller). */
  workDir: string;
  runner: Runner;
  emit: ProgressSink;
  signal: AbortSignal;
  log(line: string): void;
  logFile: string;
}

const TOOLS: [string, string][] = [
  ['apt-get', 'apt'],
  ['dpkg-deb', 'dpkg'],
  ['depmod', 'kmod'],
  ['mkfs.ext4', 'e2fsprogs'],
];

/** Fail before downloading anything when a host tool is missing. */
export async function preflight(): Promise<Awaited<ReturnType<typeof loadBusybox>>> {
  const tools =
    process.getuid?.() === 0 ? TOOLS : [...TOOLS, ['debugfs', 'e2fsprogs'] as [string, string]];
  for (const [cmd, pkg] of tools) {
    if (!which(cmd)) {
      throw new BangerError('tool_missing', `${cmd} not found (needed to pull Debian kernels)`, {
        hint: `install it (Debian/Ubuntu: sudo apt-get install ${pkg})`,
      });
    }
  }
  return loadBusybox();
}

/** Run one progress step: start/done/fail events with timings. */
export async function step<T>(
  emit: ProgressSink,
  id: string,
  label: string,
  fn: () => Promise<T>,
  detail?: (r: T) => string | undefined,
): Promise<T> {
  const started = Date.now();
  emit({ type: 'step', id, label, state: 'start' });
  try {
    const r = await fn();
    emit({ type: 'step', id, label, state: 'done', ms: Date.now() - started, detail: detail?.(r) });
    return r;
  } catch (e) {
    const err = toBangerError(e);
    emit({ type: 'step', id, label, state: 'fail', ms: Date.now() - started, detail: err.message });
    throw err;
  }
}

/** The verified .deb in the cache, downloading it when missing or damaged. */
export async function fetchDeb(ctx: BuildContext): Promise<{ file: string; cached: boolean }> {
  const { deb, signal } = ctx;
  const target = path.join(ctx.debCacheDir, debCacheName(deb));
  if (await verifyDeb(target, deb, signal)) {
    ctx.log(`reusing verified ${target}`);
    ctx.emit({
      type: 'progress',
      id: 'download',
      current: deb.size,
      total: deb.size,
      unit: 'bytes',
    });
    return { file: target, cached: true };
  }
  await fsp.mkdir(ctx.debCacheDir, { recursive: true });
  const dl = await fsp.mkdtemp(path.join(ctx.debCacheDir, '.download-'));
  try {
    const file = await aptDownload(ctx.runner, deb, dl, {
      signal,
      onBytes: (current) =>
        ctx.emit({ type: 'progress', id: 'download', current, total: deb.size, unit: 'bytes' }),
    });
    if (!(await verifyDeb(file, deb, signal))) {
      throw new BangerError(
        'image_invalid',
        `downloaded ${deb.package}=${deb.version} does not match the SHA256 in the apt lists`,
        { hint: 'run sudo apt-get update and retry (a mirror may be out of sync)' },
      );
    }
    await fsp.rename(file, target);
    ctx.log(`downloaded and verified ${target} (sha256 ${deb.sha256})`);
    return { file: target, cached: false };
  } finally {
    await fsp.rm(dl, { recursive: true, force: true });
  }
}

/** Where the unpacked package keeps modules and the kernel. */
async function locateKernel(
  root: string,
): Promise<{ release: string; modulesDir: string; vmlinuz: string; config: string }> {
  let base = path.join(root, 'lib/modules');
  if (!fs.existsSync(base)) base = path.join(root, 'usr/lib/modules');
  const releases = fs.existsSync(base) ? await fsp.readdir(base) : [];
  if (releases.length !== 1) {
    throw new BangerError(
      'image_invalid',
      `the kernel package holds ${releases.length} module trees, expected one`,
      {
        hint: 'the catalog entry does not point at a kernel image package',
      },
    );
  }
  const release = releases[0]!;
  const vmlinuz = path.join(root, 'boot', `vmlinuz-${release}`);
  const config = path.join(root, 'boot', `config-${release}`);
  for (const f of [vmlinuz, config]) {
    if (!fs.existsSync(f)) {
      throw new BangerError('image_invalid', `the kernel package lacks ${path.relative(root, f)}`, {
        hint: 'the catalog entry does not point at a kernel image package',
      });
    }
  }
  return { release, modulesDir: path.join(base, release), vmlinuz, config };
}

const readIf = (f: string): string => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');

/** Build the kernel directory `<workDir>/out`. */
export async function buildKernel(
  ctx: BuildContext,
): Promise<{ outDir: string; meta: KernelMeta }> {
  const { emit, signal, deb } = ctx;
  const busybox = await preflight();
  const out = path.join(ctx.workDir, 'out');
  const root = path.join(ctx.workDir, 'root');
  await fsp.mkdir(out, { mode: 0o755 });

  const { file: debFile, cached } = await step(
    emit,
    'download',
    `Downloading ${deb.package} ${deb.version}`,
    () => fetchDeb(ctx),
    (r) => (r.cached ? 'cached, sha256 verified' : 'sha256 verified'),
  );
  ctx.log(`deb ${debFile} cached=${cached}`);

  const k = await step(
    emit,
    'unpack',
    'Unpacking the kernel package',
    async () => {
      await fsp.mkdir(root);
      await ctx.runner('dpkg-deb', ['-x', debFile, root], {
        signal,
        what: 'unpacking the kernel package',
      });
      const found = await locateKernel(root);
      if (!fs.existsSync(path.join(found.modulesDir, 'modules.dep'))) {
        // Debian's package leaves modules.dep to its postinst; generate it.
        if (found.modulesDir.startsWith(path.join(root, 'usr/'))) {
          await fsp.mkdir(path.join(root, 'lib'), { recursive: true });
          await fsp.symlink('../usr/lib/modules', path.join(root, 'lib/modules'));
        }
        await ctx.runner('depmod', ['-b', root, found.release], {
          signal,
          what: 'indexing kernel modules',
        });
      }
      return found;
    },
    (r) => r.release,
  );
  signal.throwIfAborted();

  const vmlinux = await step(
    emit,
    'vmlinux',
    'Extracting the ELF vmlinux',
    () => extractVmlinux(k.vmlinuz, path.join(out, KERNEL_FILES.vmlinux), { signal }),
    (r) => `${r.compression}, ${r.pvh ? 'PVH entry' : 'no PVH note'}`,
  );
  ctx.log(`vmlinux: ${JSON.stringify(vmlinux)}`);

  // The module plan first: a kernel that lacks a module banger needs fails before the disk is built.
  const index = moduleIndex({
    dep: readIf(path.join(k.modulesDir, 'modules.dep')),
    builtin: readIf(path.join(k.modulesDir, 'modules.builtin')),
    softdep: readIf(path.join(k.modulesDir, 'modules.softdep')),
    alias: readIf(path.join(k.modulesDir, 'modules.alias')),
  });
  const plan = planModules(index, ctx.item.modules, { kernelRelease: k.release });
  ctx.log(`initramfs modules: ${plan.load.join(' ')}; built in: ${plan.builtin.join(' ')}`);
  const moduleFiles = await Promise.all(
    plan.load.map(async (p) => {
      if (!p.endsWith('.ko')) {
        throw new BangerError(
          'image_invalid',
          `module ${p} is compressed; banger's initramfs loads plain .ko files`,
          {
            hint: 'use a kernel with uncompressed modules (the catalog ones are)',
          },
        );
      }
      return { path: p, data: await fsp.readFile(path.join(k.modulesDir, p)) };
    }),
  );

  const disk = await step(
    emit,
    'modules',
    'Building the modules disk',
    async () => {
      const entries = await prepareModulesTree(k.modulesDir);
      signal.throwIfAborted();
      return buildModulesDisk(
        ctx.runner,
        k.modulesDir,
        entries,
        path.join(out, KERNEL_FILES.modulesDisk),
        {
          signal,
          tmpDir: ctx.workDir,
        },
      );
    },
    (r) => `${Math.round(r.sizeBytes / 1048576)} MiB`,
  );
  if (disk.ownersFixed) ctx.log('not root: modules disk owners set to 0:0 with debugfs');

  const initrd = await step(
    emit,
    'initramfs',
    'Building the initramfs',
    async () => {
      const img = buildInitramfs({
        busybox: busybox.data,
        applets: busybox.applets,
        kernelRelease: k.release,
        modules: moduleFiles,
      });
      await fsp.writeFile(path.join(out, KERNEL_FILES.initrd), img, { mode: 0o644 });
      return img.length;
    },
    () => `${plan.load.length} modules, busybox ${busybox.path}`,
  );

  await fsp.rename(k.vmlinuz, path.join(out, KERNEL_FILES.vmlinuz));
  await fsp.rename(k.config, path.join(out, KERNEL_FILES.config));
  await fsp.chmod(path.join(out, KERNEL_FILES.vmlinuz), 0o644);
  const configText = await fsp.readFile(path.join(out, KERNEL_FILES.config), 'utf8');
  const sizeOf = (f: string): number => fs.statSync(path.join(out, f)).size;
  const sizes = {
    vmlinuz: sizeOf(KERNEL_FILES.vmlinuz),
    vmlinux: vmlinux.size,
    initrd,
    modulesDisk: disk.sizeBytes,
    config: configText.length,
    meta: 0,
    modulesDiskAllocated: disk.allocatedBytes,
    total: 0,
  };
  const meta: KernelMeta = {
    layoutVersion: KERNEL_LAYOUT_VERSION,
    kernelRelease: k.release,
    catalogName: ctx.item.name,
    metapackage: ctx.metapackage.package,
    metapackageVersion: ctx.metapackage.version,
    package: deb.package,
    packageVersion: deb.version,
    debSha256: deb.sha256,
    debSize: deb.size,
    sizes,
    vmlinux,
    features: kernelConfigFeatures(parseKernelConfig(configText)),
    initramfs: {
      modules: plan.load,
      builtin: plan.builtin,
      busyboxSha256: busybox.sha256,
      scriptHash: initScriptHash(k.release, plan.load),
    },
    modulesDiskRootOwned: process.getuid?.() === 0 || disk.ownersFixed,
    buildLog: ctx.logFile,
    builtAt: new Date().toISOString(),
  };
  sizes.total = sizes.vmlinuz + sizes.vmlinux + sizes.initrd + sizes.modulesDisk + sizes.config;
  await fsp.writeFile(path.join(out, KERNEL_FILES.meta), `${JSON.stringify(meta, null, 2)}\n`, {
    mode: 0o644,
  });
  await fsp.chmod(out, 0o755);
  return { outDir: out, meta };
}

export const randomSuffix = (): string => randomBytes(4).toString('hex');

/** Point a failed tool at the build log. */
export function withLogHint(e: unknown, logFile: string): BangerError {
  const err = toBangerError(e);
  if (
    isBangerError(e) &&
    (err.code === 'tool_failed' || err.code === 'image_invalid' || err.code === 'internal')
  ) {
    return new BangerError(err.code, err.message, {
      hint:
        err.code === 'tool_failed'
          ? `see the build log ${logFile}`
          : `${err.hint ?? 'retry'} (build log: ${logFile})`,
      details: err.details,
      cause: e,
    });
  }
  return err;
}
