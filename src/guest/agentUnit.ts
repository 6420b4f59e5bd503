/**
 * What an image needs to run the guest agent under systemd: the binary, the
 * unit and the enablement link. Pure builders; the image builder writes the
 * files into the rootfs tree (parent directories 0755, owned by root).
 */

/** Where the agent binary lives in every image. */
export const AGENT_INSTALL_PATH = '/usr/local/libexec/banger/banger-agent';
/** File name of the binary scripts/build-agent.sh produces in its output dir. */
export const AGENT_BINARY_NAME = 'banger-agent';
export const AGENT_UNIT_NAME = 'banger-agent.service';
export const AGENT_UNIT_PATH = `/etc/systemd/system/${AGENT_UNIT_NAME}`;
/**
 * Enabled from sysinit.target rather than multi-user.target: every normal
 * service (sshd included) pulls in sysinit.target, so the agent runs whatever
 * the default target is, including a trimmed "sshd only" target, and it
 * starts early enough to watch sshd come up instead of after it.
 */
export const AGENT_WANTED_BY = 'sysinit.target';
export const AGENT_UNIT_LINK = `/etc/systemd/system/${AGENT_WANTED_BY}.wants/${AGENT_UNIT_NAME}`;

export interface AgentUnitOptions {
  /** Binary path inside the guest (default AGENT_INSTALL_PATH). */
  binaryPath?: string;
  /** Extra agent flags, e.g. ['--transport', 'vsock']; default: auto-detect. */
  args?: string[];
}

/** The text of banger-agent.service. */
export function agentUnitText(opts: AgentUnitOptions = {}): string {
  const exec = [opts.binaryPath ?? AGENT_INSTALL_PATH, ...(opts.args ?? [])]
    .map(systemdQuote)
    .join(' ');
  return [
    '# Installed by banger: the guest agent (host <-> guest channel, see docs/guest-agent.md).',
    '[Unit]',
    'Description=banger guest agent',
    // No default dependencies: do not wait for basic.target; start as soon as
    // journald's socket is there, stop only at shutdown.
    'DefaultDependencies=no',
    'After=systemd-journald.socket',
    'Conflicts=shutdown.target',
    'Before=shutdown.target',
    'StartLimitIntervalSec=0',
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${exec}`,
    'Restart=always',
    'RestartSec=1',
    // journal for `journalctl -u`, console so the serial log shows "banger-agent: started"
    'StandardOutput=journal+console',
    'StandardError=journal+console',
    'OOMScoreAdjust=-900',
    '',
    '[Install]',
    `WantedBy=${AGENT_WANTED_BY}`,
    '',
  ].join('\n');
}

export type GuestFile =
  | { kind: 'file'; path: string; mode: number; content: string }
  | { kind: 'file'; path: string; mode: number; sourcePath: string }
  | { kind: 'symlink'; path: string; target: string };

export interface AgentImageFilesOptions extends AgentUnitOptions {
  /** Host path of the built static binary (bash scripts/build-agent.sh <dir> → <dir>/banger-agent). */
  agentBinary: string;
}

/** Files to inject into an image so the agent starts on every boot. */
export function agentImageFiles(opts: AgentImageFilesOptions): GuestFile[] {
  const binaryPath = opts.binaryPath ?? AGENT_INSTALL_PATH;
  return [
    { kind: 'file', path: binaryPath, mode: 0o755, sourcePath: opts.agentBinary },
    {
      kind: 'file',
      path: AGENT_UNIT_PATH,
      mode: 0o644,
      content: agentUnitText({ ...opts, binaryPath }),
    },
    // what `systemctl enable` would create
    { kind: 'symlink', path: AGENT_UNIT_LINK, target: AGENT_UNIT_PATH },
  ];
}

/** Quote one ExecStart word when needed (systemd uses shell-like quoting). */
function systemdQuote(word: string): string {
  if (/^[A-Za-z0-9_@+=:,./-]+$/.test(word)) return word;
  return `"${word.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\$/g, '$$$$').replace(/%/g, '%%')}"`;
}
