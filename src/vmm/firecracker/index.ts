/**
 * The Firecracker driver's public surface, for the driver registry (the only
 * module outside this folder that may import it). Everything else in this
 * folder is an implementation detail.
 */
export {
  createFirecrackerDriver,
  apiSocketPath,
  FC_FILES,
  FIRECRACKER_CAPABILITIES,
  FirecrackerDriver,
  type FirecrackerDriverOptions,
} from './driver.js';
