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
  /**
   * Keep user-space address randomization in a TCG guest (config tcg_aslr).
   * Without it (the default) a TCG guest boots with `norandmaps`: QEMU 7.2
   * keys translated code by virtual address, so with fixed addresses every
   * new process (each ssh session's sshd, its shell) reuses the code already
   * translated for the last one instead of translating it again. KVM guests
   * always keep randomization; it costs them nothing.
   */
  tcgAslr?: boolean;
  debug?: boolean;
  extra?: string[];
}

/** Does a guest boot with `norandmaps` (pure)? A TCG guest unless tcg_aslr; never a KVM guest. */
export const fixedGuestAddresses = (accel: Accel, tcgAslr: boolean | undefined): boolean =>
  accel === 'tcg' && !tcgAslr;

export function buildKernelCmdline(i: KernelArgsInput): string {
  const args = ['console=ttyS0', 'quiet', 'loglevel=4'];
  if (i.accel === 'tcg' && i.tscKhz) args.push(`tsc_early_khz=${i.tscKhz}`);
  if (fixedGuestAddresses(i.accel, i.tcgAslr)) args.push('norandmaps');
  if (i.ipArg) args.push(i.ipArg);
  args.push(`${CMDLINE.id}=${i.vmId}`);
  if (i.debug) args.push(`${CMDLINE.debug}=1`);
  args.push(...(i.extra ?? []));
  for (const a of args) {
    if (/\s/.test(a)) throw new Error(`kernel argument '${a}' contains whitespace`);
  }
  return args.join(' ');
}
