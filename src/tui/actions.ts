import os from 'node:os';
import path from 'node:path';
import type { ApiClient } from '../api/client.js';
import type { StreamEvent } from '../api/events.js';
import type { VmAction, VmResult, VmSpec, VmView } from '../api/schemas/vms.js';
import type { Feed } from './feed.js';
import {
  backspace,
  createBody,
  cycleImage,
  fieldErrors,
  moveFocus,
  newForm,
  toggleNat,
  typeInto,
  type CreateForm,
} from './form.js';
import type { TuiHost } from './host.js';
import { bindingFor, type ActionId } from './keymap.js';
import { layout } from './layout.js';
import {
  appendLog,
  emptyLog,
  logToEnd,
  logToTop,
  scrollLog,
  toggleFollow,
  type LogBuffer,
} from './logs.js';
import {
  cursorKey,
  endOp,
  moveCursor,
  patchOp,
  rowKeys,
  SORT_KEYS,
  startOp,
  statusLine,
  targetVms,
  toggleMark,
  toggleMarkAll,
  type Modal,
  type TuiState,
  type TuiStore,
} from './store.js';
import { hasRoute, VIEWS, type ViewId } from './views.js';

/**
 * What keys do: each ActionId of the keymap (keymap.ts) runs here, against
 * the store and the daemon API (the same routes as the CLI). Every daemon
 * call is caught: a failure becomes the status line, never a crash.
 */

/** What actions need of the terminal: leaving the TUI, and lending the terminal to ssh. */
export interface ScreenControl {
  quit(): void;
  suspend<T>(fn: () => Promise<T>): Promise<T>;
}

