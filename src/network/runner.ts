import { BangerError } from '../errors.js';
import { lastLine, run, type RunResult } from '../util/exec.js';

/**
 * The one door to the host's network tools (ip, iptables, nft, sysctl).
 * A runner resolves with the result for any exit code (it rejects only when
 * the program cannot be started), so the network code decides what a
 * non-zero exit means. Tests wrap every command with `ip netns exec <ns>`.
 */
export interface NetRunOptions {
  input?: string;
}

export type NetRunner = (cmd: string, args: string[], opts?: NetRunOptions) => Promise<RunResult>;

export const NET_TIMEOUT_MS = 30_000;

export const defaultRunner: NetRunner = (cmd, args, opts = {}) =>
  run(cmd, args, { allowFailure: true, input: opts.input, timeoutMs: NET_TIMEOUT_MS });

/** Runs every command inside network namespace `ns` (tests, or a daemon confined to a netns). */
export const netnsRunner =
  (ns: string, inner: NetRunner = defaultRunner): NetRunner =>
  (cmd, args, opts) =>
    inner('ip', ['netns', 'exec', ns, cmd, ...args], opts);

/** Records every call (for logs and tests) and forwards it. */
export function recordingRunner(
  inner: NetRunner,
  log: { cmd: string; args: string[]; code: number }[],
): NetRunner {
  return async (cmd, args, opts) => {
    const r = await inner(cmd, args, opts);
    log.push({ cmd, args, code: r.code });
    return r;
  };
}

/** Never `setcap` on node: that hands the capability to every Node program of every user. */
export const CAP_HINT =
  'run bangerd as root, or give bangerd alone cap_net_admin through a systemd unit (AmbientCapabilities=CAP_NET_ADMIN; docs/networking.md)';

interface HintRule {
  re: RegExp;
  code: BangerError['code'];
  hint: string | ((tool: string) => string);
}

const HINTS: HintRule[] = [
  {
    re: /exec of "?([^"\s]+)"? failed: No such file/i,
    code: 'tool_missing',
    hint: (tool) => `install ${toolPackage(tool)} (see \`banger doctor\`)`,
  },
  {
    re: /Operation not permitted|Permission denied|you must be root|EPERM/i,
    code: 'permission',
    hint: CAP_HINT,
  },
  {
    re: /\/dev\/net\/tun|TUNSETIFF\): (No such file|No such device)/i,
    code: 'network',
    hint: 'load the tun module (sudo modprobe tun) and check /dev/net/tun',
  },
  {
    re: /Device or resource busy/i,
    code: 'conflict',
    hint: 'another process (a VMM?) holds it: stop that process or delete the interface',
  },
  {
    re: /Table does not exist|do you need to insmod|Could not fetch rule set generation|Protocol not supported|not supported by kernel/i,
    code: 'network',
    hint: 'the kernel lacks netfilter NAT support: sudo modprobe nf_nat iptable_nat (or nf_tables), or try firewall = "nft"',
  },
  {
    re: /Cannot find device|does not exist|No such device/i,
    code: 'network',
    hint: "it was removed behind banger's back; restart the VM (or bangerd) to recreate it",
  },
];

export function toolPackage(tool: string): string {
  if (tool === 'ip' || tool === 'bridge') return 'iproute2';
  if (tool.startsWith('iptables')) return 'iptables';
  if (tool === 'nft') return 'nftables';
  if (tool === 'sysctl') return 'procps';
  return tool;
}

/**
 * A one-line BangerError for a failed network command: `<what> failed: <reason>`
 * with a hint chosen from what the tool said.
 */
export function netFailure(
  what: string,
  cmd: string,
  args: string[],
  r: RunResult,
  opts: { hint?: string } = {},
): BangerError {
  const said =
    lastLine(r.stderr) ||
    lastLine(r.stdout) ||
    (r.signal
      ? `killed by ${r.signal} (timed out after ${NET_TIMEOUT_MS / 1000}s?)`
      : `exit ${r.code}`);
  const text = `${r.stderr}\n${r.stdout}`;
  const rule = HINTS.find((h) => h.re.test(text));
  const tool = rule?.code === 'tool_missing' ? (rule.re.exec(text)?.[1] ?? cmd) : cmd;
  const ruleHint = rule && (typeof rule.hint === 'function' ? rule.hint(tool) : rule.hint);
  // Missing privileges or tools trump the caller's context hint.
  const strong = rule?.code === 'permission' || rule?.code === 'tool_missing';
  const hint =
    (strong ? ruleHint : (opts.hint ?? ruleHint)) ??
    'see `banger doctor` for the host network setup';
  return new BangerError(rule?.code ?? 'network', `${what} failed: ${said}`, {
    hint,
    details: { cmd, args, code: r.code, stderr: r.stderr.slice(-2000) },
  });
}

/** Runs a command and throws netFailure(what) on a non-zero exit. */
export async function mustRun(
  runner: NetRunner,
  what: string,
  cmd: string,
  args: string[],
  opts?: NetRunOptions & { hint?: string },
): Promise<RunResult> {
  const r = await runner(cmd, args, opts?.input === undefined ? undefined : { input: opts.input });
  if (r.code !== 0) throw netFailure(what, cmd, args, r, { hint: opts?.hint });
  return r;
}

/** Serialises async sections (firewall reconcile, bridge setup). */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  lock<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}
