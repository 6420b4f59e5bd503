import { agentImageFiles, type GuestFile } from './agentUnit.js';
import { POWER_BUTTON_DEVICE } from './bootContract.js';

/**
 * The guest contract as data: the file, directory, symlink and removal
 * operations that turn any systemd + OpenSSH rootfs into a banger guest
 * (spec §7). Pure: no file system access here. Two appliers execute the same
 * list (src/guest/contract/apply.ts): one into an mmdebstrap chroot (Debian
 * builds), one into the in-memory RootfsTree (OCI pulls).
 *
 * What the operations do, in order:
 *  - remove SSH host keys (each VM makes its own on first boot) and the
 *    enablement links of units a microVM never needs;
 *  - sshd key-only drop-in, ed25519 host key only, no PAM;
 *  - ssh.service drop-ins: generate the VM's host key on first start, and
 *    start sshd early (off the sysinit/basic.target critical path);
 *  - the guest agent (binary, unit, sysinit.target.wants link);
 *  - a power-button service (QMP system_powerdown → clean poweroff);
 *  - a serial console getty on ttyS0 that does not wait for udev;
 *  - masked units and generators that wait for devices which never appear
 *    or only cost boot time under TCG;
 *  - volatile journald, empty fstab, identity files the initramfs rewrites;
 *  - mise on PATH (and activated for bash login shells);
 *  - default target multi-user.
 *
 * `/root` is not part of the base image: the initramfs mounts the VM's work
 * disk there, and the image's `/root` content becomes the work-seed
 * (src/image/workSeed.ts), see WORK_SEED_DIR.
 */

/** Bumped whenever the operations change in a way images should be rebuilt for. */
export const CONTRACT_VERSION = 1;

interface Owned {
  path: string;
  uid: number;
  gid: number;
  /** One line on why the operation exists (docs, logs). */
  why?: string;
}

export type ContractOp =
  | (Owned & { kind: 'dir'; mode: number })
  | (Owned & { kind: 'file'; mode: number; content: string })
  | (Owned & { kind: 'file'; mode: number; sourcePath: string })
  | (Owned & { kind: 'symlink'; target: string })
  /**
   * Keep exactly one marker-fenced block in a text file: every existing block
   * (from a `begin` line through the next `end` line) is taken out, the new one
   * is appended, other lines stay. A missing file is created with mode and owner.
   */
  | (Owned & { kind: 'block'; mode: number; begin: string; end: string; lines: string[] })
  /** Remove a path (recursively); a `*` in the last component matches any characters. */
  | { kind: 'remove'; path: string; why?: string };

export type FileOp = Extract<ContractOp, { kind: 'file' }>;
export type BlockOp = Extract<ContractOp, { kind: 'block' }>;
/** Operations that put an entry in place (the chroot applier writes them through a tar). */
export type WriteOp = Extract<ContractOp, { kind: 'dir' | 'file' | 'symlink' }>;

/**
 * The text of a file after a block operation: `existing` (undefined: no file)
 * without any fenced block, newline-terminated, then the block. Pure; the
 * chroot applier's script (blockHookScript) does the same with sed.
 */
export function withBlock(
  existing: string | undefined,
  b: Pick<BlockOp, 'begin' | 'end' | 'lines'>,
): string {
  const kept: string[] = [];
  let inside = false;
  const lines = existing === undefined || existing === '' ? [] : existing.split('\n');
  // a trailing newline gives one empty last element: it is not a line
  const last = lines.length > 0 && lines[lines.length - 1] === '' ? lines.length - 1 : lines.length;
  for (const l of lines.slice(0, last)) {
    if (!inside && l === b.begin) inside = true;
    else if (inside && l === b.end) inside = false;
    else if (!inside) kept.push(l);
  }
  return [...kept, b.begin, ...b.lines, b.end].map((l) => `${l}\n`).join('');
}

/** Directory the work disk is mounted on; the image's copy becomes the work-seed. */
export const WORK_SEED_DIR = '/root';
export const WORK_SEED_MODE = 0o700;

