/**
 * A reproducible newc ("070701") cpio writer for banger's initramfs. Pure:
 * entries in, bytes out. Entries are sorted by path (bytewise), missing
 * parent directories are added, every entry is owned by 0:0 with mtime 0 and
 * inode numbers are assigned in order, so the same inputs give the same bytes.
 */

export type CpioEntry =
  | { type: 'file'; path: string; mode: number; data: Buffer | string }
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'chardev'; path: string; mode: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const TRAILER = 'TRAILER!!!';

/** `./a//b/` → `a/b`; rejects absolute escapes and `..`. */
export function normalizeCpioPath(p: string): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0 || parts.includes('..')) {
    throw new Error(`invalid initramfs path '${p}'`);
  }
  return parts.join('/');
}

const cmpBytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** The entries as written: normalized, parents added, sorted, duplicates rejected. */
export function cpioPlan(entries: CpioEntry[]): CpioEntry[] {
  const byPath = new Map<string, CpioEntry>();
  for (const e of entries) {
    const p = normalizeCpioPath(e.path);
    const prev = byPath.get(p);
    if (prev && !(prev.type === 'dir' && e.type === 'dir')) {
      throw new Error(`duplicate initramfs entry '${p}'`);
    }
    byPath.set(p, { ...e, path: p });
  }
  for (const p of [...byPath.keys()]) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      const existing = byPath.get(dir);
      if (!existing) byPath.set(dir, { type: 'dir', path: dir });
      else if (existing.type !== 'dir') {
        throw new Error(`initramfs entry '${dir}' is not a directory but has children`);
      }
    }
  }
  return [...byPath.values()].sort((a, b) => cmpBytes(a.path, b.path));
}

const hex8 = (n: number): string => {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff)
    throw new Error(`cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
};
const pad4 = (n: number): number => (4 - (n % 4)) % 4;

function header(f: {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  rdevMajor?: number;
  rdevMinor?: number;
  nameSize: number;
}): string {
  return [
    '070701',
    hex8(f.ino),
    hex8(f.mode),
    hex8(0), // uid
    hex8(0), // gid
    hex8(f.nlink),
    hex8(0), // mtime
    hex8(f.size),
    hex8(0), // devmajor
    hex8(0), // devminor
    hex8(f.rdevMajor ?? 0),
    hex8(f.rdevMinor ?? 0),
    hex8(f.nameSize),
    hex8(0), // check
  ].join('');
}

/** Serialize entries into an uncompressed newc archive (with the TRAILER!!! record). */
export function writeCpio(entries: CpioEntry[]): Buffer {
  const chunks: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    chunks.push(b);
    offset += b.length;
  };
  const record = (
    name: string,
    fields: Omit<Parameters<typeof header>[0], 'nameSize' | 'size'>,
    data: Buffer,
  ): void => {
    const nameBuf = Buffer.from(`${name}\0`);
    push(Buffer.from(header({ ...fields, size: data.length, nameSize: nameBuf.length }), 'latin1'));
    push(nameBuf);
    push(Buffer.alloc(pad4(offset)));
    if (data.length > 0) {
      push(data);
      push(Buffer.alloc(pad4(offset)));
    }
  };
  let ino = 1;
  for (const e of cpioPlan(entries)) {
    switch (e.type) {
      case 'dir':
        record(
          e.path,
          { ino: ino++, mode: S_IFDIR | ((e.mode ?? 0o755) & 0o7777), nlink: 2 },
          Buffer.alloc(0),
        );
        break;
      case 'file': {
        const data = typeof e.data === 'string' ? Buffer.from(e.data) : e.data;
        record(e.path, { ino: ino++, mode: S_IFREG | (e.mode & 0o7777), nlink: 1 }, data);
        break;
      }
      case 'symlink':
        record(e.path, { ino: ino++, mode: S_IFLNK | 0o777, nlink: 1 }, Buffer.from(e.target));
        break;
      case 'chardev':
        record(
          e.path,
          {
            ino: ino++,
            mode: S_IFCHR | (e.mode & 0o7777),
            nlink: 1,
            rdevMajor: e.major,
            rdevMinor: e.minor,
          },
          Buffer.alloc(0),
        );
        break;
    }
  }
  record(TRAILER, { ino: 0, mode: 0, nlink: 1 }, Buffer.alloc(0));
  return Buffer.concat(chunks);
}
