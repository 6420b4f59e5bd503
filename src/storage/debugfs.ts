import { BangerError } from '../errors.js';
import { run } from '../util/exec.js';

/**
 * Scripting e2fsprogs' debugfs: quoting for its command parser, parsing
 * `ls -p` listings, and running a script with its errors detected (debugfs
 * exits 0 even when every command failed, so stderr is the only signal).
 *
 * Parser facts (e2fsprogs 1.47): tokens split on blanks; `"..."` quotes, with
 * `""` inside meaning one `"`; no backslash escapes; CR/LF end a command, so
 * names containing them cannot be expressed; `<N>` addresses inode N.
 */

/** Quote one token. Throws for names debugfs cannot express. */
export function dq(s: string): string {
  if (/[\r\n\0]/.test(s)) {
    throw new BangerError('image_invalid', `name ${JSON.stringify(s)} contains a line break`, {
      hint: 'ext4 images are built with debugfs, which cannot express such names; remove the file',
    });
  }
  return `"${s.replace(/"/g, '""')}"`;
}

/** Whether a name can be written into a debugfs script. */
export const scriptable = (s: string): boolean => !/[\r\n\0]/.test(s);

export interface LsEntry {
  ino: number;
  /** Full st_mode (type bits included). */
  mode: number;
  uid: number;
  gid: number;
  name: string;
  /** Bytes for non-directories. */
  size?: number;
}

/**
 * Split debugfs output into the listings of its `ls -p` commands, in command
 * order. A listing is null when the directory did not exist (nothing listed,
 * not even `.`). Lines look like `/ino/mode/uid/gid/name/size/` (size empty for
 * directories); names never contain `/`. Lines with inode 0 are unused slots
 * (a fresh lost+found has a block of them), not entries, and are left out.
 */
export function parseLsListings(stdout: string): (LsEntry[] | null)[] {
  const out: (LsEntry[] | null)[] = [];
  let cur: LsEntry[] | null | undefined;
  const close = () => {
    if (cur !== undefined) out.push(cur && cur.length ? cur : null);
  };
  for (const line of stdout.split('\n')) {
    if (line.startsWith('debugfs: ')) {
      close();
      cur = line.startsWith('debugfs: ls -p ') ? [] : undefined;
      continue;
    }
    if (!cur || !line.startsWith('/')) continue;
    const e = parseLsLine(line);
    if (e && e.ino !== 0) cur.push(e);
  }
  close();
  return out;
}

export function parseLsLine(line: string): LsEntry | undefined {
  // "/" ino "/" mode "/" uid "/" gid "/" name "/" size "/"
  const m = /^\/(\d+)\/([0-7]+)\/(\d+)\/(\d+)\//.exec(line);
  if (!m || !line.endsWith('/')) return undefined;
  const rest = line.slice(m[0].length, -1); // "name/size" or "name/"
  const slash = rest.lastIndexOf('/');
  if (slash === -1) return undefined;
  const sizeStr = rest.slice(slash + 1);
  const e: LsEntry = {
    ino: Number(m[1]),
    mode: parseInt(m[2]!, 8),
    uid: Number(m[3]),
    gid: Number(m[4]),
    name: rest.slice(0, slash),
  };
  if (sizeStr !== '') e.size = Number(sizeStr);
  return e;
}

export interface DebugfsRun {
  stdout: string;
  /** stderr lines other than the version banner. */
  errors: string[];
}

/**
 * Run a script against an image (`-w` when `write`). Throws when any command
 * reported an error, unless `tolerate` accepts every error line.
 */
export async function debugfs(
  image: string,
  script: string,
  opts: {
    write?: boolean;
    what: string;
    tolerate?: (line: string) => boolean;
    signal?: AbortSignal;
  },
): Promise<DebugfsRun> {
  const args = [...(opts.write ? ['-w'] : []), '-f', '-', image];
  const r = await run('debugfs', args, {
    input: script,
    what: opts.what,
    signal: opts.signal,
    maxBuffer: 512 * 1024 * 1024,
  });
  const errors = r.stderr
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l && !/^debugfs \d+\.\d+/.test(l));
  const fatal = errors.filter((l) => !opts.tolerate?.(l));
  if (fatal.length) {
    throw new BangerError(
      'tool_failed',
      `${opts.what}: debugfs reported ${fatal.length} error${fatal.length === 1 ? '' : 's'}: ${fatal
        .slice(0, 3)
        .join('; ')}`,
      { details: { image, errors: fatal.slice(0, 50) } },
    );
  }
  return { stdout: r.stdout, errors };
}

export const S_IFMT = 0o170000;
export const TYPE_BITS = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
} as const;
