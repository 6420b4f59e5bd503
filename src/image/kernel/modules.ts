import path from 'node:path';
import { BangerError } from '../../errors.js';

/**
 * Which kernel modules banger's initramfs loads, and in what order. Pure:
 * the text of depmod's index files in, an ordered list of module files out.
 *
 * modules.dep lists each module's full dependency closure, ordered so that
 * the last entry must be loaded first; softdeps ("pre:"/"post:") name modules
 * or aliases (e.g. ext4 → crypto-crc32c → crc32c_generic) that must be loaded
 * around a module without a symbol dependency.
 */

/** Modules every banger guest needs from its initramfs, in load order (virtio_mmio last, so
 * every driver is registered before the bus probes the devices). Built-in ones are skipped. */
export const GUEST_MODULES = [
  'virtio_blk',
  'virtio_net',
  'virtio_console',
  'ext4',
  'overlay',
  'evdev',
  'button',
  'vmw_vsock_virtio_transport',
  'virtio_mmio',
] as const;

export interface ModuleIndex {
  /** module path (relative to /lib/modules/<kver>) → its dependencies (paths). */
  deps: Map<string, string[]>;
  /** module name → path. */
  byName: Map<string, string>;
  /** Names of modules compiled into the kernel. */
  builtin: Set<string>;
  /** module name → softdeps. */
  softdeps: Map<string, { pre: string[]; post: string[] }>;
  /** alias → module names (exact aliases only; wildcard aliases are not needed here). */
  aliases: Map<string, string[]>;
}

/** `kernel/fs/ext4/ext4.ko[.xz]` → `ext4`; dashes become underscores, as the kernel does. */
export function moduleName(p: string): string {
  return path
    .basename(p)
    .replace(/\.ko(\.(xz|zst|gz))?$/, '')
    .replace(/-/g, '_');
}

const norm = (name: string): string => name.replace(/-/g, '_');

export function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const mod = line.slice(0, i).trim();
    if (!mod) continue;
    deps.set(
      mod,
      line
        .slice(i + 1)
        .split(/\s+/)
        .filter(Boolean),
    );
  }
  return deps;
}

export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map(moduleName),
  );
}

/** `softdep <mod> pre: a b post: c` lines (modules.softdep, modprobe.d syntax). */
export function parseModulesSoftdep(text: string): Map<string, { pre: string[]; post: string[] }> {
  const out = new Map<string, { pre: string[]; post: string[] }>();
  for (const raw of text.split('\n')) {
    const words = raw.replace(/#.*$/, '').trim().split(/\s+/);
    if (words[0] !== 'softdep' || !words[1]) continue;
    const entry = out.get(norm(words[1])) ?? { pre: [], post: [] };
    let into: string[] | undefined;
    for (const w of words.slice(2)) {
      if (w === 'pre:') into = entry.pre;
      else if (w === 'post:') into = entry.post;
      else into?.push(w);
    }
    out.set(norm(words[1]), entry);
  }
  return out;
}

/** `alias <alias> <module>` lines; aliases with glob characters are skipped. */
export function parseModulesAlias(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const [kw, alias, mod] = raw.trim().split(/\s+/);
    if (kw !== 'alias' || !alias || !mod || /[*?[]/.test(alias)) continue;
    const list = out.get(alias) ?? [];
    list.push(norm(mod));
    out.set(alias, list);
  }
  return out;
}

export function moduleIndex(files: {
  dep: string;
  builtin?: string;
  softdep?: string;
  alias?: string;
}): ModuleIndex {
  const deps = parseModulesDep(files.dep);
  const byName = new Map<string, string>();
  for (const p of deps.keys()) byName.set(moduleName(p), p);
  return {
    deps,
    byName,
    builtin: parseModulesBuiltin(files.builtin ?? ''),
    softdeps: parseModulesSoftdep(files.softdep ?? ''),
    aliases: parseModulesAlias(files.alias ?? ''),
  };
}

export interface ModulePlan {
  /** Module files (relative to /lib/modules/<kver>) in load order. */
  load: string[];
  /** Requested modules that are built into the kernel (nothing to load). */
  builtin: string[];
}

/**
 * Resolve a softdep target (module name or alias) to a loadable module
 * name, or undefined when it is built in or unknown (softdeps are optional).
 * Among several alias candidates the portable `*_generic` one is preferred
 * (e.g. crc32c_generic over crc32c_intel, which needs SSE4.2).
 */
function resolveSoft(index: ModuleIndex, target: string): string | undefined {
  const n = norm(target);
  if (index.builtin.has(n)) return undefined;
  if (index.byName.has(n)) return n;
  const candidates = (index.aliases.get(target) ?? []).filter((c) => !index.builtin.has(c));
  if ((index.aliases.get(target) ?? []).some((c) => index.builtin.has(c))) return undefined;
  const loadable = candidates.filter((c) => index.byName.has(c));
  return loadable.find((c) => c.endsWith('_generic')) ?? loadable[0];
}

/**
 * The load order for `wanted` (module names, in the order they should come
 * up): for each module its softdeps' "pre" modules, its dependencies (from
 * modules.dep, last first), itself, then "post" softdeps. Each file appears
 * once. Throws a BangerError naming the module when one is neither a module
 * file nor built in.
 */
export function planModules(
  index: ModuleIndex,
  wanted: readonly string[],
  opts: { kernelRelease?: string } = {},
): ModulePlan {
  const load: string[] = [];
  const seen = new Set<string>();
  const visiting = new Set<string>();
  const builtin: string[] = [];

  const addPath = (p: string): void => {
    if (seen.has(p) || visiting.has(p)) return;
    visiting.add(p);
    const name = moduleName(p);
    const soft = index.softdeps.get(name);
    for (const s of soft?.pre ?? []) {
      const r = resolveSoft(index, s);
      if (r) addPath(index.byName.get(r)!);
    }
    const deps = index.deps.get(p);
    if (!deps) {
      throw new BangerError(
        'image_invalid',
        `module file ${p} is listed as a dependency but missing from modules.dep`,
        {
          hint: 'the kernel package looks inconsistent; re-pull it with `banger kernel pull`',
        },
      );
    }
    for (const d of [...deps].reverse()) addPath(d);
    visiting.delete(p);
    seen.add(p);
    load.push(p);
    for (const s of soft?.post ?? []) {
      const r = resolveSoft(index, s);
      if (r) addPath(index.byName.get(r)!);
    }
  };

  for (const w of wanted) {
    const n = norm(w);
    const p = index.byName.get(n);
    if (p) addPath(p);
    else if (index.builtin.has(n)) builtin.push(n);
    else {
      throw new BangerError(
        'image_invalid',
        `kernel module '${w}' is neither a module nor built into kernel ${opts.kernelRelease ?? ''}`.trimEnd(),
        {
          hint: 'this kernel cannot boot banger VMs; use another kernel (`banger kernel list --available`)',
        },
      );
    }
  }
  return { load, builtin };
}
