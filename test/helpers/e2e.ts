import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { catalogImage, DEFAULT_IMAGE } from './image-cache.js';
import { testNetnsName } from './owner.js';
import {
  E2E_DIR,
  makeSandbox,
  runProcess,
  type RunOptions,
  type RunResult,
  type Sandbox,
} from './sandbox.js';

/**
 * The end-to-end VM environment. Every e2e file gets a fresh network
 * namespace (the daemon and the VMs live in it; nothing private-range touches
 * the root namespace), a fresh config and runtime dir, and a state/cache dir
 * shared by the e2e files of this checkout so the default kernel and image are
 * built once (`.cache/e2e/`, or BANGER_E2E_DIR). e2e files run one at a time.
 */
export { E2E_DIR };

export const isRoot = (): boolean => process.getuid?.() === 0;

export interface VmEnv {
  ns: string;
  sb: Sandbox;
  /** Run the CLI inside the namespace. */
  run(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** Run the CLI and parse --json output; throws with stderr on failure. */
  json<T>(args: string[]): Promise<T>;
  /** Run a command inside the namespace. */
  sh(cmd: string[]): Promise<RunResult>;
  /** A VM name unique to this env; remembered for cleanup. */
  name(prefix: string): string;
  /** Remember a VM name banger made (e.g. `vm fork`'s children) for cleanup. */
  adopt(name: string): void;
  cleanup(): Promise<void>;
}

/**
 * Make sure the default kernel and the catalog images asked for exist in the
 * shared state, pulling them with a daemon in the root namespace (pulls only
 * download and build files; no bridge or address is created until a VM starts).
 */
async function prepareArtifacts(sb: Sandbox, images: readonly string[]): Promise<void> {
  const steps = [['kernel', 'pull', 'debian-cloud-6.1']];
  for (const name of images) {
    // Each image is built once per change of its inputs (test/helpers/image-cache.ts).
    const img = await catalogImage(name);
    // Re-registering updates in place: the shared state always points at the current build.
    steps.push([
      'image',
      'register',
      '--name',
      name,
      '--rootfs',
      img.rootfs,
      '--work-seed',
      img.workSeed,
      '--kernel-ref',
      'debian-cloud-6.1',
    ]);
  }
  for (const args of steps) {
    const r = await sb.run(args, { timeoutMs: 20 * 60_000 });
    if (r.code !== 0) throw new Error(`banger ${args.join(' ')} failed: ${r.stderr}`);
  }
  await sb.run(['daemon', 'stop']);
}

export async function vmEnv(
  label: string,
  opts: {
    config?: string;
    env?: Record<string, string>;
    /** Catalog images to register in the shared state (default: the default image). */
    images?: readonly string[];
  } = {},
): Promise<VmEnv> {
  const ns = testNetnsName(label, randomBytes(3).toString('hex'));
  fs.mkdirSync(path.join(E2E_DIR, 'state'), { recursive: true });
  fs.mkdirSync(path.join(E2E_DIR, 'cache'), { recursive: true });
  // Warm start off unless a test turns it on: the state directory (and so boot snapshots) is
  // shared by every e2e file, which must each see the cold boots they test.
  const config = opts.config ?? '';
  const sb = await makeSandbox({
    config: /^\s*warm_start\s*=/m.test(config) ? config : `warm_start = false\n${config}`,
    env: {
      BANGER_STATE_DIR: path.join(E2E_DIR, 'state'),
      BANGER_CACHE_DIR: path.join(E2E_DIR, 'cache'),
      ...opts.env,
    },
  });
  try {
    await prepareArtifacts(sb, opts.images ?? [DEFAULT_IMAGE]);
  } catch (e) {
    await sb.cleanup();
    throw e;
  }
  const add = await runProcess('ip', ['netns', 'add', ns]);
  if (add.code !== 0) {
    await sb.cleanup();
    throw new Error(`ip netns add ${ns}: ${add.stderr}`);
  }
  await runProcess('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  const names: string[] = [];
  const wrap = ['ip', 'netns', 'exec', ns];
  const env: VmEnv = {
    ns,
    sb,
    run: (args, o = {}) => sb.run(args, { timeoutMs: 5 * 60_000, ...o, wrap }),
    async json<T>(args: string[]): Promise<T> {
      const r = await env.run([...args, '--json']);
      if (r.code !== 0) throw new Error(`banger ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
      return JSON.parse(r.stdout) as T;
    },
    sh: (cmd) => runProcess(wrap[0]!, [...wrap.slice(1), ...cmd]),
    name(prefix) {
      const n = `${prefix}-${randomBytes(2).toString('hex')}`;
      names.push(n);
      return n;
    },
    adopt(name) {
      names.push(name);
    },
    /**
     * Deletes this env's VMs, stops its daemon, removes its files and its
     * namespace; throws when any of that fails (after trying all of it), so a
     * leak fails the test file instead of going unnoticed.
     */
    async cleanup() {
      const problems: string[] = [];
      try {
        const r = await env.run(['vm', 'list', '--json'], { timeoutMs: 60_000 });
        if (r.code !== 0) throw new Error(`vm list failed (${r.code}): ${r.stderr.trim()}`);
        const mine = (JSON.parse(r.stdout) as { name: string }[])
          .map((v) => v.name)
          .filter((n) => names.includes(n));
        if (mine.length) {
          const d = await env.run(['vm', 'delete', '--force', ...mine], { timeoutMs: 120_000 });
          if (d.code !== 0)
            throw new Error(`vm delete ${mine.join(' ')} failed (${d.code}): ${d.stderr.trim()}`);
        }
      } catch (e) {
        problems.push((e as Error).message);
      }
      const stop = await env
        .run(['daemon', 'stop'], { timeoutMs: 60_000 })
        .catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message }));
      if (stop.code !== 0)
        problems.push(`daemon stop failed (${stop.code}): ${stop.stderr.trim()}`);
      await sb.cleanup();
      const del = await runProcess('ip', ['netns', 'del', ns]);
      if (del.code !== 0) problems.push(`ip netns del ${ns} failed: ${del.stderr.trim()}`);
      if (problems.length)
        throw new Error(`cleaning up the e2e env ${ns} failed:\n  ${problems.join('\n  ')}`);
    },
  };
  return env;
}
