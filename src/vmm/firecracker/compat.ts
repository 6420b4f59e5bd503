import fs from 'node:fs';
import { BangerError, isErrno } from '../../errors.js';
import { kvmDevicePath } from '../accel.js';
import type { KernelFeatures, LaunchSpec } from '../driver.js';

/**
 * Can this Firecracker boot this kernel on this host? Checked before a VMM is
 * spawned so an incompatible pair fails with one clear line instead of a
 * guest that never finds its disks. The decisions are pure functions of
 * facts (kernel header bytes, kernel metadata, Firecracker version, /dev/kvm
 * access); `checkFirecrackerCompat` gathers the facts and throws.
 */

export type { KernelFeatures };

export type KernelImageFormat = 'elf' | 'bzImage' | 'unknown';

export interface KernelImageInfo {
  format: KernelImageFormat;
  /** For ELF: 64-bit x86_64 (the only kind Firecracker on x86_64 loads). */
  elfX86_64?: boolean;
}

export interface FirecrackerVersion {
  major: number;
  minor: number;
  patch: number;
  /** As printed, e.g. `1.10.1` or `1.12.0-dev`. */
  text: string;
}

/** Virtio devices described through ACPI on x86_64 (needed by kernels without cmdline devices). */
export const ACPI_VIRTIO_MIN: Readonly<FirecrackerVersion> = {
  major: 1,
  minor: 8,
  patch: 0,
  text: '1.8.0',
};
/** The oldest release whose API matches every request banger sends. */
export const FIRECRACKER_MIN: Readonly<FirecrackerVersion> = {
  major: 1,
  minor: 0,
  patch: 0,
  text: '1.0.0',
};

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const EM_X86_64 = 0x3e;
/** The x86 boot protocol header signature of a bzImage. */
const BZIMAGE_MAGIC = Buffer.from('HdrS', 'latin1');
const BZIMAGE_MAGIC_OFFSET = 0x202;
/** How many header bytes detectKernelFormat needs. */
export const KERNEL_HEADER_BYTES = 0x210;

/** Identify a kernel image from its first bytes. Pure. */
export function detectKernelFormat(header: Buffer): KernelImageInfo {
  if (header.length >= 4 && header.subarray(0, 4).equals(ELF_MAGIC)) {
    const elfX86_64 =
      header.length >= 20 &&
      header[4] === ELFCLASS64 &&
      header[5] === ELFDATA2LSB &&
      header.readUInt16LE(18) === EM_X86_64;
    return { format: 'elf', elfX86_64 };
  }
  if (
    header.length >= BZIMAGE_MAGIC_OFFSET + 4 &&
    header.subarray(BZIMAGE_MAGIC_OFFSET, BZIMAGE_MAGIC_OFFSET + 4).equals(BZIMAGE_MAGIC)
  ) {
    return { format: 'bzImage' };
  }
  return { format: 'unknown' };
}

