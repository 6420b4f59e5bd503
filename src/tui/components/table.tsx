import { Box, Text } from 'ink';
import { fit, fitColumns, type Column } from '../columns.js';
import { scrollWindow } from '../layout.js';

/**
 * A table: a header and the rows that fit `height - 1` lines, scrolled so
 * the cursor stays in view. Each row is one line of fixed-width cells, so a
 * refresh that changes one cell changes one line on screen.
 */
export interface TableProps<R> {
  columns: readonly Column<R>[];
  rows: readonly R[];
  rowKey: (r: R) => string;
  cursor: number;
  width: number;
  height: number;
  /** Shown instead of rows when there are none. */
  empty: string;
}

export function Table<R>(p: TableProps<R>) {
  const cols = fitColumns(p.columns, p.width);
  const shown = Math.max(0, p.height - 1);
  const top = scrollWindow(p.rows.length, shown, Math.max(0, p.cursor), 0);
  const window = p.rows.slice(top, top + shown);
  return (
    <Box flexDirection="column" height={p.height}>
      <Text bold wrap="truncate">
        {cols.map((c) => fit(c.col.header, c.width, c.col.align)).join(' ')}
      </Text>
      {p.rows.length === 0 ? (
        <Text dimColor wrap="truncate">
          {p.empty}
        </Text>
      ) : (
        window.map((r, i) => {
          const selected = top + i === p.cursor;
          return (
            <Text key={p.rowKey(r)} inverse={selected} wrap="truncate">
              {cols.map((c, j) => {
                const cell = c.col.cell(r);
                const text =
                  fit(cell.text, c.width, c.col.align) + (j < cols.length - 1 ? ' ' : '');
                return (
                  <Text key={c.col.id} color={cell.color} dimColor={cell.dim && !selected}>
                    {text}
                  </Text>
                );
              })}
            </Text>
          );
        })
      )}
    </Box>
  );
}
