import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BangerError, isBangerError } from '../../errors.js';
import type { RunOptions, RunResult } from '../../util/exec.js';

/**
 * Debian packages through the host's apt: resolve a metapackage to the
 * concrete package, download it with `apt-get download` (no root needed, no
 * install), verify its SHA256 against the apt lists (whose Release signature
 * apt checked). Parsing is pure; the functions that run apt take a runner.
 */

export interface DebPackage {
  package: string;
  version: string;
  architecture: string;
  /** Path in the archive (pool/...); its basename names the cached file. */
  filename: string;
  size: number;
  sha256: string;
}

export type Runner = (cmd: string, args: string[], opts?: RunOptions) => Promise<RunResult>;

/** RFC 822-style stanzas of `apt-cache show` (continuation lines folded). Pure. */
export function parseControl(text: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  let cur: Record<string, string> = {};
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (Object.keys(cur).length) out.push(cur);
      cur = {};
      last = undefined;
    } else if (/^\s/.test(line) && last) {
      cur[last] += `\n${line.trim()}`;
    } else {
      const i = line.indexOf(':');
      if (i <= 0) continue;
      last = line.slice(0, i);
      cur[last] = line.slice(i + 1).trim();
    }
  }
  if (Object.keys(cur).length) out.push(cur);
  return out;
}

/** The kernel image package a metapackage depends on: `linux-image-X (= V)` → {X, V}. Pure. */
export function kernelDependency(
  stanza: Record<string, string>,
): { package: string; version?: string } | undefined {
  for (const alt of (stanza.Depends ?? '').split(',')) {
    const first = alt.split('|')[0]!.trim();
    const m = /^(linux-image-[a-z0-9.+-]+)(?::[a-z0-9]+)?\s*(?:\(\s*=\s*([^)\s]+)\s*\))?$/.exec(
      first,
    );
    if (m) return { package: m[1]!, version: m[2] };
  }
  return undefined;
}

export function debFromStanza(s: Record<string, string>): DebPackage {
  const need = (k: string): string => {
    const v = s[k];
    if (!v) {
      throw new BangerError('image_invalid', `apt has no ${k} for package ${s.Package ?? '?'}`, {
        hint: 'run sudo apt-get update and retry',
      });
    }
    return v;
  };
  const sha256 = need('SHA256').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(sha256)) {
    throw new BangerError('image_invalid', `apt lists a malformed SHA256 for ${s.Package}`, {
      hint: 'run sudo apt-get update and retry',
    });
  }
  return {
    package: need('Package'),
    version: need('Version'),
    architecture: s.Architecture ?? 'amd64',
    filename: need('Filename'),
    size: Number(need('Size')),
    sha256,
  };
}

/** Name of the cached .deb: the archive's file name (versions with ':' are escaped by apt as %3a). */
export const debCacheName = (d: DebPackage): string => path.basename(d.filename);

const listsHint = 'run sudo apt-get update (banger fetches kernels through the host apt lists)';

/** `apt-cache show --no-all-versions` of several specs (names, name=version, globs). */
async function aptCacheShow(
  runner: Runner,
  specs: string[],
  signal?: AbortSignal,
): Promise<Record<string, string>[]> {
  let r: RunResult;
  try {
    r = await runner('apt-cache', ['show', '--no-all-versions', ...specs], {
      allowFailure: true,
      signal,
      timeoutMs: 60_000,
      what: 'resolving the kernel package',
      env: { ...process.env, LC_ALL: 'C' },
    });
  } catch (e) {
    if (isBangerError(e) && e.code === 'tool_missing') {
      throw new BangerError(
        'tool_missing',
        'apt-cache not found (banger fetches Debian kernels with apt)',
        { hint: 'run banger on Debian or Ubuntu, or install apt' },
      );
    }
    throw e;
  }
  return parseControl(r.stdout);
}

const notInLists = (spec: string): BangerError =>
  new BangerError('precondition', `package ${spec} is not in the apt lists`, { hint: listsHint });

/**
 * Metapackage → the concrete kernel package and its archive facts. With
 * `candidates` (a glob such as `linux-image-*-cloud-amd64`) both are read in
 * one apt-cache call, which matters where apt keeps no binary cache (each
 * call then re-reads the lists, ~1 s).
 */
