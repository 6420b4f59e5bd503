import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../errors.js';

/**
 * The full log of one image build (`<state>/image-build/<name>-<time>.log`):
 * every line of every tool, plus banger's own step lines. Progress events carry
 * only the summary; this file has the rest.
 */
export class BuildLog {
  private readonly fd: number;
  private closed = false;

  private constructor(readonly path: string) {
    this.fd = fs.openSync(path, 'a', 0o600);
  }

  static open(dir: string, name: string, now = new Date()): BuildLog {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const stamp = now.toISOString().replace(/[:.]/g, '').replace('T', '-').slice(0, 17);
    return new BuildLog(path.join(dir, `${name}-${stamp}.log`));
  }

  write(chunk: string | Buffer): void {
    if (this.closed) return;
    if (typeof chunk === 'string') fs.writeSync(this.fd, chunk);
    else fs.writeSync(this.fd, chunk);
  }

  line(s: string): void {
    this.write(`[banger ${new Date().toISOString()}] ${s}\n`);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

/** Keep the newest `keep` logs of `name`; older ones are removed. */
export function pruneBuildLogs(dir: string, name: string, keep = 5): void {
  let files: string[];
  try {
    files = fs.readdirSync(dir);
  } catch {
    return;
  }
  const mine = files
    .filter(
      (f) =>
        f.startsWith(`${name}-`) &&
        f.endsWith('.log') &&
        /^\d{8}-\d{6}/.test(f.slice(name.length + 1)),
    )
    .sort()
    .reverse();
  for (const f of mine.slice(keep)) fs.rmSync(path.join(dir, f), { force: true });
}

export interface SpawnLoggedOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  signal?: AbortSignal;
  log: BuildLog;
  /** Each complete output line (stdout and stderr). */
  onLine?: (line: string) => void;
  /** What the command does, for errors ("building the rootfs"). */
  what: string;
  /** After SIGTERM on abort, wait this long before SIGKILL (the tool cleans up). */
  killGraceMs?: number;
}

/**
 * Run a long tool with its output going to the build log. On abort the tool
 * gets SIGTERM (mmdebstrap removes its chroot), then SIGKILL after a grace
 * period; the promise settles only once the process is gone.
 */
export function spawnLogged(cmd: string, args: string[], o: SpawnLoggedOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) {
      reject(new BangerError('cancelled', `${o.what} was cancelled`));
      return;
    }
    o.log.line(
      `$ ${cmd} ${args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')}`,
    );
    // Own process group: on abort the whole tree (mmdebstrap, apt, dpkg, the
    // unshared worker) gets the signal, so mmdebstrap cleans up at once
    // instead of finishing the build first.
    const child = spawn(cmd, args, {
      cwd: o.cwd,
      env: o.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const signalGroup = (sig: NodeJS.Signals) => {
      try {
        if (child.pid) process.kill(-child.pid, sig);
      } catch {
        child.kill(sig);
      }
    };
    const tail: string[] = [];
    const partial = { stdout: '', stderr: '' };
    const onData = (stream: 'stdout' | 'stderr') => (c: Buffer) => {
      o.log.write(c);
      const text = partial[stream] + c.toString('utf8');
      const lines = text.split('\n');
      partial[stream] = lines.pop() ?? '';
      for (const l of lines) {
        tail.push(l);
        if (tail.length > 200) tail.shift();
        o.onLine?.(l);
      }
    };
    child.stdout.on('data', onData('stdout'));
    child.stderr.on('data', onData('stderr'));
    let aborted = false;
    let killer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      aborted = true;
      o.log.line(`cancelled: sending SIGTERM to ${cmd} (pid ${child.pid})`);
      signalGroup('SIGTERM');
      killer = setTimeout(() => signalGroup('SIGKILL'), o.killGraceMs ?? 30_000);
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e: NodeJS.ErrnoException) => {
      o.signal?.removeEventListener('abort', onAbort);
      if (e.code === 'ENOENT') {
        reject(
          new BangerError('tool_missing', `${cmd} not found (needed for ${o.what})`, {
            hint: `install it (see \`banger doctor\`)`,
          }),
        );
      } else reject(e);
    });
    child.on('close', (code, sig) => {
      o.signal?.removeEventListener('abort', onAbort);
      if (killer) clearTimeout(killer);
      o.log.line(`${cmd} exited with ${code ?? sig}`);
      if (aborted) {
        reject(new BangerError('cancelled', `${o.what} was cancelled`));
      } else if (code !== 0) {
        reject(
          new BangerError(
            'tool_failed',
            `${o.what}: ${path.basename(cmd)} failed: ${failureLine(tail) || `exit ${code ?? sig}`}`,
            {
              hint: `see the build log ${o.log.path}`,
              details: { cmd, code, signal: sig, tail: tail.slice(-30) },
            },
          ),
        );
      } else resolve();
    });
  });
}

/** The most telling line of a failed tool's output: apt/mmdebstrap `E:` lines first. */
export function failureLine(lines: string[]): string {
  const trimmed = lines.map((l) => l.trim()).filter(Boolean);
  const errs = trimmed.filter(
    (l) => /^E: /.test(l) && !/^E: (mmdebstrap failed|apt-get .* failed)/.test(l),
  );
  return (
    errs[0] ??
    trimmed.filter((l) => /^E: /.test(l))[0] ??
    trimmed[trimmed.length - 1] ??
    ''
  ).replace(/^E: /, '');
}
