import { createHash } from 'node:crypto';
import { BangerError } from '../errors.js';
import { shellQuote } from '../guest/ssh.js';

/**
 * The shell the guest runs for a workspace, as pure builders: receiving a
 * copy (removals, then one tar, then the manifest), making it read-only, the
 * branch switch and the background tooling install that run before the user's
 * command. Everything is POSIX sh, run as root by sshd.
 */

export { DEFAULT_GUEST_PATH } from '../api/workspaceModes.js';
/** Files that make `vm run PATH` start `mise install` in the background. */
export const TOOLING_FILES = ['.mise.toml', 'mise.toml', '.tool-versions'] as const;

/** Quote one word for sh. */
export const shq = shellQuote;

const SYSTEM_DIRS = [
  '/bin',
  '/boot',
  '/dev',
  '/etc',
  '/lib',
  '/lib64',
  '/proc',
  '/root',
  '/run',
  '/sbin',
  '/sys',
  '/tmp',
  '/usr',
  '/var',
];

/** Check a guest destination: absolute, plain characters, not a system directory itself. */
export function validateGuestPath(p: string): string {
  const norm = p.replace(/\/+/g, '/').replace(/(.)\/$/, '$1');
  const bad =
    !norm.startsWith('/') ||
    !/^[A-Za-z0-9._@+/-]+$/.test(norm) ||
    norm.split('/').some((c) => c === '.' || c === '..') ||
    norm === '/' ||
    SYSTEM_DIRS.includes(norm);
  if (bad) {
    throw new BangerError('usage', `invalid guest path '${p}'`, {
      hint: 'use an absolute path below a directory, e.g. /root/repo (letters, digits, . _ - + @ only)',
    });
  }
  return norm;
}

const id = (guestPath: string): string =>
  createHash('sha256').update(guestPath).digest('hex').slice(0, 16);

/** Where the guest keeps the manifest of the copy at guestPath. */
export const manifestPath = (guestPath: string): string =>
  `/root/.cache/banger/workspaces/${id(guestPath)}.json`;

/** The systemd unit that re-applies a read-only copy at boot. */
export const readonlyUnit = (guestPath: string): string =>
  `banger-workspace-ro-${id(guestPath)}.service`;

/** The tooling log of a repository (its directory name, made safe). */
export const toolingLog = (repoName: string): string =>
  `/root/.cache/banger/vm-run-tooling-${repoName.replace(/[^A-Za-z0-9._-]/g, '_') || 'repo'}.log`;

/** Print the manifest of the last copy (nothing when there is none). */
export const readManifestScript = (guestPath: string): string =>
  `cat ${shq(manifestPath(guestPath))} 2>/dev/null || true`;

function readonlyOff(guestPath: string): string[] {
  const unit = `/etc/systemd/system/${readonlyUnit(guestPath)}`;
  const wants = `/etc/systemd/system/multi-user.target.wants/${readonlyUnit(guestPath)}`;
  return [
    // A read-only copy is a bind mount of the directory on itself: lift it to write.
    `if [ -e ${shq(unit)} ]; then`,
    `  rm -f ${shq(unit)} ${shq(wants)}`,
    `  umount ${shq(guestPath)} 2>/dev/null || true`,
    'fi',
  ];
}

function readonlyOn(guestPath: string): string[] {
  const name = readonlyUnit(guestPath);
  const unit = `/etc/systemd/system/${name}`;
  const q = shq(guestPath);
  const text = [
    '[Unit]',
    `Description=banger: read-only workspace ${guestPath}`,
    'After=local-fs.target',
    '',
    '[Service]',
    'Type=oneshot',
    'RemainAfterExit=yes',
    `ExecStart=/bin/mount --bind ${guestPath} ${guestPath}`,
    `ExecStart=/bin/mount -o remount,bind,ro ${guestPath}`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
  ].join('\n');
  return [
    `mount --bind ${q} ${q}`,
    `mount -o remount,bind,ro ${q}`,
    `printf '%s\\n' ${shq(text)} > ${shq(unit)}`,
    'mkdir -p /etc/systemd/system/multi-user.target.wants',
    `ln -sf ${shq(`../${name}`)} ${shq(`/etc/systemd/system/multi-user.target.wants/${name}`)}`,
  ];
}

