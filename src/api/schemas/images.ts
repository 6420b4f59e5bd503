import { z } from 'zod';

/** Wire shapes of kernels and images. */

export const IMAGE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const ImageName = z
  .string()
  .regex(IMAGE_NAME_RE, 'must be 1-64 lowercase letters, digits, dots, dashes or underscores');

export const KernelViewSchema = z.object({
  name: z.string(),
  /** Kernel release, e.g. 6.1.0-56-cloud-amd64. */
  version: z.string(),
  /** Where it came from, e.g. debian:linux-image-6.1.0-56-cloud-amd64=6.1.192-2. */
  source: z.string(),
  dir: z.string(),
  /** Compressed kernel (bzImage) for QEMU. */
  kernelPath: z.string(),
  /** Uncompressed ELF for Firecracker. */
  vmlinuxPath: z.string().nullable(),
  /** banger's initramfs. */
  initrdPath: z.string().nullable(),
  managed: z.boolean(),
  createdAt: z.string(),
  /** Sizes, checksums, relevant kernel config flags, module list... */
  meta: z.record(z.string(), z.unknown()),
  /** Images and VMs that reference this kernel. */
  usedBy: z.object({ images: z.array(z.string()), vms: z.array(z.string()) }).optional(),
});
export type KernelView = z.infer<typeof KernelViewSchema>;

export const KernelCatalogEntrySchema = z.object({
  name: z.string(),
  description: z.string(),
  /** Debian package the name resolves to (the metapackage). */
  package: z.string(),
  installed: z.boolean(),
  default: z.boolean(),
});
export type KernelCatalogEntry = z.infer<typeof KernelCatalogEntrySchema>;

export const ImageViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  source: z.string(),
  digest: z.string().nullable(),
  kernel: z.string().nullable(),
  kernelPath: z.string().nullable(),
  initrdPath: z.string().nullable(),
  rootfsPath: z.string(),
  workSeedPath: z.string().nullable(),
  managed: z.boolean(),
  /** Apparent size of the rootfs file. */
  sizeBytes: z.number().nullable(),
  /** Blocks actually allocated on the host (sparse files). */
  allocatedBytes: z.number().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
  meta: z.record(z.string(), z.unknown()),
  usedBy: z.array(z.string()).optional(),
  /** Warm-start boot snapshots of this image (docs/snapshots.md, "Warm start"). */
  bootSnapshots: z.object({ count: z.number(), sizeBytes: z.number() }).optional(),
});
export type ImageView = z.infer<typeof ImageViewSchema>;

export const ImageCatalogEntrySchema = z.object({
  name: z.string(),
  description: z.string(),
  installed: z.boolean(),
  default: z.boolean(),
  /** rootfs size: the installed image's, else what a build of the recipe measured (`estimated`). */
  sizeBytes: z.number(),
  allocatedBytes: z.number(),
  estimated: z.boolean(),
  /** Docker (socket-activated) in the image. */
  docker: z.boolean(),
});
export type ImageCatalogEntry = z.infer<typeof ImageCatalogEntrySchema>;

export const KernelPullRequestSchema = z.object({ name: ImageName }).strict();

export const ImagePullRequestSchema = z
  .object({
    /** A catalog name (debian-bookworm) or an OCI reference. */
    ref: z.string().min(1).max(512),
    name: ImageName.optional(),
    kernelRef: ImageName.optional(),
    insecure: z.boolean().optional(),
  })
  .strict();

export const ImageBuildRequestSchema = z
  .object({
    name: ImageName,
    fromImage: ImageName,
    packages: z
      .array(z.string().regex(/^[a-z0-9][a-z0-9+.:=~-]*$/, 'must be a Debian package name'))
      .default([]),
    docker: z.boolean().default(false),
  })
  .strict();

export const ImageRegisterRequestSchema = z
  .object({
    name: ImageName,
    rootfs: z.string().min(1),
    kernelRef: ImageName.optional(),
    kernel: z.string().min(1).optional(),
    initrd: z.string().min(1).optional(),
    workSeed: z.string().min(1).optional(),
  })
  .strict();

export const DeletedSchema = z.object({ deleted: z.array(z.string()) });
