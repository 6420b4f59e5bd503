/** Rootfs trees from tar layers: the public surface of src/image/tree. */
export {
  RootfsTree,
  type ApplyLayerOptions,
  type ApplyLayerResult,
  type EntryMeta,
  type EntryType,
  type TreeEntry,
  type TreeStats,
} from './rootfsTree.js';
export { DEFAULT_LIMITS, type TreeLimits } from './rules.js';
export type { Compression } from './decompress.js';
export {
  createStagedTree,
  chooseStaging,
  type StagingChoice,
  type StagingOptions,
} from './staging.js';
