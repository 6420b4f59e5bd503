import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolvePaths, type Paths } from '../../src/config/paths.js';

/**
 * A throwaway banger home for tests: temp config/state/cache/runtime dirs,
 * the real built CLI, and a cleanup that stops the daemon it started (by pid)
 * and removes every file.
 */
export const REPO_ROOT = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
);
export const CLI = path.join(REPO_ROOT, 'bin', 'banger');
/** State and caches shared by the e2e files of this checkout (default kernel and image built once). */
export const E2E_DIR = process.env.BANGER_E2E_DIR ?? path.join(REPO_ROOT, '.cache', 'e2e');

/**
 * What a user's shell passes to the daemon for outbound HTTPS (Debian mirror,
 * mise download): extra CA bundles (TLS-inspecting proxies) and proxy settings.
 */
export function networkEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const keys = [
    'NODE_EXTRA_CA_CERTS',
    'SSL_CERT_FILE',
    'SSL_CERT_DIR',
    'https_proxy',
    'HTTPS_PROXY',
    'http_proxy',
    'HTTP_PROXY',
    'no_proxy',
    'NO_PROXY',
    'npm_config_registry',
  ];
  const out: Record<string, string> = {};
  for (const k of keys) if (env[k]) out[k] = env[k]!;
  return out;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  input?: string;
  timeoutMs?: number;
  /** Prefix the command (e.g. ['ip', 'netns', 'exec', ns]). */
  wrap?: string[];
  cli?: string;
}

export interface Sandbox {
  root: string;
  env: Record<string, string>;
  paths: Paths;
  run(args: string[], opts?: RunOptions): Promise<RunResult>;
  writeConfig(text: string): void;
  daemonPid(): number | undefined;
  cleanup(): Promise<void>;
}

export function runProcess(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `timeout after ${opts.timeoutMs}ms: ${cmd} ${args.join(' ')}\nstdout: ${stdout}\nstderr: ${stderr}`,
        ),
      );
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    // A child that exits without reading its input closes the pipe: that EPIPE is not an error of the test.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

export async function makeSandbox(
  opts: { config?: string; env?: Record<string, string> } = {},
): Promise<Sandbox> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-'));
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    ...networkEnv(),
    HOME: path.join(root, 'home'),
    BANGER_CONFIG_DIR: path.join(root, 'config'),
    BANGER_STATE_DIR: path.join(root, 'state'),
    BANGER_CACHE_DIR: path.join(root, 'cache'),
    BANGER_RUNTIME_DIR: path.join(root, 'run'),
    // Each test daemon's DNS server on a free loopback port (daemon status says which).
    BANGER_DNS_LISTEN: '127.0.0.1:0',
    ...opts.env,
  };
  fs.mkdirSync(env.HOME!, { recursive: true });
  const paths = resolvePaths({ env, uid: process.getuid?.() ?? 0, home: env.HOME! });
  const sb: Sandbox = {
    root,
    env,
    paths,
    writeConfig(text) {
      fs.mkdirSync(paths.configDir, { recursive: true });
      fs.writeFileSync(paths.configFile, text);
    },
    run(args, o = {}) {
      const cli = o.cli ?? CLI;
      const [cmd, ...pre] = o.wrap ?? [];
      const fullEnv = { ...env, ...o.env } as NodeJS.ProcessEnv;
      for (const k of Object.keys(fullEnv)) if (fullEnv[k] === undefined) delete fullEnv[k];
      return cmd
        ? runProcess(cmd, [...pre, process.execPath, cli, ...args], {
            env: fullEnv,
            input: o.input,
            timeoutMs: o.timeoutMs,
          })
        : runProcess(process.execPath, [cli, ...args], {
            env: fullEnv,
            input: o.input,
            timeoutMs: o.timeoutMs,
          });
    },
    daemonPid() {
      try {
        const pid = Number(fs.readFileSync(`${paths.lock}.pid`, 'utf8').trim());
        return Number.isInteger(pid) && pid > 0 ? pid : undefined;
      } catch {
        return undefined;
      }
    },
    async cleanup() {
      const pid = sb.daemonPid();
      if (pid && isAlive(pid)) {
        process.kill(pid, 'SIGTERM');
        const deadline = Date.now() + 10_000;
        while (isAlive(pid) && Date.now() < deadline) await sleep(50);
        if (isAlive(pid)) process.kill(pid, 'SIGKILL');
      }
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
  if (opts.config !== undefined) sb.writeConfig(opts.config);
  return sb;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
