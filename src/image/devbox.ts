import { GUEST_RUN_DIR } from '../guest/bootContract.js';
import {
  ETC_UNIT_DIR,
  SYSTEM_UNIT_DIR,
  WORK_SEED_DIR,
  type ContractOp,
} from '../guest/contract.js';

/**
 * What a recipe's `docker` and `tmuxPersistence` switches add to an image,
 * as guest-contract operations applied after the contract (recipeOps). Pure.
 */

// ------------------------------------------------------------------ Docker

/** Where Docker keeps images and containers in the guest (Debian's default). */
export const DOCKER_DATA_DIR = '/var/lib/docker';
/** Its real home: a directory on the VM's overlay disk (ext4), bind-mounted over DOCKER_DATA_DIR. */
export const DOCKER_DATA_SOURCE = `${GUEST_RUN_DIR}/overlay/docker`;
export const DOCKER_DATA_UNIT_NAME = 'banger-docker-data.service';
export const DOCKER_DATA_UNIT_PATH = `${ETC_UNIT_DIR}/${DOCKER_DATA_UNIT_NAME}`;
export const DOCKER_DROPIN_PATH = `${ETC_UNIT_DIR}/docker.service.d/banger.conf`;

/**
 * The bind mount of Docker's data directory. `/` is an overlayfs, and
 * overlayfs cannot be the upper layer of another overlayfs, so Docker's
 * overlay2 driver would not work there (it would fall back to `vfs`, a full
 * copy per layer). The overlay disk under the root's overlayfs is plain ext4,
 * is kept across stop/start and removed with the VM, like the rest of `/`.
 */
export function dockerDataUnitText(): string {
  return [
    "# Installed by banger: Docker's data on the VM's overlay disk (ext4), where overlay2 works.",
    '[Unit]',
    'Description=banger: Docker data directory on the overlay disk',
    'DefaultDependencies=no',
    `ConditionPathIsMountPoint=${GUEST_RUN_DIR}/overlay`,
    'After=local-fs.target',
    '',
    '[Service]',
    'Type=oneshot',
    'RemainAfterExit=yes',
    `ExecStart=/bin/mkdir -p ${DOCKER_DATA_SOURCE} ${DOCKER_DATA_DIR}`,
    `ExecStart=/bin/mount --bind ${DOCKER_DATA_SOURCE} ${DOCKER_DATA_DIR}`,
    `ExecStop=/bin/umount ${DOCKER_DATA_DIR}`,
    '',
  ].join('\n');
}

/** docker.service waits for the data directory; nothing else changes. */
export function dockerDropinText(): string {
  return [
    "# Installed by banger: dockerd starts on first use (docker.socket), on the overlay disk's data dir.",
    '[Unit]',
    `Requires=${DOCKER_DATA_UNIT_NAME}`,
    `After=${DOCKER_DATA_UNIT_NAME}`,
    '',
  ].join('\n');
}

const ROOT = { uid: 0, gid: 0 } as const;

/**
 * Docker costs nothing at boot: dockerd and containerd are not started
 * (their `multi-user.target.wants` links are removed), docker.socket stays
 * enabled, so the first `docker` command starts them. What the Docker
 * packages would start at boot besides goes too: apparmor.service (dockerd
 * loads its own container profile with apparmor_parser when it starts),
 * dbus.service (dbus.socket starts it for the first client: systemd's cgroup
 * driver, when dockerd starts) and systemd-logind, which only runs where
 * D-Bus is installed (a unit condition skips it in the slim image) and has
 * nothing to do in a banger VM: sshd runs without PAM, so no session is ever
 * registered, and banger's power-key unit handles the power button.
 */
