import type { SnapshotView } from '../../api/schemas/snapshots.js';
import type { VmSpec } from '../../api/schemas/vms.js';
import { BangerError, toBangerError } from '../../errors.js';
import { terminalSafe } from '../../util/terminal.js';
import { formatSize, formatSizeShort } from '../../util/units.js';
import type { CliContext } from '../context.js';
import { table } from '../render/table.js';
import { formatAge } from './kernel.js';
import { formatSpec } from './vm.js';

/** `banger vm snapshot|restore|fork` and `banger snapshot list|show|delete` (docs/snapshots.md). */

export function formatSnapshotTable(snaps: SnapshotView[], now = Date.now()): string {
  return table(
    ['NAME', 'KIND', 'VM', 'IMAGE', 'VMM', 'VCPU', 'MEMORY', 'SIZE', 'CREATED'],
    snaps.map((s) => [
      s.name,
      s.kind,
      s.sourceVm,
      s.image,
      `${s.vmm}/${s.accel}`,
      s.vcpu,
      formatSizeShort(s.memoryMib * 1024 ** 2),
      formatSize(s.sizeBytes),
      formatAge(s.createdAt, now),
    ]),
  );
}

export function formatSnapshot(s: SnapshotView): string {
  const rows: [string, string | number | null][] = [
    ['name', s.name],
    ['id', s.id],
    ['kind', s.kind],
    ['vm', `${s.sourceVm}${s.sourceVmId ? ` (${s.sourceVmId})` : ''}`],
    ['image', s.image],
    ['kernel', s.kernel],
    ['vmm', `${s.vmm} (accel ${s.accel})`],
    ['vcpu', s.vcpu],
    ['memory', formatSizeShort(s.memoryMib * 1024 ** 2)],
    ['disk', formatSizeShort(s.diskSize)],
    ['nat', s.nat ? 'on' : 'off'],
    ['size', formatSize(s.sizeBytes)],
    ['created', s.createdAt],
    ['state', s.files.state],
    ['memfile', s.files.mem],
    ['overlay', s.files.overlay],
    ['work', s.files.work],
    ['restoring', s.restoring.length ? s.restoring.join(', ') : null],
    ['restore', `banger vm restore ${s.name}`],
  ];
  return rows
    .map(([k, val]) => `${`${k}:`.padEnd(10)}${terminalSafe(String(val ?? '-'))}`)
    .join('\n');
}

/** Prints a `spec:` line for every VM a stream makes (fork makes several). */
function specLines(ctx: CliContext): (data: unknown) => void {
  return (data) => {
    const d = data as { kind?: string; spec?: VmSpec };
    if (d.kind === 'spec' && d.spec && !ctx.flags.json) ctx.note(formatSpec(d.spec));
  };
}

export async function vmSnapshot(ctx: CliContext, ref: string, name?: string): Promise<void> {
  const s = await ctx.stream('vmSnapshot', { params: { ref }, body: { name } });
  if (ctx.flags.json) ctx.printJson(s);
  else ctx.print(s.name);
}

export async function vmRestore(ctx: CliContext, ref: string, name?: string): Promise<void> {
  const r = await ctx.stream(
    'snapshotRestore',
    { params: { ref }, body: { name } },
    { onItem: specLines(ctx) },
  );
  if (ctx.flags.json) ctx.printJson(r);
  else ctx.print(r.vm.name);
}

/** `-n COUNT`: a whole number from 1 to 16 (checked here: the CLI does not load zod for flags). */
export function parseForkCount(v: string | undefined): number {
  if (v === undefined) return 1;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 16) {
    throw new BangerError('usage', `invalid -n '${v}'`, {
      hint: 'use a whole number from 1 to 16',
    });
  }
  return n;
}

export async function vmFork(
  ctx: CliContext,
  ref: string,
  opts: { name?: string; count?: string },
): Promise<void> {
  const count = parseForkCount(opts.count);
  const r = await ctx.stream(
    'vmFork',
    { params: { ref }, body: { name: opts.name, count } },
    { onItem: specLines(ctx) },
  );
  if (ctx.flags.json) ctx.printJson(r);
  else for (const c of r.children) ctx.print(c.vm.name);
}

export async function snapshotList(ctx: CliContext): Promise<void> {
  const { snapshots } = await ctx.call('snapshotList');
  if (ctx.flags.json) ctx.printJson(snapshots);
  else if (snapshots.length === 0) ctx.print('no snapshots yet: `banger vm snapshot VM`');
  else ctx.print(formatSnapshotTable(snapshots));
}

/** `snapshot prune`: the boot snapshots (warm start) removed and what that freed. */
export async function snapshotPrune(ctx: CliContext): Promise<void> {
  const r = await ctx.call('snapshotPrune');
  if (ctx.flags.json) return ctx.printJson(r);
  if (r.pruned.length === 0 && r.kept.length === 0) return ctx.print('no boot snapshots');
  if (r.pruned.length)
    ctx.print(
      `removed ${r.pruned.length} boot snapshot${r.pruned.length === 1 ? '' : 's'} (${r.pruned.join(', ')}), freed ${formatSize(r.freedBytes)}`,
    );
  if (r.kept.length)
    ctx.note(`kept ${r.kept.join(', ')}: a VM is being restored from it; prune again later`);
}

export async function snapshotShow(ctx: CliContext, ref: string): Promise<void> {
  const s = await ctx.call('snapshotShow', { params: { ref } });
  if (ctx.flags.json) ctx.printJson(s);
  else ctx.print(formatSnapshot(s));
}

export async function snapshotDelete(ctx: CliContext, refs: string[]): Promise<void> {
  const unique = [...new Set(refs)];
  const results = await Promise.all(
    unique.map(async (ref) => {
      try {
        await ctx.call('snapshotDelete', { params: { ref } });
        return { ref, error: undefined };
      } catch (e) {
        return { ref, error: toBangerError(e) };
      }
    }),
  );
  const failed = results.filter((r) => r.error);
  if (ctx.flags.json) {
    ctx.printJson(
      results.map((r) =>
        r.error
          ? { name: r.ref, deleted: false, error: r.error.toJSON() }
          : { name: r.ref, deleted: true },
      ),
    );
  } else {
    for (const r of results) if (!r.error) ctx.print(`deleted snapshot ${r.ref}`);
  }
  if (unique.length === 1 && failed[0]?.error) throw failed[0].error;
  if (!ctx.flags.json) for (const r of failed) ctx.note(`error: ${r.error!.line}`);
  if (failed.length > 0) {
    throw new BangerError(
      'precondition',
      `${failed.length} of ${unique.length} snapshots were not deleted`,
      { hint: 'see the errors above' },
    );
  }
}
