import fs from 'node:fs';
import path from 'node:path';
import tarStream from 'tar-stream';
import { BangerError } from '../../errors.js';
import { checkOps, withBlock, type BlockOp, type ContractOp, type WriteOp } from '../contract.js';

/**
 * The two appliers of the guest contract (src/guest/contract.ts):
 *
 *  - `applyContractToTree(ops, tree)`: edits an in-memory rootfs tree — the
 *    OCI pull's RootfsTree (src/image/tree), or anything with the same few
 *    methods (`ContractTree`).
 *  - `mmdebstrapContractHooks(ops, dir)`: turns the operations into
 *    mmdebstrap `--customize-hook` arguments that apply them to the chroot
 *    while it is being built: removals run inside the chroot (`chroot "$1"
 *    rm ...`), fenced blocks are edited there by a small sed script, and
 *    everything else goes in through `tar-in` of a tar written here, so
 *    owners and modes are exact in every mode (root or unshare) and no host
 *    file has to be readable by the unshared root.
 *
 * Both walk the same list in order, so the two paths give the same result.
 */

export interface ContractMeta {
  uid: number;
  gid: number;
  mode?: number;
  /** Seconds since the epoch. */
  mtime?: number;
}

/** What `applyContractToTree` needs of a tree; RootfsTree has all of it. */
export interface ContractTree {
  writeFile(p: string, content: string | Buffer, meta?: ContractMeta): void;
  mkdir(p: string, meta?: ContractMeta): void;
  symlink(p: string, target: string, meta?: ContractMeta): void;
  remove(p: string): boolean;
  readFile(p: string): Buffer;
  exists(p: string, opts?: { follow?: boolean }): boolean;
  get(p: string, opts?: { follow?: boolean }): { type: string } | undefined;
  list(p: string): string[];
}

export interface ApplyOptions {
  /** mtime for created entries (SOURCE_DATE_EPOCH); default now. */
  mtime?: number;
}

const parentOf = (p: string): string => p.slice(0, p.lastIndexOf('/')) || '/';
const baseOf = (p: string): string => p.slice(p.lastIndexOf('/') + 1);

