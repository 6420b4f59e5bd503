import fs from 'node:fs';
import { currentPaths, type Paths } from '../config/paths.js';
import { readHostFacts } from '../config/host.js';
import { ConfigSource } from '../config/source.js';
import type { BangerError } from '../errors.js';
import { toBangerError } from '../errors.js';
import { openStore, type Store } from '../store/index.js';
import { createFileLogger, type Logger } from '../util/log.js';
import { IDENTITY } from '../version.js';
import { createApp } from './app.js';
import { acquireDaemonLock, type DaemonLock } from './lock.js';
import { Operations } from './ops.js';
import { KeyedMutex } from '../util/mutex.js';
import { ensurePrivateDir } from '../util/privateDir.js';

/**
 * bangerd: the per-user daemon. Started detached by the CLI (or by hand /
 * systemd). Startup reports success or the first error on the fd named by
 * BANGER_READY_FD so the CLI that spawned it can print a precise message.
 */

const SHUTDOWN_GRACE_MS = 10 * 60_000;

function reportReady(
  msg: { ready: true; pid: number } | { error: ReturnType<BangerError['toJSON']> },
): void {
  const fd = Number(process.env.BANGER_READY_FD);
  if (!Number.isInteger(fd) || fd < 3) return;
  try {
    fs.writeSync(fd, `${JSON.stringify(msg)}\n`);
    fs.closeSync(fd);
  } catch {
    // the parent went away; nothing to tell
  }
}

async function main(): Promise<void> {
  if (process.argv.includes('--version')) {
    console.log(`bangerd ${IDENTITY}`);
    return;
  }
  const paths: Paths = currentPaths();
  let lock: DaemonLock | undefined;
  let store: Store | undefined;
  let logger: Logger | undefined;
  try {
    ensurePrivateDir(paths.runtimeDir);
    fs.mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
    const configSource = new ConfigSource(paths.configFile, process.env);
    const config = configSource.current().config;
    lock = acquireDaemonLock(paths.lock);
    logger = createFileLogger(paths.log, config.logLevel);
    store = openStore(paths.db);
    const ops = new Operations();
    let shutdownStarted = false;
    const startedAt = new Date();
    const log = logger;
    const st = store;
    const heldLock = lock;

    const shutdown = async (reason: string): Promise<void> => {
      if (shutdownStarted) return;
      shutdownStarted = true;
      ops.beginShutdown();
      log.info({ reason, inflight: ops.count }, 'shutting down');
      const timer = setTimeout(() => {
        log.warn({ inflight: ops.list() }, 'in-flight operations did not finish; exiting anyway');
        finish(1);
      }, SHUTDOWN_GRACE_MS);
      timer.unref();
      await ops.idle();
      finish(0);
    };
    const finish = (code: number): void => {
      vms.shutdown();
      void dns.stop();
      server.server.close();
      server.server.closeAllConnections();
      try {
        fs.rmSync(paths.socket, { force: true });
      } catch {
        // already gone
      }
      st.close();
      log.info({ code }, 'stopped');
      heldLock.release();
      process.exit(code);
    };

    const { server, vms, dns, recover } = createApp({
      paths,
      configSource,
      logger: log,
      store: st,
      host: readHostFacts(),
      ops,
      locks: new KeyedMutex(),
      startedAt,
      requestShutdown: () => void shutdown('api'),
    });

    // Before the socket answers, so no request meets a half-made VM, image or kernel.
    try {
      await recover();
    } catch (e) {
      log.error({ err: e }, 'recovering interrupted operations failed');
    }
    // We hold the lock, so any socket file left here belongs to a dead daemon.
    fs.rmSync(paths.socket, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.server.listen(paths.socket, () => {
        server.server.off('error', reject);
        resolve();
      });
    });
    fs.chmodSync(paths.socket, 0o600);
    process.on('SIGTERM', () => void shutdown('SIGTERM'));
    process.on('SIGINT', () => void shutdown('SIGINT'));
    process.on('SIGHUP', () => log.info('SIGHUP ignored (config reloads automatically)'));
    // DNS first, so adopting running VMs can route `.vm` on their bridge; a bind failure is only reported.
    await dns.start();
    try {
      await vms.adopt();
    } catch (e) {
      log.error({ err: e }, 'adopting VMs failed');
    }
    vms.startSampler();
    log.info({ version: IDENTITY, socket: paths.socket, pid: process.pid }, 'bangerd started');
    reportReady({ ready: true, pid: process.pid });
  } catch (e) {
    const err = toBangerError(e);
    logger?.error({ err: e }, 'startup failed');
    reportReady({ error: err.toJSON() });
    if (!process.env.BANGER_READY_FD) console.error(`bangerd: ${err.line}`);
    store?.close();
    lock?.release();
    process.exitCode = 1;
  }
}

process.on('uncaughtException', (e) => {
  console.error(`bangerd: uncaught exception: ${e.stack ?? e.message}`);
  process.exit(70);
});

void main();
