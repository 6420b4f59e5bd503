import { routes } from '../../api/routes.js';
import type { VmService } from '../../vm/service.js';
import type { ApiServer } from '../http.js';

/** Snapshot routes (`vm snapshot|restore|fork`, `snapshot list|show|delete`) → the VM service. */
export function registerSnapshotRoutes(server: ApiServer, vms: VmService): void {
  server.stream(routes.vmSnapshot, ({ params, body, signal }, emit) =>
    vms.snapshot(params.ref, body.name, emit, signal),
  );
  server.stream(routes.vmFork, ({ params, body, signal }, emit) =>
    vms.fork(params.ref, { name: body.name, count: body.count }, emit, signal),
  );
  server.stream(routes.snapshotRestore, ({ params, body, signal }, emit) =>
    vms.restore(params.ref, body.name, emit, signal),
  );
  server.json(routes.snapshotList, () => ({ snapshots: vms.snapshotList() }));
  server.json(routes.snapshotPrune, () => vms.snapshotPrune());
  server.json(routes.snapshotShow, ({ params }) => vms.snapshotShow(params.ref));
  server.json(routes.snapshotDelete, ({ params }) => vms.snapshotDelete(params.ref));
}