/** Read the header of a kernel file and identify it. */
export async function readKernelFormat(file: string): Promise<KernelImageInfo> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(KERNEL_HEADER_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return detectKernelFormat(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

/**
 * Parse `firecracker --version` output (first line `Firecracker v1.10.1`,
 * followed by snapshot format lines). Accepts a bare `v1.10.1` / `1.10.1` too.
 */
export function parseFirecrackerVersion(output: string): FirecrackerVersion | undefined {
  const first = output.split('\n').find((l) => l.trim()) ?? '';
  const m = /(?:^|\s|v)(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.+-]*)?/.exec(first.trim());
  if (!m) return undefined;
  return {
    major: Number(m[1]),
    minor: Number(m[2]),
    patch: Number(m[3]),
    text: `${m[1]}.${m[2]}.${m[3]}${m[4] ?? ''}`,
  };
}

export function versionAtLeast(
  v: Pick<FirecrackerVersion, 'major' | 'minor' | 'patch'>,
  min: Pick<FirecrackerVersion, 'major' | 'minor' | 'patch'>,
): boolean {
  if (v.major !== min.major) return v.major > min.major;
  if (v.minor !== min.minor) return v.minor > min.minor;
  return v.patch >= min.patch;
}

export interface KvmAccess {
  /** The device probed (default /dev/kvm). */
  path?: string;
  exists: boolean;
  /** Read and write access for this user. */
  accessible: boolean;
}

/** The facts about one kernel/Firecracker/host triple. */
export interface CompatFacts {
  /** Kernel catalog name, for messages. */
  kernelName: string;
  kernelPath: string;
  image: KernelImageInfo;
  features: KernelFeatures;
  /** `firecracker --version` output or a parsed version. */
  version: string | FirecrackerVersion;
  kvm: KvmAccess;
}

const docsHint = 'see docs/firecracker.md';

/**
 * Decide whether the pair can run: undefined when it can, else the one error
 * to show. Pure; the order puts the most fundamental problem first.
 */
export function firecrackerCompatProblem(f: CompatFacts): BangerError | undefined {
  const dev = f.kvm.path ?? '/dev/kvm';
  if (!f.kvm.exists) {
    return new BangerError('precondition', `firecracker needs KVM but ${dev} does not exist`, {
      hint: 'enable virtualisation in the BIOS and load kvm_intel or kvm_amd, or use vmm = "qemu" (it can emulate without KVM)',
    });
  }
  if (!f.kvm.accessible) {
    return new BangerError('permission', `firecracker needs KVM but ${dev} is not accessible`, {
      hint: 'add your user to group kvm (sudo usermod -aG kvm $USER) and log in again',
    });
  }
  const version = typeof f.version === 'string' ? parseFirecrackerVersion(f.version) : f.version;
  if (!version) {
    const shown = typeof f.version === 'string' ? f.version.split('\n')[0]!.trim() : '';
    return new BangerError('tool_failed', `cannot tell the firecracker version from '${shown}'`, {
      hint: `check that firecracker_bin points at a Firecracker release (${docsHint})`,
    });
  }
  if (!versionAtLeast(version, FIRECRACKER_MIN)) {
    return new BangerError(
      'precondition',
      `firecracker ${version.text} is too old: banger needs ${FIRECRACKER_MIN.text} or newer`,
      {
        hint: `install a current release (${docsHint})`,
      },
    );
  }
  switch (f.image.format) {
    case 'bzImage':
      return new BangerError(
        'precondition',
        `firecracker needs an uncompressed ELF vmlinux; kernel entry '${f.kernelName}' has only a bzImage (${f.kernelPath})`,
        {
          hint: `use a kernel entry with a vmlinux (banger kernel list) or vmm = "qemu" (${docsHint})`,
        },
      );
    case 'unknown':
      return new BangerError(
        'precondition',
        `kernel '${f.kernelName}' (${f.kernelPath}) is neither an ELF vmlinux nor a bzImage`,
        {
          hint: `re-pull the kernel (banger kernel pull ${f.kernelName}) or register an uncompressed vmlinux`,
        },
      );
    case 'elf':
      if (!f.image.elfX86_64) {
        return new BangerError(
          'precondition',
          `kernel '${f.kernelName}' (${f.kernelPath}) is an ELF, but not a 64-bit x86_64 kernel`,
          {
            hint: 'use an x86_64 vmlinux',
          },
        );
      }
  }
  if (!f.features.virtioMmioCmdline && !versionAtLeast(version, ACPI_VIRTIO_MIN)) {
    const lacks = f.features.virtioMmioCmdline === false ? 'lacks' : 'is not known to have';
    return new BangerError(
      'precondition',
      `firecracker ${version.text} cannot give kernel '${f.kernelName}' its disks: the kernel ${lacks} CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES and firecracker describes virtio devices through ACPI only from ${ACPI_VIRTIO_MIN.major}.${ACPI_VIRTIO_MIN.minor}`,
      {
        hint: `upgrade firecracker to ${ACPI_VIRTIO_MIN.major}.${ACPI_VIRTIO_MIN.minor} or newer (${docsHint}) or use vmm = "qemu"`,
      },
    );
  }
  return undefined;
}

export function kvmAccess(dev = kvmDevicePath()): KvmAccess {
  try {
    fs.accessSync(dev, fs.constants.R_OK | fs.constants.W_OK);
    return { path: dev, exists: true, accessible: true };
  } catch (e) {
    return { path: dev, exists: !isErrno(e, 'ENOENT'), accessible: false };
  }
}

export interface CompatInput {
  kernel: { name: string; path: string; features: KernelFeatures };
  /** `firecracker --version` output or `driver.version()`. */
  version: string | FirecrackerVersion;
  /** Defaults to probing the KVM device (kvmDevicePath()). */
  kvm?: KvmAccess;
}

/**
 * What the VM service calls before `driver.start()`: throws the BangerError
 * describing the first incompatibility, returns the parsed version otherwise.
 */
export async function checkFirecrackerCompat(input: CompatInput): Promise<FirecrackerVersion> {
  let image: KernelImageInfo;
  try {
    image = await readKernelFormat(input.kernel.path);
  } catch (e) {
    if (isErrno(e, 'ENOENT')) {
      throw new BangerError(
        'not_found',
        `kernel '${input.kernel.name}' file ${input.kernel.path} does not exist`,
        {
          hint: `re-pull it (banger kernel pull ${input.kernel.name})`,
        },
      );
    }
    throw new BangerError(
      'permission',
      `cannot read kernel '${input.kernel.name}' at ${input.kernel.path}: ${(e as Error).message}`,
      {
        hint: 'check the file permissions',
        cause: e,
      },
    );
  }
  const problem = firecrackerCompatProblem({
    kernelName: input.kernel.name,
    kernelPath: input.kernel.path,
    image,
    features: input.kernel.features,
    version: input.version,
    kvm: input.kvm ?? kvmAccess(),
  });
  if (problem) throw problem;
  return typeof input.version === 'string'
    ? parseFirecrackerVersion(input.version)!
    : input.version;
}

/** The kernel of a launch is an ELF vmlinux (checked before anything is spawned). */
export async function checkLaunchKernel(spec: Pick<LaunchSpec, 'name' | 'kernel'>): Promise<void> {
  let format: string;
  try {
    format = (await readKernelFormat(spec.kernel.path)).format;
  } catch (e) {
    throw new BangerError(
      'not_found',
      `kernel ${spec.kernel.path} of vm '${spec.name}' cannot be read: ${(e as Error).message}`,
      {
        hint: 'check the kernel entry (banger kernel list)',
        cause: e,
      },
    );
  }
  if (format === 'bzImage') {
    throw new BangerError(
      'precondition',
      `firecracker needs an uncompressed ELF vmlinux; the kernel of vm '${spec.name}' is a bzImage (${spec.kernel.path})`,
      {
        hint: 'use a kernel entry with a vmlinux (banger kernel list) or vmm = "qemu"',
      },
    );
  }
  if (format !== 'elf') {
    throw new BangerError(
      'precondition',
      `firecracker needs an uncompressed ELF vmlinux; ${spec.kernel.path} of vm '${spec.name}' is not one`,
      {
        hint: 'use a kernel entry with a vmlinux (banger kernel list)',
      },
    );
  }
}
