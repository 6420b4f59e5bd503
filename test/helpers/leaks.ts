import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { OWNER_TAG, TEST_OWNER } from './owner.js';

/**
 * The leak sweep run after every e2e test file (scripts/test.mjs loads this
 * module into each e2e file's process with `--import`). A test that cleans up
 * by pid alone misses what it never tracked; this looks at the machine itself
 * once the file's tests and `after` hooks have all run, and fails the file
 * (its process exits 1, the run reports the file as failed) after printing
 * each leftover:
 *
 *  - processes started on the file's behalf: every process the test process,
 *    its sandboxes' daemons and their VMMs start carries BANGER_TEST_OWNER=<pid>
 *    in its environment (owner.ts); VMMs (`qemu-system-*`, `firecracker`) are
 *    also found by a command line naming this checkout's e2e state dir;
 *  - network namespaces named `bgt-<owner>-…` (owner.ts testNetnsName);
 *  - temp dirs: the file's process gets a private TMPDIR, which must be empty;
 *  - in the root network namespace, anything new since the file started: taps
 *    named `bgr*`, rules mentioning banger (iptables, nft) and private-range
 *    addresses (the tests create all of those in namespaces of their own);
 *  - on /dev/shm, anything new since the file started: guest RAM files
 *    `banger-<vm id>.ram` (unlinked once QEMU runs; one left over is memory
 *    no process frees) and migration socket dirs `banger-mig-*` (save/restore).
 *
 * Only resources tied to this test process (owner pid, private TMPDIR) or new
 * in the root namespace are judged: other users' processes, namespaces and
 * files on a shared machine are never looked at by name alone.
 */

const isRunnerParent = process.execArgv.includes('--test') && !process.env.NODE_TEST_CONTEXT;
const E2E_STATE =
  process.env.BANGER_E2E_DIR ??
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '.cache', 'e2e');

interface RootNsView {
  taps: string[];
  rules: string[];
  addrs: string[];
}

const sh = (cmd: string, args: string[]): string | undefined => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 ? r.stdout : undefined;
};

/** What the root network namespace holds that a banger test could have leaked. */
function rootNsView(): RootNsView {
  const taps = (sh('ip', ['-o', 'link', 'show']) ?? '')
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
    .filter((n): n is string => Boolean(n?.startsWith('bgr')));
  // Packet counters change while a rule is in use (a banger the host runs itself):
  // left out, so only a rule that appeared counts as new.
  const rules = [
    ...(sh('iptables-save', []) ?? '')
      .split('\n')
      .filter((l) => /banger/i.test(l))
      .map((l) => l.replace(/\[\d+:\d+\]/g, '').trim()),
    ...(sh('nft', ['list', 'ruleset']) ?? '')
      .split('\n')
      .filter((l) => /banger/i.test(l))
      .map((l) => `nft: ${l.replace(/counter packets \d+ bytes \d+/g, 'counter').trim()}`),
  ];
  const privateRange = /^(10\.|172\.(1[6-9]|2\d|3[01])\.|192\.168\.)/;
  const addrs = (sh('ip', ['-o', '-4', 'addr', 'show']) ?? '')
    .split('\n')
    .map((l) => /^\d+: (\S+)\s+inet (\S+)/.exec(l))
    .filter((m): m is RegExpExecArray => Boolean(m && privateRange.test(m[2]!)))
    .map((m) => `${m[2]} on ${m[1]}`);
  return { taps, rules, addrs };
}

const SHM_DIR = '/dev/shm';

/** Guest RAM files and migration socket dirs on /dev/shm (src/vmm/qemu/ramFile.ts). */
function shmView(): string[] {
  try {
    return fs
      .readdirSync(SHM_DIR)
      .filter((n) => /^banger-(mig-.+|[0-9a-f]+\.ram)$/.test(n))
      .map((n) => path.join(SHM_DIR, n));
  } catch {
    return [];
  }
}

interface Proc {
  pid: number;
  cmd: string;
}

/** Live processes (not zombies) whose environment says this test process owns them. */
function ownedProcesses(): Proc[] {
  const out: Proc[] = [];
  for (const name of fs.readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (/\) [ZX] /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))) continue;
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
      const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      const vmmOfOurs = /^\S*(qemu-system|firecracker)/.test(cmd) && cmd.includes(E2E_STATE);
      if (env.includes(`BANGER_TEST_OWNER=${TEST_OWNER}`) || vmmOfOurs) out.push({ pid, cmd });
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

function ownedNamespaces(): string[] {
  return (sh('ip', ['netns', 'list']) ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`bgt-${OWNER_TAG}-`));
}

const newSince = (before: string[], now: string[]): string[] =>
  now.filter((x) => !before.includes(x));

/** Everything the sweep finds, one line each (empty when clean). */
export async function findLeaks(
  before: RootNsView,
  tmp: string,
  shmBefore: string[] = [],
): Promise<string[]> {
  // Processes that are on their way out get a moment to finish exiting.
  let procs = ownedProcesses();
  for (let i = 0; i < 50 && procs.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    procs = ownedProcesses();
  }
  const now = rootNsView();
  let tmpLeft: string[] = [];
  try {
    tmpLeft = fs.readdirSync(tmp).map((n) => path.join(tmp, n));
  } catch {
    // removed already: nothing left
  }
  return [
    ...procs.map((p) => `process ${p.pid} still runs: ${p.cmd.slice(0, 200)}`),
    ...ownedNamespaces().map((n) => `network namespace ${n} was not removed`),
    ...newSince(before.taps, now.taps).map((t) => `tap ${t} in the root network namespace`),
    ...newSince(before.rules, now.rules).map((r) => `firewall rule in the root namespace: ${r}`),
    ...newSince(before.addrs, now.addrs).map((a) => `private address in the root namespace: ${a}`),
    ...tmpLeft.map((f) => `temp file left: ${f}`),
    ...newSince(shmBefore, shmView()).map((f) => `left on /dev/shm: ${f}`),
  ];
}

declare global {
  var __bangerLeakSweep: boolean | undefined;
}

if (!isRunnerParent && !globalThis.__bangerLeakSweep) {
  globalThis.__bangerLeakSweep = true;
  // Everything this process starts inherits the owner mark (sandboxes pass it on to their daemons).
  process.env.BANGER_TEST_OWNER = TEST_OWNER;
  // A private TMPDIR: whatever is left in it at the end was left by this file.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `bgt-${OWNER_TAG}-tmp-`));
  process.env.TMPDIR = tmp;
  const before = rootNsView();
  const shmBefore = shmView();
  // Judged when the file is done: after its tests and all of its `after` hooks (a
  // root-level `after` registered here would run before the file's own). A leak
  // makes the file's process exit 1, which fails the file in the test run.
  let swept = false;
  process.on('beforeExit', () => {
    if (swept) return;
    swept = true;
    void (async () => {
      const file = path.basename(process.argv[1] ?? '?');
      const leaks = await findLeaks(before, tmp, shmBefore);
      fs.rmSync(tmp, { recursive: true, force: true });
      if (leaks.length > 0) {
        process.stderr.write(
          `leak sweep after ${file}: the tests left ${leaks.length} thing(s) behind:\n  ${leaks.join('\n  ')}\n`,
        );
        process.exitCode = 1;
      }
    })();
  });
}
