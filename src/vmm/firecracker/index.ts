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
export {
  checkFirecrackerCompat,
  firecrackerCompatProblem,
  detectKernelFormat,
  readKernelFormat,
  parseFirecrackerVersion,
  kvmAccess,
  ACPI_VIRTIO_MIN,
  FIRECRACKER_MIN,
  type CompatInput,
  type KernelFeatures,
  type KernelImageInfo,
  type FirecrackerVersion,
} from './compat.js';
export {
  connectVsock,
  listenVsock,
  vsockListenPath,
  AGENT_VSOCK_PORT,
  type VsockConnectOptions,
  type VsockListener,
} from './vsock.js';
export { firecrackerBootArgs, FIRECRACKER_BOOT_ARGS } from './requests.js';
