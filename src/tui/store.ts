import type { ImageView, KernelView } from '../api/schemas/images.js';
import type { VmPorts } from '../api/schemas/ports.js';
import type { VmEvent, VmStats, VmView } from '../api/schemas/vms.js';
import { memoryUsed, type VmRow } from './columns.js';
import type { CreateForm } from './form.js';
import type { LogBuffer } from './logs.js';
import type { ViewId } from './views.js';

/**
 * The TUI's one state and the store that holds it. Views are components that
 * read this state; the feed (daemon events, polls) and the actions (keys)
 * change it through `update`, always by making a new object, so a component
 * re-renders exactly when what it reads changed. No React in this module:
 * unit tests drive it directly.
 */
export type SortKey = 'name' | 'state' | 'cpu' | 'memory' | 'uptime' | 'created';
export const SORT_KEYS: readonly SortKey[] = [
  'name',
  'state',
  'cpu',
  'memory',
  'uptime',
  'created',
];

/** A long operation in progress: its label, current step and progress. */
export interface Op {
  id: number;
  label: string;
  step?: string;
  current?: number;
  total?: number;
  unit?: 'bytes' | 'items';
  started: number;
}

export interface Status {
  text: string;
  level: 'info' | 'ok' | 'error';
}

export type Conn =
  { state: 'connecting'; since: number } | { state: 'up' } | { state: 'down'; message: string };

export type Modal =
  | { kind: 'confirm'; title: string; detail: string; confirm: () => void }
  | { kind: 'signal'; refs: string[]; names: string[]; index: number }
  | { kind: 'form'; form: CreateForm }
  | { kind: 'logs'; id: string; name: string; log: LogBuffer; ended?: string }
  | { kind: 'ports'; id: string; name: string; ports?: VmPorts; error?: string; cursor: number }
  | { kind: 'details'; id: string }
  | {
      kind: 'prompt';
      title: string;
      value: string;
      hint: string;
      submit: (value: string) => void;
    };

export interface Cursor {
  /** Key of the row under the cursor (VM id, image or kernel name). */
  key?: string;
  /** Its index when last seen: where the cursor stays when that row goes away. */
  index: number;
}

export interface TuiState {
  view: ViewId;
  conn: Conn;
  /** VMs by id, as the event stream last sent them. */
  vms: ReadonlyMap<string, VmView>;
  stats: ReadonlyMap<string, VmStats>;
  /** Listening sockets per VM id, from the last `vm ports`. */
  ports: ReadonlyMap<string, number>;
  images: readonly ImageView[];
  kernels: readonly KernelView[];
  cursor: Readonly<Record<ViewId, Cursor>>;
  /** Marked VMs (space): actions apply to them, else to the VM under the cursor. */
  marked: ReadonlySet<string>;
  filter: string;
  /** The filter is being typed. */
  filtering: boolean;
  sort: { key: SortKey; desc: boolean };
  help: boolean;
  modal?: Modal;
  status?: Status;
  ops: readonly Op[];
  size: { columns: number; rows: number };
  /** Clock of the last render tick (uptime columns). */
  now: number;
}

export function initialState(size: { columns: number; rows: number }): TuiState {
  return {
    view: 'vms',
    conn: { state: 'connecting', since: Date.now() },
    vms: new Map(),
    stats: new Map(),
    ports: new Map(),
    images: [],
    kernels: [],
    cursor: { vms: { index: 0 }, images: { index: 0 }, kernels: { index: 0 } },
    marked: new Set(),
    filter: '',
    filtering: false,
    sort: { key: 'name', desc: false },
    help: false,
    ops: [],
    size,
    now: Date.now(),
  };
}

export class TuiStore {
  private listeners = new Set<() => void>();

  constructor(private state: TuiState) {}

  get = (): TuiState => this.state;

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  update(fn: (s: TuiState) => TuiState): void {
    const next = fn(this.state);
    if (next === this.state) return;
    this.state = next;
    for (const l of this.listeners) l();
  }

