import { VM_NAME_RE, VM_NAME_RULE } from '../api/limits.js';
import { parseDiskSize, parseMemoryMib, parseVcpu } from '../util/sizing.js';

/**
 * The create form, pure: its fields, inline validation with the API's limits
 * (the same parsers as the CLI's flags), and the request it makes. Empty
 * fields are left out of the request, so the daemon applies the same
 * defaults as `banger vm create` and reports them in the spec.
 */
export type FieldId = 'name' | 'image' | 'vcpu' | 'memory' | 'disk' | 'nat' | 'workspace';

export interface FieldDef {
  id: FieldId;
  label: string;
  kind: 'text' | 'toggle';
  /** Shown in an empty field. */
  placeholder: string;
}

const ALL_FIELDS: readonly FieldDef[] = [
  { id: 'name', label: 'name', kind: 'text', placeholder: 'generated' },
  { id: 'image', label: 'image', kind: 'text', placeholder: 'default image (←/→ to choose)' },
  { id: 'vcpu', label: 'vCPU', kind: 'text', placeholder: 'default, e.g. 2' },
  { id: 'memory', label: 'memory', kind: 'text', placeholder: 'default, e.g. 2G' },
  { id: 'disk', label: 'disk', kind: 'text', placeholder: 'default, e.g. 8G' },
  { id: 'nat', label: 'NAT', kind: 'toggle', placeholder: '' },
  {
    id: 'workspace',
    label: 'workspace',
    kind: 'text',
    placeholder: 'none (a git checkout to copy)',
  },
];

export interface CreateForm {
  fields: readonly FieldDef[];
  values: Readonly<Record<FieldId, string>>;
  nat: boolean;
  /** Index into fields. */
  focus: number;
  /** Submitted and waiting for the daemon's first answer. */
  busy: boolean;
  /** The daemon refused the request before anything happened. */
  error?: string;
}

/** A new form; the workspace field only where the daemon API has workspace runs. */
export function newForm(opts: { workspace: boolean }): CreateForm {
  return {
    fields: ALL_FIELDS.filter((f) => f.id !== 'workspace' || opts.workspace),
    values: { name: '', image: '', vcpu: '', memory: '', disk: '', nat: '', workspace: '' },
    nat: false,
    focus: 0,
    busy: false,
  };
}

export const focused = (f: CreateForm): FieldDef => f.fields[f.focus]!;

export function moveFocus(f: CreateForm, delta: number): CreateForm {
  const n = f.fields.length;
  return { ...f, focus: (f.focus + delta + n) % n };
}

/** Typed text into the focused text field (nothing for the toggle). */
export function typeInto(f: CreateForm, text: string): CreateForm {
  const field = focused(f);
  if (field.kind !== 'text') return f;
  return { ...f, values: { ...f.values, [field.id]: f.values[field.id] + text }, error: undefined };
}

export function backspace(f: CreateForm): CreateForm {
  const field = focused(f);
  if (field.kind !== 'text') return f;
  return {
    ...f,
    values: { ...f.values, [field.id]: f.values[field.id].slice(0, -1) },
    error: undefined,
  };
}

export const toggleNat = (f: CreateForm): CreateForm => ({ ...f, nat: !f.nat, error: undefined });

/** ←/→ on the image field: the next (or previous) known image name. */
export function cycleImage(f: CreateForm, images: readonly string[], delta: number): CreateForm {
  if (images.length === 0) return f;
  const at = images.indexOf(f.values.image);
  const next =
    at < 0 ? (delta > 0 ? 0 : images.length - 1) : (at + delta + images.length) % images.length;
  return { ...f, values: { ...f.values, image: images[next]! }, error: undefined };
}

/** Inline errors: each rule phrased as the fix, as the CLI prints it. */
export function fieldErrors(f: CreateForm): Partial<Record<FieldId, string>> {
  const v = f.values;
  const out: Partial<Record<FieldId, string>> = {};
  const name = v.name.trim();
  if (name && !VM_NAME_RE.test(name)) out.name = VM_NAME_RULE;
  const check = (id: FieldId, r: { ok: boolean; rule?: string }): void => {
    if (v[id].trim() && !r.ok) out[id] = r.rule;
  };
  check('vcpu', parseVcpu(v.vcpu));
  check('memory', parseMemoryMib(v.memory));
  check('disk', parseDiskSize(v.disk));
  return out;
}

/** The body of `vmCreate` (started at once), or undefined while a field is invalid. */
export function createBody(f: CreateForm):
  | {
      name?: string;
      image?: string;
      vcpu?: number;
      memoryMib?: number;
      diskSize?: number;
      nat: boolean;
      start: true;
    }
  | undefined {
  if (Object.keys(fieldErrors(f)).length) return undefined;
  const v = f.values;
  const num = <T>(s: string, parse: (s: string) => { ok: true; value: T } | { ok: false }) => {
    if (!s.trim()) return undefined;
    const r = parse(s);
    return r.ok ? r.value : undefined;
  };
  return {
    name: v.name.trim() || undefined,
    image: v.image.trim() || undefined,
    vcpu: num(v.vcpu, parseVcpu),
    memoryMib: num(v.memory, parseMemoryMib),
    diskSize: num(v.disk, parseDiskSize),
    nat: f.nat,
    start: true,
  };
}
