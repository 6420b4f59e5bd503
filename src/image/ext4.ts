import type { ProgressSink } from '../api/events.js';
import { BangerError } from '../errors.js';
import type { ContractTree } from '../guest/contract/apply.js';

/**
 * The image builder's view of the shared tar→ext4 module (src/storage/ext4.ts
 * and src/image/tree, from the OCI branch): only what images need, typed here.
 *
 * TEMPORARY: the module is loaded at run time so this branch builds before
 * that branch is merged. Once it is on main, replace `loadExt4()` with static
 * imports of `tarToExt4`, `treeToExt4` and `createStagedTree` (the shapes
 * below are theirs).
 */

export interface TreeEntryLike {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo';
  uid: number;
  gid: number;
  mode: number;
  mtime: number;
  size: number;
  linkTarget?: string;
  hardlinkTo?: string;
}

/** A RootfsTree as images use it (contract applier + work-seed split). */
export interface TreeLike extends ContractTree {
  entries(): Iterable<TreeEntryLike>;
  readFile(p: string): Buffer;
  setMeta(p: string, meta: { uid?: number; gid?: number; mode?: number; mtime?: number }): void;
  dispose(): Promise<void>;
}

export interface Ext4BuildOptions {
  label?: string;
  journal?: boolean;
  headroom?: number;
  extraBytes?: number;
  emit?: ProgressSink;
  signal?: AbortSignal;
}

export interface Ext4Built {
  path: string;
  sizeBytes: number;
  allocatedBytes: number;
  entries: number;
}

export interface TarToExt4Options extends Ext4BuildOptions {
  workDir?: string;
  sizeHint?: number;
  devices?: 'keep' | 'skip';
  prepare?: (tree: TreeLike) => void | Promise<void>;
}

export interface Ext4Module {
  tarToExt4(
    tar: AsyncIterable<Uint8Array>,
    out: string,
    opts?: TarToExt4Options,
  ): Promise<Ext4Built>;
  treeToExt4(tree: TreeLike, out: string, opts?: Ext4BuildOptions): Promise<Ext4Built>;
  createStagedTree(workDir: string, opts?: { expectedBytes?: number }): Promise<TreeLike>;
}

let loaded: Ext4Module | undefined;

export async function loadExt4(): Promise<Ext4Module> {
  if (loaded) return loaded;
  const load = async (rel: string): Promise<Record<string, unknown>> => {
    const spec = new URL(rel, import.meta.url).href;
    try {
      return (await import(spec)) as Record<string, unknown>;
    } catch (e) {
      throw new BangerError(
        'not_implemented',
        'the tar→ext4 converter (src/storage/ext4.ts) is not in this build',
        {
          hint: 'it arrives with the OCI branch; merge main',
          cause: e,
        },
      );
    }
  };
  const ext4 = await load('../storage/ext4.js');
  const staging = await load('./tree/staging.js');
  loaded = {
    tarToExt4: ext4.tarToExt4 as Ext4Module['tarToExt4'],
    treeToExt4: ext4.treeToExt4 as Ext4Module['treeToExt4'],
    createStagedTree: staging.createStagedTree as Ext4Module['createStagedTree'],
  };
  return loaded;
}
