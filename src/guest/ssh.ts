import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../errors.js';
import { run } from '../util/exec.js';

/**
 * Host side of SSH into guests: banger's managed key, the managed known_hosts
 * (filled from the host keys each guest reports — never StrictHostKeyChecking=no),
 * and the argv for system OpenSSH. Builders are pure; file writes are atomic.
 */

/** known_hosts and ssh use this name for a VM, whatever its IP. */
export const hostAlias = (vmName: string): string => `${vmName}.vm`;

/** Key creations in flight, per key path: concurrent `vm create`s of a fresh install share one. */
const ensuring = new Map<string, Promise<string>>();

/** The public key of banger's SSH key at keyPath, creating the key pair first if needed. */
export function ensureSshKey(keyPath: string): Promise<string> {
  let p = ensuring.get(keyPath);
  if (!p) {
    p = ensureSshKeyOnce(keyPath).finally(() => ensuring.delete(keyPath));
    ensuring.set(keyPath, p);
  }
  return p;
}

async function ensureSshKeyOnce(keyPath: string): Promise<string> {
  const pub = `${keyPath}.pub`;
  if (!fs.existsSync(keyPath)) {
    fs.mkdirSync(path.dirname(keyPath), { recursive: true, mode: 0o700 });
    const tmp = `${keyPath}.tmp-${process.pid}`;
    fs.rmSync(tmp, { force: true });
    fs.rmSync(`${tmp}.pub`, { force: true });
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'banger', '-f', tmp], {
      what: 'creating the banger SSH key',
    });
    fs.renameSync(`${tmp}.pub`, pub);
    fs.renameSync(tmp, keyPath);
  }
  if (!fs.existsSync(pub)) {
    const r = await run('ssh-keygen', ['-y', '-f', keyPath], {
      what: `reading the public key of ${keyPath}`,
    });
    fs.writeFileSync(pub, r.stdout, { mode: 0o644 });
  }
  const text = fs.readFileSync(pub, 'utf8').trim();
  if (!/^ssh-(ed25519|rsa) |^ecdsa-/.test(text)) {
    throw new BangerError('precondition', `${pub} is not an SSH public key`, {
      hint: 'fix or remove it (and the private key) so banger can create a new one',
    });
  }
  return text;
}

const KEY_RE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+/;

/** known_hosts content with the lines of `alias` replaced by `keys` (pure). */
export function replaceKnownHosts(current: string, alias: string, keys: string[]): string {
  const kept = current.split('\n').filter((l) => l.trim() && l.split(' ')[0] !== alias);
  const added = keys.map((k) => {
    const m = KEY_RE.exec(k.trim());
    if (!m)
      throw new BangerError(
        'boot_failed',
        `the guest reported an invalid SSH host key for ${alias}`,
        { hint: 'see `banger vm logs`' },
      );
    return `${alias} ${m[0]}`;
  });
  const lines = [...kept, ...added];
  return lines.length ? `${lines.join('\n')}\n` : '';
}

function atomicWrite(file: string, content: string, mode = 0o600): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  fs.writeFileSync(tmp, content, { mode });
  fs.renameSync(tmp, file);
}

export function setKnownHost(file: string, alias: string, keys: string[]): void {
  const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  atomicWrite(file, replaceKnownHosts(current, alias, keys), 0o644);
}

export function removeKnownHost(file: string, alias: string): void {
  if (!fs.existsSync(file)) return;
  atomicWrite(file, replaceKnownHosts(fs.readFileSync(file, 'utf8'), alias, []), 0o644);
}

export interface SshArgsInput {
  alias: string;
  keyPath: string;
  knownHosts: string;
  /** Command ssh runs to reach the guest (the daemon tunnel). */
  proxyCommand?: string[];
  /** Connect to this address directly instead (the daemon, which has a route to its guests). */
  hostName?: string;
  tty: boolean;
  /** Remote command words; empty for an interactive shell. */
  command: string[];
  user?: string;
  /** Extra -o options. */
  options?: Record<string, string>;
}

/** Quote one word for a POSIX shell. */
export const shellQuote = (s: string): string =>
  /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;

/** ssh expands %-tokens (%h, %p, …) in these options: a literal % in a path is written %%. */
const noTokens = (s: string): string => s.replace(/%/g, '%%');

/** A value in an ssh_config file: `%` is a token character there, blanks need quotes. */
export const sshConfigValue = (s: string): string => {
  const v = s.replace(/%/g, '%%');
  return /[\s"]/.test(v) ? `"${v.replace(/"/g, '')}"` : v;
};

/**
 * The remote command line of a session that runs `setup` first (a workspace
 * session: branch switch, tooling, cd), then the user's command or a login
 * shell. One command word is a shell command line as typed (like `vm ssh
 * NAME -- 'exit 42'`); several are quoted words.
 */
export function sessionCommand(setup: string, command: string[]): string {
  if (command.length === 0) return `${setup}\nexec "\${SHELL:-/bin/bash}" -l`;
  const cmd = command.length === 1 ? command[0]! : command.map(shellQuote).join(' ');
  return `${setup}\n${cmd}`;
}

/** argv for `ssh` (pure). The remote command is quoted for the guest shell. */
export function sshArgs(i: SshArgsInput): string[] {
  const opts: Record<string, string> = {
    IdentityFile: noTokens(i.keyPath),
    IdentitiesOnly: 'yes',
    UserKnownHostsFile: noTokens(i.knownHosts),
    GlobalKnownHostsFile: '/dev/null',
    StrictHostKeyChecking: 'yes',
    HostKeyAlias: i.alias,
    ...(i.proxyCommand ? { ProxyCommand: noTokens(i.proxyCommand.map(shellQuote).join(' ')) } : {}),
    ...(i.hostName ? { HostName: i.hostName } : {}),
    PasswordAuthentication: 'no',
    KbdInteractiveAuthentication: 'no',
    ServerAliveInterval: '15',
    ServerAliveCountMax: '4',
    LogLevel: 'ERROR',
    // curve25519 first: measurably cheaper than the default hybrid KEX on a slow (emulated) guest.
    KexAlgorithms:
      'curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com,ecdh-sha2-nistp256',
    ...i.options,
  };
  const args = ['-F', 'none'];
  for (const [k, v] of Object.entries(opts)) args.push('-o', `${k}=${v}`);
  args.push(i.tty ? '-t' : '-T');
  args.push(`${i.user ?? 'root'}@${i.alias}`);
  if (i.command.length) {
    args.push('--');
    args.push(i.command.length === 1 ? i.command[0]! : i.command.map(shellQuote).join(' '));
  }
  return args;
}
