/**
 * Where each route of the daemon API lives on the wire: method, path and how
 * the answer travels. This table has no schemas, so the CLI can reach the
 * daemon without loading zod (~80 ms of start-up); `routes.ts` adds the zod
 * schemas of each route, and TypeScript requires both tables to name the same
 * routes.
 */
export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * How the response travels: one JSON body, NDJSON progress events ending in a
 * result (`stream`), NDJSON events with no end that last until the client
 * leaves (`watch`), raw text, or an upgraded byte stream.
 */
export type RouteKind = 'json' | 'stream' | 'watch' | 'text' | 'upgrade';

export interface Endpoint {
  method: Method;
  path: string;
  /** Default `json`. */
  kind?: RouteKind;
  /** Accepted even when the client's version differs from the daemon's. */
  versionExempt?: boolean;
}

/** The daemon API version; every path starts with it. */
export const API_VERSION = 'v1';
/** Largest request body the daemon accepts. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** Header carrying the client's / daemon's build identity. */
export const VERSION_HEADER = 'x-banger-version';
/** Content type of streamed progress events. */
export const NDJSON = 'application/x-ndjson';

export const endpoints = {
  status: { method: 'GET', path: '/v1/status' },
  shutdown: { method: 'POST', path: '/v1/daemon/shutdown', versionExempt: true },
  daemonLogs: { method: 'GET', path: '/v1/daemon/logs', kind: 'text', versionExempt: true },
  doctor: { method: 'POST', path: '/v1/doctor', kind: 'stream' },
  completionNames: { method: 'GET', path: '/v1/completion/names', versionExempt: true },

  kernelList: { method: 'GET', path: '/v1/kernels' },
  kernelCatalog: { method: 'GET', path: '/v1/kernels/catalog' },
  kernelPull: { method: 'POST', path: '/v1/kernels/pull', kind: 'stream' },
  kernelDelete: { method: 'DELETE', path: '/v1/kernels/:name' },

  imageList: { method: 'GET', path: '/v1/images' },
  imageCatalog: { method: 'GET', path: '/v1/images/catalog' },
  imageShow: { method: 'GET', path: '/v1/images/:name' },
  imagePull: { method: 'POST', path: '/v1/images/pull', kind: 'stream' },
  imageBuild: { method: 'POST', path: '/v1/images/build', kind: 'stream' },
  imageRegister: { method: 'POST', path: '/v1/images/register' },
  imagePromote: { method: 'POST', path: '/v1/images/:name/promote', kind: 'stream' },
  imageDelete: { method: 'DELETE', path: '/v1/images/:name' },

  vmList: { method: 'GET', path: '/v1/vms' },
  vmShow: { method: 'GET', path: '/v1/vms/:ref' },
  vmCreate: { method: 'POST', path: '/v1/vms', kind: 'stream' },
  vmAction: { method: 'POST', path: '/v1/vms/actions/:action', kind: 'stream' },
  vmSet: { method: 'POST', path: '/v1/vms/set', kind: 'stream' },
  vmLogs: { method: 'GET', path: '/v1/vms/:ref/logs', kind: 'text' },
  vmSsh: { method: 'GET', path: '/v1/vms/:ref/ssh', kind: 'upgrade' },
  vmStats: { method: 'GET', path: '/v1/stats' },
  vmPorts: { method: 'GET', path: '/v1/ports' },
  /** Every VM, then each change, as NDJSON (a path no VM name can shadow). */
  vmEvents: { method: 'GET', path: '/v1/events/vms', kind: 'watch' },

  vmSnapshot: { method: 'POST', path: '/v1/vms/:ref/snapshot', kind: 'stream' },
  vmFork: { method: 'POST', path: '/v1/vms/:ref/fork', kind: 'stream' },
  snapshotList: { method: 'GET', path: '/v1/snapshots' },
  snapshotPrune: { method: 'POST', path: '/v1/snapshots/prune' },
  snapshotShow: { method: 'GET', path: '/v1/snapshots/:ref' },
  snapshotDelete: { method: 'DELETE', path: '/v1/snapshots/:ref' },
  snapshotRestore: { method: 'POST', path: '/v1/snapshots/:ref/restore', kind: 'stream' },

  workspaceRun: { method: 'POST', path: '/v1/workspaces/run', kind: 'stream' },
  workspacePrepare: { method: 'POST', path: '/v1/vms/:ref/workspace', kind: 'stream' },
} as const satisfies Record<string, Endpoint>;

export type RouteId = keyof typeof endpoints;

/** Whether requests to this route carry a JSON body. */
export const hasBody = (e: Endpoint): boolean => e.method !== 'GET' && e.method !== 'DELETE';

/** Fill a path pattern: '/v1/vms/:ref' + {ref: 'a b'} → '/v1/vms/a%20b'. */
export function buildPath(pattern: string, params: Record<string, unknown> = {}): string {
  return pattern.replace(/:([a-zA-Z]+)/g, (_, name: string) => {
    const v = params[name];
    if (v === undefined) throw new Error(`missing path parameter ${name} for ${pattern}`);
    return encodeURIComponent(String(v));
  });
}

/** Match a concrete path against a pattern; returns decoded params or undefined. */
export function matchPath(pattern: string, pathname: string): Record<string, string> | undefined {
  const pp = pattern.split('/');
  const ap = pathname.split('/');
  if (pp.length !== ap.length) return undefined;
  const out: Record<string, string> = {};
  for (let i = 0; i < pp.length; i++) {
    const p = pp[i]!;
    const a = ap[i]!;
    if (p.startsWith(':')) {
      if (a.length === 0) return undefined;
      try {
        out[p.slice(1)] = decodeURIComponent(a);
      } catch {
        return undefined;
      }
    } else if (p !== a) return undefined;
  }
  return out;
}