export function dockerOps(): ContractOp[] {
  return [
    {
      kind: 'remove',
      path: `${ETC_UNIT_DIR}/multi-user.target.wants/docker.service`,
      why: 'dockerd starts on first use (docker.socket)',
    },
    {
      kind: 'remove',
      path: `${ETC_UNIT_DIR}/multi-user.target.wants/containerd.service`,
      why: 'containerd starts with dockerd',
    },
    {
      kind: 'remove',
      path: `${ETC_UNIT_DIR}/sysinit.target.wants/apparmor.service`,
      why: 'dockerd loads its AppArmor profile itself',
    },
    {
      kind: 'remove',
      path: `${SYSTEM_UNIT_DIR}/multi-user.target.wants/dbus.service`,
      why: 'D-Bus starts on first use (dbus.socket)',
    },
    {
      kind: 'symlink',
      path: `${ETC_UNIT_DIR}/systemd-logind.service`,
      target: '/dev/null',
      ...ROOT,
      why: 'masked: no PAM sessions to track (skipped without D-Bus, as in the slim image)',
    },
    {
      kind: 'file',
      path: DOCKER_DATA_UNIT_PATH,
      mode: 0o644,
      content: dockerDataUnitText(),
      ...ROOT,
      why: 'overlay2 needs a non-overlayfs data dir',
    },
    { kind: 'dir', path: `${ETC_UNIT_DIR}/docker.service.d`, mode: 0o755, ...ROOT },
    {
      kind: 'file',
      path: DOCKER_DROPIN_PATH,
      mode: 0o644,
      content: dockerDropinText(),
      ...ROOT,
      why: 'docker.service needs its data dir',
    },
  ];
}

// ------------------------------------------------------------------ tmux

export const TMUX_CONF_PATH = `${WORK_SEED_DIR}/.tmux.conf`;
/** Where Debian's tmux-plugin-manager package installs TPM. */
export const TPM_DIR = '/usr/share/tmux-plugin-manager';
/** TPM's default plugin directory (it clones into it, so it must exist). */
export const TMUX_PLUGIN_DIR = `${WORK_SEED_DIR}/.tmux/plugins`;
export const TMUX_PLUGINS = ['tmux-plugins/tmux-resurrect', 'tmux-plugins/tmux-continuum'];
export const TMUX_BLOCK_BEGIN =
  '# >>> banger: tmux session persistence (managed by banger, rewritten on image builds) >>>';
export const TMUX_BLOCK_END = '# <<< banger: tmux session persistence <<<';

/**
 * The body of banger's block in /root/.tmux.conf: TPM with tmux-resurrect and
 * tmux-continuum (autosave every 15 minutes, restore left to the user:
 * `prefix + Ctrl-r`). TPM runs in the background (`run-shell -b`), so a tmux
 * start never waits for it (loading TPM's scripts took ~4 s under TCG). The
 * plugins are not in Debian: when they are missing, TPM then clones them and
 * loads them — with network (`--nat`); without, that fails quietly, tmux runs
 * without them, and the next server start tries again.
 */
export function tmuxBlockLines(): string[] {
  const tpm = `${TPM_DIR}/tpm`;
  const install = `${TPM_DIR}/bin/install_plugins`;
  return [
    ...TMUX_PLUGINS.map((p) => `set -g @plugin '${p}'`),
    "set -g @continuum-save-interval '15'",
    "set -g @continuum-restore 'off'",
    `run-shell -b '{ ${tpm}; test -d ${TMUX_PLUGIN_DIR}/tmux-continuum || { ${install} && ${tpm}; }; } >/dev/null 2>&1'`,
  ];
}

export function tmuxPersistenceOps(): ContractOp[] {
  return [
    { kind: 'dir', path: `${WORK_SEED_DIR}/.tmux`, mode: 0o755, ...ROOT },
    {
      kind: 'dir',
      path: TMUX_PLUGIN_DIR,
      mode: 0o755,
      ...ROOT,
      why: 'TPM clones plugins here',
    },
    {
      kind: 'block',
      path: TMUX_CONF_PATH,
      mode: 0o644,
      begin: TMUX_BLOCK_BEGIN,
      end: TMUX_BLOCK_END,
      lines: tmuxBlockLines(),
      ...ROOT,
      why: 'tmux-resurrect + tmux-continuum through TPM',
    },
  ];
}
