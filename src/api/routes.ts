import { z } from 'zod';
import { qBool, qInt, route } from './route.js';
import {
  CompletionNamesSchema,
  DoctorResultSchema,
  ShutdownRequestSchema,
  ShutdownResponseSchema,
  StatusSchema,
} from './schemas/daemon.js';
import {
  DeletedSchema,
  ImageBuildRequestSchema,
  ImageCatalogEntrySchema,
  ImageName,
  ImagePullRequestSchema,
  ImageRegisterRequestSchema,
  ImageViewSchema,
  KernelCatalogEntrySchema,
  KernelPullRequestSchema,
  KernelViewSchema,
} from './schemas/images.js';
import {
  VM_ACTIONS,
  VmActionRequestSchema,
  VmCreateRequestSchema,
  VmCreateResultSchema,
  VmResultsSchema,
  VmSetRequestSchema,
  VmStatsSchema,
  VmViewSchema,
} from './schemas/vms.js';
import { VmPortsResultSchema } from './schemas/ports.js';

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

  // ---- kernels ------------------------------------------------------------
  kernelList: route({
    id: 'kernelList',
    method: 'GET',
    path: '/v1/kernels',
    response: z.object({ kernels: z.array(KernelViewSchema) }),
  }),
  kernelCatalog: route({
    id: 'kernelCatalog',
    method: 'GET',
    path: '/v1/kernels/catalog',
    response: z.object({ kernels: z.array(KernelCatalogEntrySchema) }),
  }),
  kernelPull: route({
    id: 'kernelPull',
    method: 'POST',
    path: '/v1/kernels/pull',
    kind: 'stream',
    body: KernelPullRequestSchema,
    response: KernelViewSchema,
  }),
  kernelDelete: route({
    id: 'kernelDelete',
    method: 'DELETE',
    path: '/v1/kernels/:name',
    params: z.object({ name: ImageName }),
    response: DeletedSchema,
  }),

  // ---- images ---------------------------------------------------------------
  imageList: route({
    id: 'imageList',
    method: 'GET',
    path: '/v1/images',
    response: z.object({ images: z.array(ImageViewSchema) }),
  }),
  imageCatalog: route({
    id: 'imageCatalog',
    method: 'GET',
    path: '/v1/images/catalog',
    response: z.object({ images: z.array(ImageCatalogEntrySchema) }),
  }),
  imageShow: route({
    id: 'imageShow',
    method: 'GET',
    path: '/v1/images/:name',
    params: z.object({ name: z.string() }),
    response: ImageViewSchema,
  }),
  imagePull: route({
    id: 'imagePull',
    method: 'POST',
    path: '/v1/images/pull',
    kind: 'stream',
    body: ImagePullRequestSchema,
    response: ImageViewSchema,
  }),
  imageBuild: route({
    id: 'imageBuild',
    method: 'POST',
    path: '/v1/images/build',
    kind: 'stream',
    body: ImageBuildRequestSchema,
    response: ImageViewSchema,
  }),
  imageRegister: route({
    id: 'imageRegister',
    method: 'POST',
    path: '/v1/images/register',
    body: ImageRegisterRequestSchema,
    response: ImageViewSchema,
  }),
  imagePromote: route({
    id: 'imagePromote',
    method: 'POST',
    path: '/v1/images/:name/promote',
    kind: 'stream',
    params: z.object({ name: z.string() }),
    response: ImageViewSchema,
  }),
  imageDelete: route({
    id: 'imageDelete',
    method: 'DELETE',
    path: '/v1/images/:name',
    params: z.object({ name: z.string() }),
    response: DeletedSchema,
  }),

  // ---- vms ------------------------------------------------------------------
  vmList: route({
    id: 'vmList',
    method: 'GET',
    path: '/v1/vms',
    response: z.object({ vms: z.array(VmViewSchema) }),
  }),
  vmShow: route({
    id: 'vmShow',
    method: 'GET',
    path: '/v1/vms/:ref',
    params: z.object({ ref: z.string() }),
    response: VmViewSchema,
  }),
  vmCreate: route({
    id: 'vmCreate',
    method: 'POST',
    path: '/v1/vms',
    kind: 'stream',
    body: VmCreateRequestSchema,
    response: VmCreateResultSchema,
  }),
  vmAction: route({
    id: 'vmAction',
    method: 'POST',
    path: '/v1/vms/actions/:action',
    kind: 'stream',
    params: z.object({ action: z.enum(VM_ACTIONS) }),
    body: VmActionRequestSchema,
    response: VmResultsSchema,
  }),
  vmSet: route({
    id: 'vmSet',
    method: 'POST',
    path: '/v1/vms/set',
    kind: 'stream',
    body: VmSetRequestSchema,
    response: VmResultsSchema,
  }),
  vmLogs: route({
    id: 'vmLogs',
    method: 'GET',
    path: '/v1/vms/:ref/logs',
    kind: 'text',
    params: z.object({ ref: z.string() }),
    query: z.object({ follow: qBool.optional(), tail: qInt.optional() }).strict(),
  }),
  vmSsh: route({
    id: 'vmSsh',
    method: 'GET',
    path: '/v1/vms/:ref/ssh',
    kind: 'upgrade',
    params: z.object({ ref: z.string() }),
    query: z.object({ port: qInt.optional() }).strict(),
  }),
  vmStats: route({
    id: 'vmStats',
    method: 'GET',
    path: '/v1/stats',
    query: z.object({ refs: z.string().optional() }).strict(),
    response: z.object({ vms: z.array(VmStatsSchema) }),
  }),
  vmPorts: route({
    id: 'vmPorts',
    method: 'GET',
    path: '/v1/ports',
    /** Comma-separated VM names or id prefixes; none: every running VM. */
    query: z.object({ refs: z.string().optional() }).strict(),
    response: VmPortsResultSchema,
  }),
};

export type Routes = typeof routes;
