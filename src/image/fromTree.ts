import fs from 'node:fs';
import path from 'node:path';
import type { ProgressSink } from '../api/events.js';
import { buildFirstbootScript, FIRSTBOOT_PATH } from '../guest/firstboot.js';
import { DISKS } from '../guest/bootContract.js';
import { guestContractOps, type ContractOp } from '../guest/contract.js';
import { applyContractToTree } from '../guest/contract/apply.js';
import { treeToExt4 } from './tree/toExt4.js';
import { pullOci } from './oci/index.js';
import type { RootfsTree } from './tree/index.js';
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
  tree: RootfsTree,
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
  await splitWorkSeed(tree, workSeedPath, { workDir: o.workDir, signal: o.signal });
  await treeToExt4(tree, rootfsPath, {
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
 * OCI references → image artifacts: `pullOci` (src/image/oci: registry,
 * layers, whiteouts, safety limits) gives a RootfsTree; the guest contract is
 * applied to it and it becomes rootfs.ext4 + work-seed.ext4. mise is not
 * installed (its binary needs glibc; OCI images may be musl-based).
 */
/** What a pulled tree has of what a banger guest needs to boot normally. */
export function bootNeeds(tree: Pick<RootfsTree, 'exists'>): { systemd: boolean; sshd: boolean } {
  const any = (paths: string[]): boolean => paths.some((p) => tree.exists(p, { follow: true }));
  return {
    systemd: any(['/lib/systemd/systemd', '/usr/lib/systemd/systemd']),
    sshd: any(['/usr/sbin/sshd', '/usr/local/sbin/sshd', '/sbin/sshd']),
  };
}

export async function pullOciImage(ref: string, o: OciImageOptions): Promise<OciArtifacts> {
  const pulled = await pullOci(ref, {
    cacheDir: o.cacheDir,
    workDir: o.workDir,
    insecure: o.insecure,
    emit: o.emit,
    signal: o.signal,
  });
  try {
    o.emit({
      type: 'step',
      id: 'convert',
      label: 'apply guest contract, convert to ext4',
      state: 'start',
    });
    const t0 = Date.now();
    // Container images without systemd or sshd boot through banger's first-boot step.
    const boot = bootNeeds(pulled.tree);
    const firstboot = !boot.systemd || !boot.sshd;
    if (firstboot) {
      o.emit({
        type: 'log',
        level: 'info',
        message: `${o.name} has no ${[!boot.systemd && 'systemd', !boot.sshd && 'sshd'].filter(Boolean).join(' and ')}: VMs boot through banger's first-boot step${boot.sshd ? '' : ' (sshd is installed on first boot when the VM has --nat)'}`,
      });
    }
    const a = await imageFromTree(pulled.tree, {
      outDir: o.outDir,
      workDir: o.workDir,
      agentBinary: o.agentBinary,
      emit: o.emit,
      signal: o.signal,
      extraOps: firstboot
        ? [
            {
              kind: 'file',
              path: FIRSTBOOT_PATH,
              mode: 0o755,
              uid: 0,
              gid: 0,
              content: buildFirstbootScript(o.name),
              why: 'first boot of a container image',
            },
          ]
        : [],
    });
    o.emit({
      type: 'step',
      id: 'convert',
      label: 'apply guest contract, convert to ext4',
      state: 'done',
      ms: Date.now() - t0,
    });
    const c = pulled.config;
    return {
      ...a,
      reference: pulled.reference,
      digest: pulled.digest,
      meta: {
        reference: pulled.reference,
        digest: pulled.digest,
        ...(pulled.indexDigest ? { indexDigest: pulled.indexDigest } : {}),
        configDigest: pulled.configDigest,
        layers: pulled.layers,
        ...(firstboot ? { init: FIRSTBOOT_PATH, boot } : {}),
        compressedBytes: pulled.sizeBytes,
        contentBytes: pulled.contentBytes,
        config: {
          env: c.Env,
          entrypoint: c.Entrypoint,
          cmd: c.Cmd,
          user: c.User,
          workingDir: c.WorkingDir,
        },
      },
    };
  } finally {
    await pulled.tree.dispose();
  }
}
