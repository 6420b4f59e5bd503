import path from 'node:path';
import { IMAGE_NAME_RE, type ImageCatalogEntry, type ImageView } from '../../api/schemas/images.js';
import { BangerError, toBangerError, usageError } from '../../errors.js';
import { formatDuration, formatSize, formatSizeShort } from '../../util/units.js';
import type { CliContext } from '../context.js';
import { table } from '../render/table.js';

/** `banger image ...`: thin wrappers over the image routes; formatting only. */

const shortId = (id: string): string => id.slice(0, 12);

/** "1.2G/410M": apparent / allocated (sparse) size of the rootfs. */
export function formatImageSize(v: Pick<ImageView, 'sizeBytes' | 'allocatedBytes'>): string {
  if (v.sizeBytes === null) return '-';
  const apparent = formatSizeShort(v.sizeBytes);
  return v.allocatedBytes === null ? apparent : `${apparent}/${formatSizeShort(v.allocatedBytes)}`;
}

export function formatAge(iso: string, now = Date.now()): string {
  const ms = now - Date.parse(iso);
  if (!Number.isFinite(ms)) return iso;
  if (ms < 60_000) return 'just now';
  return `${formatDuration(Math.floor(ms / 60_000) * 60_000)} ago`;
}

export function imageTable(images: ImageView[], now = Date.now()): string {
  return table(
    ['NAME', 'SOURCE', 'KERNEL', 'SIZE', 'CREATED'],
    images.map((i) => [
      i.name,
      i.source,
      i.kernel ?? (i.kernelPath ? path.basename(i.kernelPath) : null),
      formatImageSize(i),
      formatAge(i.createdAt, now),
    ]),
  );
}

export function formatImage(v: ImageView): string {
  const seed = v.meta.workSeedSize as
    { sizeBytes: number; allocatedBytes: number } | null | undefined;
  const build = v.meta.build as
    { log?: string; packageCount?: number; ms?: { total?: number } } | undefined;
  const recipe = v.meta.recipe as
    { suite?: string; packages?: string[]; docker?: boolean } | undefined;
  const rows: [string, string | null | undefined][] = [
    ['id', v.id],
    ['source', v.source],
    ['managed', v.managed ? 'yes' : 'no (registered files)'],
    ['kernel', v.kernel ?? v.kernelPath],
    ['initrd', v.initrdPath],
    ['rootfs', `${v.rootfsPath} (${formatImageSize(v)} apparent/allocated)`],
    [
      'work-seed',
      v.workSeedPath ? `${v.workSeedPath}${seed ? ` (${formatImageSize(seed)})` : ''}` : null,
    ],
    ['digest', v.digest],
    [
      'recipe',
      recipe
        ? `${recipe.suite ?? ''} + ${recipe.packages?.length ?? 0} packages${recipe.docker ? ' + docker' : ''}`
        : null,
    ],
    ['packages', build?.packageCount !== undefined ? `${build.packageCount} installed` : null],
    ['build log', build?.log],
    ['built in', build?.ms?.total !== undefined ? formatDuration(build.ms.total) : null],
    ['created', v.createdAt],
    ['updated', v.updatedAt !== v.createdAt ? v.updatedAt : null],
    ['used by', v.usedBy?.length ? v.usedBy.join(', ') : 'no VMs'],
    [
      'warm',
      v.bootSnapshots
        ? v.bootSnapshots.count
          ? `${v.bootSnapshots.count} boot snapshot${v.bootSnapshots.count === 1 ? '' : 's'} (${formatSize(v.bootSnapshots.sizeBytes)}; banger snapshot prune)`
          : 'no boot snapshots'
        : null,
    ],
    ['note', typeof v.meta.missing === 'string' ? v.meta.missing : null],
  ];
  return [
    v.name,
    ...rows.filter(([, val]) => val).map(([k, val]) => `  ${`${k}:`.padEnd(11)}${val}`),
  ].join('\n');
}

/** `image list --available`: the catalog, with the built size (or a build's measured size, `~`). */
export function imageCatalogTable(entries: ImageCatalogEntry[]): string {
  return table(
    ['NAME', 'INSTALLED', 'DEFAULT', 'SIZE', 'DESCRIPTION'],
    entries.map((e) => [
      e.name,
      e.installed ? 'yes' : 'no',
      e.default ? 'yes' : '',
      e.estimated
        ? `~${formatSizeShort(e.sizeBytes)}/~${formatSizeShort(e.allocatedBytes)}`
        : formatImageSize(e),
      e.description,
    ]),
  );
}

export async function imageList(
  ctx: CliContext,
  opts: { available?: boolean } = {},
): Promise<void> {
  if (opts.available) {
    const { images } = await ctx.call('imageCatalog');
    if (ctx.flags.json) ctx.printJson(images);
    else ctx.print(imageCatalogTable(images));
    return;
  }
  const { images } = await ctx.call('imageList');
  if (ctx.flags.json) return ctx.printJson(images);
  if (images.length === 0) {
    ctx.print(
      'no images (banger image pull debian-bookworm builds the default one; `banger image list --available` shows the catalog)',
    );
    return;
  }
  ctx.print(imageTable(images));
}

export async function imageShow(ctx: CliContext, name: string): Promise<void> {
  const v = await ctx.call('imageShow', { params: { name } });
  if (ctx.flags.json) ctx.printJson(v);
  else ctx.print(formatImage(v));
}

