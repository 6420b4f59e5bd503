import fs from 'node:fs';
import path from 'node:path';
import type { ProgressSink } from '../api/events.js';
import { BangerError } from '../errors.js';
import { DISKS } from '../guest/bootContract.js';
import { guestContractOps, type ContractOp } from '../guest/contract.js';
import { applyContractToTree } from '../guest/contract/apply.js';
import type { Ext4Module, TreeLike } from './ext4.js';
import { fileSize, IMAGE_FILES, type FileSize } from './files.js';
import { splitWorkSeed } from './workSeed.js';

/**
 * A rootfs tree (an OCI pull's RootfsTree) → a banger image: the guest
 * contract applied to the tree, /root split off into the work-seed, the rest
 * written as the read-only base ext4. The OCI path of the image service.
 */

export interface ImageFromTreeOptions {
  /** Where rootfs.ext4 and work-seed.ext4 go. */
  outDir: string;
  /** Scratch space for the work-seed's staging tree. */
  workDir: string;
  agentBinary: string;
  /** Optional mise binary to install. */
  miseBinary?: string;
  /** Operations after the contract (recipe-specific). */
  extraOps?: ContractOp[];
  mtime?: number;
  ext4: Ext4Module;
  emit?: ProgressSink;
  signal?: AbortSignal;
}

export interface ImageArtifacts {
  rootfsPath: string;
  workSeedPath: string;
  rootfs: FileSize;
  workSeed: FileSize;
}

export async function imageFromTree(
  tree: TreeLike,
  o: ImageFromTreeOptions,
): Promise<ImageArtifacts> {
  applyContractToTree(
    [
      ...guestContractOps({ agentBinary: o.agentBinary, miseBinary: o.miseBinary }),
      ...(o.extraOps ?? []),
    ],
    tree,
    { mtime: o.mtime },
  );
  fs.mkdirSync(o.outDir, { recursive: true });
  const workSeedPath = path.join(o.outDir, IMAGE_FILES.workSeed);
  const rootfsPath = path.join(o.outDir, IMAGE_FILES.rootfs);
  await splitWorkSeed(tree, workSeedPath, o.ext4, { workDir: o.workDir, signal: o.signal });
  await o.ext4.treeToExt4(tree, rootfsPath, {
    label: DISKS.base.label,
    journal: false,
    emit: o.emit,
    signal: o.signal,
  });
  return {
    rootfsPath,
    workSeedPath,
    rootfs: fileSize(rootfsPath)!,
    workSeed: fileSize(workSeedPath)!,
  };
}

export interface OciImageOptions {
  name: string;
  /** `<cache>/oci`. */
  cacheDir: string;
  outDir: string;
  workDir: string;
  agentBinary: string;
  insecure?: boolean;
  emit: ProgressSink;
  signal?: AbortSignal;
}

export interface OciArtifacts extends ImageArtifacts {
  /** Canonical reference and manifest digest. */
  reference: string;
  digest: string;
  meta: Record<string, unknown>;
}

/**
 * OCI references → image artifacts. The one place to wire the OCI puller
 * (src/image/oci `pullOci`) once it is merged:
 *
 *   const pulled = await pullOci(ref, { cacheDir, workDir, insecure, emit, signal });
 *   try {
 *     const a = await imageFromTree(pulled.tree, { outDir, workDir, agentBinary, ext4, emit, signal });
 *     return { ...a, reference: pulled.reference, digest: pulled.digest, meta: { layers: pulled.layers, config: pulled.config } };
 *   } finally { await pulled.tree.dispose(); }
 */
export async function pullOciImage(ref: string, _o: OciImageOptions): Promise<OciArtifacts> {
  throw new BangerError('not_implemented', `pulling OCI image '${ref}' is not implemented yet`, {
    hint: 'use the catalog image (banger image pull debian-bookworm), or register an ext4 rootfs with banger image register',
  });
}
