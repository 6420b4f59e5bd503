import { spawn } from 'node:child_process';
import { BangerError } from '../errors.js';
import { spawnFailure } from '../util/exec.js';
import { debugfs, dq, parseLsListings, scriptable, TYPE_BITS } from './debugfs.js';

/**
 * Write a tree of host files into an unmounted ext4 image under a new
 * directory, in one debugfs run: no loop mount, no root, and no work for the
 * guest (the workspace of `vm run PATH` goes onto the work disk before boot).
 * The script builder is pure; the runner reports progress from debugfs's echo
 * of each `write`.
 */

export interface TreeItem {
  /** Relative to the destination directory. */
  path: string;
  kind: 'file' | 'symlink' | 'dir';
  mode: number;
  mtimeMs: number;
  size: number;
  /** Host file (files). */
  source?: string;
  /** Link target (symlinks). */
  target?: string;
}

const parentOf = (p: string): string => {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
};
const baseOf = (p: string): string => p.slice(p.lastIndexOf('/') + 1);
const secs = (ms: number): number => Math.floor(ms / 1000);

/** Names debugfs cannot express (line breaks), or undefined when all are fine. */
export function unscriptable(items: TreeItem[]): string | undefined {
  for (const i of items) {
    if (!scriptable(i.path)) return i.path;
    if (i.kind === 'symlink' && !scriptable(i.target ?? '')) return i.path;
  }
  return undefined;
}

/**
 * The debugfs script: directories (parents first), then each directory's
 * files and links after one `cd`, then directory modes and times last (adding
 * entries changes a directory's mtime). `dest` is absolute inside the image.
 * A file gets its source's permission bits: give items whose `mode` is the
 * source's (a stat of it), as the workspace listing does.
 */
export function treeScript(dest: string, items: TreeItem[]): string {
  const abs = (rel: string): string => (rel ? `${dest}/${rel}` : dest);
  const dirs = items.filter((i) => i.kind === 'dir').sort((a, b) => (a.path < b.path ? -1 : 1));
  const lines: string[] = [`mkdir ${dq(dest)}`];
  for (const d of dirs) lines.push(`mkdir ${dq(abs(d.path))}`);
  const byDir = new Map<string, TreeItem[]>();
  for (const i of items) {
    if (i.kind === 'dir') continue;
    const list = byDir.get(parentOf(i.path)) ?? [];
    list.push(i);
    byDir.set(parentOf(i.path), list);
  }
  for (const [dir, list] of [...byDir].sort(([a], [b]) => (a < b ? -1 : 1))) {
    lines.push(`cd ${dq(abs(dir))}`);
    for (const i of list) {
      const name = dq(baseOf(i.path));
      if (i.kind === 'symlink') {
        lines.push(`symlink ${name} ${dq(i.target ?? '')}`);
      } else {
        // `write` copies the source's permission bits (and makes the file root's).
        lines.push(`write ${dq(i.source ?? '')} ${name}`);
      }
      lines.push(`sif ${name} mtime @${secs(i.mtimeMs)}`);
    }
  }
  lines.push('cd /');
  for (const d of [...dirs].reverse()) {
    const p = dq(abs(d.path));
    lines.push(`sif ${p} mode 0${(TYPE_BITS.dir | (d.mode & 0o7777)).toString(8)}`);
    lines.push(`sif ${p} mtime @${secs(d.mtimeMs)}`);
  }
  return `${lines.join('\n')}\n`;
}

export interface TreeWriteProgress {
  files: number;
  bytes: number;
}

/**
 * Write `items` under `dest` (which must not exist yet) into `image`.
 * `onProgress` is called as debugfs works through the files.
 */
export async function writeTreeExt4(
  image: string,
  dest: string,
  items: TreeItem[],
  opts: { onProgress?: (p: TreeWriteProgress) => void; signal?: AbortSignal } = {},
): Promise<void> {
  const bad = unscriptable(items);
  if (bad !== undefined) {
    throw new BangerError(
      'usage',
      `cannot copy ${JSON.stringify(bad)}: its name (or link target) contains a line break`,
      { hint: 'rename it, or copy into a running VM with `banger vm workspace prepare`' },
    );
  }
  const probe = await debugfs(image, `ls -p ${dq(dest)}\n`, {
    what: `reading ${image}`,
    tolerate: (l) => /File not found by ext2_lookup/i.test(l),
    signal: opts.signal,
  });
  if (parseLsListings(probe.stdout)[0]) {
    throw new BangerError('conflict', `${dest} already exists on the work disk ${image}`, {
      hint: 'copy into the running VM with `banger vm workspace prepare`',
    });
  }
  // Bytes in script order, to turn debugfs's echo of each `write` into a byte count.
  const sizes = items
    .filter((i) => i.kind !== 'dir')
    .sort((a, b) => {
      const pa = parentOf(a.path);
      const pb = parentOf(b.path);
      return pa < pb ? -1 : pa > pb ? 1 : 0;
    });
  const writes: number[] = [];
  for (const i of sizes) writes.push(i.kind === 'file' ? i.size : 0);
  await new Promise<void>((resolve, reject) => {
    const child = spawn('debugfs', ['-w', '-f', '-', image], {
      stdio: ['pipe', 'pipe', 'pipe'],
      signal: opts.signal,
    });
    let done = 0;
    let bytes = 0;
    let pending = '';
    let lastReport = 0;
    const errors: string[] = [];
    let errText = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      const lines = (pending + chunk).split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        if (line.startsWith('debugfs: write ') || line.startsWith('debugfs: symlink ')) {
          bytes += writes[done] ?? 0;
          done++;
        }
      }
      const now = Date.now();
      if (now - lastReport > 100) {
        lastReport = now;
        opts.onProgress?.({ files: done, bytes });
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (c: string) => {
      errText += c;
    });
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        spawnFailure(e, { cmd: 'debugfs', what: 'copying the workspace', install: 'e2fsprogs' }),
      ),
    );
    child.on('close', (code) => {
      for (const l of errText.split('\n')) {
        const t = l.trimEnd();
        if (t && !/^debugfs \d+\.\d+/.test(t)) errors.push(t);
      }
      if (code !== 0 || errors.length) {
        const full = errors.some((l) => /allocate|No free space|Could not allocate/i.test(l));
        reject(
          new BangerError(
            'tool_failed',
            `writing the workspace into ${image} failed: ${errors.slice(0, 3).join('; ') || `debugfs exited with ${code}`}`,
            {
              hint: full
                ? 'the work disk is too small: pass a larger --disk-size'
                : 'run with --debug and see the daemon log',
              details: { errors: errors.slice(0, 50) },
            },
          ),
        );
        return;
      }
      opts.onProgress?.({ files: done, bytes });
      resolve();
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(treeScript(dest, items));
  });
}
