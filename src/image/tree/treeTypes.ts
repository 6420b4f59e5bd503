import fs from 'node:fs';

/** The entries of a RootfsTree (rootfsTree.ts, nodes.ts) and the limits it works within. */

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo';

export interface TreeEntry {
  /** Absolute path inside the image, `/` for the root. */
  path: string;
  type: EntryType;
  uid: number;
  gid: number;
  /** Permission bits including setuid/setgid/sticky (0o7777). */
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Bytes for files, target length for symlinks, else 0. */
  size: number;
  linkTarget?: string;
  /** On the second and later names of a hard-linked inode: the first name. */
  hardlinkTo?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: ReadonlyMap<string, Buffer>;
  /** Tree-local inode id, shared by hard links. */
  inode: number;
  nlink: number;
}

export interface EntryMeta {
  uid?: number;
  gid?: number;
  mode?: number;
  mtime?: number;
}

export interface TreeStats {
  entries: number;
  inodes: number;
  files: number;
  dirs: number;
  symlinks: number;
  specials: number;
  /** Bytes of file contents (hard-linked inodes once). */
  fileBytes: number;
}

export interface Inode {
  id: number;
  type: EntryType;
  uid: number;
  gid: number;
  mode: number;
  mtime: number;
  size: number;
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Map<string, Buffer>;
  nlink: number;
}

export interface Node {
  name: string;
  parent: Node | null;
  inode: Inode;
  children: Map<string, Node> | null;
  /** Index of the layer that last created or re-declared this entry. */
  layer: number;
}

export const O_CREATE_NEW =
  fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
export const MAX_SYMLINK_HOPS = 40;
export const HOST_PATH_MAX = 4095;
export const HINT_HOSTILE =
  'the image is malformed or hostile; nothing was written outside its work dir';
