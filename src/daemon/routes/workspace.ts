import { routes } from '../../api/routes.js';
import type { WorkspaceService } from '../../workspace/service.js';
import type { ApiServer } from '../http.js';

/** Workspace routes → the workspace service. */
export function registerWorkspaceRoutes(server: ApiServer, workspaces: WorkspaceService): void {
  server.stream(routes.workspaceRun, ({ body, signal }, emit) =>
    workspaces.run(body, emit, signal),
  );
  server.stream(routes.workspacePrepare, ({ params, body, signal }, emit) =>
    workspaces.prepare(params.ref, body, emit, signal),
  );
}
