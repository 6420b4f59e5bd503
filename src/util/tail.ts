import fs from 'node:fs';
import { sleep } from './sleep.js';

/**
 * Reading the end of a growing log file, and following it like `tail -f`.
 * The one place logs are tailed: the daemon's log routes, the VMM drivers'
 * start-up errors and the VM boot watch all read through these.
 */

/** Size of a file in bytes; 0 when it does not exist. */
export function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/**
 * The text written to `file` from byte offset `from` on (at most the last
 * `maxBytes` of it); '' when the file cannot be read.
 */
export function readFrom(file: string, from: number, maxBytes = 256 * 1024): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (from > size) from = 0; // the log was capped (truncated) since the offset was taken
      const start = Math.max(from, size - maxBytes, 0);
      const buf = Buffer.alloc(Math.max(0, size - start));
      fs.readSync(fd, buf, 0, buf.length, start);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** The last `bytes` bytes of a file as text ('' when unreadable). */
export function tailBytes(file: string, bytes = 8192): string {
  return readFrom(file, 0, bytes);
}

/**
 * The last non-empty lines written since byte offset `from` (this run's
 * output only), trailing blanks trimmed; '' when there are none.
 */
export function tailLines(file: string, from = 0, maxLines = 20): string {
  return readFrom(file, from, 16 * 1024)
    .split('\n')
    .map((l) => l.trimEnd())
    .filter(Boolean)
    .slice(-maxLines)
    .join('\n');
}

export async function tailFile(file: string, lines: number): Promise<string> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const { size } = await fh.stat();
    const chunk = 64 * 1024;
    let pos = size;
    let text = '';
    while (pos > 0) {
      const len = Math.min(chunk, pos);
      pos -= len;
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, pos);
      text = buf.toString('utf8') + text;
      if (text.split('\n').length > lines + 1) break;
    }
    const all = text.split('\n');
    const endsWithNl = all[all.length - 1] === '';
    if (endsWithNl) all.pop();
    return all.slice(-lines).join('\n') + (all.length && endsWithNl ? '\n' : '');
  } finally {
    await fh.close();
  }
}

/** Write everything appended to file from now on until signal aborts. */
export async function followFile(
  file: string,
  write: (chunk: string) => void,
  signal: AbortSignal,
  opts: { intervalMs?: number; from?: number } = {},
): Promise<void> {
  let pos = opts.from ?? (await fs.promises.stat(file)).size;
  const interval = opts.intervalMs ?? 200;
  while (!signal.aborted) {
    let size: number;
    try {
      size = (await fs.promises.stat(file)).size;
    } catch {
      size = 0;
    }
    if (size < pos) pos = 0; // truncated or rotated
    if (size > pos) {
      const fh = await fs.promises.open(file, 'r');
      try {
        const buf = Buffer.alloc(size - pos);
        await fh.read(buf, 0, buf.length, pos);
        pos = size;
        write(buf.toString('utf8'));
      } finally {
        await fh.close();
      }
    }
    await sleep(interval, signal).catch(() => undefined);
  }
}
