import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ProgressSink } from '../../api/events.js';
import type { Paths } from '../../config/paths.js';
import { BangerError } from '../../errors.js';
import { DISKS } from '../../guest/bootContract.js';
import { contractFingerprint, guestContractOps, type ContractOp } from '../../guest/contract.js';
import { mmdebstrapContractHooks } from '../../guest/contract/apply.js';
import { run, which } from '../../util/exec.js';
import { spawnLogged, type BuildLog } from '../buildLog.js';
import { tarToExt4 } from '../tree/toExt4.js';
import type { RootfsTree } from '../tree/index.js';
import { fileSize, IMAGE_FILES, type FileSize } from '../files.js';
import { ensureMise } from '../mise.js';
import { recipeOps, type Recipe } from '../recipe.js';
import { splitWorkSeed } from '../workSeed.js';
import { chooseMirror, HOST_SOURCE_FILES, type MirrorChoice } from './mirror.js';
import {
  APT_ARCHIVES,
  DPKG_NODOC_CFG,
  mmdebstrapArgs,
  mmdebstrapEnv,
  parseNeedToGet,
  parsePhase,
  parseTempdir,
} from './mmdebstrap.js';
import { chooseBuildMode, type BuildMode, type ModeFacts } from './mode.js';

/**
 * Build a Debian image from a recipe: mmdebstrap (rootless where possible) →
 * tar with the guest contract applied in the chroot → base ext4 (read-only,
 * no journal, label banger-base) + work-seed ext4 (the image's /root). The
 * side-effecting edge of src/image/debian; the decisions are in mode.ts,
 * mirror.ts and mmdebstrap.ts.
 */

export interface DebianBuildOptions {
  name: string;
  recipe: Recipe;
  /** Scratch dir of this build (removed by the caller). */
  buildDir: string;
  /** Where the artifacts go (rootfs.ext4, work-seed.ext4, packages.txt). */
  outDir: string;
  paths: Paths;
  /** Host path of the static guest agent. */
  agentBinary: string;
  log: BuildLog;
  emit: ProgressSink;
  signal?: AbortSignal;
}

export interface BuiltImage {
  rootfsPath: string;
  workSeedPath: string;
  rootfs: FileSize;
  workSeed: FileSize;
  mode: BuildMode;
  mirror: string;
  /** Installed packages, `name=version`. */
  packages: string[];
  /** .deb bytes downloaded by this build (0 with a warm cache). */
  downloadedBytes: number;
  tarBytes: number;
  mise: { version: string; sha256: string; downloadedBytes: number } | null;
  /** sha256 of the guest contract as applied (operations + injected files). */
  contractSha256: string;
  ms: Record<string, number>;
}

const REQUIRED_TOOLS = ['mmdebstrap', 'tar', 'mkfs.ext4', 'debugfs'] as const;

