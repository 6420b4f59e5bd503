import { focused } from './form.js';
import type { TuiState } from './store.js';
import { VIEWS } from './views.js';

/**
 * The keymap: ONE table of key, action, help text and when it applies. Key
 * dispatch, the footer and the help overlay (`?`) are all generated from it.
 *
 * Scopes: `always` (every mode), `help` (the overlay is open), one scope per
 * modal (`form`, `confirm`, `signal`, `logs`, `ports`, `details`, `prompt`),
 * `filter` while typing a filter, otherwise the current view's scope, then
 * `list` (moving in any table), then `global`.
 */
export type Scope =
  | 'always'
  | 'help'
  | 'global'
  | 'list'
  | 'vms'
  | 'images'
  | 'kernels'
  | 'filter'
  | 'form'
  | 'confirm'
  | 'signal'
  | 'logs'
  | 'ports'
  | 'details'
  | 'prompt';

export type ActionId =
  | 'quit'
  | 'help'
  | 'closeHelp'
  | `view:${string}`
  | 'nextView'
  | 'prevView'
  | 'connect'
  | 'up'
  | 'down'
  | 'pageUp'
  | 'pageDown'
  | 'top'
  | 'bottom'
  | 'filter'
  | 'clear'
  | 'filterDone'
  | 'filterCancel'
  | 'mark'
  | 'markAll'
  | 'sort'
  | 'sortReverse'
  | 'details'
  | 'create'
  | 'start'
  | 'stop'
  | 'restart'
  | 'suspend'
  | 'kill'
  | 'delete'
  | 'ssh'
  | 'logs'
  | 'ports'
  | 'imagePull'
  | 'imageDelete'
  | 'kernelPull'
  | 'kernelDelete'
  | 'refresh'
  | 'formNext'
  | 'formPrev'
  | 'formSubmit'
  | 'formToggle'
  | 'formChoiceNext'
  | 'formChoicePrev'
  | 'close'
  | 'yes'
  | 'no'
  | 'itemUp'
  | 'itemDown'
  | 'signalSend'
  | 'logUp'
  | 'logDown'
  | 'logPageUp'
  | 'logPageDown'
  | 'logTop'
  | 'logEnd'
  | 'logFollow'
  | 'promptSubmit';

export interface Binding {
  scope: Scope;
  /** Key names as keyName() makes them: 'q', 'K', 'space', 'enter', 'esc', 'up', 'C-c', ... */
  keys: readonly string[];
  action: ActionId;
  help: string;
  /** Short label for the footer; bindings without one are only in the help overlay. */
  footer?: string;
  /** When it applies beyond its scope (default: always within it). */
  when?: (s: TuiState) => boolean;
}

/** Keys are typed text: the filter, the create form, a prompt. */
const typing = (s: TuiState): boolean =>
  s.filtering || s.modal?.kind === 'form' || s.modal?.kind === 'prompt';
const connected = (s: TuiState): boolean => s.conn.state === 'up';
const hasVm = (s: TuiState): boolean => connected(s) && s.vms.size > 0;
const onField = (id: string) => (s: TuiState) =>
  s.modal?.kind === 'form' && focused(s.modal.form).id === id;

