/**
 * How a workspace copy carries git metadata: `shallow` (the current commit and
 * its tree, plus the working tree as an overlay) or `full_copy` (the whole
 * `.git`). Declared without zod, so the CLI can check `--mode` cheaply.
 */
export const WORKSPACE_MODES = ['shallow', 'full_copy'] as const;
export type WorkspaceModeName = (typeof WORKSPACE_MODES)[number];

/** Where `vm run PATH` puts the copy, and `vm workspace prepare`'s default. */
export const DEFAULT_GUEST_PATH = '/root/repo';
