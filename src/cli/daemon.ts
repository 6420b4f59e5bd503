import fs from 'node:fs';
import path from 'node:path';
import { ApiClient } from '../api/client.js';
import type { Paths } from '../config/paths.js';
import { BangerError, type ErrorShape } from '../errors.js';
import { checkRuntimeDir } from '../util/privateDir.js';
import { isProcessAlive } from '../util/proc.js';
import { sleep } from '../util/sleep.js';
import { socketAnswers } from '../util/socket.js';
import { IDENTITY, PACKAGE_ROOT } from '../version.js';

export { socketAnswers };

/**
 * Reaching bangerd: connect to its socket, start it (detached) when nothing
 * answers, and replace it when it runs a different build and is idle.
 */

/** How long a starting daemon may take to listen; generous because a loaded host is slow. */
const START_TIMEOUT_MS = 60_000;

/** bangerd's compiled entry (the CLI may run from a bundle elsewhere under dist/). */
export const daemonEntry = (): string =>
  path.join(PACKAGE_ROOT, 'dist', 'src', 'daemon', 'main.js');

export function newClient(paths: Paths, timeoutMs?: number): ApiClient {
  return new ApiClient({ socketPath: paths.socket, version: IDENTITY, timeoutMs });
}

async function waitFor(
  cond: () => Promise<boolean>,
  timeoutMs: number,
  stepMs = 50,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await sleep(stepMs);
  }
  return cond();
}

/**
 * Only one CLI spawns the daemon at a time: it claims `bangerd.starting` in the
 * runtime dir (O_EXCL, holding its pid). Others seeing a live claim wait for
 * the socket instead of spawning their own bangerd, which would only lose the
 * lock race and slow the winner down. A claim whose holder died is taken over.
 */
function claimStart(paths: Paths): { release(): void } | { holder: number } {
  const file = path.join(path.dirname(paths.lock), 'bangerd.starting');
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return { release: () => fs.rmSync(file, { force: true }) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const holder = Number.parseInt(readOr(file, ''), 10);
    if (holder > 0 && holder !== process.pid && isProcessAlive(holder)) return { holder };
    fs.rmSync(file, { force: true }); // its holder died mid-start
  }
  return { release: () => undefined };
}

function readOr(file: string, fallback: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
}

const notStarted = (paths: Paths): BangerError =>
  new BangerError(
    'daemon_unavailable',
    `bangerd did not start within ${START_TIMEOUT_MS / 1000}s`,
    {
      hint: `see ${paths.daemonStderr} and ${paths.log}`,
    },
  );

/** Start bangerd unless another CLI is already starting it; return once it listens. */
export async function startDaemon(paths: Paths): Promise<void> {
  const claim = claimStart(paths);
  if ('holder' in claim) {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (await socketAnswers(paths.socket)) return;
      if (!isProcessAlive(claim.holder)) return startDaemon(paths); // it gave up: our turn
      await sleep(50);
    }
    throw notStarted(paths);
  }
  try {
    if (await socketAnswers(paths.socket)) return; // started between our probe and the claim
    await spawnDaemon(paths);
  } finally {
    claim.release();
  }
}

/** Spawn bangerd detached and wait until it listens (or says why it cannot). */
async function spawnDaemon(paths: Paths): Promise<void> {
  const { spawn } = await import('node:child_process');
  fs.mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
  const out = fs.openSync(paths.daemonStderr, 'a', 0o600);
  const child = spawn(process.execPath, [daemonEntry()], {
    detached: true,
    stdio: ['ignore', out, out, 'pipe'],
    env: { ...process.env, BANGER_READY_FD: '3' },
  });
  fs.closeSync(out);
  const pipe = child.stdio[3] as NodeJS.ReadableStream;
  const message = await new Promise<string>((resolve) => {
    let buf = '';
    const timer = setTimeout(() => resolve(''), START_TIMEOUT_MS);
    pipe.on('data', (c: Buffer) => {
      buf += c.toString();
      if (buf.includes('\n')) {
        clearTimeout(timer);
        resolve(buf.trim());
      }
    });
    pipe.on('end', () => {
      clearTimeout(timer);
      resolve(buf.trim());
    });
    child.on('error', () => {
      clearTimeout(timer);
      resolve('');
    });
  });
  child.unref();
  (pipe as unknown as { destroy(): void }).destroy();
  let parsed: { ready?: boolean; error?: ErrorShape } = {};
  try {
    parsed = message ? (JSON.parse(message) as typeof parsed) : {};
  } catch {
    // fall through to the generic error
  }
  if (parsed.ready) return;
  if (parsed.error?.code === 'daemon_running') {
    // Another CLI started one at the same moment; wait for it to listen.
    if (await waitFor(() => socketAnswers(paths.socket), START_TIMEOUT_MS)) return;
  }
  if (parsed.error) throw BangerError.fromJSON(parsed.error);
  throw notStarted(paths);
}

const isConnectFailure = (e: unknown): boolean =>
  e instanceof BangerError &&
  e.code === 'daemon_unavailable' &&
  /\((ENOENT|ECONNREFUSED)\)$/.test(e.message);

/** Wait until the daemon's socket stops answering. */
export function waitForStop(paths: Paths, timeoutMs: number): Promise<boolean> {
  return waitFor(async () => !(await socketAnswers(paths.socket, 500)), timeoutMs, 100);
}

/**
 * Run fn against the daemon, starting it first if needed and replacing an
 * idle daemon of another build. fn is retried only when its request never
 * reached a daemon (connect failure) or was refused for the version.
 */
export async function withDaemon<T>(
  paths: Paths,
  fn: (client: ApiClient) => Promise<T>,
  opts: { autostart?: boolean } = {},
): Promise<T> {
  checkRuntimeDir(paths.runtimeDir, paths.socket);
  const client = newClient(paths);
  try {
    return await fn(client);
  } catch (e) {
    if (isConnectFailure(e) && opts.autostart !== false) {
      await startDaemon(paths);
      return fn(client);
    }
    if (e instanceof BangerError && e.code === 'version_mismatch' && e.details) {
      await replaceDaemon(paths, client, e);
      return fn(client);
    }
    throw e;
  }
}

async function replaceDaemon(
  paths: Paths,
  client: ApiClient,
  mismatch: BangerError,
): Promise<void> {
  // Answered by a daemon of another build: read defensively.
  const r = await client.call('shutdown', { body: { ifIdle: true } });
  if (r?.stopping !== true) {
    throw new BangerError(
      'daemon_busy',
      `bangerd runs another version (${String(mismatch.details?.daemon)}) and has ${String(r?.inflight ?? 'some')} operation(s) in flight`,
      { hint: 'retry when they finish, or stop it with `banger daemon stop`' },
    );
  }
  if (!(await waitForStop(paths, 60_000))) {
    throw new BangerError('timeout', 'the old bangerd did not stop within 60s', {
      hint: 'stop it with `banger daemon stop`',
    });
  }
  await startDaemon(paths);
}