  set(patch: Partial<TuiState>): void {
    this.update((s) => ({ ...s, ...patch }));
  }

  status(text: string, level: Status['level'] = 'info'): void {
    this.set({ status: { text, level } });
  }
}

/** The status line: the last message, else what the connection is doing. */
export function statusLine(s: TuiState): string {
  if (s.status) return s.status.text;
  if (s.conn.state === 'down') return `${s.conn.message} · c starts it`;
  if (s.conn.state === 'connecting') return 'connecting to bangerd (starting it if needed)…';
  return '';
}

// ---------------------------------------------------------------- reducers (pure)

/** Apply one event of the VM event stream. */
export function applyVmEvent(s: TuiState, e: VmEvent): TuiState {
  switch (e.type) {
    case 'snapshot': {
      const vms = new Map(e.vms.map((v) => [v.id, v]));
      const keep = <T>(m: ReadonlyMap<string, T>) => new Map([...m].filter(([id]) => vms.has(id)));
      return {
        ...s,
        conn: { state: 'up' },
        vms,
        stats: keep(s.stats),
        ports: keep(s.ports),
        marked: new Set([...s.marked].filter((id) => vms.has(id))),
      };
    }
    case 'vm': {
      const vms = new Map(s.vms);
      vms.set(e.vm.id, e.vm);
      return { ...s, vms };
    }
    case 'gone': {
      if (!s.vms.has(e.id)) return s;
      const vms = new Map(s.vms);
      vms.delete(e.id);
      const without = <T>(m: ReadonlyMap<string, T>) => {
        const n = new Map(m);
        n.delete(e.id);
        return n;
      };
      const marked = new Set(s.marked);
      marked.delete(e.id);
      const modal =
        s.modal && 'id' in s.modal && s.modal.id === e.id && s.modal.kind === 'details'
          ? undefined
          : s.modal;
      return { ...s, vms, stats: without(s.stats), ports: without(s.ports), marked, modal };
    }
  }
}

/** Stats of the active VMs: the latest sample replaces the previous one; others are dropped. */
export function applyStats(s: TuiState, stats: readonly VmStats[]): TuiState {
  return { ...s, stats: new Map(stats.filter((x) => s.vms.has(x.id)).map((x) => [x.id, x])) };
}

/** Listener counts from `vm ports` (VMs that could not be asked keep no count). */
export function applyPorts(s: TuiState, ports: readonly VmPorts[]): TuiState {
  const byName = new Map([...s.vms.values()].map((v) => [v.name, v.id]));
  const out = new Map<string, number>();
  for (const p of ports) {
    const id = p.name ? byName.get(p.name) : undefined;
    if (id && p.ok) out.set(id, p.ports.length);
  }
  return { ...s, ports: out };
}

const cpuOf = (r: VmRow): number => r.stats?.cpuPercent ?? -1;
const uptimeOf = (r: VmRow): number =>
  r.vm.state === 'running' && r.vm.startedAt ? Date.parse(r.vm.startedAt) : Infinity;

const COMPARE: Record<SortKey, (a: VmRow, b: VmRow) => number> = {
  name: () => 0,
  state: (a, b) => a.vm.state.localeCompare(b.vm.state),
  cpu: (a, b) => cpuOf(b) - cpuOf(a),
  memory: (a, b) => (memoryUsed(b.stats) ?? -1) - (memoryUsed(a.stats) ?? -1),
  // Longest up first: the earliest start.
  uptime: (a, b) => uptimeOf(a) - uptimeOf(b),
  created: (a, b) => a.vm.createdAt.localeCompare(b.vm.createdAt),
};

const matches = (filter: string, ...fields: (string | null | undefined)[]): boolean => {
  const f = filter.trim().toLowerCase();
  return !f || fields.some((x) => x?.toLowerCase().includes(f));
};

