import { shQuote } from '../../guest/contract/apply.js';
import { includedPackages, type Recipe } from '../recipe.js';
import type { BuildMode } from './mode.js';
import type { MirrorChoice } from './mirror.js';

/**
 * The mmdebstrap command line, built from data (recipe, mode, mirror, hooks).
 * Pure: tests check it as an argv.
 */

/** dpkg path excludes: no man pages, docs (copyright kept), locales, info, lintian. */
export const DPKG_NODOC_CFG = [
  '# banger: no documentation in images (kept for later apt installs in the VM too)',
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/locale/*',
  'path-include=/usr/share/locale/locale.alias',
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/lintian/*',
  '',
].join('\n');

export const APT_ARCHIVES = '/var/cache/apt/archives';

export interface MmdebstrapInput {
  recipe: Recipe;
  mode: BuildMode;
  mirror: MirrorChoice;
  /** Output tar file. */
  output: string;
  /** Persistent .deb cache on the host (<cache>/debs). */
  debCacheDir: string;
  /** File holding DPKG_NODOC_CFG. */
  dpkgOptFile: string;
  /** `--customize-hook=...` arguments that apply the guest contract (mmdebstrapContractHooks). */
  contractHooks: string[];
}

export function mmdebstrapArgs(i: MmdebstrapInput): string[] {
  const cache = shQuote(i.debCacheDir);
  const args = [
    `--mode=${i.mode}`,
    `--variant=${i.recipe.variant}`,
    '--format=tar',
    '--verbose',
    `--include=${includedPackages(i.recipe).join(',')}`,
    '--aptopt=Acquire::Languages "none"',
    '--aptopt=APT::Install-Recommends "false"',
    `--dpkgopt=${i.dpkgOptFile}`,
    // keep the essential packages' .debs so sync-out can save them too
    '--skip=essential/unlink',
    `--setup-hook=mkdir -p "$1"${APT_ARCHIVES}/`,
    `--setup-hook=sync-in ${cache} ${APT_ARCHIVES}/`,
    `--customize-hook=sync-out ${APT_ARCHIVES} ${cache}`,
    // sync-in copied the cache dir's owner (the invoking user) onto the chroot's copy
    `--customize-hook=chown 0:0 "$1"${APT_ARCHIVES}`,
    ...i.contractHooks,
    i.recipe.suite,
    i.output,
  ];
  if (i.mirror.kind === 'file') args.push(i.mirror.path);
  else args.push(...i.mirror.lines);
  return args;
}

/** Environment additions for mmdebstrap. */
export function mmdebstrapEnv(recipe: Recipe, tmpDir: string): Record<string, string> {
  return {
    SOURCE_DATE_EPOCH: String(recipe.sourceDateEpoch),
    TMPDIR: tmpDir,
    LC_ALL: 'C.UTF-8',
    DEBIAN_FRONTEND: 'noninteractive',
  };
}

const UNITS: Record<string, number> = { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 };

/** `Need to get 42.2 MB of archives.` → bytes (apt's decimal units). */
export function parseNeedToGet(line: string): number | undefined {
  const m = /Need to get ([\d.,]+) (B|kB|MB|GB)(?:\/[\d.,]+ \w+)? of archives/.exec(line);
  if (!m) return undefined;
  return Math.round(Number(m[1]!.replace(/,/g, '')) * UNITS[m[2]!]!);
}

/** `I: using /tmp/mmdebstrap.XXXX as tempdir` → the chroot path. */
export function parseTempdir(line: string): string | undefined {
  return /^I: using (\S+) as tempdir/.exec(line)?.[1];
}

/** mmdebstrap's phase lines (`I: installing remaining packages inside the chroot...`) → a short label. */
export function parsePhase(line: string): string | undefined {
  const m =
    /^I: (running apt-get update|downloading packages|extracting archives|installing essential packages|installing remaining packages|running special hook: sync-out|creating tarball)/.exec(
      line,
    );
  if (!m) return undefined;
  const map: Record<string, string> = {
    'running apt-get update': 'update package lists',
    'downloading packages': 'download packages',
    'extracting archives': 'extract essential packages',
    'installing essential packages': 'install essential packages',
    'installing remaining packages': 'install packages',
    'running special hook: sync-out': 'apply guest contract',
    'creating tarball': 'write rootfs tar',
  };
  return map[m[1]!];
}
