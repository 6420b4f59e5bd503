import type { GuestListener, VmPorts } from '../../api/schemas/ports.js';
import { BangerError, type ErrorShape } from '../../errors.js';
import type { CliContext } from '../context.js';
import { table } from '../render/table.js';

/** `banger vm ports [VM...]`: listening sockets of VMs, with URLs for HTTP ports. */

const COMMAND_WIDTH = 60;

/** An OSC 8 hyperlink: terminals that know it make `text` clickable. */
export const hyperlink = (url: string, text = url): string =>
  `\u001b]8;;${url}\u001b\\${text}\u001b]8;;\u001b\\`;

function access(l: GuestListener): string {
  if (l.url) return l.url;
  if (l.scope === 'loopback') return 'guest loopback only: not reachable from the host';
  if (l.scope === 'other') return `bound to ${l.address} only: not reachable from the host`;
  return '-';
}

const shorten = (s: string | null, max: number): string =>
  !s ? '-' : s.length > max ? `${s.slice(0, max - 1)}…` : s;

/** The table; with `links`, URLs become OSC 8 hyperlinks (same visible width). */
export function formatPorts(vms: VmPorts[], opts: { links: boolean }): string {
  const rows: string[][] = [];
  const urls: (string | null)[] = [];
  for (const vm of vms) {
    if (!vm.ok) continue;
    for (const l of vm.ports) {
      rows.push([
        vm.name ?? vm.ref,
        l.proto,
        l.address,
        String(l.port),
        l.process ? `${l.process}${l.pid ? `[${l.pid}]` : ''}` : l.pid ? `[${l.pid}]` : '-',
        access(l),
        shorten(l.cmdline, COMMAND_WIDTH),
      ]);
      urls.push(l.url);
    }
  }
  const lines = table(['VM', 'PROTO', 'ADDRESS', 'PORT', 'PROCESS', 'URL', 'COMMAND'], rows).split(
    '\n',
  );
  if (!opts.links) return lines.join('\n');
  // Pad first, link after: the escape sequences must not count in the column widths.
  return lines
    .map((line, i) => {
      const url = i > 0 ? urls[i - 1] : null;
      return url ? line.replace(url, hyperlink(url)) : line;
    })
    .join('\n');
}

const errorLine = (e: ErrorShape): string => `error: ${e.message}${e.hint ? `: ${e.hint}` : ''}`;

export async function vmPorts(ctx: CliContext, refs: string[]): Promise<void> {
  const { vms } = await ctx.call('vmPorts', {
    query: refs.length ? { refs: refs.join(',') } : {},
  });
  if (ctx.flags.json) {
    ctx.printJson(vms);
  } else if (vms.length === 0) {
    ctx.note('no running VMs');
  } else {
    if (vms.some((v) => v.ok))
      ctx.print(formatPorts(vms, { links: Boolean(ctx.out.isTTY) && process.env.TERM !== 'dumb' }));
    for (const v of vms) {
      if (v.ok && v.truncated)
        ctx.note(
          `note: ${v.name}: the guest has more listeners than one agent answer holds; the list is cut`,
        );
    }
  }
  const failed = vms.filter((v) => !v.ok);
  if (failed.length === 0) return;
  if (vms.length === 1) throw BangerError.fromJSON(failed[0]!.error as ErrorShape);
  if (!ctx.flags.json) for (const v of failed) ctx.note(errorLine(v.error as ErrorShape));
  throw new BangerError(
    'precondition',
    `${failed.length} of ${vms.length} VMs did not list their ports`,
    { hint: 'see the lines above' },
  );
}
