/**
 * Which Debian mirror an image build uses: the host's own apt sources when it
 * has Debian ones (a local mirror or proxy keeps working), else deb.debian.org.
 * Only the two standard files are read — `/etc/apt/sources.list.d/debian.sources`
 * (deb822) and `/etc/apt/sources.list` — and only entries that are Debian's
 * own archive (suite `<codename>`, `-updates`, `-security`; component `main`),
 * so third-party repositories never leak into an image. Pure.
 */

export const HOST_SOURCE_FILES = [
  '/etc/apt/sources.list.d/debian.sources',
  '/etc/apt/sources.list',
] as const;

export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';
export const DEFAULT_SECURITY_MIRROR = 'http://deb.debian.org/debian-security';

export interface SourceEntry {
  types: string[];
  uris: string[];
  suites: string[];
  components: string[];
}

export type MirrorChoice =
  /** Pass the host's file to mmdebstrap as it is (it matches the suite and holds only Debian entries). */
  | { kind: 'file'; path: string; reason: string }
  /** One-line `deb` sources built for the suite from the host's mirror URIs (or the defaults). */
  | { kind: 'lines'; lines: string[]; reason: string };

/** Parse deb822 `.sources` text (stanzas; `Enabled: no` skipped). */
export function parseDeb822(text: string): SourceEntry[] {
  const out: SourceEntry[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let key = '';
    for (const raw of stanza.split('\n')) {
      if (raw.startsWith('#') || raw.trim() === '') continue;
      if (/^\s/.test(raw) && key) {
        fields.set(key, `${fields.get(key) ?? ''} ${raw.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(raw);
      if (!m) continue;
      key = m[1]!.toLowerCase();
      fields.set(key, m[2]!.trim());
    }
    if (!fields.has('uris')) continue;
    if ((fields.get('enabled') ?? 'yes').toLowerCase() === 'no') continue;
    const words = (k: string) => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
    out.push({
      types: words('types'),
      uris: words('uris'),
      suites: words('suites'),
      components: words('components'),
    });
  }
  return out;
}

/** Parse one-line `sources.list` text. */
export function parseSourcesList(text: string): SourceEntry[] {
  const out: SourceEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) continue;
    const m = /^(deb|deb-src)\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({
      types: [m[1]!],
      uris: [m[2]!],
      suites: [m[3]!],
      components: m[4]!.split(/\s+/).filter(Boolean),
    });
  }
  return out;
}

/** Debian's release names and aliases (Ubuntu and derivatives use others). */
export const DEBIAN_SUITES = [
  'buster',
  'bullseye',
  'bookworm',
  'trixie',
  'forky',
  'duke',
  'sid',
  'oldoldstable',
  'oldstable',
  'stable',
  'testing',
  'unstable',
] as const;

const isDebianSuite = (s: string): boolean =>
  /^[a-z]+(-updates|-security|\/updates)?$/.test(s) &&
  (DEBIAN_SUITES as readonly string[]).includes(codenameOf(s));
const codenameOf = (s: string): string => s.replace(/(-updates|-security|\/updates)$/, '');
const isSecurity = (s: string): boolean => /(-security|\/updates)$/.test(s);

/** An entry of Debian's own archive: binary, component main, suite codename/-updates/-security. */
export function isDebianArchive(e: SourceEntry): boolean {
  return (
    e.types.includes('deb') &&
    e.components.includes('main') &&
    e.suites.length > 0 &&
    e.suites.every(isDebianSuite)
  );
}

/** Decide the mirror for `suite` from the host files that exist (path → content). */
export function chooseMirror(
  files: { path: string; content: string }[],
  suite: string,
): MirrorChoice {
  let mainUri: string | undefined;
  let securityUri: string | undefined;
  for (const f of files) {
    const entries = f.path.endsWith('.sources')
      ? parseDeb822(f.content)
      : parseSourcesList(f.content);
    const debian = entries.filter(isDebianArchive);
    if (debian.length === 0) continue;
    const allDebian = entries.filter((e) => e.types.includes('deb')).every(isDebianArchive);
    const suites = new Set(debian.flatMap((e) => e.suites.map(codenameOf)));
    const hasSecurity = debian.some((e) => e.suites.some(isSecurity));
    if (allDebian && suites.size === 1 && suites.has(suite) && hasSecurity) {
      return { kind: 'file', path: f.path, reason: `host apt sources ${f.path}` };
    }
    for (const e of debian) {
      for (const s of e.suites) {
        if (isSecurity(s)) securityUri ??= e.uris[0];
        else mainUri ??= e.uris[0];
      }
    }
    if (mainUri) break;
  }
  const main = mainUri ?? DEFAULT_MIRROR;
  const security = securityUri ?? DEFAULT_SECURITY_MIRROR;
  return {
    kind: 'lines',
    lines: [
      `deb ${main} ${suite} main`,
      `deb ${main} ${suite}-updates main`,
      `deb ${security} ${suite}-security main`,
    ],
    reason: mainUri ? `mirror ${main} from the host's apt sources` : `default mirror ${main}`,
  };
}
