import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ProgressSink } from '../../api/events.js';
import type { KernelCatalogEntry, KernelView } from '../../api/schemas/images.js';
import type { Paths } from '../../config/paths.js';
import type { Config } from '../../config/schema.js';
import type { Store } from '../../store/index.js';
import type { Logger } from '../../util/log.js';
import type { KeyedMutex } from '../../util/mutex.js';
import { Flights } from '../../util/flight.js';
import { BangerError, notFound } from '../../errors.js';
import type { IntentRecord, RecoveryCause } from '../../store/journal.js';
import type { KernelRecord } from '../../store/kernels.js';
import { run, type RunOptions } from '../../util/exec.js';
import { resolveKernelPackage, type Runner } from './apt.js';
import {
  buildKernel,
  initScriptHash,
  KERNEL_LAYOUT_VERSION,
  randomSuffix,
  step,
  withLogHint,
  type KernelMeta,
} from './build.js';
import { catalogItem, KERNEL_CATALOG } from './catalog.js';
import type { KernelConfigFeatures } from './kconfig.js';
import { kernelLayout, KERNEL_FILES } from './layout.js';

/**
 * Kernels: the catalog, pulling Debian kernels into `<state>/kernels/<name>/`
 * (vmlinuz, vmlinux, initrd.img, modules.ext4, config, meta.json), listing and
 * deleting them. Owns the kernels table and the `kernel:<name>` locks.
 *
 * Pulls are single-flight per name: a second pull (or ensure) of a name that
 * is being pulled joins the first, sees the same progress, and gets the same
 * result; the shared work is cancelled only when every waiter went away.
 */

export interface KernelServiceOptions {
  /** The tool runner (tests may wrap it); default util/exec run. */
  runner?: Runner;
  /** What builds a kernel directory (tests swap in a fake); default build.ts buildKernel. */
  build?: typeof buildKernel;
}

const TMP_PREFIX = 'kernel-';

/** The kernel features the VMM drivers check (Firecracker compat), from a record. */
export function kernelFeatures(k: KernelRecord): KernelConfigFeatures | undefined {
  return (k.meta as Partial<KernelMeta>).features;
}

/** The modules disk of a kernel, when it has one (attach it with the `modules` disk serial). */
export function modulesDiskPath(k: KernelRecord): string | undefined {
  const p = path.join(k.dir, KERNEL_FILES.modulesDisk);
  return fs.existsSync(p) ? p : undefined;
}

/** What the kernel service is built from. */
export interface KernelServiceDeps {
  paths: Paths;
  /** The current config (re-read when config.toml changes). */
  config(): Config;
  logger: Logger;
  store: Store;
  /** The daemon's keyed locks (this service takes `kernel:<name>` keys). */
  locks: KeyedMutex;
}

export class KernelService {
  private readonly flights = new Flights<KernelRecord>();
  private readonly runner: Runner;
  private readonly build: typeof buildKernel;
  private sweptTmp = false;

  constructor(
    readonly deps: KernelServiceDeps,
    opts: KernelServiceOptions = {},
  ) {
    this.runner = opts.runner ?? run;
    this.build = opts.build ?? buildKernel;
    deps.store.journal.onRecover('kernel', (r, cause) => this.recover(r, cause));
  }

  // ---- reads --------------------------------------------------------------

  list(): KernelView[] {
    return this.deps.store.kernels.list().map((k) => this.view(k));
  }

  catalog(): KernelCatalogEntry[] {
    const def = this.deps.config().defaultKernel;
    return KERNEL_CATALOG.map((c) => ({
      name: c.name,
      description: c.description,
      package: c.package,
      installed: this.deps.store.kernels.get(c.name) !== undefined,
      default: c.name === def,
    }));
  }

  get(name: string): KernelRecord | undefined {
    return this.deps.store.kernels.get(name);
  }

  show(name: string): KernelView {
    const k = this.get(name);
    if (!k) throw notFound('kernel', name, 'see `banger kernel list`');
    return this.view(k);
  }

  private view(k: KernelRecord): KernelView {
    return {
      name: k.name,
      version: k.version,
      source: k.source,
      dir: k.dir,
      kernelPath: k.kernelPath,
      vmlinuxPath: k.vmlinuxPath,
      initrdPath: k.initrdPath,
      managed: k.managed,
      createdAt: k.createdAt,
      meta: k.meta,
      usedBy: this.usedBy(k.name),
    };
  }

