import type { ImageView, KernelView } from '../api/schemas/images.js';
import type { GuestListener } from '../api/schemas/ports.js';
import type { VmStats, VmView } from '../api/schemas/vms.js';
import type { VmState } from '../api/vmStates.js';
import { formatDuration, formatSizeShort } from '../util/units.js';

/**
 * Table columns, pure: what each cell shows and which columns fit a width.
 * Columns carry a priority; a narrow terminal drops the least important ones
 * and flexible columns (names) take what is left, up to their maximum.
 */
export interface Cell {
  text: string;
  color?: string;
  dim?: boolean;
}

export interface Column<R> {
  id: string;
  header: string;
  /** Width, or the minimum of a flexible column. */
  width: number;
  /** Flexible: grows up to this width. */
  max?: number;
  align?: 'left' | 'right';
  /** 0 always shown; higher numbers are dropped first. */
  priority: number;
  cell(row: R): Cell;
}

export interface Fitted<R> {
  col: Column<R>;
  width: number;
}

/** The columns that fit `width` (one space between columns), in their declared order. */
export function fitColumns<R>(cols: readonly Column<R>[], width: number): Fitted<R>[] {
  const byPriority = [...cols].sort((a, b) => a.priority - b.priority);
  const chosen = new Set<Column<R>>();
  let used = 0;
  for (const c of byPriority) {
    const need = c.width + (chosen.size ? 1 : 0);
    if (c.priority > 0 && used + need > width) continue;
    chosen.add(c);
    used += need;
  }
  const fitted = cols.filter((c) => chosen.has(c)).map((col) => ({ col, width: col.width }));
  let spare = Math.max(0, width - used);
  for (const f of fitted) {
    if (!f.col.max || spare === 0) continue;
    const grow = Math.min(spare, f.col.max - f.width);
    f.width += grow;
    spare -= grow;
  }
  return fitted;
}

/** A string cut or padded to exactly `width` characters (cut text ends in '…'). */
export function fit(s: string, width: number, align: 'left' | 'right' = 'left'): string {
  if (width <= 0) return '';
  if (s.length > width) return width === 1 ? '…' : `${s.slice(0, width - 1)}…`;
  return align === 'right' ? s.padStart(width) : s.padEnd(width);
}

export const STATE_COLORS: Record<VmState, string> = {
  created: 'cyan',
  starting: 'yellow',
  running: 'green',
  stopping: 'yellow',
  stopped: 'gray',
  suspended: 'blue',
  crashed: 'red',
  error: 'red',
};

const MIB = 1024 ** 2;
const dash: Cell = { text: '-', dim: true };

/** Compact age: 45s, 3m12s, 2h5m, 3d4h. */
export function age(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 60_000) return `${Math.floor(ms / 1000)}s`;
  if (ms < 86_400_000) return formatDuration(Math.floor(ms / 1000) * 1000).replace(/\.\d+s$/, 's');
  const d = Math.floor(ms / 86_400_000);
  const h = Math.floor((ms % 86_400_000) / 3_600_000);
  return h ? `${d}d${h}h` : `${d}d`;
}

/** A VM with what the TUI knows about it beyond the table row. */
export interface VmRow {
  vm: VmView;
  stats?: VmStats;
  /** Listening sockets, from the last `vm ports`. */
  ports?: number;
  marked: boolean;
}

/** Guest memory in use (agent), else the VMM's resident memory. */
export function memoryUsed(s: VmStats | undefined): number | undefined {
  if (!s) return undefined;
  if (s.guest) return s.guest.memTotalBytes - s.guest.memAvailableBytes;
  return s.rssBytes ?? undefined;
}

/** The guest agent's health: ok (answered the last sample), down (did not), or unknown. */
export function agentHealth(r: VmRow): Cell {
  if (r.vm.state !== 'running') return dash;
  if (!r.stats) return { text: '…', dim: true };
  return r.stats.guest ? { text: 'ok', color: 'green' } : { text: 'down', color: 'red' };
}

