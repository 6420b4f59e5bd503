import { z } from 'zod';
import { qBool, qInt, route } from './route.js';
import {
  CompletionNamesSchema,
  DoctorResultSchema,
  ShutdownRequestSchema,
  ShutdownResponseSchema,
  StatusSchema,
} from './schemas/daemon.js';

/** The daemon API, version 1. Every route the CLI or TUI may call is listed here. */
export const API_VERSION = 'v1';
/** Largest request body the daemon accepts. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** Header carrying the client's / daemon's build identity. */
export const VERSION_HEADER = 'x-banger-version';

export const routes = {
  status: route({ id: 'status', method: 'GET', path: '/v1/status', response: StatusSchema }),
  shutdown: route({
    id: 'shutdown',
    method: 'POST',
    path: '/v1/daemon/shutdown',
    body: ShutdownRequestSchema,
    response: ShutdownResponseSchema,
    versionExempt: true,
  }),
  daemonLogs: route({
    id: 'daemonLogs',
    method: 'GET',
    path: '/v1/daemon/logs',
    kind: 'text',
    query: z.object({ follow: qBool.optional(), tail: qInt.optional() }).strict(),
    versionExempt: true,
  }),
  doctor: route({
    id: 'doctor',
    method: 'POST',
    path: '/v1/doctor',
    kind: 'stream',
    response: DoctorResultSchema,
  }),
  completionNames: route({
    id: 'completionNames',
    method: 'GET',
    path: '/v1/completion/names',
    response: CompletionNamesSchema,
    versionExempt: true,
  }),
};

export type Routes = typeof routes;