/** `*` in a name → RegExp (anchored; other characters literal). */
export function globToRegExp(name: string): RegExp {
  return new RegExp(
    `^${name
      .split('*')
      .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );
}

/** Apply the contract to an in-memory tree (OCI pulls). */
export function applyContractToTree(
  ops: readonly ContractOp[],
  tree: ContractTree,
  opts: ApplyOptions = {},
): void {
  checkOps(ops);
  const mtime = opts.mtime ?? Math.floor(Date.now() / 1000);
  for (const o of ops) {
    switch (o.kind) {
      case 'remove': {
        const name = baseOf(o.path);
        if (!name.includes('*')) {
          tree.remove(o.path);
          break;
        }
        const dir = parentOf(o.path);
        if (tree.get(dir, { follow: true })?.type !== 'dir') break;
        const re = globToRegExp(name);
        for (const n of tree.list(dir)) if (re.test(n)) tree.remove(`${dir}/${n}`);
        break;
      }
      case 'dir':
        tree.mkdir(o.path, { uid: o.uid, gid: o.gid, mode: o.mode, mtime });
        break;
      case 'symlink':
        tree.symlink(o.path, o.target, { uid: o.uid, gid: o.gid, mtime });
        break;
      case 'file': {
        const content = 'sourcePath' in o ? readHostFile(o.sourcePath) : o.content;
        tree.writeFile(o.path, content, { uid: o.uid, gid: o.gid, mode: o.mode, mtime });
        break;
      }
      case 'block': {
        const old =
          tree.get(o.path, { follow: true })?.type === 'file'
            ? tree.readFile(o.path).toString('utf8')
            : undefined;
        tree.writeFile(o.path, withBlock(old, o), { uid: o.uid, gid: o.gid, mode: o.mode, mtime });
        break;
      }
    }
  }
}

function readHostFile(p: string): Buffer {
  try {
    return fs.readFileSync(p);
  } catch (e) {
    throw new BangerError(
      'internal',
      `cannot read ${p} for the guest contract: ${(e as Error).message}`,
      {
        hint: 'rebuild banger (npm run build) so dist/guest/banger-agent exists',
        cause: e,
      },
    );
  }
}

/** Single-quote a word for sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A path for sh with `*` in its last component left unquoted (a glob). */
export function shGlobPath(p: string): string {
  const dir = parentOf(p);
  const name = baseOf(p);
  const parts = name.split('*').map((s) => (s ? shQuote(s) : ''));
  return `${shQuote(dir === '/' ? '/' : `${dir}/`)}${parts.join('*')}`;
}

/** The shell command of one removal hook: runs inside the chroot, so paths resolve there. */
export function removalHookScript(paths: readonly string[]): string {
  const words = paths.map(shGlobPath).join(' ');
  return `chroot "$1" /bin/sh -c ${shQuote(`rm -rf -- ${words}`)}`;
}

/** A line as a basic regular expression for sed, anchored at both ends. */
export function sedLineRe(line: string): string {
  return `^${line.replace(/[\\/.*[\]^$]/g, '\\$&')}$`;
}

/**
 * The sh script of one block operation (see `withBlock`, which it mirrors):
 * run inside the chroot, or with `root` prefixed to the path (tests).
 * Needs sed, tail, chown, chmod: all essential in Debian.
 */
export function blockScript(o: BlockOp, root = ''): string {
  const f = shQuote(`${root}${o.path}`);
  const range = shQuote(`/${sedLineRe(o.begin)}/,/${sedLineRe(o.end)}/d`);
  const lines = [o.begin, ...o.lines, o.end].map(shQuote).join(' ');
  return [
    `f=${f}`,
    'if [ -f "$f" ]; then',
    `  sed -i -e ${range} "$f" || exit 1`,
    '  if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >> "$f"; fi',
    'else',
    `  : > "$f" && chown ${o.uid}:${o.gid} "$f" && chmod ${o.mode.toString(8)} "$f" || exit 1`,
    'fi',
    `printf '%s\\n' ${lines} >> "$f"`,
    '',
  ].join('\n');
}

/** The shell command of one block hook: runs inside the chroot. */
export function blockHookScript(o: BlockOp): string {
  return `chroot "$1" /bin/sh -c ${shQuote(blockScript(o))}`;
}

/** One step of the chroot applier: a removal script, a block edit or a tar of entries to unpack at /. */
export type HookStep =
  | { kind: 'remove'; paths: string[] }
  | { kind: 'block'; op: BlockOp }
  | { kind: 'tar'; ops: WriteOp[] };

/** Group the operations into ordered hook steps (consecutive removals / consecutive writes). Pure. */
export function planHookSteps(ops: readonly ContractOp[]): HookStep[] {
  checkOps(ops);
  const steps: HookStep[] = [];
  for (const o of ops) {
    const last = steps[steps.length - 1];
    if (o.kind === 'remove') {
      if (last?.kind === 'remove') last.paths.push(o.path);
      else steps.push({ kind: 'remove', paths: [o.path] });
    } else if (o.kind === 'block') steps.push({ kind: 'block', op: o });
    else if (last?.kind === 'tar') last.ops.push(o);
    else steps.push({ kind: 'tar', ops: [o] });
  }
  return steps;
}

/** Tar entry name of a guest path (relative, like mmdebstrap's own tars). */
const tarName = (p: string): string => `.${p}`;

/** Write the tar of one write step: entries carry the exact owner, mode and mtime. */
export async function writeContractTar(
  ops: readonly WriteOp[],
  file: string,
  opts: ApplyOptions = {},
): Promise<void> {
  const mtime = new Date((opts.mtime ?? Math.floor(Date.now() / 1000)) * 1000);
  const pack = tarStream.pack();
  const out = fs.createWriteStream(file, { mode: 0o600 });
  const done = new Promise<void>((resolve, reject) => {
    out.on('close', resolve);
    out.on('error', reject);
    pack.on('error', reject);
  });
  pack.pipe(out);
  const add = (h: Parameters<typeof pack.entry>[0], body?: Buffer): Promise<void> =>
    new Promise((resolve, reject) => {
      pack.entry(h, body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  try {
    for (const o of ops) {
      const base = { name: tarName(o.path), uid: o.uid, gid: o.gid, mtime, uname: '', gname: '' };
      if (o.kind === 'dir') {
        await add({ ...base, name: `${base.name}/`, type: 'directory', mode: o.mode });
      } else if (o.kind === 'symlink') {
        await add({ ...base, type: 'symlink', linkname: o.target, mode: 0o777 });
      } else {
        const body = 'sourcePath' in o ? readHostFile(o.sourcePath) : Buffer.from(o.content);
        await add({ ...base, type: 'file', mode: o.mode, size: body.length }, body);
      }
    }
    pack.finalize();
  } catch (e) {
    pack.destroy(e as Error);
  }
  await done;
}

/**
 * Apply the contract to an mmdebstrap chroot: writes one tar per write step
 * into `dir` and returns the `--customize-hook=...` arguments, in order.
 */
export async function mmdebstrapContractHooks(
  ops: readonly ContractOp[],
  dir: string,
  opts: ApplyOptions = {},
): Promise<string[]> {
  const args: string[] = [];
  let n = 0;
  for (const step of planHookSteps(ops)) {
    if (step.kind === 'remove') {
      args.push(`--customize-hook=${removalHookScript(step.paths)}`);
    } else if (step.kind === 'block') {
      args.push(`--customize-hook=${blockHookScript(step.op)}`);
    } else {
      const file = path.join(dir, `contract-${++n}.tar`);
      await writeContractTar(step.ops, file, opts);
      args.push(`--customize-hook=${tarInHook(file)}`);
    }
  }
  return args;
}

/** mmdebstrap parses special hooks with shellwords: quote the outside path. */
export const tarInHook = (file: string): string => `tar-in ${shQuote(file)} /`;