  private usedBy(name: string): { images: string[]; vms: string[] } {
    return {
      images: this.deps.store.images.usingKernel(name).map((i) => i.name),
      vms: this.deps.store.vms.usingKernel(name).map((v) => v.name),
    };
  }

  /** Installed, complete, and built by this banger's initramfs generator. */
  isCurrent(k: KernelRecord): boolean {
    if (!k.managed) return fs.existsSync(k.kernelPath);
    const meta = k.meta as Partial<KernelMeta>;
    if (meta.layoutVersion !== KERNEL_LAYOUT_VERSION || !meta.kernelRelease || !meta.initramfs) {
      return false;
    }
    const layout = kernelLayout(this.deps.paths.kernelsDir, k.name);
    const files = [layout.vmlinuz, layout.vmlinux, layout.initrd, layout.modulesDisk];
    if (!files.every((f) => fs.existsSync(f))) return false;
    return initScriptHash(meta.kernelRelease, meta.initramfs.modules) === meta.initramfs.scriptHash;
  }

  // ---- pull ---------------------------------------------------------------

  /** The kernel, pulled from the catalog when missing or stale (used by vm create/run). */
  async ensure(name: string, emit: ProgressSink, signal?: AbortSignal): Promise<KernelRecord> {
    const k = this.get(name);
    if (k && !this.flights.has(name) && this.isCurrent(k)) return k;
    if (k && !k.managed) return k;
    return this.join(name, emit, signal);
  }

  /** Pull a catalog kernel: refreshes it when apt resolves a newer package, else reuses it. */
  async pull(name: string, emit: ProgressSink, signal?: AbortSignal): Promise<KernelView> {
    return this.view(await this.join(name, emit, signal));
  }

  private join(name: string, emit: ProgressSink, signal?: AbortSignal): Promise<KernelRecord> {
    if (!catalogItem(name)) {
      const installed = this.get(name);
      throw new BangerError(
        installed ? 'precondition' : 'not_found',
        installed
          ? `kernel '${name}' is not from the catalog and cannot be pulled`
          : `kernel '${name}' is not in the catalog`,
        {
          hint: `available: ${KERNEL_CATALOG.map((c) => c.name).join(', ')} (banger kernel list --available)`,
        },
      );
    }
    return this.flights.join(
      name,
      emit,
      signal,
      (fanOut, sig) => this.deps.locks.run(`kernel:${name}`, () => this.doPull(name, fanOut, sig)),
      {
        joinMessage: `kernel '${name}' is already being pulled; waiting for it`,
        cancelled: () => new BangerError('cancelled', `kernel pull ${name} was cancelled`),
      },
    );
  }

