import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { run, type RunResult } from '../../src/util/exec.js';
import { netnsRunner, type NetRunner } from '../../src/network/runner.js';
import { testNetnsName } from '../helpers/owner.js';

/**
 * Network namespaces for tests. Everything a network test creates (bridges,
 * taps, veths, addresses, firewall rules, sysctls) lives in namespaces made
 * here; the root namespace gets no private-range address and no traffic.
 * Each namespace and each process started in one is removed in cleanup.
 */

export interface Netns {
  name: string;
  /** Runs a command inside the namespace (no throw on non-zero exit). */
  exec(cmd: string, args: string[], input?: string): Promise<RunResult>;
  /** Like exec, but throws with the command's stderr on failure. */
  must(cmd: string, args: string[], input?: string): Promise<RunResult>;
  runner: NetRunner;
}

export interface NetnsLab {
  add(label?: string): Promise<Netns>;
  /** Starts a long-running process inside `ns`; killed (by pid) in cleanup. */
  spawnIn(ns: Netns, cmd: string, args: string[]): ChildProcess;
  cleanup(): Promise<void>;
}

export async function canUseNetns(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for ip netns)';
  const probe = testNetnsName('probe', randomBytes(3).toString('hex'));
  const r = await run('ip', ['netns', 'add', probe], { allowFailure: true }).catch(() => undefined);
  if (!r || r.code !== 0) return `ip netns add failed: ${r?.stderr.trim() ?? 'ip not found'}`;
  await run('ip', ['netns', 'del', probe], { allowFailure: true });
  return undefined;
}

export function netnsLab(): NetnsLab {
  const names: string[] = [];
  const children: ChildProcess[] = [];
  return {
    async add(label = 'x') {
      const name = testNetnsName(`net-${label}`, randomBytes(4).toString('hex'));
      await run('ip', ['netns', 'add', name]);
      names.push(name);
      const runner = netnsRunner(name);
      const exec = (cmd: string, args: string[], input?: string) =>
        runner(cmd, args, input === undefined ? undefined : { input });
      const ns: Netns = {
        name,
        runner,
        exec,
        async must(cmd, args, input) {
          const r = await exec(cmd, args, input);
          if (r.code !== 0) {
            throw new Error(`[${name}] ${cmd} ${args.join(' ')} → ${r.code}: ${r.stderr.trim()}`);
          }
          return r;
        },
      };
      await ns.must('ip', ['link', 'set', 'dev', 'lo', 'up']);
      return ns;
    },
    spawnIn(ns, cmd, args) {
      // `ip netns exec` execs the command, so the child pid is the process itself.
      const child = spawn('ip', ['netns', 'exec', ns.name, cmd, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      return child;
    },
    async cleanup() {
      for (const c of children) {
        if (c.exitCode === null && c.signalCode === null && c.pid) {
          const gone = new Promise((r) => c.once('exit', r));
          c.kill('SIGKILL');
          await gone;
        }
      }
      // Deleting a namespace removes its interfaces (and veth peers), rules and sysctls.
      const failed: string[] = [];
      for (const n of names.splice(0).reverse()) {
        const r = await run('ip', ['netns', 'del', n], { allowFailure: true });
        if (r.code !== 0) failed.push(`ip netns del ${n}: ${r.stderr.trim()}`);
      }
      if (failed.length) throw new Error(`network test cleanup failed: ${failed.join('; ')}`);
    },
  };
}

/** Moves one end of a new veth pair into `inner` as `innerName`. */
export async function vethPair(
  outer: Netns,
  outerName: string,
  inner: Netns,
  innerName: string,
): Promise<void> {
  const tmp = `v${randomBytes(4).toString('hex')}`;
  await outer.must('ip', ['link', 'add', outerName, 'type', 'veth', 'peer', 'name', tmp]);
  await outer.must('ip', ['link', 'set', 'dev', tmp, 'netns', inner.name]);
  await inner.must('ip', ['link', 'set', 'dev', tmp, 'name', innerName]);
  await inner.must('ip', ['link', 'set', 'dev', innerName, 'up']);
  await outer.must('ip', ['link', 'set', 'dev', outerName, 'up']);
}

/** A TCP server inside `ns` that answers every connection with the peer's address. */
export async function whoamiServer(lab: NetnsLab, ns: Netns, port: number): Promise<void> {
  const script = `require('net').createServer((s) => s.end(s.remoteAddress.replace(/^::ffff:/, ''))).listen(${port}, () => console.log('ready'));`;
  const child = lab.spawnIn(ns, process.execPath, ['-e', script]);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server in ${ns.name} did not start`)), 10_000);
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server in ${ns.name} exited with ${code}`));
    });
  });
}

/** Connects from `ns` to host:port; resolves with what the server said, or undefined. */
export async function tcpAsk(
  ns: Netns,
  host: string,
  port: number,
  timeoutMs = 1000,
): Promise<string | undefined> {
  const script = `const s=require('net').connect(${port},'${host}');let d='';s.setTimeout(${timeoutMs},()=>process.exit(3));s.on('data',(c)=>d+=c);s.on('end',()=>{process.stdout.write(d);process.exit(0)});s.on('error',()=>process.exit(2));`;
  const r = await ns.exec(process.execPath, ['-e', script]);
  return r.code === 0 ? r.stdout : undefined;
}

/** iptables-save without volatile parts (comments with dates, counters). */
export async function iptablesSave(ns: Netns): Promise<string> {
  const r = await ns.must('iptables-save', []);
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

export const count = (text: string, re: RegExp): number =>
  text.split('\n').filter((l) => re.test(l)).length;
