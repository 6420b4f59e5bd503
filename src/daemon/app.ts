import fs from 'node:fs';
import { routes } from '../api/routes.js';
import type { Status } from '../api/schemas/daemon.js';
import type { Paths } from '../config/paths.js';
import type { ConfigSource } from '../config/source.js';
import type { HostFacts } from '../config/vmDefaults.js';
import { DoctorService } from '../doctor/service.js';
import { KernelService } from '../image/kernel/service.js';
import { ImageService } from '../image/service.js';
import type { Store } from '../store/index.js';
import { which } from '../util/exec.js';
import type { Logger } from '../util/log.js';
import { IDENTITY, VERSION } from '../version.js';
import { resolveVmm } from '../vmm/resolve.js';
import { followFile, tailFile } from '../util/tail.js';
import { ApiServer } from './http.js';
import type { Operations } from './ops.js';
import type { KeyedMutex } from '../util/mutex.js';
import { registerImageRoutes } from './routes/images.js';
import { registerSnapshotRoutes } from './routes/snapshots.js';
import { registerVmRoutes } from './routes/vms.js';
import { registerWorkspaceRoutes } from './routes/workspace.js';
import { VmService } from '../vm/service.js';
import { WorkspaceService } from '../workspace/service.js';
import { VmNetwork } from '../vm/net.js';
import { PortsService } from '../vm/ports.js';
import { CHECKS } from '../doctor/checks.js';
import { dnsChecks } from '../doctor/dns.js';
import { networkChecks } from '../doctor/network.js';
import { DnsService } from '../network/dns/index.js';

/**
 * The daemon is a composition of services. Each service owns its tables and
 * its locks; this module wires them to the API routes and nothing more.
 */
export interface DaemonContext {
  paths: Paths;
  configSource: ConfigSource;
  logger: Logger;
  store: Store;
  host: HostFacts;
  ops: Operations;
  locks: KeyedMutex;
  startedAt: Date;
  /** Ask the process to shut down gracefully (after in-flight operations). */
  requestShutdown(): void;
}

export interface App {
  server: ApiServer;
  vms: VmService;
  /** Started by the daemon once its socket listens; stopped on shutdown. */
  dns: DnsService;
  /**
   * Daemon start, before VMs are adopted: operations a previous daemon left
   * unfinished are completed or rolled back (their intents), then images and
   * kernels no row names are swept (docs/reliability.md).
   */
  recover(): Promise<void>;
}

export function createApp(ctx: DaemonContext): App {
  const config = () => ctx.configSource.current().config;
  const server = new ApiServer({
    version: IDENTITY,
    logger: ctx.logger,
    track: (name, fn) => ctx.ops.track(name, fn),
    isShuttingDown: () => ctx.ops.isShuttingDown,
    inflight: () => ctx.ops.count,
  });

  // What every service is built from; each declares the part it needs (VmServiceDeps, …).
  const deps = {
    paths: ctx.paths,
    config,
    logger: ctx.logger,
    store: ctx.store,
    locks: ctx.locks,
  };
  const kernels = new KernelService(deps);
  const images = new ImageService(deps, kernels);
  registerImageRoutes(server, kernels, images);
  const dns = new DnsService({ config, vms: ctx.store.vms, logger: ctx.logger });
  // The bridge carries the per-link `.vm` routing: re-applied whenever it is (re)created.
  const network = new VmNetwork(config, ctx.logger, undefined, (bridge, created) =>
    dns.routeBridge(bridge, created),
  );
  const vms = new VmService({ ...deps, kernels, images, host: ctx.host, network });
  registerVmRoutes(server, vms);
  registerSnapshotRoutes(server, vms);
  registerWorkspaceRoutes(server, new WorkspaceService({ ...deps, vms }));
  const ports = new PortsService({
    vms: ctx.store.vms,
    agent: (vm) => vms.agentFor(vm),
    checkLiveness: () => vms.checkLiveness(),
  });
  server.json(routes.vmPorts, async ({ query }) => ({
    vms: await ports.list(query.refs ? query.refs.split(',').filter(Boolean) : []),
  }));

  const doctor = new DoctorService({
    config,
    stateDir: ctx.paths.stateDir,
    runtimeDir: ctx.paths.runtimeDir,
    host: ctx.host,
    checks: [...CHECKS, ...networkChecks(), ...dnsChecks(() => dns.status())],
  });

  server.json(routes.status, async (): Promise<Status> => {
    const c = config();
    const dnsStatus = await dns.status();
    const vmCounts = ctx.store.vms.counts();
    return {
      apiVersion: 'v1',
      version: VERSION,
      build: IDENTITY,
      pid: process.pid,
      startedAt: ctx.startedAt.toISOString(),
      uptimeMs: Date.now() - ctx.startedAt.getTime(),
      socket: ctx.paths.socket,
      logPath: ctx.paths.log,
      stateDir: ctx.paths.stateDir,
      configFile: ctx.paths.configFile,
      logLevel: c.logLevel,
      dnsListen: dnsStatus.listener.address ?? `${c.dnsListen.host}:${c.dnsListen.port}`,
      dns: dnsStatus,
      vmm: resolveVmm(c, (cmd) => which(cmd)),
      accel: c.accel,
      counts: {
        vms: vmCounts,
        vmsTotal: Object.values(vmCounts).reduce((a, b) => a + b, 0),
        images: ctx.store.images.list().length,
        kernels: ctx.store.kernels.list().length,
      },
      inflight: ctx.ops.count,
    };
  });

  server.json(routes.shutdown, ({ body }) => {
    const inflight = ctx.ops.count;
    if (body.ifIdle && inflight > 0) return { stopping: false, inflight, pid: process.pid };
    setImmediate(() => ctx.requestShutdown());
    return { stopping: true, inflight, pid: process.pid };
  });

  server.text(routes.daemonLogs, async ({ query, signal }, write) => {
    const tail = query.tail ?? 200;
    if (!fs.existsSync(ctx.paths.log)) return;
    write(await tailFile(ctx.paths.log, tail));
    if (query.follow) await followFile(ctx.paths.log, write, signal);
  });

  server.stream(routes.doctor, (_input, emit) => doctor.run(emit));

  server.json(routes.completionNames, () => ({
    vms: ctx.store.vms.list().map((v) => v.name),
    images: ctx.store.images.list().map((i) => i.name),
    kernels: ctx.store.kernels.list().map((k) => k.name),
    snapshots: ctx.store.snapshots.list().map((s) => s.name),
  }));

  const recover = async (): Promise<void> => {
    const report = await ctx.store.journal.recover((msg, rec) =>
      ctx.logger.warn({ intent: rec }, msg),
    );
    if (report.recovered.length || report.failed.length || report.skipped)
      ctx.logger.info({ report }, 'interrupted operations recovered');
    for (const f of report.failed)
      ctx.logger.error({ intent: f }, 'an interrupted operation could not be recovered');
    const images_ = images.sweep();
    const kernels_ = await kernels.sweep();
    if (images_.length || kernels_.length)
      ctx.logger.info({ images: images_, kernels: kernels_ }, 'orphan files removed');
  };

  return { server, vms, dns, recover };
}
