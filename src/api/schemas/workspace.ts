import { z } from 'zod';
import { WORKSPACE_MODES } from '../workspaceModes.js';
import { VmCreateRequestSchema, VmSpecSchema, VmViewSchema } from './vms.js';

/** Wire shapes of workspaces: `vm run PATH` and `vm workspace prepare`. */

export { WORKSPACE_MODES, type WorkspaceModeName } from '../workspaceModes.js';

/** A host path as the CLI resolved it (the daemon runs on the same host, as the same user). */
const HostPath = z.string().startsWith('/', 'must be an absolute path').max(4096);
const GitRef = z.string().min(1).max(1024);

export const WorkspaceSourceSchema = z
  .object({
    path: HostPath,
    mode: z.enum(WORKSPACE_MODES).default('shallow'),
  })
  .strict();

export const WorkspaceRunRequestSchema = z
  .object({
    vm: VmCreateRequestSchema,
    workspace: WorkspaceSourceSchema.extend({
      /** Create and check out this branch in the copy... */
      branch: GitRef.optional(),
      /** ...starting at this commit of the host repository (default HEAD). */
      from: GitRef.optional(),
    }).strict(),
  })
  .strict();
export type WorkspaceRunRequest = z.infer<typeof WorkspaceRunRequestSchema>;

export const WorkspacePrepareRequestSchema = WorkspaceSourceSchema.extend({
  guestPath: z.string().min(1).max(1024).optional(),
  readonly: z.boolean().default(false),
}).strict();
export type WorkspacePrepareRequest = z.infer<typeof WorkspacePrepareRequestSchema>;

export const WorkspaceResultSchema = z.object({
  /** Host directory that was copied (the repository's top, or PATH itself). */
  source: z.string(),
  guestPath: z.string(),
  /** Where PATH lands in the guest (a subdirectory of guestPath when PATH was one in the repo). */
  workdir: z.string(),
  git: z.boolean(),
  mode: z.enum(WORKSPACE_MODES),
  branch: z.string().nullable(),
  head: z.string().nullable(),
  /** Files and links written, and their bytes. */
  files: z.number(),
  bytes: z.number(),
  /** Files the last copy made that the host no longer has, removed now. */
  removed: z.number(),
  /** Files unchanged since the last copy (not sent again). */
  unchanged: z.number(),
  readonly: z.boolean(),
  /** mise install started in the background, logging here. */
  toolingLog: z.string().nullable(),
  /** Shell run in the guest before the command of `vm run` (branch switch, tooling, cd). */
  setup: z.string(),
});
export type WorkspaceResult = z.infer<typeof WorkspaceResultSchema>;

export const WorkspaceRunResultSchema = z.object({
  vm: VmViewSchema,
  spec: VmSpecSchema,
  workspace: WorkspaceResultSchema,
});
export type WorkspaceRunResult = z.infer<typeof WorkspaceRunResultSchema>;
