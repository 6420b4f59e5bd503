import type { KernelCatalogEntry, KernelView } from '../../api/schemas/images.js';
import { BangerError, toBangerError } from '../../errors.js';
import { formatSize } from '../../util/units.js';
import type { CliContext } from '../context.js';
import { table } from '../render/table.js';

/** `banger kernel list|pull|delete`: thin wrappers over the kernel routes. */

/** "5 minutes ago", like docker's CREATED column. Pure. */
export function formatAge(iso: string, now = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.max(0, Math.round((now - t) / 1000));
  const units: [number, string][] = [
    [365 * 86400, 'year'],
    [30 * 86400, 'month'],
    [7 * 86400, 'week'],
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
  ];
  if (s < 60) return 'just now';
  for (const [secs, name] of units) {
    if (s >= secs) {
      const n = Math.floor(s / secs);
      return `${n} ${name}${n === 1 ? '' : 's'} ago`;
    }
  }
  return 'just now';
}

const totalSize = (k: KernelView): number | undefined => {
  const sizes = k.meta.sizes as { total?: number } | undefined;
  return typeof sizes?.total === 'number' ? sizes.total : undefined;
};

export function formatKernelTable(kernels: KernelView[], now = Date.now()): string {
  return table(
    ['NAME', 'VERSION', 'SOURCE', 'SIZE', 'CREATED'],
    kernels.map((k) => {
      const size = totalSize(k);
      return [
        k.name,
        k.version,
        k.source,
        size === undefined ? '-' : formatSize(size),
        formatAge(k.createdAt, now),
      ];
    }),
  );
}

export function formatCatalogTable(entries: KernelCatalogEntry[]): string {
  return table(
    ['NAME', 'PACKAGE', 'INSTALLED', 'DEFAULT', 'DESCRIPTION'],
    entries.map((e) => [
      e.name,
      e.package,
      e.installed ? 'yes' : 'no',
      e.default ? 'yes' : '',
      e.description,
    ]),
  );
}

export async function kernelList(ctx: CliContext, opts: { available: boolean }): Promise<void> {
  if (opts.available) {
    const { kernels } = await ctx.call('kernelCatalog');
    if (ctx.flags.json) ctx.printJson(kernels);
    else ctx.print(formatCatalogTable(kernels));
    return;
  }
  const { kernels } = await ctx.call('kernelList');
  if (ctx.flags.json) ctx.printJson(kernels);
  else if (kernels.length === 0) {
    ctx.print(
      'no kernels yet: `banger kernel pull debian-cloud-6.1` (or `banger kernel list --available`)',
    );
  } else ctx.print(formatKernelTable(kernels));
}

export async function kernelPull(ctx: CliContext, name: string): Promise<void> {
  const k = await ctx.stream('kernelPull', { body: { name } });
  if (ctx.flags.json) {
    ctx.printJson(k);
    return;
  }
  const size = totalSize(k);
  ctx.print(
    `kernel ${k.name}: ${k.version} (${k.source})${size === undefined ? '' : `, ${formatSize(size)}`}`,
  );
  ctx.print(`  ${k.dir}`);
}

export async function kernelDelete(ctx: CliContext, names: string[]): Promise<void> {
  const unique = [...new Set(names)];
  const results = await Promise.all(
    unique.map(async (name) => {
      try {
        await ctx.call('kernelDelete', { params: { name } });
        return { name, error: undefined };
      } catch (e) {
        return { name, error: toBangerError(e) };
      }
    }),
  );
  const failed = results.filter((r) => r.error);
  if (ctx.flags.json) {
    ctx.printJson(
      results.map((r) =>
        r.error
          ? { name: r.name, deleted: false, error: r.error.toJSON() }
          : { name: r.name, deleted: true },
      ),
    );
  } else {
    for (const r of results) if (!r.error) ctx.print(`deleted kernel ${r.name}`);
  }
  // One name: its error is the command's error line. Several: one line each, then a summary.
  if (unique.length === 1 && failed[0]?.error) throw failed[0].error;
  if (!ctx.flags.json) for (const r of failed) ctx.note(`error: ${r.error!.line}`);
  if (failed.length > 0) {
    throw new BangerError(
      'precondition',
      `${failed.length} of ${unique.length} kernels were not deleted`,
      {
        hint: 'see the errors above',
      },
    );
  }
}