export function vmColumns(now: number): Column<VmRow>[] {
  const running = (r: VmRow): boolean => r.vm.state === 'running';
  return [
    {
      id: 'mark',
      header: ' ',
      width: 1,
      priority: 0,
      cell: (r) => (r.marked ? { text: '●', color: 'magenta' } : { text: ' ' }),
    },
    {
      id: 'name',
      header: 'NAME',
      width: 14,
      max: 24,
      priority: 0,
      cell: (r) => ({ text: r.vm.name }),
    },
    {
      id: 'state',
      header: 'STATE',
      width: 8,
      priority: 0,
      cell: (r) => ({ text: r.vm.state, color: STATE_COLORS[r.vm.state] }),
    },
    {
      id: 'cpu',
      header: 'CPU%',
      width: 5,
      align: 'right',
      priority: 1,
      cell: (r) =>
        running(r) && r.stats?.cpuPercent !== null && r.stats?.cpuPercent !== undefined
          ? { text: `${Math.round(r.stats.cpuPercent)}` }
          : dash,
    },
    {
      id: 'mem',
      header: 'MEM',
      width: 12,
      align: 'right',
      priority: 1,
      cell: (r) => {
        const used = running(r) ? memoryUsed(r.stats) : undefined;
        return used === undefined
          ? dash
          : { text: `${formatSizeShort(used)}/${formatSizeShort(r.vm.memoryMib * MIB)}` };
      },
    },
    {
      id: 'ip',
      header: 'ADDRESS',
      width: 15,
      priority: 2,
      cell: (r) => (r.vm.ip ? { text: r.vm.ip, dim: !running(r) } : dash),
    },
    {
      id: 'uptime',
      header: 'UPTIME',
      width: 7,
      align: 'right',
      priority: 2,
      cell: (r) =>
        running(r) && r.vm.startedAt ? { text: age(now - Date.parse(r.vm.startedAt)) } : dash,
    },
    { id: 'agent', header: 'AGENT', width: 5, priority: 3, cell: agentHealth },
    {
      id: 'ports',
      header: 'PORTS',
      width: 5,
      align: 'right',
      priority: 3,
      cell: (r) => (running(r) && r.ports !== undefined ? { text: String(r.ports) } : dash),
    },
    {
      id: 'vcpu',
      header: 'VCPU',
      width: 4,
      align: 'right',
      priority: 4,
      cell: (r) => ({ text: String(r.vm.vcpu) }),
    },
    {
      id: 'memory',
      header: 'MEMORY',
      width: 6,
      align: 'right',
      priority: 4,
      cell: (r) => ({ text: formatSizeShort(r.vm.memoryMib * MIB) }),
    },
    {
      id: 'disk',
      header: 'DISK',
      width: 5,
      align: 'right',
      priority: 4,
      cell: (r) => ({ text: formatSizeShort(r.vm.diskSize) }),
    },
    {
      id: 'vmm',
      header: 'VMM',
      width: 9,
      priority: 5,
      cell: (r) => ({ text: `${r.vm.vmm}/${r.vm.accel ?? '?'}` }),
    },
    {
      id: 'host',
      header: 'HOST',
      width: 12,
      max: 32,
      priority: 6,
      cell: (r) => ({ text: r.vm.sshHost, dim: !running(r) }),
    },
  ];
}

export function imageColumns(): Column<ImageView>[] {
  return [
    {
      id: 'name',
      header: 'NAME',
      width: 16,
      max: 28,
      priority: 0,
      cell: (i) => ({ text: i.name }),
    },
    {
      id: 'kernel',
      header: 'KERNEL',
      width: 16,
      priority: 1,
      cell: (i) => (i.kernel ? { text: i.kernel } : dash),
    },
    {
      id: 'size',
      header: 'SIZE',
      width: 6,
      align: 'right',
      priority: 1,
      cell: (i) => (i.sizeBytes === null ? dash : { text: formatSizeShort(i.sizeBytes) }),
    },
    {
      id: 'used',
      header: 'VMS',
      width: 3,
      align: 'right',
      priority: 2,
      cell: (i) => ({ text: String(i.usedBy?.length ?? 0) }),
    },
    {
      id: 'managed',
      header: 'OWNER',
      width: 7,
      priority: 3,
      cell: (i) => ({ text: i.managed ? 'banger' : 'yours', dim: !i.managed }),
    },
    {
      id: 'source',
      header: 'SOURCE',
      width: 12,
      max: 60,
      priority: 4,
      cell: (i) => ({ text: i.source, dim: true }),
    },
  ];
}

export function kernelColumns(): Column<KernelView>[] {
  return [
    {
      id: 'name',
      header: 'NAME',
      width: 18,
      max: 28,
      priority: 0,
      cell: (k) => ({ text: k.name }),
    },
    {
      id: 'version',
      header: 'RELEASE',
      width: 22,
      priority: 1,
      cell: (k) => ({ text: k.version }),
    },
    {
      id: 'used',
      header: 'USED BY',
      width: 12,
      priority: 2,
      cell: (k) => {
        const n = (k.usedBy?.images.length ?? 0) + (k.usedBy?.vms.length ?? 0);
        return n
          ? { text: `${k.usedBy?.images.length ?? 0} img, ${k.usedBy?.vms.length ?? 0} vm` }
          : dash;
      },
    },
    {
      id: 'source',
      header: 'SOURCE',
      width: 12,
      max: 60,
      priority: 3,
      cell: (k) => ({ text: k.source, dim: true }),
    },
  ];
}

export function portColumns(): Column<GuestListener>[] {
  return [
    { id: 'proto', header: 'PROTO', width: 5, priority: 0, cell: (p) => ({ text: p.proto }) },
    {
      id: 'address',
      header: 'ADDRESS',
      width: 15,
      priority: 1,
      cell: (p) => ({ text: p.address }),
    },
    {
      id: 'port',
      header: 'PORT',
      width: 5,
      align: 'right',
      priority: 0,
      cell: (p) => ({ text: String(p.port) }),
    },
    {
      id: 'process',
      header: 'PROCESS',
      width: 14,
      priority: 1,
      cell: (p) => (p.process ? { text: p.pid ? `${p.process}[${p.pid}]` : p.process } : dash),
    },
    {
      id: 'url',
      header: 'URL',
      width: 20,
      max: 40,
      priority: 0,
      cell: (p) =>
        p.url
          ? { text: p.url, color: 'cyan' }
          : p.scope === 'loopback'
            ? { text: 'guest loopback only', dim: true }
            : dash,
    },
    {
      id: 'cmdline',
      header: 'COMMAND',
      width: 10,
      max: 80,
      priority: 2,
      cell: (p) => (p.cmdline ? { text: p.cmdline, dim: true } : dash),
    },
  ];
}
