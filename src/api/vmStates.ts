/**
 * The states a VM can be in, as the API reports them and the vms table stores
 * them. Declared here, in the contract, so the CLI, the daemon and the store
 * agree without the API depending on the store.
 */
export const VM_STATES = [
  'created',
  'starting',
  'running',
  'stopping',
  'stopped',
  /** `vm suspend`: memory and device state saved in the VM's directory, no VMM, address kept. */
  'suspended',
  'crashed',
  'error',
] as const;
export type VmState = (typeof VM_STATES)[number];
