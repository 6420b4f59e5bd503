import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import type { ProgressSink } from '../api/events.js';
import type {
  ImageBuildRequestSchema,
  ImageCatalogEntrySchema,
  ImagePullRequestSchema,
  ImageRegisterRequestSchema,
  ImageView,
} from '../api/schemas/images.js';
import type { Paths } from '../config/paths.js';
import type { Config } from '../config/schema.js';
import type { Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import type { KeyedMutex } from '../util/mutex.js';
import { Flights } from '../util/flight.js';
import { sweepDeadScratch } from '../util/scratch.js';
import { BangerError, isBangerError, notFound, toBangerError } from '../errors.js';
import type { ImageRecord } from '../store/images.js';
import type { Intent, IntentRecord } from '../store/journal.js';
import { run } from '../util/exec.js';
import { BuildLog, pruneBuildLogs } from './buildLog.js';
import { CATALOG, catalogEntry } from './catalog.js';
import { buildDebianImage, type BuiltImage } from './debian/build.js';
import { fileSize, IMAGE_FILES, requireExt4, requireFile } from './files.js';
import { pullOciImage } from './fromTree.js';
import { defaultAgentBinary, imageInputsKey, sha256File } from './inputs.js';
import type { KernelService } from './kernel/service.js';
import { extendRecipe, parseRecipe, type Recipe } from './recipe.js';

export type ImagePullRequest = z.output<typeof ImagePullRequestSchema>;
export type ImageBuildRequest = z.output<typeof ImageBuildRequestSchema>;
export type ImageRegisterRequest = z.output<typeof ImageRegisterRequestSchema>;
export type ImageCatalogEntry = z.output<typeof ImageCatalogEntrySchema>;

/** Builds an image from a recipe into `outDir` (tests swap in a fake). */
export type RecipeBuilder = (o: Parameters<typeof buildDebianImage>[0]) => Promise<BuiltImage>;

export interface ImageServiceOptions {
  /** Host path of the guest agent to inject (default dist/guest/banger-agent). */
  agentBinary?: string;
  buildRecipe?: RecipeBuilder;
}

/**
 * Images: the catalog (built locally from recipes), OCI pulls, `image build`,
 * registration of existing files, promotion, deletion. Owns the images table
 * and `<state>/images/<id>/`.
 *
 * Creation is atomic: artifacts are built in `<state>/tmp/img-<pid>-<rand>/`,
 * renamed to `<state>/images/<id>/`, then the row is inserted in one
 * transaction; a failure or cancellation removes the scratch dir and leaves
 * no row. Concurrent creations of one name share one build.
 *
 * Every image records its kernel: `kernel_name` when that kernel is installed
 * (the column references the kernels table), and always `meta.kernel`, the
 * name to ensure when a VM needs it (`ensureKernel`).
 */
/** What the image service is built from (the daemon passes its own; tests use temp dirs). */
export interface ImageServiceDeps {
  paths: Paths;
  /** The current config (re-read when config.toml changes). */
  config(): Config;
  logger: Logger;
  store: Store;
  /** The daemon's keyed locks (this service takes `image:<name>` keys). */
  locks: KeyedMutex;
}

export class ImageService {
  private readonly flights = new Flights<ImageRecord>();
  private swept = false;
  private readonly agentBinary: string;
  private readonly buildRecipe: RecipeBuilder;

  constructor(
    readonly deps: ImageServiceDeps,
    readonly kernels: KernelService,
    opts: ImageServiceOptions = {},
  ) {
    this.agentBinary = opts.agentBinary ?? defaultAgentBinary();
    this.buildRecipe = opts.buildRecipe ?? buildDebianImage;
    deps.store.journal.onRecover('image', (r) => this.recover(r));
    deps.store.journal.onRecover('image-promote', async (r) => {
      const { id, final } = r.data as { id: string; final: string };
      if (!this.deps.store.images.get(id)?.managed) await rmrf(final);
    });
    deps.store.journal.onRecover('image-delete', async (r) => {
      const { id, dir, trash } = r.data as { id: string; dir: string; trash: string };
      if (this.deps.store.images.get(id) && fs.existsSync(trash) && !fs.existsSync(dir))
        fs.renameSync(trash, dir);
      await rmrf(trash);
    });
  }

  // ------------------------------------------------------------------ reads

  list(): ImageView[] {
    return this.deps.store.images.list().map((i) => this.view(i));
  }

  catalog(): ImageCatalogEntry[] {
    const def = this.deps.config().defaultImageName;
    return CATALOG.map((c) => {
      const img = this.deps.store.images.byName(c.name);
      const size = img ? fileSize(img.rootfsPath) : undefined;
      return {
        name: c.name,
        description: c.description,
        installed: Boolean(img),
        default: c.name === def,
        ...(size ?? c.approxSize),
        estimated: !size,
        docker: c.recipe.docker,
      };
    });
  }

  show(ref: string): ImageView {
    return this.view(this.require(ref));
  }

  /** Find an image by name (or id). */
  get(ref: string): ImageRecord | undefined {
    return this.deps.store.images.byName(ref) ?? this.deps.store.images.get(ref);
  }

  private require(ref: string): ImageRecord {
    const img = this.get(ref);
    if (!img) {
      throw notFound(
        'image',
        ref,
        'see `banger image list`; catalog images: ' + CATALOG.map((c) => c.name).join(', '),
      );
    }
    return img;
  }

  /** The kernel an image boots: its own file, or a kernel name to ensure. */
  kernelOf(img: ImageRecord): { path: string } | { name: string } {
    if (img.kernelPath) return { path: img.kernelPath };
    const name =
      img.kernelName ?? (typeof img.meta.kernel === 'string' ? img.meta.kernel : undefined);
    return { name: name ?? this.deps.config().defaultKernel };
  }

  view(img: ImageRecord): ImageView {
    const size = fileSize(img.rootfsPath);
    const kernel = this.kernelOf(img);
    return {
      id: img.id,
      name: img.name,
      source: img.source,
      digest: img.digest,
      kernel: 'name' in kernel ? kernel.name : null,
      kernelPath: img.kernelPath,
      initrdPath: img.initrdPath,
      rootfsPath: img.rootfsPath,
      workSeedPath: img.workSeedPath,
      managed: img.managed,
      sizeBytes: size?.sizeBytes ?? img.sizeBytes,
      allocatedBytes: size?.allocatedBytes ?? null,
      createdAt: img.createdAt,
      updatedAt: img.updatedAt,
      meta: {
        ...img.meta,
        ...(size ? {} : { missing: `${img.rootfsPath} does not exist` }),
        ...(img.workSeedPath ? { workSeedSize: fileSize(img.workSeedPath) } : {}),
      },
      usedBy: this.deps.store.vms.usingImage(img.id).map((v) => v.name),
      bootSnapshots: this.bootSnapshots(img.id),
    };
  }

  /** The image's warm-start boot snapshots: how many, their allocated bytes. */
  private bootSnapshots(imageId: string): { count: number; sizeBytes: number } {
    const boot = this.deps.store.snapshots.usingImage(imageId).filter((s) => s.kind === 'boot');
    return { count: boot.length, sizeBytes: boot.reduce((n, s) => n + s.sizeBytes, 0) };
  }

  // ------------------------------------------------------------------ ensure (vm create / run)

  /** Return the image with its kernel installed, building a catalog image when it is missing. */
  async ensure(name: string, emit: ProgressSink, signal?: AbortSignal): Promise<ImageRecord> {
    let img = this.get(name);
    if (!img) {
      const entry = catalogEntry(name);
      if (!entry) {
        throw notFound(
          'image',
          name,
          `pull or register it first (catalog images: ${CATALOG.map((c) => c.name).join(', ')})`,
        );
      }
      img = await this.createFromRecipe(
        {
          name,
          recipe: entry.recipe,
          source: `catalog:${entry.name}`,
          kernel: this.deps.config().defaultKernel,
          meta: { catalog: entry.name },
        },
        emit,
        signal,
        true,
      );
    }
    return this.ensureKernel(img, emit, signal);
  }

  /** Make sure the image's kernel is installed (pulling a catalog kernel), and record it. */
  async ensureKernel(
    img: ImageRecord,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<ImageRecord> {
    const k = this.kernelOf(img);
    if ('path' in k) return img;
    const kernel = await this.kernels.ensure(k.name, emit, signal);
    if (img.kernelName === kernel.name) return img;
    return this.deps.store.images.update(img.id, { kernelName: kernel.name });
  }

  // ------------------------------------------------------------------ pull / build

  async pull(req: ImagePullRequest, emit: ProgressSink, signal?: AbortSignal): Promise<ImageView> {
    const name = req.name ?? req.ref;
    const entry = catalogEntry(req.ref);
    if (entry) {
      const existing = this.get(name);
      if (existing) {
        emit({
          type: 'log',
          level: 'info',
          message: `image ${name} is already present (created ${existing.createdAt}); delete it first to rebuild`,
        });
        return this.view(existing);
      }
      const kernel = req.kernelRef ?? this.deps.config().defaultKernel;
      const img = await this.createFromRecipe(
        {
          name,
          recipe: entry.recipe,
          source: `catalog:${entry.name}`,
          kernel,
          meta: { catalog: entry.name },
        },
        emit,
        signal,
        true,
      );
      return this.view(img);
    }
    return this.view(await this.pullOci(req, emit, signal));
  }

  async build(
    req: ImageBuildRequest,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<ImageView> {
    const from = this.require(req.fromImage);
    const base = parseRecipe(from.meta.recipe);
    if (!base) {
      throw new BangerError(
        'precondition',
        `image ${from.name} (${from.source}) has no recipe, so image build cannot extend it yet`,
        { hint: 'build from an image made from packages, e.g. --from-image debian-bookworm' },
      );
    }
    this.assertNameFree(req.name);
    const recipe = extendRecipe(base, { packages: req.packages, docker: req.docker });
    const kernel = this.kernelOf(from);
    const img = await this.createFromRecipe(
      {
        name: req.name,
        recipe,
        source: `build:${from.name}`,
        kernel: 'name' in kernel ? kernel.name : this.deps.config().defaultKernel,
        meta: { from: from.name, added: { packages: req.packages, docker: req.docker } },
      },
      emit,
      signal,
      true,
    );
    return this.view(img);
  }

  private assertNameFree(name: string): void {
    if (this.get(name)) {
      throw new BangerError('conflict', `image ${name} already exists`, {
        hint: `choose another --name, or delete it first: banger image delete ${name}`,
      });
    }
  }

  private async pullOci(
    req: ImagePullRequest,
    emit: ProgressSink,
    signal?: AbortSignal,
  ): Promise<ImageRecord> {
    const name = req.name ?? defaultOciName(req.ref);
    this.assertNameFree(name);
    const kernel = req.kernelRef ?? this.deps.config().defaultKernel;
    return this.singleFlight(name, `oci:${req.ref}`, emit, signal, (fanout, sig) =>
      this.journaled(name, async (intent) => {
        const kernelTask = this.kernelInBackground(kernel, fanout, sig);
        const scratch = await this.scratchDir();
        intent.note({ scratch });
        try {
          const a = await pullOciImage(req.ref, {
            name,
            cacheDir: this.deps.paths.ociCacheDir,
            outDir: path.join(scratch, 'out'),
            workDir: scratch,
            agentBinary: this.agentBinary,
            insecure: req.insecure,
            emit: fanout,
            signal: sig,
          });
          await kernelTask.done;
          intent.step('after-build');
          return await this.commit(intent, path.join(scratch, 'out'), {
            name,
            source: `oci:${a.reference}@${a.digest}`,
            digest: a.digest,
            kernelName: this.installedKernel(kernel),
            sizeBytes: a.rootfs.sizeBytes,
            meta: { ...a.meta, kernel, reference: a.reference },
          });
        } catch (e) {
          // Nothing half-made is left behind: a kernel pull started for this image stops too.
          await kernelTask.cancel();
          throw e;
        } finally {
          await rmrf(scratch);
        }
      }),
    );
  }

  /**
   * Build an image from a recipe (single-flight per name). With
   * `pullKernel`, the image's kernel is fetched in parallel; a kernel failure
   * is then only a warning (VM create fetches it again).
   */
  private createFromRecipe(
    spec: {
      name: string;
      recipe: Recipe;
      source: string;
      kernel: string;
      meta: Record<string, unknown>;
    },
    emit: ProgressSink,
    signal: AbortSignal | undefined,
    pullKernel: boolean,
  ): Promise<ImageRecord> {
    const key = `${spec.source}:${imageInputsKey(spec.recipe, this.agentBinary)}`;
    return this.singleFlight(spec.name, key, emit, signal, (fanout, sig) =>
      this.journaled(spec.name, async (intent) => {
        this.assertNameFree(spec.name);
        requireAgent(this.agentBinary);
        const kernelTask = pullKernel
          ? this.kernelInBackground(spec.kernel, fanout, sig)
          : { done: Promise.resolve(), cancel: () => Promise.resolve() };
        const scratch = await this.scratchDir();
        intent.note({ scratch });
        const log = BuildLog.open(this.deps.paths.imageBuildDir, spec.name);
        log.line(`image ${spec.name}: ${spec.source}, recipe ${JSON.stringify(spec.recipe)}`);
        fanout({ type: 'log', level: 'debug', message: `build log: ${log.path}` });
        try {
          const outDir = path.join(scratch, 'out');
          const built = await this.buildRecipe({
            name: spec.name,
            recipe: spec.recipe,
            buildDir: scratch,
            outDir,
            paths: this.deps.paths,
            agentBinary: this.agentBinary,
            log,
            emit: fanout,
            signal: sig,
          });
          await kernelTask.done;
          intent.step('after-build');
          const rec = await this.commit(intent, outDir, {
            name: spec.name,
            source: spec.source,
            digest: null,
            kernelName: this.installedKernel(spec.kernel),
            sizeBytes: built.rootfs.sizeBytes,
            meta: {
              ...spec.meta,
              kernel: spec.kernel,
              recipe: spec.recipe,
              inputsSha256: imageInputsKey(spec.recipe, this.agentBinary),
              build: {
                log: log.path,
                mode: built.mode,
                mirror: built.mirror,
                ms: built.ms,
                downloadedBytes: built.downloadedBytes,
                tarBytes: built.tarBytes,
                packageCount: built.packages.length,
                mise: built.mise,
                contractSha256: built.contractSha256,
                agentSha256: sha256File(this.agentBinary),
              },
            },
          });
          log.line(`image ${spec.name} committed as ${rec.id}`);
          return rec;
        } catch (e) {
          log.line(`failed: ${toBangerError(e).line}`);
          await kernelTask.cancel();
          throw e;
        } finally {
          log.close();
          pruneBuildLogs(this.deps.paths.imageBuildDir, spec.name);
          await rmrf(scratch);
        }
      }),
    );
  }

  /**
   * An image creation under an intent (docs/reliability.md): its scratch
   * directory, then its final directory and id, are recorded; one cut short
   * is rolled back (both removed unless the row exists) by `recover`.
   */
  private journaled(
    name: string,
    fn: (intent: Intent) => Promise<ImageRecord>,
  ): Promise<ImageRecord> {
    return this.deps.store.journal.run('image', name, {}, fn);
  }

  /** Roll back an interrupted image creation (the journal's recoverer for `image`). */
  private async recover(r: IntentRecord): Promise<void> {
    const made = r.data as { scratch?: string; dir?: string; id?: string };
    if (made.scratch) await rmrf(made.scratch);
    if (made.dir && made.id && !this.deps.store.images.get(made.id)) await rmrf(made.dir);
  }

  /**
   * Daemon start, after the journal's recovery: image directories no row
   * names, and scratch directories of dead processes.
   */
  sweep(): string[] {
    const removed: string[] = [];
    const ids = new Set(this.deps.store.images.list().map((i) => i.id));
    let names: string[] = [];
    try {
      names = fs.readdirSync(this.deps.paths.imagesDir);
    } catch {
      // no images yet
    }
    for (const n of names) {
      if (ids.has(n)) continue;
      fs.rmSync(path.join(this.deps.paths.imagesDir, n), { recursive: true, force: true });
      removed.push(n);
    }
    this.swept = true;
    sweepDeadScratch(this.deps.paths.tmpDir, ['img', 'del']);
    return removed;
  }

  /**
   * Pull a kernel alongside an image build. A failure is a warning: the image
   * is still useful, and VM create fetches the kernel again.
   */
  private kernelInBackground(
    name: string,
    emit: ProgressSink,
    signal: AbortSignal,
  ): { done: Promise<void>; cancel(): Promise<void> } {
    const ac = new AbortController();
    const onAbort = (): void => ac.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const done = this.kernels
      .ensure(name, emit, ac.signal)
      .then(
        () => undefined,
        (e: unknown) => {
          if (ac.signal.aborted) return;
          emit({
            type: 'log',
            level: 'warn',
            message: `kernel ${name} is not installed (${toBangerError(e).message}); a VM create will fetch it`,
          });
        },
      )
      .finally(() => signal.removeEventListener('abort', onAbort));
    return {
      done,
      cancel: async () => {
        ac.abort();
        await done;
      },
    };
  }

  private installedKernel(name: string): string | null {
    return this.deps.store.kernels.get(name) ? name : null;
  }

  /**
   * Run `fn` once per image name: later callers (same key) join the running
   * creation, get its progress too, and its result. The creation is
   * cancelled only when every caller has gone.
   */
  private singleFlight(
    name: string,
    key: string,
    emit: ProgressSink,
    signal: AbortSignal | undefined,
    fn: (emit: ProgressSink, signal: AbortSignal) => Promise<ImageRecord>,
  ): Promise<ImageRecord> {
    return this.flights.join(name, emit, signal, fn, {
      source: key,
      joinMessage: `image ${name} is already being created; waiting for it`,
      cancelled: () => new BangerError('cancelled', `creating image ${name} was cancelled`),
      conflict: () =>
        new BangerError(
          'conflict',
          `image ${name} is being created from another source right now`,
          {
            hint: 'wait for it, or choose another --name',
          },
        ),
    });
  }

  // ------------------------------------------------------------------ register / promote / delete

  async register(req: ImageRegisterRequest): Promise<ImageView> {
    if (req.kernel && req.kernelRef) {
      throw new BangerError('usage', 'give either --kernel PATH or --kernel-ref NAME, not both');
    }
    const rootfsPath = requireExt4(req.rootfs, 'rootfs');
    const workSeedPath = req.workSeed ? requireExt4(req.workSeed, 'work-seed') : null;
    const kernelPath = req.kernel ? requireFile(req.kernel, 'kernel') : null;
    const initrdPath = req.initrd ? requireFile(req.initrd, 'initrd') : null;
    let kernel: string | null = null;
    if (!kernelPath) {
      kernel = req.kernelRef ?? this.deps.config().defaultKernel;
      if (
        req.kernelRef &&
        !this.deps.store.kernels.get(req.kernelRef) &&
        !this.isCatalogKernel(req.kernelRef)
      ) {
        throw notFound(
          'kernel',
          req.kernelRef,
          'see `banger kernel list --available`, or pass --kernel PATH',
        );
      }
    }
    return this.deps.locks.run(`image:${req.name}`, async () => {
      const fields = {
        source: `register:${rootfsPath}`,
        digest: null,
        kernelName: kernel ? this.installedKernel(kernel) : null,
        kernelPath,
        initrdPath,
        rootfsPath,
        workSeedPath,
        managed: false,
        sizeBytes: fs.statSync(rootfsPath).size,
      };
      const meta = {
        kernel,
        registered: {
          rootfs: rootfsPath,
          workSeed: workSeedPath,
          kernel: kernelPath,
          initrd: initrdPath,
        },
      };
      const existing = this.deps.store.images.byName(req.name);
      if (existing) {
        if (existing.managed) {
          throw new BangerError(
            'conflict',
            `image ${req.name} is managed by banger (${existing.source}); register cannot replace it`,
            {
              hint: `choose another --name, or delete it first: banger image delete ${req.name}`,
            },
          );
        }
        return this.view(
          this.deps.store.images.update(existing.id, {
            ...fields,
            meta: { ...existing.meta, ...meta },
          }),
        );
      }
      return this.view(
        this.deps.store.images.insert({ id: newImageId(), name: req.name, ...fields, meta }),
      );
    });
  }

  private isCatalogKernel(name: string): boolean {
    if (name === this.deps.config().defaultKernel) return true;
    try {
      return this.kernels.catalog().some((k) => k.name === name);
    } catch {
      return false;
    }
  }

  async promote(ref: string, emit: ProgressSink, signal?: AbortSignal): Promise<ImageView> {
    const img = this.require(ref);
    return this.deps.locks.run(`image:${img.name}`, async () => {
      const cur = this.require(img.id);
      if (cur.managed) {
        throw new BangerError('conflict', `image ${cur.name} is already managed by banger`, {
          hint: 'promote is for images added with image register',
        });
      }
      const files: [keyof ImageRecord, string | null, string][] = [
        ['rootfsPath', cur.rootfsPath, IMAGE_FILES.rootfs],
        ['workSeedPath', cur.workSeedPath, IMAGE_FILES.workSeed],
        ['kernelPath', cur.kernelPath, IMAGE_FILES.kernel],
        ['initrdPath', cur.initrdPath, IMAGE_FILES.initrd],
      ];
      for (const [, p] of files) if (p) requireFile(p, 'image file');
      const total = files.reduce((n, [, p]) => n + (p ? (fileSize(p)?.sizeBytes ?? 0) : 0), 0);
      const scratch = await this.scratchDir();
      const out = path.join(scratch, 'out');
      fs.mkdirSync(out, { mode: 0o755 });
      const final = path.join(this.deps.paths.imagesDir, cur.id);
      const patch: Partial<ImageRecord> = {};
      emit({
        type: 'step',
        id: 'promote',
        label: `copy ${cur.name} into banger's storage`,
        state: 'start',
      });
      const t0 = Date.now();
      try {
        let done = 0;
        for (const [key, p, fileName] of files) {
          if (!p) continue;
          const dst = path.join(out, fileName);
          await copySparse(p, dst, signal, (n) =>
            emit({ type: 'progress', id: 'promote', current: done + n, total, unit: 'bytes' }),
          );
          done += fileSize(p)?.sizeBytes ?? 0;
          (patch as Record<string, unknown>)[key] = path.join(final, fileName);
        }
        if (fs.existsSync(final)) {
          throw new BangerError('conflict', `${final} already exists`, {
            hint: 'remove it (left over from a crash) and retry',
          });
        }
        fs.mkdirSync(this.deps.paths.imagesDir, { recursive: true, mode: 0o700 });
        // Journaled (docs/reliability.md): copies moved in but the row not yet pointing at them
        // are removed again, so a retried promote does not meet them.
        const updated = await this.deps.store.journal.run(
          'image-promote',
          cur.name,
          { id: cur.id, final },
          async (intent) => {
            fs.renameSync(out, final);
            intent.step('after-rename');
            try {
              const u = this.deps.store.images.update(cur.id, {
                ...patch,
                managed: true,
                meta: {
                  ...cur.meta,
                  promoted: { at: new Date().toISOString(), from: cur.meta.registered ?? null },
                },
              });
              intent.step('after-row');
              return u;
            } catch (e) {
              if (!this.deps.store.images.get(cur.id)?.managed) await rmrf(final);
              throw e;
            }
          },
        );
        emit({
          type: 'step',
          id: 'promote',
          label: `copy ${cur.name} into banger's storage`,
          state: 'done',
          ms: Date.now() - t0,
        });
        return this.view(updated);
      } catch (e) {
        emit({
          type: 'step',
          id: 'promote',
          label: `copy ${cur.name} into banger's storage`,
          state: 'fail',
        });
        throw e;
      } finally {
        await rmrf(scratch);
      }
    });
  }

  async delete(ref: string): Promise<{ deleted: string[] }> {
    const img = this.require(ref);
    return this.deps.locks.run(`image:${img.name}`, async () => {
      const cur = this.require(img.id);
      const users = this.deps.store.vms.usingImage(cur.id).map((v) => v.name);
      if (users.length) {
        throw new BangerError(
          'conflict',
          `image ${cur.name} is used by VM${users.length > 1 ? 's' : ''} ${users.join(', ')}`,
          {
            hint: `delete ${users.length > 1 ? 'them' : 'it'} first: banger vm delete ${users.join(' ')}`,
          },
        );
      }
      const using = this.deps.store.snapshots.usingImage(cur.id);
      const snaps = using.filter((x) => x.kind !== 'boot').map((x) => x.name);
      if (snaps.length) {
        throw new BangerError(
          'conflict',
          `image ${cur.name} is used by snapshot${snaps.length > 1 ? 's' : ''} ${snaps.join(', ')}`,
          {
            hint: `delete ${snaps.length > 1 ? 'them' : 'it'} first: banger snapshot delete ${snaps.join(' ')}`,
          },
        );
      }
      // Boot snapshots (warm start) are a cache of this image: they go with it.
      this.deps.store.snapshots.dropBoot(using, this.deps.paths.snapshotsDir);
      const dir = path.join(this.deps.paths.imagesDir, cur.id);
      const trash = path.join(
        await this.tmpRoot(),
        `del-${process.pid}-${randomBytes(4).toString('hex')}`,
      );
      // Journaled (docs/reliability.md): cut short before the row went, the files move back.
      await this.deps.store.journal.run(
        'image-delete',
        cur.name,
        { id: cur.id, dir, trash },
        async (intent) => {
          const moved = cur.managed && fs.existsSync(dir);
          // Out of the way first: the directory never sits half-removed under the image's id.
          if (moved) fs.renameSync(dir, trash);
          intent.step('after-move');
          try {
            this.deps.store.images.delete(cur.id);
          } catch (e) {
            if (moved) fs.renameSync(trash, dir);
            throw e;
          }
          intent.step('after-row');
          await rmrf(trash);
        },
      );
      return { deleted: [cur.name] };
    });
  }

  // ------------------------------------------------------------------ storage

  private async tmpRoot(): Promise<string> {
    const root = this.deps.paths.tmpDir;
    await fs.promises.mkdir(root, { recursive: true, mode: 0o700 });
    if (!this.swept) {
      this.swept = true;
      sweepDeadScratch(root, ['img', 'del']);
    }
    return root;
  }

  private async scratchDir(): Promise<string> {
    const dir = path.join(
      await this.tmpRoot(),
      `img-${process.pid}-${randomBytes(4).toString('hex')}`,
    );
    await fs.promises.mkdir(dir, { mode: 0o700 });
    return dir;
  }

  /** Move finished artifacts to `<state>/images/<id>/` and insert the row (or undo the move). */
  private async commit(
    intent: Intent,
    outDir: string,
    rec: Pick<ImageRecord, 'name' | 'source' | 'digest' | 'kernelName' | 'sizeBytes' | 'meta'>,
  ): Promise<ImageRecord> {
    const id = newImageId();
    const dir = path.join(this.deps.paths.imagesDir, id);
    await fs.promises.mkdir(this.deps.paths.imagesDir, { recursive: true, mode: 0o700 });
    intent.note({ dir, id });
    await fs.promises.rename(outDir, dir);
    try {
      intent.step('after-rename');
      const store = this.deps.store;
      const inserted = store.db.transaction(() => {
        if (store.images.byName(rec.name)) {
          throw new BangerError('conflict', `image ${rec.name} was created meanwhile`, {
            hint: 'use another name',
          });
        }
        return store.images.insert({
          id,
          ...rec,
          kernelPath: null,
          initrdPath: null,
          rootfsPath: path.join(dir, IMAGE_FILES.rootfs),
          workSeedPath: fs.existsSync(path.join(dir, IMAGE_FILES.workSeed))
            ? path.join(dir, IMAGE_FILES.workSeed)
            : null,
          managed: true,
        });
      })();
      intent.step('after-row');
      return inserted;
    } catch (e) {
      if (!this.deps.store.images.get(id)) await rmrf(dir);
      throw e;
    }
  }
}

// ------------------------------------------------------------------ helpers

/** 16 lowercase hex characters (like VM ids). */
export const newImageId = (): string => randomBytes(8).toString('hex');

/** `ghcr.io/org/tool:1.2` → `tool-1.2`, a valid image name. Pure. */
export function defaultOciName(ref: string): string {
  const noDigest = ref.split('@')[0]!;
  const last = noDigest.split('/').pop()!;
  const [repo, tag] = last.split(':');
  const base = `${repo}${tag && tag !== 'latest' ? `-${tag}` : ''}`;
  const clean = base
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '');
  return (clean || 'image').slice(0, 64);
}

function requireAgent(p: string): void {
  if (!fs.existsSync(p)) {
    throw new BangerError('precondition', `guest agent binary ${p} is missing`, {
      hint: 'build banger first (npm run build compiles the agent into dist/guest)',
    });
  }
}

async function rmrf(p: string): Promise<void> {
  await fs.promises.rm(p, { recursive: true, force: true }).catch(() => undefined);
}

/** Copy a file keeping holes (reflink when possible), reporting bytes written. */
async function copySparse(
  src: string,
  dst: string,
  signal: AbortSignal | undefined,
  onBytes: (n: number) => void,
): Promise<void> {
  const timer = setInterval(() => {
    const s = fileSize(dst);
    if (s) onBytes(s.allocatedBytes);
  }, 500);
  try {
    await run('cp', ['--sparse=always', '--reflink=auto', '--no-preserve=all', '--', src, dst], {
      what: `copying ${src}`,
      signal,
    });
    onBytes(fileSize(src)?.sizeBytes ?? 0);
  } catch (e) {
    if (isBangerError(e)) throw e;
    throw toBangerError(e);
  } finally {
    clearInterval(timer);
  }
}
