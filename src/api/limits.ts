/**
 * Limits of VM settings, shared by the API schemas, the config schema and the
 * CLI's own flag checks (which must not load zod). Each rule is phrased as the
 * fix a user reads after `error: invalid ...:`.
 */
export const VM_NAME_RE = /^[a-z0-9][a-z0-9-]{0,63}$/;
export const VM_NAME_RULE = 'use 1-64 lowercase letters, digits or dashes';

export const VCPU_MIN = 1;
export const VCPU_MAX = 64;
export const VCPU_RULE = `use a whole number from ${VCPU_MIN} to ${VCPU_MAX}`;

export const MEMORY_MIN_MIB = 128;
export const MEMORY_RULE = `use at least ${MEMORY_MIN_MIB}M, e.g. 2G or 2048 (MiB)`;

/** The work disk holds /root; mkfs and the image's seed need room. */
export const DISK_MIN_BYTES = 1024 ** 3;
export const DISK_RULE = 'use at least 1G, e.g. 8G';