export async function imageDelete(ctx: CliContext, names: string[]): Promise<void> {
  const results = await Promise.all(
    names.map(async (name) => {
      try {
        await ctx.call('imageDelete', { params: { name } });
        return { name, ok: true as const };
      } catch (e) {
        return { name, ok: false as const, error: toBangerError(e) };
      }
    }),
  );
  if (ctx.flags.json) {
    ctx.printJson(
      results.map((r) =>
        r.ok
          ? { name: r.name, deleted: true }
          : { name: r.name, deleted: false, error: r.error.toJSON() },
      ),
    );
  } else {
    for (const r of results) {
      if (r.ok) ctx.print(`deleted ${r.name}`);
      else ctx.note(`error: ${r.error.line}`);
    }
  }
  const failed = results.filter((r) => !r.ok);
  if (failed.length) {
    const only = failed.length === 1 && results.length === 1 ? failed[0]! : undefined;
    if (only && !only.ok && !ctx.flags.json) throw only.error;
    throw new BangerError(
      'precondition',
      `${failed.length} of ${results.length} image(s) not deleted`,
      {
        hint: 'see the errors above',
        exitCode: 1,
      },
    );
  }
}

function done(ctx: CliContext, verb: string, v: ImageView, startedAt: number): void {
  if (ctx.flags.json) return ctx.printJson(v);
  ctx.print(
    `${verb} ${v.name} (${v.id.slice(0, 12)}) in ${formatDuration(Date.now() - startedAt)}: rootfs ${formatImageSize(v)}, kernel ${v.kernel ?? v.kernelPath ?? '-'}`,
  );
}

export async function imagePull(
  ctx: CliContext,
  ref: string,
  opts: { name?: string; kernelRef?: string; insecure?: boolean },
): Promise<void> {
  checkImageName(opts.name, '--name');
  checkImageName(opts.kernelRef, '--kernel-ref');
  const t0 = Date.now();
  const v = await ctx.stream('imagePull', {
    body: { ref, name: opts.name, kernelRef: opts.kernelRef, insecure: opts.insecure },
  });
  done(ctx, 'image', v, t0);
}

/** Check names here so a bad one is a one-line usage error, not a schema dump. */
export function checkImageName(name: string | undefined, flag: string): void {
  if (name !== undefined && !IMAGE_NAME_RE.test(name)) {
    throw usageError(
      `invalid image name '${name}' (${flag})`,
      'use 1-64 characters: lowercase letters, digits, dots, dashes, underscores; start with a letter or digit',
    );
  }
}

const PACKAGE_RE = /^[a-z0-9][a-z0-9+.:=~-]*$/;

/** "a, b,,c" → ['a','b','c']. */
export function parsePackages(list: string | undefined): string[] {
  return (list ?? '')
    .split(/[,\s]+/)
    .map((p) => p.trim())
    .filter(Boolean);
}

export async function imageBuild(
  ctx: CliContext,
  opts: { name: string; fromImage: string; packages?: string; docker?: boolean },
): Promise<void> {
  checkImageName(opts.name, '--name');
  checkImageName(opts.fromImage, '--from-image');
  const packages = parsePackages(opts.packages);
  if (opts.packages !== undefined && packages.length === 0) {
    throw usageError(
      '--packages is empty',
      'give a comma-separated list, e.g. --packages make,gcc',
    );
  }
  const bad = packages.find((p) => !PACKAGE_RE.test(p));
  if (bad) {
    throw usageError(
      `'${bad}' is not a Debian package name (--packages)`,
      'use names like make, libssl-dev, python3.11',
    );
  }
  const t0 = Date.now();
  const v = await ctx.stream('imageBuild', {
    body: { name: opts.name, fromImage: opts.fromImage, packages, docker: Boolean(opts.docker) },
  });
  done(ctx, 'built', v, t0);
}

export async function imageRegister(
  ctx: CliContext,
  opts: {
    name: string;
    rootfs: string;
    kernelRef?: string;
    kernel?: string;
    initrd?: string;
    workSeed?: string;
  },
): Promise<void> {
  if (opts.kernel && opts.kernelRef) {
    throw usageError('give either --kernel or --kernel-ref, not both');
  }
  checkImageName(opts.name, '--name');
  checkImageName(opts.kernelRef, '--kernel-ref');
  // the daemon has its own working directory: send absolute paths
  const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(p));
  const v = await ctx.call('imageRegister', {
    body: {
      name: opts.name,
      rootfs: abs(opts.rootfs)!,
      kernelRef: opts.kernelRef,
      kernel: abs(opts.kernel),
      initrd: abs(opts.initrd),
      workSeed: abs(opts.workSeed),
    },
  });
  if (ctx.flags.json) ctx.printJson(v);
  else
    ctx.print(
      `registered ${v.name} (${shortId(v.id)}): ${v.rootfsPath}, kernel ${v.kernel ?? v.kernelPath ?? '-'} (unmanaged: banger will not delete these files)`,
    );
}

export async function imagePromote(ctx: CliContext, name: string): Promise<void> {
  const t0 = Date.now();
  const v = await ctx.stream('imagePromote', { params: { name } });
  done(ctx, 'promoted', v, t0);
}
