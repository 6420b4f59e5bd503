import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';

/**
 * A tar writer for tests: writes whatever it is told, including the hostile
 * entries (`../x`, `/abs`, links out of the tree) a careful writer would refuse,
 * and PAX xattrs with binary values.
 */
export type TarType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarSpec {
  name: string;
  type?: TarType;
  /** Raw typeflag character (overrides type). */
  typeflag?: string;
  content?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, Buffer | string>;
  pax?: Record<string, Buffer | string>;
}

const FLAGS: Record<TarType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

function octal(n: number, len: number): string {
  return n.toString(8).padStart(len - 1, '0') + '\0';
}

function header(spec: {
  name: string;
  flag: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname: string;
  devMajor: number;
  devMinor: number;
}): Buffer {
  const b = Buffer.alloc(512);
  b.write(spec.name.slice(0, 100), 0, 'utf8');
  b.write(octal(spec.mode, 8), 100, 'latin1');
  b.write(octal(Math.min(spec.uid, 0o7777777), 8), 108, 'latin1');
  b.write(octal(Math.min(spec.gid, 0o7777777), 8), 116, 'latin1');
  b.write(octal(spec.size, 12), 124, 'latin1');
  b.write(octal(spec.mtime, 12), 136, 'latin1');
  b.write('        ', 148, 'latin1');
  b.write(spec.flag, 156, 'latin1');
  b.write(spec.linkname.slice(0, 100), 157, 'utf8');
  b.write('ustar\0', 257, 'latin1');
  b.write('00', 263, 'latin1');
  b.write('root', 265, 'latin1');
  b.write('root', 297, 'latin1');
  b.write(octal(spec.devMajor, 8), 329, 'latin1');
  b.write(octal(spec.devMinor, 8), 337, 'latin1');
  let sum = 0;
  for (const x of b) sum += x;
  b.write(octal(sum, 7) + ' ', 148, 'latin1');
  return b;
}

const pad = (n: number): Buffer => Buffer.alloc((512 - (n % 512)) % 512);

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

export function makeTar(entries: TarSpec[], opts: { end?: boolean } = {}): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? (e.name.endsWith('/') ? 'dir' : 'file');
    const content =
      e.content === undefined
        ? Buffer.alloc(0)
        : typeof e.content === 'string'
          ? Buffer.from(e.content)
          : e.content;
    const linkname = e.linkname ?? '';
    const pax: [string, Buffer][] = [];
    const nameBytes = Buffer.byteLength(e.name);
    if (nameBytes > 100 || nameBytes !== e.name.length) pax.push(['path', Buffer.from(e.name)]);
    if (Buffer.byteLength(linkname) > 100 || Buffer.byteLength(linkname) !== linkname.length)
      pax.push(['linkpath', Buffer.from(linkname)]);
    if ((e.uid ?? 0) > 0o7777777) pax.push(['uid', Buffer.from(String(e.uid))]);
    if ((e.gid ?? 0) > 0o7777777) pax.push(['gid', Buffer.from(String(e.gid))]);
    for (const [k, v] of Object.entries(e.xattrs ?? {}))
      pax.push([`SCHILY.xattr.${k}`, Buffer.isBuffer(v) ? v : Buffer.from(v)]);
    for (const [k, v] of Object.entries(e.pax ?? {}))
      pax.push([k, Buffer.isBuffer(v) ? v : Buffer.from(v)]);
    const common = {
      mode: e.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: e.mtime ?? 1_700_000_000,
      devMajor: e.devMajor ?? 0,
      devMinor: e.devMinor ?? 0,
    };
    if (pax.length) {
      const data = Buffer.concat(pax.map(([k, v]) => paxRecord(k, v)));
      out.push(
        header({ ...common, name: 'PaxHeader', flag: 'x', size: data.length, linkname: '' }),
        data,
        pad(data.length),
      );
    }
    out.push(
      header({
        ...common,
        name: e.name,
        flag: e.typeflag ?? FLAGS[type],
        size: content.length,
        linkname,
      }),
      content,
      pad(content.length),
    );
  }
  if (opts.end !== false) out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

export const gzip = (b: Buffer, level = 6): Buffer => zlib.gzipSync(b, { level });

/** zstd via the CLI (Node 20 has no zstd in zlib). */
export function zstd(b: Buffer): Buffer {
  const r = spawnSync('zstd', ['-q', '-c', '-3'], { input: b, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr.toString()}`);
  return r.stdout;
}

/** An async byte source from a buffer, in chunks (to exercise boundaries). */
export async function* chunked(b: Buffer, size = 4096): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}