  private async doPull(
    name: string,
    emit: ProgressSink,
    signal: AbortSignal,
  ): Promise<KernelRecord> {
    const item = catalogItem(name)!;
    const { paths } = this.deps;
    await this.sweepTmp(name);
    const resolved = await step(
      emit,
      'resolve',
      `Resolving ${item.package}`,
      () => resolveKernelPackage(this.runner, item.package, signal, item.candidates),
      (r) => `${r.deb.package} ${r.deb.version}`,
    );
    const existing = this.get(name);
    const meta = existing?.meta as Partial<KernelMeta> | undefined;
    if (
      existing &&
      meta?.package === resolved.deb.package &&
      meta.packageVersion === resolved.deb.version &&
      this.isCurrent(existing)
    ) {
      emit({
        type: 'log',
        level: 'info',
        message: `kernel '${name}' is up to date (${resolved.deb.package} ${resolved.deb.version})`,
      });
      return existing;
    }

    await fsp.mkdir(paths.imageBuildDir, { recursive: true });
    await fsp.mkdir(paths.tmpDir, { recursive: true });
    await fsp.mkdir(paths.kernelsDir, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const logFile = path.join(paths.imageBuildDir, `kernel-${name}-${stamp}.log`);
    const logStream = fs.createWriteStream(logFile, { flags: 'a', mode: 0o644 });
    const log = (line: string): void => {
      logStream.write(`[${new Date().toISOString()}] ${line}\n`);
    };
    const runner: Runner = async (cmd, args, opts: RunOptions = {}) => {
      log(`$ ${[cmd, ...args].join(' ')}${opts.cwd ? `  (in ${opts.cwd})` : ''}`);
      try {
        const r = await this.runner(cmd, args, {
          ...opts,
          signal: opts.signal ?? signal,
          onOutput: (c, s) => {
            logStream.write(c);
            opts.onOutput?.(c, s);
          },
        });
        if (r.code !== 0) log(`exit ${r.code}`);
        return r;
      } catch (e) {
        log(`failed: ${(e as Error).message}`);
        throw e;
      }
    };
    log(
      `pulling kernel ${name}: ${item.package} -> ${resolved.deb.package}=${resolved.deb.version}`,
    );
    emit({ type: 'log', level: 'debug', message: `build log: ${logFile}` });

    const workDir = await fsp.mkdtemp(path.join(paths.tmpDir, `${TMP_PREFIX}${name}-`));
    const layout = kernelLayout(paths.kernelsDir, name);
    // Journaled (docs/reliability.md): a pull cut short is rolled back by `recover`.
    const intent = this.deps.store.journal.begin('kernel', name, { workDir });
    try {
      const { outDir, meta: built } = await this.build({
        item,
        metapackage: resolved.meta,
        deb: resolved.deb,
        debCacheDir: paths.debCacheDir,
        workDir,
        runner,
        emit,
        signal,
        log,
        logFile,
      });
      signal.throwIfAborted();
      const source = `debian:${built.package}=${built.packageVersion}`;
      intent.step('after-build', { source });
      const rec = await step(emit, 'install', `Installing kernel ${name}`, async () => {
        // Swap directories: the old one (if any) moves into the work dir and is removed with it.
        if (fs.existsSync(layout.dir)) {
          const old = path.join(workDir, `old-${randomSuffix()}`);
          intent.note({ old });
          await fsp.rename(layout.dir, old);
          intent.step('after-swap');
        }
        await fsp.rename(outDir, layout.dir);
        intent.step('after-install');
        const rec = this.deps.store.kernels.upsert({
          name,
          version: built.kernelRelease,
          source,
          dir: layout.dir,
          kernelPath: layout.vmlinuz,
          vmlinuxPath: layout.vmlinux,
          initrdPath: layout.initrd,
          managed: true,
          meta: built as unknown as Record<string, unknown>,
        });
        log(`installed ${layout.dir}`);
        this.deps.logger.info(
          {
            kernel: name,
            release: built.kernelRelease,
            package: `${built.package}=${built.packageVersion}`,
          },
          'kernel pulled',
        );
        intent.step('after-row');
        return rec;
      });
      intent.done();
      return rec;
    } catch (e) {
      // Whatever the error path did not undo is rolled back now (a swapped-out kernel put back).
      await this.recover(intent.record(), 'failed').catch(() => undefined);
      intent.done();
      log(`error: ${(e as Error).message}`);
      if (signal.aborted) throw new BangerError('cancelled', `kernel pull ${name} was cancelled`);
      throw withLogHint(e, logFile);
    } finally {
      await fsp.rm(workDir, { recursive: true, force: true }).catch(() => undefined);
      await new Promise<void>((r) => logStream.end(r));
    }
  }

  /**
   * Roll back a pull cut short (the journal's recoverer for `kernel`): a new
   * kernel directory the row does not describe yet is removed and the one it
   * replaced is put back; the work directory goes.
   */
  private async recover(r: IntentRecord, _cause: RecoveryCause): Promise<void> {
    const made = r.data as { workDir?: string; old?: string; source?: string };
    const layout = kernelLayout(this.deps.paths.kernelsDir, r.subject);
    const row = this.get(r.subject);
    const installed = r.step === 'after-install' || r.step === 'after-row';
    if (installed && row?.source !== made.source)
      await fsp.rm(layout.dir, { recursive: true, force: true });
    if (made.old && fs.existsSync(made.old) && !fs.existsSync(layout.dir))
      await fsp.rename(made.old, layout.dir);
    if (made.workDir) await fsp.rm(made.workDir, { recursive: true, force: true });
  }

  /**
   * Daemon start, after the journal's recovery (no pull runs yet): kernel
   * directories no row names and every kernel work directory are removed.
   */
  async sweep(): Promise<string[]> {
    const removed: string[] = [];
    const names = new Set(this.deps.store.kernels.list().map((k) => k.name));
    for (const n of await fsp.readdir(this.deps.paths.kernelsDir).catch(() => [] as string[])) {
      if (names.has(n)) continue;
      await fsp.rm(path.join(this.deps.paths.kernelsDir, n), { recursive: true, force: true });
      removed.push(n);
    }
    for (const n of await fsp.readdir(this.deps.paths.tmpDir).catch(() => [] as string[])) {
      if (!n.startsWith(TMP_PREFIX)) continue;
      await fsp.rm(path.join(this.deps.paths.tmpDir, n), { recursive: true, force: true });
      removed.push(n);
    }
    return removed;
  }

  /** Remove work dirs a crashed daemon left behind (once per daemon, before the first pull). */
  private async sweepTmp(self: string): Promise<void> {
    if (this.sweptTmp) return;
    this.sweptTmp = true;
    if (this.flights.size === 1) {
      // partial downloads (only when no other pull could be downloading right now)
      const debs = await fsp.readdir(this.deps.paths.debCacheDir).catch(() => [] as string[]);
      for (const n of debs.filter((d) => d.startsWith('.download-'))) {
        await fsp
          .rm(path.join(this.deps.paths.debCacheDir, n), { recursive: true, force: true })
          .catch(() => undefined);
      }
    }
    let names: string[] = [];
    try {
      names = await fsp.readdir(this.deps.paths.tmpDir);
    } catch {
      return;
    }
    const busy = this.flights.names().filter((b) => b !== self);
    for (const n of names) {
      if (!n.startsWith(TMP_PREFIX)) continue;
      if (busy.some((b) => n.startsWith(`${TMP_PREFIX}${b}-`))) continue;
      await fsp
        .rm(path.join(this.deps.paths.tmpDir, n), { recursive: true, force: true })
        .catch(() => undefined);
    }
  }

  // ---- delete -------------------------------------------------------------

  async delete(name: string): Promise<{ deleted: string[] }> {
    if (this.flights.has(name)) {
      throw new BangerError('conflict', `kernel '${name}' is being pulled`, {
        hint: 'wait for the pull to finish, then delete it',
      });
    }
    return this.deps.locks.run(`kernel:${name}`, async () => {
      const k = this.get(name);
      if (!k) throw notFound('kernel', name, 'see `banger kernel list`');
      const used = this.usedBy(name);
      if (used.images.length || used.vms.length) {
        throw new BangerError('conflict', `kernel '${name}' is used by ${describeUsers(used)}`, {
          hint: 'delete them first',
          details: used,
        });
      }
      const using = this.deps.store.snapshots.usingKernel(name);
      const snaps = using.filter((x) => x.kind !== 'boot').map((x) => x.name);
      if (snaps.length) {
        throw new BangerError(
          'conflict',
          `kernel '${name}' is used by snapshots ${snaps.join(', ')}`,
          {
            hint: `delete them first: banger snapshot delete ${snaps.join(' ')}`,
          },
        );
      }
      // Boot snapshots (warm start) are a cache of this kernel: they go with it.
      this.deps.store.snapshots.dropBoot(using, this.deps.paths.snapshotsDir);
      this.deps.store.kernels.delete(name);
      if (k.managed) {
        const layout = kernelLayout(this.deps.paths.kernelsDir, name);
        // Rename first so a half-removed directory never sits under the kernel's name.
        await fsp.mkdir(this.deps.paths.tmpDir, { recursive: true });
        const trash = path.join(
          this.deps.paths.tmpDir,
          `${TMP_PREFIX}${name}-deleted-${randomSuffix()}`,
        );
        try {
          await fsp.rename(layout.dir, trash);
        } catch {
          // already gone
        }
        await fsp.rm(trash, { recursive: true, force: true });
      }
      this.deps.logger.info({ kernel: name }, 'kernel deleted');
      return { deleted: [name] };
    });
  }
}

/** "image 'a' and VMs b, c" — the referrers of a kernel in one phrase. Pure. */
export function describeUsers(used: { images: string[]; vms: string[] }): string {
  const parts: string[] = [];
  if (used.images.length) {
    const q = used.images.map((i) => `'${i}'`).join(', ');
    parts.push(`${used.images.length === 1 ? 'image' : 'images'} ${q}`);
  }
  if (used.vms.length) parts.push(`${used.vms.length === 1 ? 'VM' : 'VMs'} ${used.vms.join(', ')}`);
  return parts.join(' and ');
}