export const KEYMAP: readonly Binding[] = [
  { scope: 'always', keys: ['C-c'], action: 'quit', help: 'quit' },
  {
    scope: 'always',
    keys: ['?'],
    action: 'help',
    help: 'help: the keys that apply here',
    footer: 'help',
    when: (s) => !s.help && !typing(s),
  },

  {
    scope: 'help',
    keys: ['?', 'esc', 'q'],
    action: 'closeHelp',
    help: 'close this help',
    footer: 'close',
  },

  { scope: 'global', keys: ['q'], action: 'quit', help: 'quit', footer: 'quit' },
  ...VIEWS.map((v): Binding => ({
    scope: 'global',
    keys: [v.key],
    action: `view:${v.id}`,
    help: `show ${v.title.toLowerCase()}`,
  })),
  { scope: 'global', keys: ['tab'], action: 'nextView', help: 'next view', footer: 'view' },
  { scope: 'global', keys: ['S-tab'], action: 'prevView', help: 'previous view' },
  {
    scope: 'global',
    keys: ['c'],
    action: 'connect',
    help: 'connect now, starting the daemon',
    footer: 'start daemon',
    when: (s) => s.conn.state === 'down',
  },

  { scope: 'list', keys: ['up', 'k'], action: 'up', help: 'move up' },
  { scope: 'list', keys: ['down', 'j'], action: 'down', help: 'move down' },
  { scope: 'list', keys: ['pgup', 'C-b'], action: 'pageUp', help: 'page up' },
  { scope: 'list', keys: ['pgdn', 'C-f'], action: 'pageDown', help: 'page down' },
  { scope: 'list', keys: ['home', 'g'], action: 'top', help: 'first row' },
  { scope: 'list', keys: ['end', 'G'], action: 'bottom', help: 'last row' },
  {
    scope: 'list',
    keys: ['/'],
    action: 'filter',
    help: 'filter rows (name, state, …)',
    footer: 'filter',
  },
  {
    scope: 'list',
    keys: ['esc'],
    action: 'clear',
    help: 'clear marks and filter',
    when: (s) => s.filter !== '' || s.marked.size > 0,
  },

  {
    scope: 'filter',
    keys: ['enter'],
    action: 'filterDone',
    help: 'keep the filter',
    footer: 'done',
  },
  {
    scope: 'filter',
    keys: ['esc'],
    action: 'filterCancel',
    help: 'clear the filter',
    footer: 'clear',
  },

  { scope: 'vms', keys: ['space'], action: 'mark', help: 'mark / unmark a VM', when: hasVm },
  { scope: 'vms', keys: ['a'], action: 'markAll', help: 'mark all shown / none', when: hasVm },
  { scope: 'vms', keys: ['enter'], action: 'details', help: 'details of the VM', when: hasVm },
  {
    scope: 'vms',
    keys: ['n'],
    action: 'create',
    help: 'new VM (create form)',
    footer: 'new',
    when: connected,
  },
  { scope: 'vms', keys: ['s'], action: 'start', help: 'start', footer: 'start', when: hasVm },
  {
    scope: 'vms',
    keys: ['x'],
    action: 'stop',
    help: 'stop (guest shutdown)',
    footer: 'stop',
    when: hasVm,
  },
  { scope: 'vms', keys: ['r'], action: 'restart', help: 'restart', when: hasVm },
  {
    scope: 'vms',
    keys: ['z'],
    action: 'suspend',
    help: 'suspend to disk (s resumes)',
    when: hasVm,
  },
  { scope: 'vms', keys: ['K'], action: 'kill', help: 'kill: choose a signal', when: hasVm },
  {
    scope: 'vms',
    keys: ['D'],
    action: 'delete',
    help: 'delete (asks first)',
    footer: 'delete',
    when: hasVm,
  },
  { scope: 'vms', keys: ['e'], action: 'ssh', help: 'ssh into the VM', footer: 'ssh', when: hasVm },
  {
    scope: 'vms',
    keys: ['l'],
    action: 'logs',
    help: 'console and VMM log',
    footer: 'logs',
    when: hasVm,
  },
  { scope: 'vms', keys: ['p'], action: 'ports', help: 'listening ports', when: hasVm },
  { scope: 'vms', keys: ['o'], action: 'sort', help: 'sort by the next column' },
  { scope: 'vms', keys: ['O'], action: 'sortReverse', help: 'reverse the order' },

  {
    scope: 'images',
    keys: ['p'],
    action: 'imagePull',
    help: 'pull an image',
    footer: 'pull',
    when: connected,
  },
  {
    scope: 'images',
    keys: ['D'],
    action: 'imageDelete',
    help: 'delete the image (asks first)',
    footer: 'delete',
    when: connected,
  },
  { scope: 'images', keys: ['r'], action: 'refresh', help: 'refresh', when: connected },
  {
    scope: 'kernels',
    keys: ['p'],
    action: 'kernelPull',
    help: 'pull a kernel',
    footer: 'pull',
    when: connected,
  },
  {
    scope: 'kernels',
    keys: ['D'],
    action: 'kernelDelete',
    help: 'delete the kernel (asks first)',
    footer: 'delete',
    when: connected,
  },
  { scope: 'kernels', keys: ['r'], action: 'refresh', help: 'refresh', when: connected },

  { scope: 'form', keys: ['enter'], action: 'formSubmit', help: 'create the VM', footer: 'create' },
  { scope: 'form', keys: ['esc'], action: 'close', help: 'cancel', footer: 'cancel' },
  { scope: 'form', keys: ['tab', 'down'], action: 'formNext', help: 'next field', footer: 'next' },
  { scope: 'form', keys: ['S-tab', 'up'], action: 'formPrev', help: 'previous field' },
  {
    scope: 'form',
    keys: ['space'],
    action: 'formToggle',
    help: 'NAT on / off',
    footer: 'toggle',
    when: onField('nat'),
  },
  {
    scope: 'form',
    keys: ['right'],
    action: 'formChoiceNext',
    help: 'next image',
    when: onField('image'),
  },
  {
    scope: 'form',
    keys: ['left'],
    action: 'formChoicePrev',
    help: 'previous image',
    when: onField('image'),
  },

  { scope: 'confirm', keys: ['y'], action: 'yes', help: 'yes', footer: 'yes' },
  { scope: 'confirm', keys: ['n', 'esc', 'enter'], action: 'no', help: 'no', footer: 'no' },

  { scope: 'signal', keys: ['up', 'k'], action: 'itemUp', help: 'previous signal' },
  { scope: 'signal', keys: ['down', 'j'], action: 'itemDown', help: 'next signal' },
  { scope: 'signal', keys: ['enter'], action: 'signalSend', help: 'send it', footer: 'send' },
  { scope: 'signal', keys: ['esc', 'q'], action: 'close', help: 'cancel', footer: 'cancel' },

  { scope: 'logs', keys: ['up', 'k'], action: 'logUp', help: 'scroll up' },
  { scope: 'logs', keys: ['down', 'j'], action: 'logDown', help: 'scroll down' },
  { scope: 'logs', keys: ['pgup', 'C-b'], action: 'logPageUp', help: 'page up' },
  { scope: 'logs', keys: ['pgdn', 'C-f', 'space'], action: 'logPageDown', help: 'page down' },
  { scope: 'logs', keys: ['home', 'g'], action: 'logTop', help: 'first line' },
  { scope: 'logs', keys: ['end', 'G'], action: 'logEnd', help: 'last line, following' },
  {
    scope: 'logs',
    keys: ['f'],
    action: 'logFollow',
    help: 'follow new output on / off',
    footer: 'follow',
  },
  { scope: 'logs', keys: ['esc', 'q'], action: 'close', help: 'back to the table', footer: 'back' },

  { scope: 'ports', keys: ['up', 'k'], action: 'itemUp', help: 'move up' },
  { scope: 'ports', keys: ['down', 'j'], action: 'itemDown', help: 'move down' },
  { scope: 'ports', keys: ['r'], action: 'refresh', help: 'ask again', footer: 'refresh' },
  {
    scope: 'ports',
    keys: ['esc', 'q'],
    action: 'close',
    help: 'back to the table',
    footer: 'back',
  },

  {
    scope: 'details',
    keys: ['esc', 'q', 'enter'],
    action: 'close',
    help: 'back to the table',
    footer: 'back',
  },

  { scope: 'prompt', keys: ['enter'], action: 'promptSubmit', help: 'go', footer: 'go' },
  { scope: 'prompt', keys: ['esc'], action: 'close', help: 'cancel', footer: 'cancel' },
];

