import { terminalSafe } from '../../util/terminal.js';

/** Plain aligned columns, like `docker ps`; cells (often guest-written) are made terminal-safe. */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = [
    headers,
    ...rows.map((r) =>
      r.map((c) => (c === null || c === undefined ? '-' : terminalSafe(String(c)))),
    ),
  ];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('   ')
        .trimEnd(),
    )
    .join('\n');
}
