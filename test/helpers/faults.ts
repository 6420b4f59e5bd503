import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ApiClient } from '../../src/api/client.js';
import { ImageStore } from '../../src/store/images.js';
import { Journal } from '../../src/store/journal.js';
import { KernelStore } from '../../src/store/kernels.js';
import { VmStore } from '../../src/store/vms.js';
import { checkIntegrity } from '../../src/vm/integrity.js';
import { processesUnder } from '../../src/vm/recover.js';
import { isActive } from '../../src/vm/records.js';
import { IDENTITY } from '../../src/version.js';
import { REPO_ROOT, type Sandbox } from './sandbox.js';

/**
 * Crash a real daemon at a fault point and look at what it left
 * (docs/reliability.md, "Fault injection"). The test starts bangerd itself
 * (as the CLI does: detached, readiness on fd 3) so that it knows when
 * recovery is over and which signal ended the daemon; requests go through
 * the API client in this process.
 */

export interface Daemon {
  pid: number;
  client: ApiClient;
  /** Resolves with how the process ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL it (idle: no operation is open) and wait until it is gone. */
  kill(): Promise<void>;
}

const BANGERD = path.join(REPO_ROOT, 'bin', 'bangerd');

/** Start bangerd for the sandbox (inside `wrap`, e.g. `ip netns exec NS`), with BANGER_FAULT if given. */
export async function startDaemon(
  sb: Sandbox,
  fault?: string,
  wrap: string[] = [],
): Promise<Daemon> {
  const out = fs.openSync(sb.paths.daemonStderr, 'a', 0o600);
  const env: NodeJS.ProcessEnv = { ...sb.env, BANGER_READY_FD: '3' };
  if (fault) env.BANGER_FAULT = fault;
  const [cmd, ...pre] = [...wrap, process.execPath, BANGERD];
  const child: ChildProcess = spawn(cmd!, pre, { stdio: ['ignore', out, out, 'pipe'], env });
  fs.closeSync(out);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const line = await new Promise<string>((resolve) => {
    let buf = '';
    const pipe = child.stdio[3] as NodeJS.ReadableStream;
    pipe.on('data', (c: Buffer) => {
      buf += c.toString();
      if (buf.includes('\n')) resolve(buf.trim());
    });
    pipe.on('end', () => resolve(buf.trim()));
  });
  if (!line.includes('"ready":true')) {
    child.kill('SIGKILL');
    throw new Error(`bangerd did not start: ${line || '(nothing on the readiness pipe)'}`);
  }
  return {
    pid: child.pid!,
    client: new ApiClient({ socketPath: sb.paths.socket, version: IDENTITY, timeoutMs: 60_000 }),
    exited,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Read the sandbox's state database (read-only, while a daemon may run). */
function withStore<T>(sb: Sandbox, fn: (s: Parameters<typeof checkIntegrity>[0]) => T): T {
  const db = new Database(sb.paths.db, { readonly: true, fileMustExist: true });
  try {
    return fn({
      vms: new VmStore(db),
      images: new ImageStore(db),
      kernels: new KernelStore(db),
      journal: new Journal(db),
    });
  } finally {
    db.close();
  }
}

/**
 * Every invariant of a recovered state, one line per violation: the store's
 * integrity (checkIntegrity), and no process working on a VM's files other
 * than the VMM its row records.
 */
export function violations(sb: Sandbox): string[] {
  return withStore(sb, (s) => {
    const problems = checkIntegrity(s, sb.paths);
    const vms = new Map(s.vms.list().map((v) => [v.id, v]));
    // ssh_config has an entry per VM and no other; known_hosts names no VM that is gone.
    const names = new Set(s.vms.list().map((v) => v.name));
    const read = (f: string): string => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
    const hosts = [...read(sb.paths.sshConfig).matchAll(/^Host (\S+)\.vm$/gm)].map((m) => m[1]!);
    if ([...hosts].sort().join(' ') !== [...names].sort().join(' '))
      problems.push(
        `ssh_config names ${hosts.join(', ') || 'no VM'}; the VMs are ${[...names].join(', ') || 'none'}`,
      );
    for (const line of read(sb.paths.knownHosts).split('\n')) {
      const alias = /^(\S+)\.vm /.exec(line)?.[1];
      if (alias && !names.has(alias))
        problems.push(`known_hosts keeps ${alias}.vm, a VM that is gone`);
    }
    for (const p of processesUnder(sb.paths.vmsDir)) {
      const vm = vms.get(p.vmId);
      if (!vm || !isActive(vm) || vm.pid !== p.pid)
        problems.push(`process ${p.pid} works on vm ${p.vmId}'s files but is not its VMM`);
    }
    return problems;
  });
}

/**
 * The violations once the daemon has settled: ssh_config is rewritten just
 * after a change of the table (on the next turn of the daemon's loop), so a
 * list that is not empty is read again for up to 5 s.
 */
export async function settledViolations(sb: Sandbox): Promise<string[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const v = violations(sb);
    if (v.length === 0 || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The VM named so, as the store has it (undefined: fully gone). */
export function vmRow(sb: Sandbox, name: string) {
  return withStore(sb, (s) => s.vms.byName(name));
}

export function imageRow(sb: Sandbox, name: string) {
  return withStore(sb, (s) => s.images.byName(name));
}
