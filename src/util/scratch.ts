import fs from 'node:fs';
import path from 'node:path';

/**
 * Scratch directories are named `<prefix>-<pid>-<random>`: the pid says which
 * process owns one, so a later process can remove those whose owner is gone
 * (a crash or a kill -9 in the middle of a build). Returns the paths removed.
 */
export function sweepDeadScratch(dir: string, prefixes: string[]): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = /^([a-z][a-z-]*)-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m || !prefixes.includes(m[1]!)) continue;
    const pid = Number(m[2]);
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') {
        fs.rmSync(path.join(dir, name), { recursive: true, force: true });
        removed.push(path.join(dir, name));
      }
    }
  }
  return removed;
}