export async function buildDebianImage(o: DebianBuildOptions): Promise<BuiltImage> {
  const { emit, log, recipe } = o;
  const ms: Record<string, number> = {};
  const t0 = Date.now();
  const step = stepper(emit, log, ms);

  // ---- resolve: tools, mode, mirror, scratch space
  step.start('resolve', `check host for a ${recipe.suite} build`);
  for (const t of REQUIRED_TOOLS) {
    if (!which(t)) {
      throw new BangerError('tool_missing', `${t} not found (needed to build image ${o.name})`, {
        hint: 'install the image build tools: sudo apt-get install mmdebstrap uidmap e2fsprogs tar',
      });
    }
  }
  const mode = chooseBuildMode(await modeFacts(o.signal));
  const mirror = hostMirror(recipe.suite);
  const chrootTmp =
    mode === 'unshare' && process.getuid?.() !== 0
      ? sharedTmpDir()
      : path.join(o.buildDir, 'chroot');
  fs.mkdirSync(chrootTmp, { recursive: true });
  step.done('resolve', `mode ${mode}, ${mirror.reason}`);

  // ---- mise
  let mise: BuiltImage['mise'] = null;
  let miseBinary: string | undefined;
  if (recipe.mise) {
    step.start('mise', `mise ${recipe.mise.version}`);
    const m = await ensureMise(recipe.mise, {
      cacheDir: o.paths.cacheDir,
      emit,
      progressId: 'mise',
      signal: o.signal,
    });
    miseBinary = m.path;
    mise = { version: m.version, sha256: m.sha256, downloadedBytes: m.downloaded };
    step.done('mise', m.downloaded ? `downloaded ${m.downloaded} bytes` : 'cached');
  }

  // ---- the guest contract, as mmdebstrap hooks
  const ops: ContractOp[] = [
    ...guestContractOps({ agentBinary: o.agentBinary, miseBinary }),
    ...recipeOps(recipe),
  ];
  const contractSha256 = createHash('sha256')
    .update(contractFingerprint(ops, sha256File))
    .digest('hex');
  const contractHooks = await mmdebstrapContractHooks(ops, o.buildDir, {
    mtime: recipe.sourceDateEpoch,
  });
  const dpkgOptFile = path.join(o.buildDir, 'dpkg-nodoc.cfg');
  fs.writeFileSync(dpkgOptFile, DPKG_NODOC_CFG, { mode: 0o644 });
  const debCacheDir = o.paths.debCacheDir;
  fs.mkdirSync(debCacheDir, { recursive: true });

  // ---- bootstrap
  const tar = path.join(o.buildDir, 'rootfs.tar');
  const args = mmdebstrapArgs({
    recipe,
    mode,
    mirror,
    output: tar,
    debCacheDir,
    dpkgOptFile,
    contractHooks,
  });
  step.start('bootstrap', `bootstrap Debian ${recipe.suite} (mmdebstrap --mode=${mode})`);
  const cachedBefore = debBytes(debCacheDir);
  let chroot: string | undefined;
  let need = 0;
  let downloaded = 0;
  let phase: string | undefined;
  const poll = setInterval(() => {
    if (!chroot) return;
    const now = Math.max(0, debBytes(path.join(chroot, APT_ARCHIVES), true) - cachedBefore);
    if (now !== downloaded) {
      downloaded = Math.max(downloaded, now);
      emit({
        type: 'progress',
        id: 'bootstrap',
        current: downloaded,
        total: need || undefined,
        unit: 'bytes',
      });
    }
  }, 500);
  try {
    await spawnLogged('mmdebstrap', args, {
      env: { ...process.env, ...mmdebstrapEnv(recipe, chrootTmp) },
      cwd: o.buildDir,
      signal: o.signal,
      log,
      what: `building image ${o.name}`,
      onLine: (line) => {
        chroot ??= parseTempdir(line);
        const n = parseNeedToGet(line);
        if (n !== undefined) need += n;
        const p = parsePhase(line);
        if (p && p !== phase) {
          if (phase) step.done(`bootstrap:${phase}`);
          phase = p;
          step.start(`bootstrap:${phase}`, `bootstrap: ${phase}`);
        }
      },
    });
    if (phase) step.done(`bootstrap:${phase}`);
  } catch (e) {
    if (phase) step.fail(`bootstrap:${phase}`);
    throw e;
  } finally {
    clearInterval(poll);
  }
  downloaded = Math.max(downloaded, debBytes(debCacheDir) - cachedBefore, 0);
  const tarBytes = fs.statSync(tar).size;
  step.done('bootstrap', `${mb(downloaded)} downloaded, tar ${mb(tarBytes)}`);

  // ---- convert: tar → base ext4, /root → work-seed ext4
  step.start('convert', 'convert to ext4 (base rootfs + work-seed)');
  fs.mkdirSync(o.outDir, { recursive: true, mode: 0o755 });
  const rootfsPath = path.join(o.outDir, IMAGE_FILES.rootfs);
  const workSeedPath = path.join(o.outDir, IMAGE_FILES.workSeed);
  let packages: string[] = [];
  await tarToExt4(tar, rootfsPath, {
    label: DISKS.base.label,
    journal: false,
    workDir: o.buildDir,
    sizeHint: tarBytes,
    devices: 'keep',
    emit,
    signal: o.signal,
    prepare: async (tree) => {
      packages = installedPackages(tree);
      const seed = await splitWorkSeed(tree, workSeedPath, {
        workDir: o.buildDir,
        emit: relabel(emit, 'work-seed'),
        signal: o.signal,
      });
      log.line(
        `work-seed: ${seed.moved} entries moved from /root${seed.skipped.length ? `, skipped ${seed.skipped.join(' ')}` : ''}`,
      );
    },
  });
  fs.rmSync(tar, { force: true });
  fs.writeFileSync(
    path.join(o.outDir, IMAGE_FILES.packages),
    packages.map((p) => `${p}\n`).join(''),
  );
  const rootfs = fileSize(rootfsPath)!;
  const workSeed = fileSize(workSeedPath)!;
  step.done(
    'convert',
    `rootfs ${mb(rootfs.sizeBytes)} (${mb(rootfs.allocatedBytes)} allocated), work-seed ${mb(workSeed.sizeBytes)}`,
  );
  ms.total = Date.now() - t0;
  return {
    rootfsPath,
    workSeedPath,
    rootfs,
    workSeed,
    mode,
    mirror: mirror.reason,
    packages,
    downloadedBytes: downloaded,
    tarBytes,
    mise,
    contractSha256,
    ms,
  };
}

// ------------------------------------------------------------------ helpers

const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;

function sha256File(p: string): string {
  return createHash('sha256').update(fs.readFileSync(p)).digest('hex');
}