export const SSHD_DROPIN_PATH = '/etc/ssh/sshd_config.d/banger.conf';
export const SSH_HOST_KEY_PATH = '/etc/ssh/ssh_host_ed25519_key';
export const SSH_UNIT_DROPIN_DIR = '/etc/systemd/system/ssh.service.d';
export const SSH_HOSTKEY_DROPIN_PATH = `${SSH_UNIT_DROPIN_DIR}/banger-hostkey.conf`;
export const SSH_EARLY_DROPIN_PATH = `${SSH_UNIT_DROPIN_DIR}/banger-early.conf`;
export const POWERKEY_UNIT_NAME = 'banger-powerkey.service';
export const POWERKEY_UNIT_PATH = `/etc/systemd/system/${POWERKEY_UNIT_NAME}`;
export const SERIAL_CONSOLE = 'ttyS0';
export const SERIAL_GETTY_UNIT_PATH = `/etc/systemd/system/serial-getty@${SERIAL_CONSOLE}.service`;
export const JOURNALD_DROPIN_PATH = '/etc/systemd/journald.conf.d/banger.conf';
export const MISE_INSTALL_PATH = '/usr/local/bin/mise';
export const MISE_PROFILE_PATH = '/etc/profile.d/mise.sh';
export const DEFAULT_TARGET = 'multi-user.target';
/** Units live under /lib on Debian (merged /usr: the same as /usr/lib). */
export const SYSTEM_UNIT_DIR = '/lib/systemd/system';
export const ETC_UNIT_DIR = '/etc/systemd/system';
export const GENERATOR_MASK_DIR = '/etc/systemd/system-generators';

/**
 * Units masked (linked to /dev/null). Each one either waits for hardware or a
 * device that never appears in a banger VM (there is no udev: the initramfs
 * mounts everything and devtmpfs provides /dev), redoes work the initramfs
 * already did, or only costs boot time on a single TCG vCPU.
 */
export const MASKED_UNITS: readonly string[] = [
  // udev (not installed; masked so an image that has it boots the same)
  'systemd-udevd.service',
  'systemd-udev-trigger.service',
  'systemd-udev-settle.service',
  'systemd-hwdb-update.service',
  // pseudo file systems nobody uses in a sandbox
  'sys-kernel-debug.mount',
  'sys-kernel-tracing.mount',
  'sys-kernel-config.mount',
  'sys-fs-fuse-connections.mount',
  'dev-hugepages.mount',
  'dev-mqueue.mount',
  'proc-sys-fs-binfmt_misc.automount',
  'systemd-binfmt.service',
  // modules: the initramfs loads what the VM needs; the rest load on demand
  'systemd-modules-load.service',
  'kmod-static-nodes.service',
  'modprobe@.service',
  // root file system: mounted by the initramfs (read-only base + overlay), no fstab
  'systemd-remount-fs.service',
  'systemd-fsck-root.service',
  // identity and first boot: the initramfs writes machine-id, hostname, network
  'systemd-firstboot.service',
  'first-boot-complete.target',
  'systemd-machine-id-commit.service',
  'systemd-random-seed.service',
  'systemd-sysusers.service',
  // boot-time bookkeeping that only costs time
  'systemd-journal-catalog-update.service',
  'systemd-journal-flush.service',
  'systemd-update-utmp.service',
  'systemd-update-utmp-runlevel.service',
  'systemd-sysctl.service',
  'systemd-tmpfiles-setup-dev.service',
  'systemd-tmpfiles-clean.timer',
  'systemd-user-sessions.service',
  'systemd-pcrphase-sysinit.service',
  'systemd-pcrphase.service',
  'systemd-boot-system-token.service',
  'systemd-ask-password-console.path',
  'systemd-ask-password-wall.path',
  'cryptsetup.target',
  'veritysetup.target',
  'integritysetup.target',
  'swap.target',
  'getty-static.service',
  // periodic jobs that make no sense in a disposable VM
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'dpkg-db-backup.timer',
  'e2scrub_all.timer',
  'e2scrub_reap.service',
  'fstrim.timer',
  'systemd-pstore.service',
];

/** Generators masked: fstab is empty, no disks to discover, no SysV scripts; the getty is explicit. */
export const MASKED_GENERATORS: readonly string[] = [
  'systemd-cryptsetup-generator',
  'systemd-debug-generator',
  'systemd-fstab-generator',
  'systemd-getty-generator',
  'systemd-gpt-auto-generator',
  'systemd-hibernate-resume-generator',
  'systemd-integritysetup-generator',
  'systemd-rc-local-generator',
  'systemd-run-generator',
  'systemd-system-update-generator',
  'systemd-sysv-generator',
  'systemd-veritysetup-generator',
];

/** tmpfiles.d entries masked: systemd-nologin.conf would create /run/nologin (user-sessions is masked). */
export const MASKED_TMPFILES: readonly string[] = ['systemd-nologin.conf'];

/** Enablement links removed (the units stay installed and can be started by hand). */
export const REMOVED_LINKS: readonly string[] = [
  `${ETC_UNIT_DIR}/getty.target.wants/getty@tty1.service`,
  `${ETC_UNIT_DIR}/multi-user.target.wants/remote-fs.target`,
];

