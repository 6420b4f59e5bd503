/** OCI image pull: the public surface of src/image/oci. */
export {
  pullOci,
  pullOciToExt4,
  type PullOciOptions,
  type PullOciToExt4Options,
  type PulledImage,
  type PulledLayer,
} from './pull.js';
export {
  parseReference,
  formatReference,
  defaultImageName,
  isLoopbackHost,
  type ImageRef,
} from './reference.js';
export type { ImageConfig, Platform } from './manifest.js';
export { BlobCache } from './blobs.js';