/** Steps with timings recorded into `ms` and mirrored into the build log. */
function stepper(emit: ProgressSink, log: BuildLog, ms: Record<string, number>) {
  const started = new Map<string, { at: number; label: string }>();
  return {
    start(id: string, label: string) {
      started.set(id, { at: Date.now(), label });
      log.line(`step ${id}: ${label}`);
      emit({ type: 'step', id, label, state: 'start' });
    },
    done(id: string, detail?: string) {
      const s = started.get(id);
      const took = s ? Date.now() - s.at : 0;
      if (!id.includes(':')) ms[id] = took;
      log.line(`step ${id} done in ${took} ms${detail ? `: ${detail}` : ''}`);
      emit({
        type: 'step',
        id,
        label: s?.label ?? id,
        state: 'done',
        ms: took,
        ...(detail ? { detail } : {}),
      });
    },
    fail(id: string) {
      const s = started.get(id);
      emit({ type: 'step', id, label: s?.label ?? id, state: 'fail' });
    },
  };
}

/** Re-label a sub-operation's step events (`ext4:mkfs` → `work-seed:mkfs`, "work-seed: make ext4"). */
function relabel(emit: ProgressSink, prefix: string): ProgressSink {
  return (e) => {
    if (e.type === 'step') emit({ ...e, id: `${prefix}:${e.id}`, label: `${prefix}: ${e.label}` });
    else if (e.type === 'progress') emit({ ...e, id: `${prefix}:${e.id}` });
    else emit(e);
  };
}

/** Bytes of .deb files in a directory (and its partial/ when asked). Unreadable → 0. */
function debBytes(dir: string, withPartial = false): number {
  let n = 0;
  const add = (d: string) => {
    let names: string[];
    try {
      names = fs.readdirSync(d);
    } catch {
      return;
    }
    for (const f of names) {
      if (!f.endsWith('.deb') && d === dir) continue;
      try {
        const st = fs.statSync(path.join(d, f));
        if (st.isFile()) n += st.size;
      } catch {
        // raced with apt
      }
    }
  };
  add(dir);
  if (withPartial) add(path.join(dir, 'partial'));
  return n;
}

/** `name=version` of every installed package, from the tree's dpkg status. */
export function parseDpkgStatus(text: string): string[] {
  const out: string[] = [];
  for (const stanza of text.split(/\n\n+/)) {
    const name = /^Package: (\S+)/m.exec(stanza)?.[1];
    const version = /^Version: (\S+)/m.exec(stanza)?.[1];
    const status = /^Status: (.+)$/m.exec(stanza)?.[1];
    if (name && version && status?.endsWith(' installed')) out.push(`${name}=${version}`);
  }
  return out.sort();
}

function installedPackages(tree: RootfsTree): string[] {
  try {
    return parseDpkgStatus(tree.readFile('/var/lib/dpkg/status').toString('utf8'));
  } catch {
    return [];
  }
}

function hostMirror(suite: string): MirrorChoice {
  const files: { path: string; content: string }[] = [];
  for (const p of HOST_SOURCE_FILES) {
    try {
      files.push({ path: p, content: fs.readFileSync(p, 'utf8') });
    } catch {
      // not there
    }
  }
  return chooseMirror(files, suite);
}

const readMaybe = (p: string): string | null => {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return null;
  }
};

async function modeFacts(signal?: AbortSignal): Promise<ModeFacts> {
  const uid = process.getuid?.() ?? 0;
  let canUnshareMount = false;
  if (uid === 0) {
    const r = await run('unshare', ['--mount', '--propagation', 'unchanged', '--', 'true'], {
      allowFailure: true,
      signal,
    }).catch(() => undefined);
    canUnshareMount = r?.code === 0;
  }
  return {
    uid,
    user: os.userInfo().username,
    subuid: readMaybe('/etc/subuid'),
    subgid: readMaybe('/etc/subgid'),
    hasIdmapTools: Boolean(which('newuidmap') && which('newgidmap')),
    canUnshareMount,
    unprivilegedUsernsClone: readMaybe('/proc/sys/kernel/unprivileged_userns_clone'),
    apparmorRestrictUserns: readMaybe('/proc/sys/kernel/apparmor_restrict_unprivileged_userns'),
    maxUserNamespaces: readMaybe('/proc/sys/user/max_user_namespaces'),
  };
}

/**
 * A scratch dir the unshared root can use (rootless builds): world-writable
 * with every ancestor world-searchable, as mmdebstrap requires.
 */
export function sharedTmpDir(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = [env.TMPDIR, '/var/tmp', '/tmp'].filter((d): d is string => Boolean(d));
  for (const d of candidates) {
    try {
      const st = fs.statSync(d);
      if (!st.isDirectory() || (st.mode & 0o003) !== 0o003) continue;
      let ok = true;
      for (let p = path.dirname(path.resolve(d)); ; p = path.dirname(p)) {
        if ((fs.statSync(p).mode & 0o001) === 0) ok = false;
        if (p === '/') break;
      }
      if (ok) return d;
    } catch {
      // next
    }
  }
  throw new BangerError(
    'precondition',
    'no world-writable temporary directory for a rootless image build',
    {
      hint: 'mmdebstrap needs one (e.g. /var/tmp with mode 1777)',
    },
  );
}