/** Scopes where keys without a binding are typed text. */
export const TEXT_SCOPES: readonly Scope[] = ['filter', 'form', 'prompt'];

/** The scopes that apply now, most specific first. */
export function scopes(s: TuiState): Scope[] {
  if (s.help) return ['always', 'help'];
  if (s.modal) return ['always', s.modal.kind];
  if (s.filtering) return ['always', 'filter'];
  return ['always', s.view, 'list', 'global'];
}

/** The binding of a key now, if any. */
export function bindingFor(s: TuiState, key: string): Binding | undefined {
  for (const scope of scopes(s)) {
    const b = KEYMAP.find(
      (b) => b.scope === scope && b.keys.includes(key) && (!b.when || b.when(s)),
    );
    if (b) return b;
  }
  return undefined;
}

/** How a key is written for people: 'space' → '␣', 'up' → '↑', 'C-c' → 'ctrl-c'. */
export function keyLabel(k: string): string {
  const named: Record<string, string> = {
    space: 'space',
    up: '↑',
    down: '↓',
    left: '←',
    right: '→',
    pgup: 'pgup',
    pgdn: 'pgdn',
    'S-tab': 'shift-tab',
  };
  return named[k] ?? k.replace(/^C-/, 'ctrl-');
}

/** The footer: the bindings with a footer label that apply now (one entry per action). */
export function footer(s: TuiState): { key: string; label: string }[] {
  const seen = new Set<string>();
  const out: { key: string; label: string }[] = [];
  for (const scope of scopes(s)) {
    for (const b of KEYMAP) {
      if (b.scope !== scope || !b.footer || (b.when && !b.when(s)) || seen.has(b.action)) continue;
      seen.add(b.action);
      out.push({ key: keyLabel(b.keys[0]!), label: b.footer });
    }
  }
  return out;
}

export const SCOPE_TITLES: Record<Scope, string> = {
  always: 'Everywhere',
  help: 'Help',
  global: 'Global',
  list: 'Tables',
  vms: 'VMs',
  images: 'Images',
  kernels: 'Kernels',
  filter: 'Filter',
  form: 'Create form',
  confirm: 'Confirmation',
  signal: 'Kill: signal',
  logs: 'Logs',
  ports: 'Ports',
  details: 'Details',
  prompt: 'Prompt',
};

/** The help overlay: the keys of what is open (or the current view), tables, then global ones. */
export function helpSections(
  s: TuiState,
): { title: string; rows: { keys: string; help: string }[] }[] {
  const under: Scope = s.modal?.kind ?? (s.filtering ? 'filter' : s.view);
  const order: Scope[] =
    s.modal || s.filtering ? [under, 'always'] : [under, 'list', 'global', 'always'];
  return order.map((scope) => {
    const rows = new Map<string, string>();
    for (const b of KEYMAP)
      if (b.scope === scope && !rows.has(b.help)) rows.set(b.help, b.keys.map(keyLabel).join(' '));
    return { title: SCOPE_TITLES[scope], rows: [...rows].map(([help, keys]) => ({ keys, help })) };
  });
}
