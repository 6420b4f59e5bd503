import { spawn, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../errors.js';

/**
 * The edge where banger runs other programs. Every external command goes
 * through `run`, which captures output and turns failures into one-line
 * BangerErrors naming the tool and what it said.
 */
export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Don't throw on a non-zero exit; return the result. */
  allowFailure?: boolean;
  /** Called with each chunk of stderr/stdout (for build logs). */
  onOutput?: (chunk: Buffer, stream: 'stdout' | 'stderr') => void;
  /** Describes the step for error messages, e.g. "building rootfs". */
  what?: string;
  maxBuffer?: number;
}

export interface RunResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const maxBuffer = opts.maxBuffer ?? 64 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const spawnOpts: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      signal: opts.signal,
    };
    const child = spawn(cmd, args, spawnOpts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) {
      timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    }
    const collect = (buf: Buffer[], stream: 'stdout' | 'stderr') => (c: Buffer) => {
      opts.onOutput?.(c, stream);
      size += c.length;
      if (size <= maxBuffer) buf.push(c);
    };
    child.stdout!.on('data', collect(out, 'stdout'));
    child.stderr!.on('data', collect(err, 'stderr'));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      reject(spawnFailure(e, { cmd, what: opts.what }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const result: RunResult = {
        code: code ?? -1,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (result.code !== 0 && !opts.allowFailure) {
        const last =
          lastLine(result.stderr) ||
          lastLine(result.stdout) ||
          (signal ? `killed by ${signal}` : `exit ${code}`);
        reject(
          new BangerError(
            'tool_failed',
            `${opts.what ? `${opts.what}: ` : ''}${path.basename(cmd)} failed: ${last}`,
            {
              details: { cmd, args, code, stderr: result.stderr.slice(-4000) },
            },
          ),
        );
        return;
      }
      resolve(result);
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/**
 * A child process that could not run, as the one-line error users see: the
 * tool is missing (with the package to install), or the run was cancelled.
 * Other errors pass through.
 */
export function spawnFailure(
  e: NodeJS.ErrnoException,
  o: { cmd: string; what?: string; install?: string },
): Error {
  if (e.code === 'ENOENT')
    return new BangerError(
      'tool_missing',
      `${o.cmd} not found${o.what ? ` (needed for ${o.what})` : ''}`,
      { hint: o.install ? `install ${o.install}` : 'install it (see `banger doctor`)' },
    );
  if (e.name === 'AbortError')
    return new BangerError('cancelled', `${o.what ?? o.cmd} was cancelled`);
  return e;
}

export const lastLine = (s: string): string =>
  s
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .pop() ?? '';

/** Find an executable on PATH (or check an explicit path). */
export function which(cmd: string, envPath = process.env.PATH ?? ''): string | undefined {
  const candidates = cmd.includes('/')
    ? [cmd]
    : [...envPath.split(':'), '/usr/sbin', '/sbin'].filter(Boolean).map((d) => path.join(d, cmd));
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
    } catch {
      // next
    }
  }
  return undefined;
}
