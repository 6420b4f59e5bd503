import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { which } from '../../src/util/exec.js';
import { REPO_ROOT } from '../helpers/sandbox.js';

/**
 * Shared by the kernel end-to-end tests: where downloaded .debs are cached
 * across runs (keyed by package and version through their file names), and
 * whether this machine can pull a Debian kernel at all.
 */

/** BANGER_KERNEL_TEST_CACHE overrides; default `<repo>/.cache/e2e-cache` (gitignored). */
export const TEST_CACHE_DIR =
  process.env.BANGER_KERNEL_TEST_CACHE || path.join(REPO_ROOT, '.cache', 'e2e-cache');

/** Why this machine cannot pull kernels, or undefined when it can. */
export function cannotPull(): string | undefined {
  for (const t of [
    'apt-get',
    'apt-cache',
    'dpkg-deb',
    'depmod',
    'mkfs.ext4',
    'e2fsck',
    'debugfs',
    'cpio',
    'lz4',
  ]) {
    if (!which(t)) return `${t} is not installed`;
  }
  if (!fs.existsSync('/bin/busybox')) return 'busybox-static is not installed';
  const r = spawnSync('apt-cache', ['show', '--no-all-versions', 'linux-image-cloud-amd64'], {
    encoding: 'utf8',
  });
  if (r.status !== 0 || !/^SHA256:/m.test(r.stdout))
    return 'the apt lists lack linux-image-cloud-amd64 (run apt-get update)';
  return undefined;
}
