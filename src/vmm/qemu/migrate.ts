import { BangerError } from '../../errors.js';
import { sleep } from '../../util/sleep.js';

/**
 * The QMP side of saving and restoring a QEMU VM (see docs/snapshots.md).
 * Guest RAM is a shared file mapping that stays out of the migration stream
 * (capability x-ignore-shared); the stream carries only device state and goes
 * over a Unix socket between QEMU and the daemon. The command sequences are
 * pure; running them takes anything with `execute` (a QmpClient).
 */

export interface QmpCommand {
  execute: string;
  arguments?: Record<string, unknown>;
}

/** What runs QMP commands (QmpClient; a fake in tests). */
export interface QmpExecutor {
  execute(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
}

/**
 * QEMU 7.2 throttles a migration to 32 MiB/s by default; the stream is local,
 * so let it run at disk speed (bytes per second).
 */
export const MIGRATION_MAX_BANDWIDTH = 8 * 1024 * 1024 * 1024;

const ignoreShared: QmpCommand = {
  execute: 'migrate-set-capabilities',
  arguments: { capabilities: [{ capability: 'x-ignore-shared', state: true }] },
};

/** Outgoing (save): RAM left out, full speed, then the stream to the daemon's socket. */
export function saveCommands(socketPath: string): QmpCommand[] {
  return [
    ignoreShared,
    {
      execute: 'migrate-set-parameters',
      arguments: { 'max-bandwidth': MIGRATION_MAX_BANDWIDTH },
    },
    { execute: 'migrate', arguments: { uri: `unix:${socketPath}` } },
  ];
}

/** Incoming (restore, QEMU started with `-incoming defer`): RAM left out, QEMU listens on the socket. */
export function restoreCommands(socketPath: string): QmpCommand[] {
  return [ignoreShared, { execute: 'migrate-incoming', arguments: { uri: `unix:${socketPath}` } }];
}

export type MigrationProgress =
  | { state: 'running'; status: string }
  | { state: 'completed' }
  | { state: 'failed'; reason: string };

/** Read a `query-migrate` answer (pure). No status yet counts as running. */
export function migrationProgress(reply: unknown): MigrationProgress {
  const r = (reply ?? {}) as { status?: unknown; 'error-desc'?: unknown };
  const status = typeof r.status === 'string' ? r.status : 'none';
  if (status === 'completed') return { state: 'completed' };
  if (status === 'failed' || status === 'cancelled') {
    const desc = typeof r['error-desc'] === 'string' ? r['error-desc'] : status;
    return { state: 'failed', reason: desc };
  }
  return { state: 'running', status };
}

/** Run the commands in order; the first failure is thrown (QmpClient names the command). */
export async function runCommands(
  qmp: QmpExecutor,
  cmds: QmpCommand[],
  timeoutMs = 5000,
): Promise<void> {
  for (const c of cmds) await qmp.execute(c.execute, c.arguments, timeoutMs);
}

export interface AwaitMigration {
  /** Names the operation in errors, e.g. `saving vm 'dev'`. */
  what: string;
  timeoutMs: number;
  pollMs?: number;
  signal?: AbortSignal;
  /** Another failure to watch meanwhile (the stream side): returns its error, if any. */
  failure?: () => Error | undefined;
}

/** Poll `query-migrate` until completed; throws QEMU's reason when it failed, or a timeout. */
export async function awaitMigration(qmp: QmpExecutor, o: AwaitMigration): Promise<void> {
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const p = migrationProgress(await qmp.execute('query-migrate', undefined, 5000));
    if (p.state === 'completed') return;
    if (p.state === 'failed')
      throw new BangerError('vmm_failed', `${o.what}: QEMU's migration failed: ${p.reason}`);
    const other = o.failure?.();
    if (other) throw new BangerError('vmm_failed', `${o.what}: ${other.message}`, { cause: other });
    if (o.signal?.aborted) throw new BangerError('cancelled', `${o.what} was cancelled`);
    if (Date.now() > deadline)
      throw new BangerError(
        'timeout',
        `${o.what}: the migration did not complete within ${o.timeoutMs / 1000}s (${p.status})`,
      );
    await sleep(o.pollMs ?? 10);
  }
}
