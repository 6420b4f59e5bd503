/** snake_case rows ⇄ camelCase records, JSON `meta` columns, booleans as 0/1. */

const camel = (s: string): string => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

export function fromRow<T>(row: Record<string, unknown>, booleans: string[] = []): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) {
    const key = camel(k);
    if (k === 'meta') out[key] = v ? JSON.parse(v as string) : {};
    else if (booleans.includes(k)) out[key] = v === 1;
    else out[key] = v;
  }
  return out as T;
}

export function toRow(record: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(record)) {
    if (v === undefined) continue;
    const key = snake(k);
    if (key === 'meta') out[key] = JSON.stringify(v ?? {});
    else if (typeof v === 'boolean') out[key] = v ? 1 : 0;
    else out[key] = v;
  }
  return out;
}

export function insertSql(table: string, row: Record<string, unknown>): string {
  const cols = Object.keys(row);
  return `INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`;
}

export function updateSql(table: string, row: Record<string, unknown>, key: string): string {
  const cols = Object.keys(row).filter((c) => c !== key);
  return `UPDATE ${table} SET ${cols.map((c) => `${c} = @${c}`).join(', ')} WHERE ${key} = @${key}`;
}

export const nowIso = (): string => new Date().toISOString();
