import { CMDLINE } from '../guest/bootContract.js';
import type { Accel } from '../vmm/driver.js';

/**
 * The guest kernel command line (pure). Shared by every VMM; Firecracker adds
 * its own device and reboot arguments on top.
 */
export interface KernelArgsInput {
  vmId: string;
  /** `ip=...` for banger's /init (see src/network guestIpArg). */
  ipArg?: string;
  accel: Accel;
  /** Host TSC kHz; passed to TCG guests so they never hang calibrating. */
  tscKhz?: number;
  debug?: boolean;
  extra?: string[];
}

export function buildKernelCmdline(i: KernelArgsInput): string {
  const args = ['console=ttyS0', 'quiet', 'loglevel=4'];
  if (i.accel === 'tcg' && i.tscKhz) args.push(`tsc_early_khz=${i.tscKhz}`);
  if (i.ipArg) args.push(i.ipArg);
  args.push(`${CMDLINE.id}=${i.vmId}`);
  if (i.debug) args.push(`${CMDLINE.debug}=1`);
  args.push(...(i.extra ?? []));
  for (const a of args) {
    if (/\s/.test(a)) throw new Error(`kernel argument '${a}' contains whitespace`);
  }
  return args.join(' ');
}
