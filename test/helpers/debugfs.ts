import { execFileSync } from 'node:child_process';
import { MASK_DIRS } from './guest-expectations.js';

/** Reading an ext4 image from the outside with debugfs (e2fsprogs): no mount, no VM. */

export interface DebugfsStat {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  link?: string;
}

/** `stat` many paths with one debugfs run. Missing paths are absent from the map. */
export function debugfsStat(image: string, paths: string[]): Map<string, DebugfsStat> {
  const script = paths.map((p) => `stat "${p}"`).join('\n') + '\n';
  const out = execFileSync('debugfs', ['-f', '-', image], {
    input: script,
    maxBuffer: 64 << 20,
    stdio: ['pipe', 'pipe', 'ignore'],
  }).toString();
  const res = new Map<string, DebugfsStat>();
  const blocks = out.split(/^debugfs: stat "/m).slice(1);
  for (const b of blocks) {
    const p = b.slice(0, b.indexOf('"'));
    const m = /Type: (\S+)\s+Mode:\s+(\d+)/.exec(b);
    const u = /User:\s+(\d+)\s+Group:\s+(\d+).*Size: (\d+)/.exec(b);
    if (!m || !u) continue;
    const link = /Fast link dest: "(.*)"/.exec(b)?.[1];
    res.set(p, {
      type: m[1]!,
      mode: parseInt(m[2]!, 8),
      uid: Number(u[1]),
      gid: Number(u[2]),
      size: Number(u[3]),
      ...(link !== undefined ? { link } : {}),
    });
  }
  return res;
}

/** Names in a directory of the image (without . and ..). */
export function debugfsLs(image: string, dir: string): string[] {
  return execFileSync('debugfs', ['-R', `ls -p "${dir}"`, image], {
    stdio: ['ignore', 'pipe', 'ignore'],
  })
    .toString()
    .split('\n')
    .map((l) => l.split('/')[5])
    .filter((n): n is string => n !== undefined && n !== '' && n !== '.' && n !== '..');
}

/** Every entry of the mask directories that is a symlink to /dev/null, sorted. */
export function maskedInImage(image: string): string[] {
  const entries = MASK_DIRS.flatMap((d) => debugfsLs(image, d).map((n) => `${d}/${n}`));
  const s = debugfsStat(image, entries);
  return entries
    .filter((p) => s.get(p)?.type === 'symlink' && s.get(p)?.link === '/dev/null')
    .sort();
}
