/**
 * Screen layout, pure. The frame is as tall as the terminal (screen.ts draws
 * only the lines that changed):
 *
 *   header (views, daemon)            1
 *   body (table, pane or form)        the rest
 *   operations in progress            0-3
 *   status line                       1-3 (a long message wraps)
 *   footer (keys)                     1
 */
export const MAX_OPS_SHOWN = 3;
export const MIN_ROWS = 10;
export const MIN_COLUMNS = 40;

export const MAX_STATUS_LINES = 3;

export interface Layout {
  width: number;
  height: number;
  body: number;
  ops: number;
  status: number;
}

export function layout(
  size: { columns: number; rows: number },
  opsCount: number,
  statusText = '',
): Layout {
  const width = Math.max(size.columns, MIN_COLUMNS);
  const height = Math.max(size.rows, MIN_ROWS);
  const ops = Math.min(opsCount, MAX_OPS_SHOWN);
  const status = Math.min(MAX_STATUS_LINES, Math.max(1, Math.ceil(statusText.length / width)));
  return { width, height, body: height - 2 - status - ops, ops, status };
}

/** Which rows of a list to show: the window of `height` rows that keeps the cursor in view. */
export function scrollWindow(count: number, height: number, cursor: number, top: number): number {
  if (count <= height) return 0;
  let t = Math.min(Math.max(0, top), count - height);
  if (cursor < t) t = cursor;
  if (cursor >= t + height) t = cursor - height + 1;
  return t;
}
