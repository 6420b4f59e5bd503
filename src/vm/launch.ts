import { BangerError } from '../errors.js';
import { CMDLINE_NAT } from '../guest/firstboot.js';
import type { ImageRecord } from '../store/images.js';
import type { KernelRecord } from '../store/kernels.js';
import type { VmRecord } from '../store/vms.js';
import type { Accel, DiskSpec, LaunchSpec } from '../vmm/driver.js';
import { buildKernelCmdline } from './kernelArgs.js';
import type { VmLayout } from './layout.js';

/**
 * The LaunchSpec of one VM (pure): its disks in a fixed order (base first: it
 * becomes /dev/vda), the kernel and its command line, the tap. The same spec
 * goes to every driver; what a driver cannot use it refuses in preflight().
 */
export interface LaunchInput {
  vm: VmRecord;
  image: ImageRecord;
  kernel: KernelRecord | undefined;
  /** The kernel's read-only modules disk, when it has one. */
  modulesDisk?: string;
  layout: VmLayout;
  net: { tap: string; ipArg?: string };
  tscKhz?: number;
  /** config tcg_aslr (kernelArgs.ts). */
  tcgAslr?: boolean;
}

/** The kernel file a VM boots: the catalog entry's ELF vmlinux when it has one, else its bzImage; or the image's own. */
export function kernelPathOf(
  vm: Pick<VmRecord, 'name'>,
  image: Pick<ImageRecord, 'kernelPath'>,
  kernel: Pick<KernelRecord, 'vmlinuxPath' | 'kernelPath'> | undefined,
): string {
  if (kernel) return kernel.vmlinuxPath ?? kernel.kernelPath;
  if (image.kernelPath) return image.kernelPath;
  throw new BangerError('precondition', `vm '${vm.name}' has no kernel`, {
    hint: 'pass --kernel, or register the image with --kernel-ref',
  });
}

export function buildLaunchSpec(i: LaunchInput): LaunchSpec {
  const { vm, image, kernel, layout: l } = i;
  const accel = (vm.accel ?? 'tcg') as Accel;
  const disks: DiskSpec[] = [
    { id: 'base', path: image.rootfsPath, readOnly: true },
    { id: 'overlay', path: l.overlayDisk, readOnly: false },
    { id: 'work', path: l.workDisk, readOnly: false },
  ];
  if (i.modulesDisk) disks.push({ id: 'modules', path: i.modulesDisk, readOnly: true });
  // Container images without systemd/sshd boot through banger's first-boot step (image meta `init`).
  const init = typeof image.meta.init === 'string' ? image.meta.init : undefined;
  const cmdline = buildKernelCmdline({
    vmId: vm.id,
    ipArg: i.net.ipArg,
    accel,
    tscKhz: i.tscKhz,
    tcgAslr: i.tcgAslr,
    extra: [...(init ? [`init=${init}`] : []), ...(vm.nat ? [CMDLINE_NAT] : [])],
  });
  return {
    vmId: vm.id,
    name: vm.name,
    dir: l.dir,
    vcpu: vm.vcpu,
    memoryMib: vm.memoryMib,
    accel,
    kernel: {
      path: kernelPathOf(vm, image, kernel),
      initrd: kernel?.initrdPath ?? image.initrdPath ?? undefined,
      cmdline,
    },
    disks,
    net: vm.mac ? { tap: i.net.tap, mac: vm.mac } : undefined,
    agentSocket: l.agentSocket,
    consoleLog: l.consoleLog,
    vmmLog: l.vmmLog,
  };
}
