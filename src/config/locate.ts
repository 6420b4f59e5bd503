/**
 * Find the line of a key in TOML source so config errors can point at it.
 * TOML parsers return values without positions; this scanner only needs to
 * understand table headers and `key =` lines, which is all config.toml uses.
 */
export interface KeyLocation {
  /** Table path, e.g. [] for top level, ['vm_defaults'], ['file_sync'] with index. */
  table: string[];
  /** Index within an array of tables ([[file_sync]]), counting from 0. */
  index?: number;
  key?: string;
}

const unquote = (s: string): string =>
  s
    .trim()
    .replace(/^"(.*)"$/, '$1')
    .replace(/^'(.*)'$/, '$1');

export function locateKey(source: string, loc: KeyLocation): number | undefined {
  const lines = source.split(/\r?\n/);
  let table: string[] = [];
  const arrayCounts = new Map<string, number>();
  let currentIndex: number | undefined;
  const want = loc.table.join('.');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/^\s+/, '');
    if (line.startsWith('#') || line.length === 0) continue;
    const arr = /^\[\[\s*([^\]]+?)\s*\]\]/.exec(line);
    const tbl = arr ? null : /^\[\s*([^\]]+?)\s*\]/.exec(line);
    if (arr || tbl) {
      table = (arr ?? tbl)![1]!.split('.').map(unquote);
      const name = table.join('.');
      if (arr) {
        const n = arrayCounts.get(name) ?? 0;
        arrayCounts.set(name, n + 1);
        currentIndex = n;
      } else {
        currentIndex = undefined;
      }
      if (
        loc.key === undefined &&
        name === want &&
        (loc.index === undefined || loc.index === currentIndex)
      ) {
        return i + 1;
      }
      continue;
    }
    if (loc.key === undefined) continue;
    const kv = /^("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=/.exec(line);
    if (!kv) continue;
    const parts = unquote(kv[1]!).split('.');
    const fullTable = [...table, ...parts.slice(0, -1)].join('.');
    const key = parts[parts.length - 1];
    if (
      fullTable === want &&
      key === loc.key &&
      (loc.index === undefined || loc.index === currentIndex)
    ) {
      return i + 1;
    }
  }
  return undefined;
}