/** The sshd settings of the contract, in sshd_config syntax (first value wins in sshd). */
export const SSHD_SETTINGS: readonly [string, string][] = [
  ['PermitRootLogin', 'prohibit-password'],
  ['PasswordAuthentication', 'no'],
  ['KbdInteractiveAuthentication', 'no'],
  // Only the key each VM generates on first boot (and reports through the agent).
  ['HostKey', SSH_HOST_KEY_PATH],
  // Key-only root logins need no PAM; without it the first connection is ~0.3 s faster.
  ['UsePAM', 'no'],
];

export function sshdDropinText(): string {
  return [
    '# Installed by banger (guest contract): key-only root login, per-VM ed25519 host key.',
    '# sshd uses the first value it reads, and Debian includes sshd_config.d/*.conf first.',
    ...SSHD_SETTINGS.map(([k, v]) => `${k} ${v}`),
    '',
  ].join('\n');
}

/**
 * ssh.service drop-in: no host key ships in the image; the VM makes its own
 * on first start (kept on the VM's overlay disk across reboots). Replaces
 * Debian's `sshd -t` pre-start check, which only costs time here.
 */
export function sshHostKeyDropinText(): string {
  const k = SSH_HOST_KEY_PATH;
  return [
    "# Installed by banger (guest contract): generate this VM's host key on first start.",
    '[Service]',
    'ExecStartPre=',
    `ExecStartPre=/bin/sh -c 'test -s ${k} || { rm -f ${k} ${k}.pub; exec /usr/bin/ssh-keygen -q -t ed25519 -N "" -C "" -f ${k}; }'`,
    '',
  ].join('\n');
}

/** ssh.service drop-in: start as soon as journald's sockets exist (the network is up before systemd). */
export function sshEarlyDropinText(): string {
  return [
    '# Installed by banger (guest contract): sshd off the sysinit/basic.target critical path;',
    "# banger's initramfs configured the network before systemd started.",
    '[Unit]',
    'DefaultDependencies=no',
    'After=systemd-journald.socket systemd-journald-dev-log.socket',
    'Conflicts=shutdown.target',
    'Before=shutdown.target',
    '',
  ].join('\n');
}

