import fs from 'node:fs';

/** Reading the end of a growing log file, and following it like `tail -f`. */

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
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, interval);
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(t);
          resolve();
        },
        { once: true },
      );
    });
  }
}
