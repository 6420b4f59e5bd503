import { z } from 'zod';
import type { RouteId } from './endpoints.js';
import { qBool, qInt, route, type RouteDef } from './route.js';
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
  VmEventSchema,
  VmResultsSchema,
  VmSetRequestSchema,
  VmStatsSchema,
  VmViewSchema,
} from './schemas/vms.js';
import {
  WorkspacePrepareRequestSchema,
  WorkspaceResultSchema,
  WorkspaceRunRequestSchema,
  WorkspaceRunResultSchema,
} from './schemas/workspace.js';
import { VmPortsResultSchema } from './schemas/ports.js';
import {
  SnapshotPruneResultSchema,
  SnapshotViewSchema,
  VmForkRequestSchema,
  VmForkResultSchema,
  VmRestoreRequestSchema,
  VmRestoreResultSchema,
  VmSnapshotRequestSchema,
} from './schemas/snapshots.js';

export { API_VERSION, MAX_BODY_BYTES, VERSION_HEADER } from './endpoints.js';

/**
 * The daemon API, version 1: the schemas of every route of endpoints.ts. The
 * daemon serves these; the CLI imports this module only to validate a body it
 * sends (see client.ts).
 */
export const routes = {
  status: route('status', { response: StatusSchema }),
  shutdown: route('shutdown', {
    body: ShutdownRequestSchema,
    response: ShutdownResponseSchema,
  }),
  daemonLogs: route('daemonLogs', {
    query: z.object({ follow: qBool.optional(), tail: qInt.optional() }).strict(),
  }),
  doctor: route('doctor', {
    response: DoctorResultSchema,
  }),
  completionNames: route('completionNames', {
    response: CompletionNamesSchema,
  }),

  // ---- kernels ------------------------------------------------------------
  kernelList: route('kernelList', {
    response: z.object({ kernels: z.array(KernelViewSchema) }),
  }),
  kernelCatalog: route('kernelCatalog', {
    response: z.object({ kernels: z.array(KernelCatalogEntrySchema) }),
  }),
  kernelPull: route('kernelPull', {
    body: KernelPullRequestSchema,
    response: KernelViewSchema,
  }),
  kernelDelete: route('kernelDelete', {
    params: z.object({ name: ImageName }),
    response: DeletedSchema,
  }),

  // ---- images ---------------------------------------------------------------
  imageList: route('imageList', {
    response: z.object({ images: z.array(ImageViewSchema) }),
  }),
  imageCatalog: route('imageCatalog', {
    response: z.object({ images: z.array(ImageCatalogEntrySchema) }),
  }),
  imageShow: route('imageShow', {
    params: z.object({ name: z.string() }),
    response: ImageViewSchema,
  }),
  imagePull: route('imagePull', {
    body: ImagePullRequestSchema,
    response: ImageViewSchema,
  }),
  imageBuild: route('imageBuild', {
    body: ImageBuildRequestSchema,
    response: ImageViewSchema,
  }),
  imageRegister: route('imageRegister', {
    body: ImageRegisterRequestSchema,
    response: ImageViewSchema,
  }),
  imagePromote: route('imagePromote', {
    params: z.object({ name: z.string() }),
    response: ImageViewSchema,
  }),
  imageDelete: route('imageDelete', {
    params: z.object({ name: z.string() }),
    response: DeletedSchema,
  }),

  // ---- vms ------------------------------------------------------------------
  vmList: route('vmList', {
    response: z.object({ vms: z.array(VmViewSchema) }),
  }),
  vmShow: route('vmShow', {
    params: z.object({ ref: z.string() }),
    response: VmViewSchema,
  }),
  vmCreate: route('vmCreate', {
    body: VmCreateRequestSchema,
    response: VmCreateResultSchema,
  }),
  vmAction: route('vmAction', {
    params: z.object({ action: z.enum(VM_ACTIONS) }),
    body: VmActionRequestSchema,
    response: VmResultsSchema,
  }),
  vmSet: route('vmSet', {
    body: VmSetRequestSchema,
    response: VmResultsSchema,
  }),
  vmLogs: route('vmLogs', {
    params: z.object({ ref: z.string() }),
    query: z.object({ follow: qBool.optional(), tail: qInt.optional() }).strict(),
  }),
  vmSsh: route('vmSsh', {
    params: z.object({ ref: z.string() }),
    query: z.object({ port: qInt.optional() }).strict(),
  }),
  // ---- snapshots ------------------------------------------------------------
  /** `vm snapshot`: pause, save memory + device state and the disks, resume. */
  vmSnapshot: route('vmSnapshot', {
    params: z.object({ ref: z.string() }),
    body: VmSnapshotRequestSchema,
    response: SnapshotViewSchema,
  }),
  /** `vm fork`: a temporary snapshot, COUNT new VMs restored from it; the parent keeps running. */
  vmFork: route('vmFork', {
    params: z.object({ ref: z.string() }),
    body: VmForkRequestSchema,
    response: VmForkResultSchema,
  }),
  snapshotList: route('snapshotList', {
    response: z.object({ snapshots: z.array(SnapshotViewSchema) }),
  }),
  /** `snapshot prune`: remove the boot snapshots (warm start) no restore is using. */
  snapshotPrune: route('snapshotPrune', { response: SnapshotPruneResultSchema }),
  snapshotShow: route('snapshotShow', {
    params: z.object({ ref: z.string() }),
    response: SnapshotViewSchema,
  }),
  snapshotDelete: route('snapshotDelete', {
    params: z.object({ ref: z.string() }),
    response: DeletedSchema,
  }),
  /** `vm restore`: a new VM from a snapshot. */
  snapshotRestore: route('snapshotRestore', {
    params: z.object({ ref: z.string() }),
    body: VmRestoreRequestSchema,
    response: VmRestoreResultSchema,
  }),
  // ---- workspaces -----------------------------------------------------------
  /** `vm run PATH`: create a VM with PATH copied onto its work disk before it boots. */
  workspaceRun: route('workspaceRun', {
    body: WorkspaceRunRequestSchema,
    response: WorkspaceRunResultSchema,
  }),
  /** `vm workspace prepare`: copy (or update a copy) into a running VM. */
  workspacePrepare: route('workspacePrepare', {
    params: z.object({ ref: z.string() }),
    body: WorkspacePrepareRequestSchema,
    response: WorkspaceResultSchema,
  }),
  vmStats: route('vmStats', {
    query: z.object({ refs: z.string().optional() }).strict(),
    response: z.object({ vms: z.array(VmStatsSchema) }),
  }),
  vmPorts: route('vmPorts', {
    /** Comma-separated VM names or id prefixes; none: every running VM. */
    query: z.object({ refs: z.string().optional() }).strict(),
    response: VmPortsResultSchema,
  }),
  /** A watch route: `response` is the schema of each event line. */
  vmEvents: route('vmEvents', { response: VmEventSchema }),
} satisfies Record<RouteId, RouteDef>;

export type Routes = typeof routes;