/** Powers the guest off when the ACPI power button is pressed (QMP `system_powerdown`), without logind or acpid. */
export function powerkeyUnitText(): string {
  return [
    '# Installed by banger (guest contract): ACPI power button -> clean poweroff.',
    '[Unit]',
    'Description=banger: power off on ACPI power button',
    'DefaultDependencies=no',
    `ConditionPathExists=${POWER_BUTTON_DEVICE}`,
    '',
    '[Service]',
    `ExecStart=/bin/sh -c 'dd if=${POWER_BUTTON_DEVICE} of=/dev/null bs=24 count=1 status=none && exec systemctl poweroff'`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/**
 * A full unit for the serial console getty. Debian's template binds to
 * `dev-%i.device`, which only udev would announce; dependency lists cannot be
 * reset from a drop-in, hence a complete unit for this one instance.
 */
export function serialGettyUnitText(): string {
  return [
    '# Installed by banger (guest contract): serial console login without udev.',
    '[Unit]',
    'Description=Serial Getty on %I',
    'Documentation=man:agetty(8)',
    'After=systemd-user-sessions.service getty-pre.target',
    'Before=getty.target',
    'IgnoreOnIsolate=yes',
    'Conflicts=rescue.service',
    'Before=rescue.service',
    '',
    '[Service]',
    "ExecStart=-/sbin/agetty -o '-p -- \\\\u' --keep-baud 115200,57600,38400,9600 - $TERM",
    'Type=idle',
    'Restart=always',
    'UtmpIdentifier=%I',
    'StandardInput=tty',
    'StandardOutput=tty',
    'TTYPath=/dev/%I',
    'TTYReset=yes',
    'TTYVHangup=yes',
    'IgnoreSIGPIPE=no',
    'SendSIGHUP=yes',
    '',
    '[Install]',
    'WantedBy=getty.target',
    '',
  ].join('\n');
}

/** The journal lives in memory: nothing persistent on the overlay disk, a small cap. */
export function journaldDropinText(): string {
  return [
    '# Installed by banger (guest contract): volatile journal.',
    '[Journal]',
    'Storage=volatile',
    'RuntimeMaxUse=16M',
    '',
  ].join('\n');
}

/** Login shells: mise on PATH is /usr/local/bin; bash gets it activated (interactive) or its shims (scripts). */
export function miseProfileText(): string {
  return [
    '# Installed by banger: mise (https://mise.jdx.dev) for login shells.',
    `if [ -n "\${BASH_VERSION:-}" ] && [ -x ${MISE_INSTALL_PATH} ]; then`,
    '  case $- in',
    `    *i*) eval "$(${MISE_INSTALL_PATH} activate bash)" ;;`,
    `    *) eval "$(${MISE_INSTALL_PATH} activate bash --shims)" ;;`,
    '  esac',
    'fi',
    '',
  ].join('\n');
}

export const FSTAB_TEXT =
  '# banger: the initramfs mounts / (read-only base + overlay) and /root (work disk); nothing to do here.\n';
export const HOSTNAME_TEXT = 'banger\n';
export const HOSTS_TEXT =
  '127.0.0.1\tlocalhost\n127.0.1.1\tbanger\n::1\tlocalhost ip6-localhost ip6-loopback\n';
export const RESOLV_CONF_TEXT =
  "# banger: written at boot by banger's initramfs from the kernel command line.\n";

export interface GuestContractOptions {
  /** Host path of the static guest agent (dist/guest/banger-agent). */
  agentBinary: string;
  /** Host path of the mise binary to install as /usr/local/bin/mise; omitted: no mise. */
  miseBinary?: string;
}

const ROOT = { uid: 0, gid: 0 } as const;
const file = (path: string, mode: number, content: string, why?: string): ContractOp => ({
  kind: 'file',
  path,
  mode,
  content,
  ...ROOT,
  ...(why ? { why } : {}),
});
const dir = (path: string, mode = 0o755, why?: string): ContractOp => ({
  kind: 'dir',
  path,
  mode,
  ...ROOT,
  ...(why ? { why } : {}),
});
const link = (path: string, target: string, why?: string): ContractOp => ({
  kind: 'symlink',
  path,
  target,
  ...ROOT,
  ...(why ? { why } : {}),
});

function fromGuestFile(f: GuestFile): ContractOp {
  if (f.kind === 'symlink') return link(f.path, f.target, 'guest agent');
  if ('sourcePath' in f) {
    return {
      kind: 'file',
      path: f.path,
      mode: f.mode,
      sourcePath: f.sourcePath,
      ...ROOT,
      why: 'guest agent',
    };
  }
  return file(f.path, f.mode, f.content, 'guest agent');
}

/** Every operation of the guest contract, in the order they must be applied. */
export function guestContractOps(opts: GuestContractOptions): ContractOp[] {
  const ops: ContractOp[] = [];
  // 1. removals
  ops.push({
    kind: 'remove',
    path: '/etc/ssh/ssh_host_*',
    why: 'no shared host keys: each VM makes its own',
  });
  for (const p of REMOVED_LINKS)
    ops.push({ kind: 'remove', path: p, why: 'not needed in a microVM' });

  // 2. sshd
  ops.push(dir('/etc/ssh'), dir('/etc/ssh/sshd_config.d'));
  ops.push(file(SSHD_DROPIN_PATH, 0o644, sshdDropinText(), 'sshd key-only (spec §7)'));
  ops.push(dir(SSH_UNIT_DROPIN_DIR));
  ops.push(file(SSH_HOSTKEY_DROPIN_PATH, 0o644, sshHostKeyDropinText(), 'per-VM host key'));
  ops.push(file(SSH_EARLY_DROPIN_PATH, 0o644, sshEarlyDropinText(), 'sshd starts early'));

  // 3. guest agent
  ops.push(dir('/usr/local/libexec'), dir('/usr/local/libexec/banger'));
  ops.push(dir(`${ETC_UNIT_DIR}/sysinit.target.wants`));
  ops.push(...agentImageFiles({ agentBinary: opts.agentBinary }).map(fromGuestFile));

  // 4. power button, serial console
  ops.push(file(POWERKEY_UNIT_PATH, 0o644, powerkeyUnitText(), 'QMP system_powerdown'));
  ops.push(dir(`${ETC_UNIT_DIR}/multi-user.target.wants`));
  ops.push(
    link(
      `${ETC_UNIT_DIR}/multi-user.target.wants/${POWERKEY_UNIT_NAME}`,
      `../${POWERKEY_UNIT_NAME}`,
    ),
  );
  ops.push(
    file(SERIAL_GETTY_UNIT_PATH, 0o644, serialGettyUnitText(), 'serial console without udev'),
  );
  ops.push(dir(`${ETC_UNIT_DIR}/getty.target.wants`));
  ops.push(
    link(
      `${ETC_UNIT_DIR}/getty.target.wants/serial-getty@${SERIAL_CONSOLE}.service`,
      `../serial-getty@${SERIAL_CONSOLE}.service`,
    ),
  );

  // 5. masks
  for (const u of MASKED_UNITS) ops.push(link(`${ETC_UNIT_DIR}/${u}`, '/dev/null', 'masked'));
  ops.push(dir(GENERATOR_MASK_DIR));
  for (const g of MASKED_GENERATORS)
    ops.push(link(`${GENERATOR_MASK_DIR}/${g}`, '/dev/null', 'masked generator'));
  ops.push(dir('/etc/tmpfiles.d'));
  for (const t of MASKED_TMPFILES)
    ops.push(link(`/etc/tmpfiles.d/${t}`, '/dev/null', 'masked tmpfiles entry'));

  // 6. journald, fstab, identity (the initramfs rewrites hostname, hosts, resolv.conf, machine-id per VM)
  ops.push(dir('/etc/systemd/journald.conf.d'));
  ops.push(file(JOURNALD_DROPIN_PATH, 0o644, journaldDropinText(), 'volatile journal'));
  ops.push(file('/etc/fstab', 0o644, FSTAB_TEXT, 'nothing to mount'));
  ops.push(file('/etc/hostname', 0o644, HOSTNAME_TEXT));
  ops.push(file('/etc/hosts', 0o644, HOSTS_TEXT));
  ops.push({ kind: 'remove', path: '/etc/resolv.conf' });
  ops.push(file('/etc/resolv.conf', 0o644, RESOLV_CONF_TEXT));
  ops.push(file('/etc/machine-id', 0o644, '', 'set per VM by the initramfs'));

  // 7. mise
  if (opts.miseBinary) {
    ops.push(dir('/usr/local/bin'));
    ops.push({
      kind: 'file',
      path: MISE_INSTALL_PATH,
      mode: 0o755,
      sourcePath: opts.miseBinary,
      ...ROOT,
      why: 'mise',
    });
    ops.push(dir('/etc/profile.d'));
    ops.push(file(MISE_PROFILE_PATH, 0o644, miseProfileText(), 'mise for login shells'));
  }

  // 8. default target; /root is the work disk's mount point (content → work-seed)
  ops.push(link(`${ETC_UNIT_DIR}/default.target`, `${SYSTEM_UNIT_DIR}/${DEFAULT_TARGET}`));
  ops.push(dir(WORK_SEED_DIR, WORK_SEED_MODE, 'mount point of the work disk'));
  ops.push(dir(`${WORK_SEED_DIR}/.ssh`, 0o700, 'authorized_keys go here (work disk)'));
  return ops;
}

/** Paths the contract masks (symlinks to /dev/null). */
export function maskedPaths(ops: readonly ContractOp[]): string[] {
  return ops.filter((o) => o.kind === 'symlink' && o.target === '/dev/null').map((o) => o.path);
}

/**
 * A stable description of the operations for hashing (cache keys, image
 * meta): file contents inline, host files by the digest the caller supplies.
 */
export function contractFingerprint(
  ops: readonly ContractOp[],
  digestOf: (hostPath: string) => string,
): string {
  return JSON.stringify(
    ops.map((o) => {
      if (o.kind === 'file' && 'sourcePath' in o) {
        const { sourcePath, why: _why, ...rest } = o;
        return { ...rest, sha256: digestOf(sourcePath) };
      }
      const { why: _why, ...rest } = o;
      return rest;
    }),
  );
}

/** Validate the shape of an operation list (absolute clean paths, no `..`). Throws on the first bad one. */
export function checkOps(ops: readonly ContractOp[]): void {
  for (const o of ops) {
    const p = o.path;
    if (
      !p.startsWith('/') ||
      p === '/' ||
      p.endsWith('/') ||
      p.split('/').some((c) => c === '..' || c === '.')
    ) {
      throw new Error(`contract path '${p}' must be absolute and normalised`);
    }
    if (o.kind === 'block') {
      const all = [o.begin, o.end, ...o.lines];
      if (all.some((l) => l.includes('\n')) || !o.begin.trim() || o.begin === o.end) {
        throw new Error(`contract block '${p}': markers must be distinct non-empty single lines`);
      }
      if (o.lines.some((l) => l === o.begin || l === o.end)) {
        throw new Error(`contract block '${p}': a body line repeats a marker`);
      }
    }
    if (o.kind !== 'remove' && p.includes('*')) {
      throw new Error(`contract path '${p}': only removals may use '*'`);
    }
    if (o.kind === 'remove' && p.slice(0, p.lastIndexOf('/')).includes('*')) {
      throw new Error(`contract path '${p}': '*' only in the last component`);
    }
  }
}