export interface ReceiveOptions {
  guestPath: string;
  readonly: boolean;
  /** Run after the copy (branch switch, tooling), in the destination. */
  after?: string;
}

/**
 * Receive a copy on stdin: three length-prefixed sections (files to remove,
 * directories to remove, the new manifest; see streamPreamble), then a tar.
 * The manifest is replaced only after the tar went in whole.
 */
export function receiveScript(o: ReceiveOptions): string {
  const dest = shq(o.guestPath);
  const manifest = shq(manifestPath(o.guestPath));
  return [
    'set -eu',
    'section() { IFS= read -r n; if [ "$n" -gt 0 ]; then head -c "$n"; fi; }',
    ...readonlyOff(o.guestPath),
    `mkdir -p ${dest} ${shq(manifestPath(o.guestPath).replace(/\/[^/]*$/, ''))}`,
    `cd ${dest}`,
    'section | xargs -0 -r rm -f --',
    'section | xargs -0 -r rmdir --ignore-fail-on-non-empty -- 2>/dev/null || true',
    `section > ${manifest}.new`,
    'tar -x -f - --warning=no-timestamp --delay-directory-restore',
    `mv -f ${manifest}.new ${manifest}`,
    ...(o.after ? [o.after] : []),
    ...(o.readonly ? readonlyOn(o.guestPath) : []),
  ].join('\n');
}

export interface SetupOptions {
  guestPath: string;
  /** Where the command or shell starts (guestPath or a directory inside it). */
  workdir: string;
  /** Create and check out this branch. */
  branch?: { name: string; from?: string; unborn: boolean };
  /** Start `mise install` in the background, logging here. */
  toolingLog?: string;
}

/**
 * What runs in the guest before the user's command or shell: the branch
 * switch (a failure stops here, with git's message), the background tooling
 * install (never waited for, never failing anything), then `cd` to the
 * working directory.
 */
export function setupScript(o: SetupOptions): string {
  const dest = shq(o.guestPath);
  const lines = [`cd ${dest} || exit 1`];
  if (o.branch) {
    const b = shq(o.branch.name);
    lines.push(
      o.branch.unborn
        ? `git symbolic-ref HEAD ${shq(`refs/heads/${o.branch.name}`)} || exit 1`
        : `git checkout -q -B ${b} ${shq(o.branch.from ?? 'HEAD')} || { echo "banger: could not switch the copy to branch ${o.branch.name.replace(/[^A-Za-z0-9._/-]/g, '_')}" >&2; exit 1; }`,
    );
  }
  if (o.toolingLog) lines.push(toolingScript(o.guestPath, o.toolingLog));
  lines.push(`cd ${shq(o.workdir)} || exit 1`);
  return lines.join('\n');
}

/** `mise install` detached from the session, nice'd, its output (and failure) only in the log. */
export function toolingScript(guestPath: string, log: string): string {
  const inner = [
    'echo "banger: mise install in $PWD, started $(date -Is)"',
    'if ! command -v mise >/dev/null 2>&1; then echo "banger: mise is not installed in this image: nothing to do"; exit 0; fi',
    'export MISE_YES=1',
    'mise trust --all && mise install',
    'echo "banger: mise install exited with status $?"',
  ].join('\n');
  return [
    `mkdir -p ${shq(log.replace(/\/[^/]*$/, ''))}`,
    `(cd ${shq(guestPath)} && setsid -f nice -n 10 sh -c ${shq(inner)}) </dev/null >${shq(log)} 2>&1 || true`,
  ].join('\n');
}