export const SIGNALS = ['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const;

const PAST: Record<VmAction, string> = {
  start: 'started',
  stop: 'stopped',
  restart: 'restarted',
  kill: 'killed',
  delete: 'deleted',
  suspend: 'suspended',
  resume: 'resumed',
};

/** A path typed in the form as the daemon needs it: absolute (~ is the home directory). */
export function hostPath(p: string, cwd = process.cwd(), home = os.homedir()): string {
  if (p === '~' || p.startsWith('~/')) return path.join(home, p.slice(1));
  return path.resolve(cwd, p);
}

const isPrintable = (s: string): boolean =>
  // eslint-disable-next-line no-control-regex
  s.length > 0 && !/[\x00-\x1f\x7f]/.test(s);

export class Actions {
  private logAbort?: AbortController;

  constructor(
    private readonly store: TuiStore,
    private readonly host: TuiHost,
    private readonly feed: Pick<Feed, 'connect' | 'refreshLists'>,
    private readonly screen: ScreenControl,
  ) {}

  private get s(): TuiState {
    return this.store.get();
  }

  /** A key, as keyName() names it, with the text it typed. */
  key(name: string, input: string): void {
    const b = bindingFor(this.s, name);
    if (b) {
      this.run(b.action);
      return;
    }
    this.type(name, input);
  }

  private api<T>(fn: (c: ApiClient) => Promise<T>): Promise<T> {
    return this.host.daemon(fn, { autostart: false });
  }

  private fail(e: unknown): void {
    this.store.status(this.host.errorLine(e), 'error');
  }

  private setModal(modal: Modal | undefined): void {
    this.closeLogStream();
    this.store.set({ modal });
  }

  /** Update the open modal if it is still of that kind (an answer may come after it closed). */
  private patchModal<K extends Modal['kind']>(
    kind: K,
    fn: (m: Extract<Modal, { kind: K }>) => Modal,
    same?: (m: Extract<Modal, { kind: K }>) => boolean,
  ): void {
    this.store.update((s) => {
      const m = s.modal;
      if (m?.kind !== kind) return s;
      const mk = m as Extract<Modal, { kind: K }>;
      if (same && !same(mk)) return s;
      return { ...s, modal: fn(mk) };
    });
  }

  private bodyRows(): number {
    const s = this.s;
    return Math.max(1, layout(s.size, s.ops.length, statusLine(s)).body - 1);
  }

  run(id: ActionId): void {
    if (id.startsWith('view:')) {
      this.showView(id.slice(5) as ViewId);
      return;
    }
    switch (id) {
      case 'quit':
        this.closeLogStream();
        this.screen.quit();
        return;
      case 'help':
        this.store.set({ help: true });
        return;
      case 'closeHelp':
        this.store.set({ help: false });
        return;
      case 'nextView':
      case 'prevView': {
        const i = VIEWS.findIndex((v) => v.id === this.s.view);
        const n = VIEWS.length;
        this.showView(VIEWS[(i + (id === 'nextView' ? 1 : n - 1)) % n]!.id);
        return;
      }
      case 'connect':
        // The status line follows the connection: connecting, then the table.
        this.store.set({ status: undefined });
        this.feed.connect();
        return;
      case 'up':
        return this.store.update((s) => moveCursor(s, -1));
      case 'down':
        return this.store.update((s) => moveCursor(s, 1));
      case 'pageUp':
        return this.store.update((s) => moveCursor(s, -this.bodyRows()));
      case 'pageDown':
        return this.store.update((s) => moveCursor(s, this.bodyRows()));
      case 'top':
        return this.store.update((s) => moveCursor(s, -rowKeys(s).length));
      case 'bottom':
        return this.store.update((s) => moveCursor(s, rowKeys(s).length));
      case 'filter':
        return this.store.set({ filtering: true });
      case 'filterDone':
        return this.store.set({ filtering: false });
      case 'filterCancel':
        return this.store.set({ filtering: false, filter: '' });
      case 'clear':
        return this.store.set({ filter: '', marked: new Set() });
      case 'mark':
        return this.store.update(toggleMark);
      case 'markAll':
        return this.store.update(toggleMarkAll);
      case 'sort': {
        const i = SORT_KEYS.indexOf(this.s.sort.key);
        const key = SORT_KEYS[(i + 1) % SORT_KEYS.length]!;
        this.store.set({
          sort: { key, desc: false },
          status: { text: `sorted by ${key}`, level: 'info' },
        });
        return;
      }
      case 'sortReverse': {
        const sort = { ...this.s.sort, desc: !this.s.sort.desc };
        this.store.set({
          sort,
          status: { text: `sorted by ${sort.key}${sort.desc ? ', reversed' : ''}`, level: 'info' },
        });
        return;
      }
      case 'details': {
        const id = cursorKey(this.s, 'vms');
        if (id) this.setModal({ kind: 'details', id });
        return;
      }
      case 'create':
        this.setModal({ kind: 'form', form: newForm({ workspace: hasRoute('workspaceRun') }) });
        return;
      case 'start':
      case 'stop':
      case 'restart':
      case 'suspend':
        void this.vmAction(id, targetVms(this.s));
        return;
      case 'kill': {
        const vms = targetVms(this.s);
        if (vms.length)
          this.setModal({
            kind: 'signal',
            refs: vms.map((v) => v.id),
            names: vms.map((v) => v.name),
            index: 0,
          });
        return;
      }
      case 'delete':
        return this.confirmDelete(targetVms(this.s));
      case 'ssh':
        void this.ssh();
        return;
      case 'logs':
        return this.openLogs();
      case 'ports':
        return this.openPorts();
      case 'imagePull':
        void this.openPull('image');
        return;
      case 'kernelPull':
        void this.openPull('kernel');
        return;
      case 'imageDelete':
      case 'kernelDelete':
        return this.confirmArtifactDelete(id === 'imageDelete' ? 'image' : 'kernel');
      case 'refresh':
        if (this.s.modal?.kind === 'ports') void this.loadPorts(this.s.modal.id, this.s.modal.name);
        else void this.feed.refreshLists();
        return;
      case 'formNext':
        return this.patchForm((f) => moveFocus(f, 1));
      case 'formPrev':
        return this.patchForm((f) => moveFocus(f, -1));
      case 'formToggle':
        return this.patchForm(toggleNat);
      case 'formChoiceNext':
      case 'formChoicePrev': {
        const names = this.s.images.map((i) => i.name);
        return this.patchForm((f) => cycleImage(f, names, id === 'formChoiceNext' ? 1 : -1));
      }
      case 'formSubmit':
        void this.submitForm();
        return;
      case 'close':
        this.setModal(undefined);
        return;
      case 'yes': {
        const m = this.s.modal;
        this.setModal(undefined);
        if (m?.kind === 'confirm') m.confirm();
        return;
      }
      case 'no':
        this.setModal(undefined);
        return;
      case 'itemUp':
      case 'itemDown':
        return this.moveItem(id === 'itemUp' ? -1 : 1);
      case 'signalSend': {
        const m = this.s.modal;
        if (m?.kind !== 'signal') return;
        this.setModal(undefined);
        const vms = m.refs
          .map((id) => this.s.vms.get(id))
          .filter((v): v is VmView => v !== undefined);
        void this.vmAction('kill', vms, { signal: SIGNALS[m.index] });
        return;
      }
      case 'logUp':
        return this.patchLog((b, h) => scrollLog(b, -1, h));
      case 'logDown':
        return this.patchLog((b, h) => scrollLog(b, 1, h));
      case 'logPageUp':
        return this.patchLog((b, h) => scrollLog(b, -h, h));
      case 'logPageDown':
        return this.patchLog((b, h) => scrollLog(b, h, h));
      case 'logTop':
        return this.patchLog(logToTop);
      case 'logEnd':
        return this.patchLog(logToEnd);
      case 'logFollow':
        return this.patchLog((b, h) => toggleFollow(b, h));
      case 'promptSubmit': {
        const m = this.s.modal;
        if (m?.kind !== 'prompt') return;
        this.setModal(undefined);
        m.submit(m.value.trim());
        return;
      }
    }
  }

  // ---------------------------------------------------------------- typing

  private type(name: string, input: string): void {
    const s = this.s;
    const edit = (v: string): string | undefined => {
      if (name === 'backspace') return v.slice(0, -1);
      if (name === 'space') return `${v} `;
      return isPrintable(input) && name === input ? v + input : undefined;
    };
    if (s.filtering) {
      const filter = edit(s.filter);
      if (filter !== undefined) this.store.set({ filter });
      return;
    }
    if (s.modal?.kind === 'prompt') {
      const value = edit(s.modal.value);
      if (value !== undefined) this.patchModal('prompt', (m) => ({ ...m, value }));
      return;
    }
    if (s.modal?.kind === 'form') {
      if (name === 'backspace') this.patchForm(backspace);
      else if (name === 'space') this.patchForm((f) => typeInto(f, ' '));
      else if (isPrintable(input) && name === input) this.patchForm((f) => typeInto(f, input));
    }
  }

  // ---------------------------------------------------------------- views

  private showView(view: ViewId): void {
    if (view === this.s.view) return;
    this.store.set({ view, filter: '', filtering: false });
    if (view !== 'vms') void this.feed.refreshLists();
  }

  private moveItem(delta: number): void {
    const m = this.s.modal;
    if (m?.kind === 'signal') {
      const index = (m.index + delta + SIGNALS.length) % SIGNALS.length;
      this.patchModal('signal', (x) => ({ ...x, index }));
    } else if (m?.kind === 'ports') {
      const n = m.ports?.ports.length ?? 0;
      const cursor = Math.min(Math.max(0, m.cursor + delta), Math.max(0, n - 1));
      this.patchModal('ports', (x) => ({ ...x, cursor }));
    }
  }

  // ---------------------------------------------------------------- operations

  /** Follow a long operation's events in the ops area. */
  private progress(op: number, e: StreamEvent): void {
    switch (e.type) {
      case 'step':
        if (e.state === 'start')
          this.store.update((s) =>
            patchOp(s, op, { step: e.label, current: undefined, total: undefined }),
          );
        return;
      case 'progress':
        this.store.update((s) =>
          patchOp(s, op, { current: e.current, total: e.total, unit: e.unit }),
        );
        return;
      case 'log':
        if (e.level === 'warn' || e.level === 'error') this.store.status(e.message, 'error');
        return;
      default:
        return;
    }
  }

  private beginOp(label: string): number {
    let id = 0;
    this.store.update((s) => {
      const [next, opId] = startOp(s, label);
      id = opId;
      return next;
    });
    return id;
  }

  private async vmAction(
    verb: VmAction,
    vms: VmView[],
    body: { signal?: string; force?: boolean } = {},
  ): Promise<void> {
    if (vms.length === 0) return;
    const names = new Map(vms.map((v) => [v.id, v.name]));
    const list = vms.map((v) => v.name).join(', ');
    const op = this.beginOp(`${verb} ${list}`);
    this.store.set({ marked: new Set() });
    try {
      const { results } = await this.api((c) =>
        c.stream(
          'vmAction',
          { params: { action: verb }, body: { refs: vms.map((v) => v.id), ...body } },
          (e) => this.progress(op, e),
        ),
      );
      const failed = results.filter((r: VmResult) => !r.ok);
      if (failed.length === 0) {
        this.store.status(`${list}: ${PAST[verb]}${body.signal ? ` (${body.signal})` : ''}`, 'ok');
      } else {
        this.store.status(
          failed
            .map(
              (r) =>
                `${names.get(r.ref) ?? r.ref}: ${r.error?.message ?? 'failed'}${r.error?.hint ? `: ${r.error.hint}` : ''}`,
            )
            .join('; '),
          'error',
        );
      }
    } catch (e) {
      this.fail(e);
    } finally {
      this.store.update((s) => endOp(s, op));
    }
  }

  private confirmDelete(vms: VmView[]): void {
    if (vms.length === 0) return;
    const list = vms.map((v) => v.name).join(', ');
    this.setModal({
      kind: 'confirm',
      title: vms.length === 1 ? `Delete VM ${list}?` : `Delete ${vms.length} VMs?`,
      detail: `${vms.length === 1 ? '' : `${list}: `}disks are removed; a running VM is stopped first.`,
      confirm: () => void this.vmAction('delete', vms, { force: true }),
    });
  }

  private async ssh(): Promise<void> {
    const id = cursorKey(this.s, 'vms');
    const vm = id ? this.s.vms.get(id) : undefined;
    if (!vm) return;
    if (vm.state !== 'running') {
      this.store.status(
        vm.state === 'starting'
          ? `vm '${vm.name}' is still booting: ssh once it is running`
          : `vm '${vm.name}' is ${vm.state}: start it first (s)`,
        'error',
      );
      return;
    }
    try {
      const code = await this.screen.suspend(() => this.host.ssh(vm));
      this.store.status(
        `ssh ${vm.name}: session ended (exit ${code})`,
        code === 0 ? 'info' : 'error',
      );
    } catch (e) {
      this.fail(e);
    }
  }

  // ---------------------------------------------------------------- panes

  private closeLogStream(): void {
    this.logAbort?.abort();
    this.logAbort = undefined;
  }

  private patchLog(fn: (b: LogBuffer, height: number) => LogBuffer): void {
    const h = this.bodyRows();
    this.patchModal('logs', (m) => ({ ...m, log: fn(m.log, h) }));
  }

  private openLogs(): void {
    const id = cursorKey(this.s, 'vms');
    const vm = id ? this.s.vms.get(id) : undefined;
    if (!vm) return;
    this.setModal({ kind: 'logs', id: vm.id, name: vm.name, log: emptyLog() });
    const ac = new AbortController();
    this.logAbort = ac;
    const same = (m: { id: string }): boolean => m.id === vm.id && !ac.signal.aborted;
    this.api((c) =>
      c.text(
        'vmLogs',
        { params: { ref: vm.id }, query: { follow: true, tail: 1000 } },
        (chunk) => this.patchModal('logs', (m) => ({ ...m, log: appendLog(m.log, chunk) }), same),
        ac.signal,
      ),
    ).then(
      () => this.patchModal('logs', (m) => ({ ...m, ended: 'the log ended' }), same),
      (e: unknown) =>
        this.patchModal('logs', (m) => ({ ...m, ended: this.host.errorLine(e) }), same),
    );
  }

  private openPorts(): void {
    const id = cursorKey(this.s, 'vms');
    const vm = id ? this.s.vms.get(id) : undefined;
    if (!vm) return;
    this.setModal({ kind: 'ports', id: vm.id, name: vm.name, cursor: 0 });
    void this.loadPorts(vm.id, vm.name);
  }

  private async loadPorts(id: string, name: string): Promise<void> {
    const same = (m: { id: string }): boolean => m.id === id;
    try {
      const { vms } = await this.api((c) => c.call('vmPorts', { query: { refs: id } }));
      const ports = vms[0];
      if (ports && !ports.ok)
        this.patchModal(
          'ports',
          (m) => ({
            ...m,
            ports: undefined,
            error: `${name}: ${ports.error?.message ?? 'failed'}`,
          }),
          same,
        );
      else this.patchModal('ports', (m) => ({ ...m, ports, error: undefined }), same);
    } catch (e) {
      this.patchModal('ports', (m) => ({ ...m, error: this.host.errorLine(e) }), same);
    }
  }

  // ---------------------------------------------------------------- create form

  private patchForm(fn: (f: CreateForm) => CreateForm): void {
    this.patchModal('form', (m) => (m.form.busy ? m : { ...m, form: fn(m.form) }));
  }

  private async submitForm(): Promise<void> {
    const m = this.s.modal;
    if (m?.kind !== 'form' || m.form.busy) return;
    const errors = fieldErrors(m.form);
    const bad = m.form.fields.findIndex((f) => errors[f.id] !== undefined);
    const body = createBody(m.form);
    if (bad >= 0 || !body) {
      // The errors are already shown beside their fields: go to the first one.
      this.patchForm((f) => ({ ...f, focus: Math.max(0, bad) }));
      return;
    }
    const workspace = m.form.values.workspace.trim();
    this.patchModal('form', (x) => ({ ...x, form: { ...x.form, busy: true, error: undefined } }));
    let closed = false;
    const closeForm = (): void => {
      if (closed) return;
      closed = true;
      this.store.update((s) => (s.modal?.kind === 'form' ? { ...s, modal: undefined } : s));
    };
    const op = this.beginOp(`create ${body.name ?? 'a VM'}`);
    const onEvent = (e: StreamEvent): void => {
      // The daemon accepted the request once it reports the spec or a step
      // (a warning may come before it refuses): then the form gives way to progress.
      if (e.type === 'item' || e.type === 'step') closeForm();
      const d = e.type === 'item' ? (e.data as { kind?: string; spec?: VmSpec }) : undefined;
      if (d?.kind === 'spec' && d.spec) {
        this.store.update((s) => patchOp(s, op, { label: `create ${d.spec!.name.value}` }));
        this.store.status(this.host.specLine(d.spec));
      }
      this.progress(op, e);
    };
    try {
      const r = await this.api((c) =>
        workspace
          ? // `vm run PATH` without the shell: the checkout is copied onto the work disk before boot.
            c.stream(
              'workspaceRun',
              { body: { vm: body, workspace: { path: hostPath(workspace) } } },
              onEvent,
            )
          : c.stream('vmCreate', { body }, onEvent),
      );
      this.store.status(`${r.vm.name}: ${r.vm.state} · ${this.host.specLine(r.spec)}`, 'ok');
    } catch (e) {
      if (closed) this.fail(e);
      else
        this.patchModal('form', (x) => ({
          ...x,
          form: { ...x.form, busy: false, error: this.host.errorLine(e) },
        }));
      closed = true;
    } finally {
      this.store.update((s) => endOp(s, op));
    }
  }

  // ---------------------------------------------------------------- images and kernels

  private async openPull(kind: 'image' | 'kernel'): Promise<void> {
    let names: string[] = [];
    try {
      names =
        kind === 'image'
          ? (await this.api((c) => c.call('imageCatalog', {}))).images.map((i) => i.name)
          : (await this.api((c) => c.call('kernelCatalog', {}))).kernels.map((k) => k.name);
    } catch {
      // the prompt works without the catalog
    }
    this.setModal({
      kind: 'prompt',
      title: kind === 'image' ? 'Pull image' : 'Pull kernel',
      value: names[0] ?? '',
      hint:
        kind === 'image'
          ? `catalog: ${names.join(', ') || '-'}; or an OCI reference registry/repo:tag`
          : `catalog: ${names.join(', ') || '-'}`,
      submit: (value) => {
        if (value) void this.pull(kind, value);
      },
    });
  }

  private async pull(kind: 'image' | 'kernel', ref: string): Promise<void> {
    const op = this.beginOp(`pull ${kind} ${ref}`);
    try {
      const r =
        kind === 'image'
          ? await this.api((c) =>
              c.stream('imagePull', { body: { ref } }, (e) => this.progress(op, e)),
            )
          : await this.api((c) =>
              c.stream('kernelPull', { body: { name: ref } }, (e) => this.progress(op, e)),
            );
      this.store.status(`pulled ${kind} ${r.name}`, 'ok');
      await this.feed.refreshLists();
    } catch (e) {
      this.fail(e);
    } finally {
      this.store.update((s) => endOp(s, op));
    }
  }

  private confirmArtifactDelete(kind: 'image' | 'kernel'): void {
    const name = cursorKey(this.s, kind === 'image' ? 'images' : 'kernels');
    if (!name) return;
    this.setModal({
      kind: 'confirm',
      title: `Delete ${kind} ${name}?`,
      detail: 'VMs that use it must be deleted first.',
      confirm: () => {
        void (async () => {
          try {
            await this.api((c) =>
              kind === 'image'
                ? c.call('imageDelete', { params: { name } })
                : c.call('kernelDelete', { params: { name } }),
            );
            this.store.status(`deleted ${kind} ${name}`, 'ok');
            await this.feed.refreshLists();
          } catch (e) {
            this.fail(e);
          }
        })();
      },
    });
  }
}