/** The VM table's rows: filtered (name, state, address, image), sorted, names breaking ties. */
export function vmRows(s: TuiState): VmRow[] {
  const rows = [...s.vms.values()]
    .filter((v) => matches(s.filter, v.name, v.state, v.ip, v.image))
    .map((vm) => ({
      vm,
      stats: s.stats.get(vm.id),
      ports: s.ports.get(vm.id),
      marked: s.marked.has(vm.id),
    }));
  const cmp = COMPARE[s.sort.key];
  const dir = s.sort.desc ? -1 : 1;
  return rows.sort((a, b) => dir * (cmp(a, b) || a.vm.name.localeCompare(b.vm.name)));
}

export const imageRows = (s: TuiState): ImageView[] =>
  s.images.filter((i) => matches(s.filter, i.name, i.source, i.kernel));

export const kernelRows = (s: TuiState): KernelView[] =>
  s.kernels.filter((k) => matches(s.filter, k.name, k.version, k.source));

/** The keys of the current view's rows, in order. */
export function rowKeys(s: TuiState, view: ViewId = s.view): string[] {
  switch (view) {
    case 'vms':
      return vmRows(s).map((r) => r.vm.id);
    case 'images':
      return imageRows(s).map((i) => i.name);
    case 'kernels':
      return kernelRows(s).map((k) => k.name);
  }
}

/** Where the cursor is among keys: on its row, or where that row was. */
export function cursorIndex(keys: readonly string[], c: Cursor): number {
  if (keys.length === 0) return -1;
  const at = c.key === undefined ? -1 : keys.indexOf(c.key);
  return at >= 0 ? at : Math.min(c.index, keys.length - 1);
}

/** The key under the cursor of the current view. */
export function cursorKey(s: TuiState, view: ViewId = s.view): string | undefined {
  const keys = rowKeys(s, view);
  const i = cursorIndex(keys, s.cursor[view]);
  return i >= 0 ? keys[i] : undefined;
}

/** Move the cursor by delta rows (clamped). */
export function moveCursor(s: TuiState, delta: number): TuiState {
  const keys = rowKeys(s);
  if (keys.length === 0) return s;
  const from = cursorIndex(keys, s.cursor[s.view]);
  const index = Math.min(Math.max(0, from + delta), keys.length - 1);
  return { ...s, cursor: { ...s.cursor, [s.view]: { key: keys[index], index } } };
}

/** The VMs an action applies to: the marked ones, else the one under the cursor. */
export function targetVms(s: TuiState): VmView[] {
  if (s.marked.size)
    return vmRows(s)
      .filter((r) => r.marked)
      .map((r) => r.vm);
  const id = cursorKey(s, 'vms');
  const vm = id ? s.vms.get(id) : undefined;
  return vm ? [vm] : [];
}

export function toggleMark(s: TuiState): TuiState {
  const id = cursorKey(s, 'vms');
  if (!id) return s;
  const marked = new Set(s.marked);
  if (!marked.delete(id)) marked.add(id);
  return moveCursor({ ...s, marked }, 1);
}

/** Mark every shown VM, or clear the marks when all are marked. */
export function toggleMarkAll(s: TuiState): TuiState {
  const ids = vmRows(s).map((r) => r.vm.id);
  const all = ids.length > 0 && ids.every((id) => s.marked.has(id));
  return { ...s, marked: all ? new Set() : new Set(ids) };
}

let nextOp = 1;

export function startOp(s: TuiState, label: string): [TuiState, number] {
  const id = nextOp++;
  return [{ ...s, ops: [...s.ops, { id, label, started: Date.now() }] }, id];
}

export function patchOp(s: TuiState, id: number, patch: Partial<Op>): TuiState {
  if (!s.ops.some((o) => o.id === id)) return s;
  return { ...s, ops: s.ops.map((o) => (o.id === id ? { ...o, ...patch } : o)) };
}

export const endOp = (s: TuiState, id: number): TuiState => ({
  ...s,
  ops: s.ops.filter((o) => o.id !== id),
});