export async function resolveKernelPackage(
  runner: Runner,
  metapackage: string,
  signal?: AbortSignal,
  candidates?: string,
): Promise<{ meta: { package: string; version: string }; deb: DebPackage }> {
  const first = await aptCacheShow(
    runner,
    candidates ? [metapackage, candidates] : [metapackage],
    signal,
  );
  const meta = first.find((s) => s.Package === metapackage);
  if (!meta) throw notInLists(metapackage);
  const dep = kernelDependency(meta);
  if (!dep) {
    throw new BangerError(
      'image_invalid',
      `package ${metapackage} does not depend on a linux-image package`,
      { hint: 'the catalog entry is out of date; report this as a bug' },
    );
  }
  const matches = (s: Record<string, string>): boolean =>
    s.Package === dep.package && (!dep.version || s.Version === dep.version);
  let stanza = first.find(matches);
  if (!stanza) {
    const spec = dep.version ? `${dep.package}=${dep.version}` : dep.package;
    stanza = (await aptCacheShow(runner, [spec], signal)).find(matches);
    if (!stanza) throw notInLists(spec);
  }
  return {
    meta: { package: metapackage, version: meta.Version ?? '' },
    deb: debFromStanza(stanza),
  };
}

export async function sha256File(file: string, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { signal })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Is `file` the package (size and SHA256)? */
export async function verifyDeb(
  file: string,
  deb: DebPackage,
  signal?: AbortSignal,
): Promise<boolean> {
  try {
    if ((await fs.promises.stat(file)).size !== deb.size) return false;
  } catch {
    return false;
  }
  return (await sha256File(file, signal)) === deb.sha256;
}

/** One-line error for a failed `apt-get download`, from its output. Pure. */
export function aptDownloadError(deb: DebPackage, output: string): BangerError {
  const what = `downloading ${deb.package}=${deb.version} failed`;
  const line =
    output
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('E:') || l.startsWith('Err:'))
      .pop() ??
    output.trim().split('\n').pop() ??
    '';
  const reason = line.replace(/^E:\s*/, '');
  if (/404\s+Not Found|Unable to locate|Can't find a source|No packages found/i.test(output)) {
    return new BangerError('precondition', `${what}: the apt lists are out of date (${reason})`, {
      hint: listsHint,
    });
  }
  if (
    /Could not resolve|Temporary failure|Connection (failed|timed out|refused)|Network is unreachable|Could not connect/i.test(
      output,
    )
  ) {
    return new BangerError('network', `${what}: ${reason}`, {
      hint: 'check the network connection and apt proxy settings',
    });
  }
  return new BangerError('tool_failed', `${what}: ${reason || 'apt-get exited with an error'}`, {
    hint: 'see the build log under <state>/image-build/',
  });
}

/**
 * `apt-get download pkg=ver` into `workDir` (a fresh directory), reporting
 * the growing file size. Returns the downloaded file. The caller verifies it.
 */
export async function aptDownload(
  runner: Runner,
  deb: DebPackage,
  workDir: string,
  opts: {
    signal?: AbortSignal;
    onBytes?: (bytes: number) => void;
    onOutput?: RunOptions['onOutput'];
  } = {},
): Promise<string> {
  const args = ['download', '-q', `${deb.package}=${deb.version}`];
  // As root, apt downloads as user _apt, which cannot write a private dir: stay root instead.
  if (process.getuid?.() === 0) args.unshift('-o', 'APT::Sandbox::User=root');
  const poll = setInterval(() => {
    try {
      const f = fs.readdirSync(workDir).find((n) => n.endsWith('.deb'));
      if (f) opts.onBytes?.(fs.statSync(path.join(workDir, f)).size);
    } catch {
      // not there yet
    }
  }, 200);
  let r: RunResult;
  try {
    r = await runner('apt-get', args, {
      cwd: workDir,
      allowFailure: true,
      signal: opts.signal,
      onOutput: opts.onOutput,
      what: `downloading ${deb.package}`,
      env: { ...process.env, LC_ALL: 'C' },
      timeoutMs: 30 * 60_000,
    });
  } finally {
    clearInterval(poll);
  }
  if (r.code !== 0) throw aptDownloadError(deb, `${r.stdout}\n${r.stderr}`);
  const file = fs.readdirSync(workDir).find((n) => n.endsWith('.deb'));
  if (!file) {
    throw new BangerError('tool_failed', `apt-get download ${deb.package} produced no .deb file`, {
      hint: 'see the build log under <state>/image-build/',
    });
  }
  const full = path.join(workDir, file);
  opts.onBytes?.(fs.statSync(full).size);
  return full;
}
