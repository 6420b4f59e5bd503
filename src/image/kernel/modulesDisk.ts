import fs from 'node:fs/promises';
import path from 'node:path';
import { DISKS } from '../../guest/bootContract.js';
import type { Runner } from './apt.js';

/**
 * The kernel's modules disk: a read-only ext4 holding the whole
 * /lib/modules/<kver> tree (with depmod's indexes), which /init mounts at
 * /lib/modules/<kver> so `modprobe` works inside the VM (Docker loads
 * netfilter, bridge, veth, overlay...). Built with `mkfs.ext4 -d`, no loop
 * mount, sized to its content; every file root-owned, 0644 / dirs 0755.
 */

export const EXT4_BLOCK = 4096;
const INODE_SIZE = 256;

export interface TreeEntry {
  /** Path relative to the tree root, '/'-separated. */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  size: number;
}

/**
 * Blocks for an ext4 (4 KiB blocks, no journal) that holds `entries`, and
 * the inode count to ask for. Pure. Data blocks per file, directory blocks
 * from the entry sizes, the inode tables, plus 5% and 2 MiB of slack for
 * group descriptors, bitmaps and extent index blocks.
 */
export function ext4Size(entries: readonly TreeEntry[]): { blocks: number; inodes: number } {
  let data = 1; // root directory
  const dirBytes = new Map<string, number>();
  for (const e of entries) {
    if (e.type === 'file') data += Math.ceil(e.size / EXT4_BLOCK);
    else if (e.type === 'symlink' && e.size >= 60) data += 1; // longer targets need a block
    const parent = path.posix.dirname(e.path);
    const name = path.posix.basename(e.path);
    dirBytes.set(parent, (dirBytes.get(parent) ?? 24) + ((8 + name.length + 3) & ~3));
  }
  for (const bytes of dirBytes.values()) data += Math.ceil(bytes / EXT4_BLOCK);
  for (const e of entries) if (e.type === 'dir' && !dirBytes.has(e.path)) data += 1;
  const inodes = Math.max(64, Math.ceil((entries.length + 16) * 1.1));
  const inodeBlocks = Math.ceil((inodes * INODE_SIZE) / EXT4_BLOCK);
  const blocks = Math.ceil((data + inodeBlocks) * 1.05) + 512;
  return { blocks, inodes };
}

/** debugfs commands that make every entry owned by root (for builds without root). Pure. */
export function debugfsOwnerCommands(entries: readonly TreeEntry[]): string {
  const lines: string[] = ['sif / uid 0', 'sif / gid 0'];
  for (const e of entries) {
    if (/["\s\\]/.test(e.path)) throw new Error(`unsupported file name in modules tree: ${e.path}`);
    lines.push(`sif "/${e.path}" uid 0`, `sif "/${e.path}" gid 0`);
  }
  return `${lines.join('\n')}\n`;
}

/** Walk the tree, normalise modes (files 0644, dirs 0755), drop symlinks (build/source links
 * point into headers that are not there). Returns the entries, sorted. */
export async function prepareModulesTree(root: string): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  const walk = async (rel: string): Promise<void> => {
    const dir = path.join(root, rel);
    for (const d of await fs.readdir(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      const full = path.join(root, r);
      if (d.isSymbolicLink()) {
        await fs.unlink(full);
      } else if (d.isDirectory()) {
        await fs.chmod(full, 0o755);
        out.push({ path: r, type: 'dir', size: 0 });
        await walk(r);
      } else if (d.isFile()) {
        await fs.chmod(full, 0o644);
        out.push({ path: r, type: 'file', size: (await fs.stat(full)).size });
      } else {
        await fs.rm(full, { force: true });
      }
    }
  };
  await fs.chmod(root, 0o755);
  await walk('');
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** mkfs.ext4 -d the tree into `outFile`. The tree must have gone through prepareModulesTree. */
export async function buildModulesDisk(
  runner: Runner,
  tree: string,
  entries: readonly TreeEntry[],
  outFile: string,
  opts: {
    signal?: AbortSignal;
    onOutput?: (c: Buffer, s: 'stdout' | 'stderr') => void;
    tmpDir: string;
    /** Set every owner to 0:0 with debugfs (default: when not running as root). */
    fixOwners?: boolean;
  },
): Promise<{ sizeBytes: number; allocatedBytes: number; ownersFixed: boolean }> {
  const { blocks, inodes } = ext4Size(entries);
  const fh = await fs.open(outFile, 'w', 0o644);
  await fh.truncate(blocks * EXT4_BLOCK);
  await fh.close();
  const common = { signal: opts.signal, onOutput: opts.onOutput, timeoutMs: 10 * 60_000 };
  await runner(
    'mkfs.ext4',
    [
      '-q',
      '-F',
      '-T',
      'default',
      '-b',
      String(EXT4_BLOCK),
      '-I',
      String(INODE_SIZE),
      '-N',
      String(inodes),
      '-m',
      '0',
      '-O',
      '^has_journal',
      '-L',
      DISKS.modules.label,
      '-E',
      'root_owner=0:0,lazy_itable_init=0',
      '-d',
      tree,
      outFile,
      String(blocks),
    ],
    { ...common, what: 'building the modules disk' },
  );
  // Not root: the files were extracted as the current user; make them root's inside the image.
  let ownersFixed = false;
  if (opts.fixOwners ?? process.getuid?.() !== 0) {
    const cmds = path.join(opts.tmpDir, 'debugfs-owners.txt');
    await fs.writeFile(cmds, debugfsOwnerCommands(entries));
    await runner('debugfs', ['-w', '-f', cmds, outFile], {
      ...common,
      what: 'setting owners in the modules disk',
    });
    ownersFixed = true;
  }
  const st = await fs.stat(outFile);
  return { sizeBytes: st.size, allocatedBytes: st.blocks * 512, ownersFixed };
}
