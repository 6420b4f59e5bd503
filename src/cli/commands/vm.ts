import os from 'node:os';
import type { VmAction, VmResult, VmSpec, VmStats, VmView } from '../../api/schemas/vms.js';
import { BangerError, toBangerError, type ErrorShape } from '../../errors.js';
import { sleep } from '../../util/sleep.js';
import { parseDiskSize, parseMemoryMib, parseVcpu, type Parsed } from '../../util/sizing.js';
import { TerminalFilter, terminalSafe } from '../../util/terminal.js';
import { formatDuration, formatSize, formatSizeShort, parseDuration } from '../../util/units.js';
import type { CliContext } from '../context.js';
import { ExitWith } from '../exit.js';
import { table } from '../render/table.js';

/** `banger vm ...`: thin wrappers over the VM routes, plus the ssh client side. */

export interface SizingFlags {
  vcpu?: string;
  memory?: string;
  diskSize?: string;
}

/**
 * Sizing flags → request fields, checked here against the API's limits so a
 * bad value is named as the user typed it (`--memory 64M`, not 64 MiB).
 */
export function parseSizing(f: SizingFlags): {
  vcpu?: number;
  memoryMib?: number;
  diskSize?: number;
} {
  const out: { vcpu?: number; memoryMib?: number; diskSize?: number } = {};
  const check = (flag: string, value: string, r: Parsed<number>): number => {
    if (!r.ok) throw new BangerError('usage', `invalid ${flag} '${value}'`, { hint: r.rule });
    return r.value;
  };
  if (f.vcpu !== undefined) out.vcpu = check('--vcpu', f.vcpu, parseVcpu(f.vcpu));
  if (f.memory !== undefined) out.memoryMib = check('--memory', f.memory, parseMemoryMib(f.memory));
  if (f.diskSize !== undefined)
    out.diskSize = check('--disk-size', f.diskSize, parseDiskSize(f.diskSize));
  return out;
}

export function formatSpec(s: VmSpec): string {
  const z = s.sizing;
  return [
    `spec: name=${s.name.value}`,
    `vcpu=${z.vcpu.value} (${z.vcpu.source})`,
    `memory=${formatSizeShort(z.memoryMib.value * 1024 ** 2)} (${z.memoryMib.source})`,
    `disk=${formatSizeShort(z.diskSize.value)} (${z.diskSize.source})`,
    `image=${s.image.value} (${s.image.source})`,
    `kernel=${s.kernel.value} (${s.kernel.source})`,
    `vmm=${s.vmm.value} (${s.vmm.source})`,
    `accel=${s.accel.value} (${s.accel.source})`,
    `nat=${s.nat ? 'on' : 'off'}`,
    ...(s.origin ? [`from=${s.origin.replace(/ /g, '_')}`] : []),
    ...(s.start ? [`start=${s.start}`] : []),
  ].join(' ');
}

const ago = (iso: string | null): string =>
  iso ? `${formatDuration(Date.now() - Date.parse(iso))} ago` : '-';

export function formatVmTable(vms: VmView[]): string {
  return table(
    ['NAME', 'STATE', 'IP', 'VCPU', 'MEMORY', 'DISK', 'IMAGE', 'VMM', 'CREATED'],
    vms.map((v) => [
      v.name,
      v.state,
      v.ip,
      v.vcpu,
      formatSizeShort(v.memoryMib * 1024 ** 2),
      formatSizeShort(v.diskSize),
      v.image,
      `${v.vmm}/${v.accel ?? '?'}`,
      ago(v.createdAt),
    ]),
  );
}

export function formatVm(v: VmView): string {
  const rows: [string, string | number | null][] = [
    ['name', v.name],
    ['id', v.id],
    ['state', v.state + (v.lastError ? ` (${v.lastError})` : '')],
    ['image', v.image],
    ['kernel', v.kernel],
    ['vmm', `${v.vmm} (accel ${v.accel ?? '?'})`],
    ['vcpu', v.vcpu],
    ['memory', formatSizeShort(v.memoryMib * 1024 ** 2)],
    ['disk', formatSizeShort(v.diskSize)],
    ['nat', v.nat ? 'on' : 'off'],
    ['ip', v.ip],
    ['mac', v.mac],
    ['tap', v.tap],
    ['pid', v.pid],
    ['confined', v.confinement],
    ['ssh', `banger vm ssh ${v.name}`],
    ['created', `${v.createdAt} (${ago(v.createdAt)})`],
    ['started', v.startedAt],
    [
      'stopped',
      v.idleStop
        ? `idle for ${formatDuration(v.idleStop.idleMs)} (auto-stop, ${v.stoppedAt})`
        : v.stoppedAt,
    ],
    ['from', v.origin ?? null],
    ['start', v.start ?? null],
    ['boot', v.bootMs === null ? null : formatDuration(v.bootMs)],
    ['dir', v.dir],
    ...activityRows(v),
  ];
  return rows
    .map(([k, val]) => `${`${k}:`.padEnd(10)}${terminalSafe(String(val ?? '-'))}`)
    .join('\n');
}

/** `vm show` lines from the sampler: auto-stop, last activity, the last sample. */
export function activityRows(v: VmView, now = Date.now()): [string, string | null][] {
  const rows: [string, string | null][] = [];
  if (v.autoStop) {
    const a = v.autoStop;
    const when = a.afterMs === 0 ? 'never' : `after ${formatDuration(a.afterMs)} idle`;
    rows.push(['autostop', `${when} (${a.source === 'vm' ? 'vm set --auto-stop' : 'config'})`]);
  }
  const act = v.activity;
  if (act) {
    const since = (iso: string): string => formatDuration(Math.max(0, now - Date.parse(iso)));
    rows.push([
      'active',
      act.activeReason ? `now (${act.activeReason})` : `idle for ${since(act.lastActiveAt)}`,
    ]);
    if (act.agentSilentSince)
      rows.push([
        'agent',
        `not answering since ${act.agentSilentSince} (${since(act.agentSilentSince)})`,
      ]);
  }
  const st = v.sample;
  if (st) {
    const age = st.sampledAt
      ? ` (sampled ${formatDuration(Math.max(0, now - Date.parse(st.sampledAt)))} ago)`
      : '';
    rows.push([
      'cpu',
      `${st.cpuPercent === null ? '-' : `${st.cpuPercent}%`} host${
        typeof st.guest?.cpuPercent === 'number' ? `, ${st.guest.cpuPercent}% guest` : ''
      }${age}`,
    ]);
    if (st.rssBytes !== null) rows.push(['rss', formatSize(st.rssBytes)]);
    const d = st.disk;
    rows.push([
      'disks',
      `${formatSize(d.overlayBytes + d.workBytes)} on the host of ${formatSize(
        (d.overlaySizeBytes ?? 0) + d.workSizeBytes,
      )} (overlay ${formatSize(d.overlayBytes)}, work ${formatSize(d.workBytes)})`,
    ]);
    if (st.guest) {
      const g = st.guest;
      rows.push([
        'mem',
        `${formatSize(g.memTotalBytes - g.memAvailableBytes)} / ${formatSize(g.memTotalBytes)} used`,
      ]);
      rows.push(['load', String(g.load1)]);
      rows.push(['uptime', formatDuration(g.uptimeMs)]);
      rows.push(['sessions', typeof g.sshSessions !== 'number' ? null : String(g.sshSessions)]);
    }
  }
  return rows;
}

// ------------------------------------------------------------------ create / run

export interface CreateFlags extends SizingFlags {
  name?: string;
  image?: string;
  kernel?: string;
  nat?: boolean;
  start?: boolean;
  cold?: boolean;
}

/** The body of a create request from the flags. */
export function createRequest(f: CreateFlags, start: boolean) {
  return {
    name: f.name,
    image: f.image,
    kernel: f.kernel,
    ...parseSizing(f),
    nat: Boolean(f.nat),
    start,
    cold: Boolean(f.cold),
  };
}

/**
 * Prints the `spec:` line from the create stream's items: once, and again only
 * if it changes (a warm start that fell back to a cold boot says so).
 */
export function specPrinter(ctx: CliContext): (data: unknown) => void {
  let printed: string | undefined;
  return (data) => {
    const d = data as { kind?: string; spec?: VmSpec };
    if (d.kind !== 'spec' || !d.spec || ctx.flags.json) return;
    const line = formatSpec(d.spec);
    if (line === printed) return;
    printed = line;
    ctx.note(line);
  };
}

async function createVm(
  ctx: CliContext,
  f: CreateFlags,
  start: boolean,
): Promise<{ vm: VmView; spec: VmSpec }> {
  return ctx.stream('vmCreate', { body: createRequest(f, start) }, { onItem: specPrinter(ctx) });
}

export async function vmCreate(ctx: CliContext, f: CreateFlags): Promise<void> {
  const r = await createVm(ctx, f, f.start !== false);
  if (ctx.flags.json) ctx.printJson(r);
  else ctx.print(r.vm.name);
}

export interface RunFlags extends CreateFlags {
  rm?: boolean;
  branch?: string;
  from?: string;
}

/** `vm run` without PATH (workspace mode is `vmRunWorkspace` in ./workspace.ts). */
export async function vmRun(ctx: CliContext, f: RunFlags, command: string[]): Promise<void> {
  let vm: VmView;
  try {
    vm = (await createVm(ctx, f, true)).vm;
  } catch (e) {
    throw await failedRun(ctx, f, e);
  }
  const code = await sshInto(ctx, vm, command);
  if (f.rm) {
    await removeQuietly(ctx, vm.name);
  } else if (command.length === 0) {
    await remindIfRunning(ctx, vm.name);
  }
  if (code !== 0) throw new ExitWith(code);
}

/**
 * A `vm run` whose VM could not be made ready: with --rm it is removed, unless
 * its first readiness wait timed out (then it is kept for `vm logs`).
 */
export async function failedRun(
  ctx: CliContext,
  f: { rm?: boolean; name?: string },
  e: unknown,
): Promise<BangerError> {
  const err = toBangerError(e);
  if (f.rm && !err.details?.bootTimeout) await removeQuietly(ctx, f.name);
  else if (f.rm && f.name) ctx.note(`kept vm '${f.name}' for inspection: banger vm logs ${f.name}`);
  return err;
}

export async function removeQuietly(ctx: CliContext, name: string | undefined): Promise<void> {
  if (!name) return;
  try {
    await ctx.daemon((c) =>
      c.stream(
        'vmAction',
        { params: { action: 'delete' }, body: { refs: [name], force: true } },
        () => undefined,
      ),
    );
  } catch {
    // best effort: the VM may never have been created
  }
}

export async function remindIfRunning(ctx: CliContext, name: string): Promise<void> {
  try {
    const v = await ctx.call('vmShow', { params: { ref: name } });
    if (v.state === 'running')
      ctx.note(
        `vm '${name}' is still running: stop it with \`banger vm stop ${name}\` or delete it with \`banger vm delete -f ${name}\``,
      );
  } catch {
    // the VM is gone: nothing to remind
  }
}

// ------------------------------------------------------------------ ssh

/** This CLI's entry script, for ssh's ProxyCommand (`banger __proxy`). */
const cliEntry = (): string => process.argv[1]!;

/** A child's exit as a shell reports it: its code, or 128 + the number of the signal that killed it. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal ? os.constants.signals[signal] : undefined;
  return n ? 128 + n : 1;
}

/**
 * Run system ssh into the VM through the daemon's tunnel; resolves with ssh's
 * exit code. `script` replaces the remote command line (workspace sessions
 * prefix the command with their setup); a terminal is still asked for only
 * when there is no command.
 */
export async function sshInto(
  ctx: CliContext,
  vm: Pick<VmView, 'id' | 'name'> & Partial<Pick<VmView, 'ip' | 'netns'>>,
  command: string[],
  opts: { script?: string } = {},
): Promise<number> {
  // Loaded here, not at start-up: `vm list` and friends need neither.
  const [{ spawn }, { sshArgs }, { ownNetns }] = await Promise.all([
    import('node:child_process'),
    import('../../guest/ssh.js'),
    import('../../util/netns.js'),
  ]);
  const interactive = command.length === 0 && Boolean(process.stdin.isTTY);
  // In the daemon's network namespace the guest is reachable as it is: no tunnel
  // (and no second CLI process as ProxyCommand) in the way.
  const direct = Boolean(vm.ip && vm.netns && vm.netns === ownNetns());
  const args = sshArgs({
    alias: `${vm.name}.vm`,
    keyPath: await ctx.sshKeyPath(),
    knownHosts: ctx.paths.knownHosts,
    ...(direct
      ? { hostName: vm.ip!, options: { ConnectTimeout: '10' } }
      : { proxyCommand: [process.execPath, cliEntry(), '__proxy', vm.id] }),
    tty: interactive,
    command: opts.script !== undefined ? [opts.script] : command,
  });
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', args, { stdio: 'inherit' });
    child.on('error', (e) =>
      reject(
        new BangerError('tool_missing', `cannot run ssh: ${e.message}`, {
          hint: 'install openssh-client',
        }),
      ),
    );
    child.on('exit', (code, signal) => resolve(exitStatus(code, signal)));
  });
}

/** How long `vm ssh` waits for a VM that is still booting (the longest boot timeout, and some). */
const BOOT_WAIT_MS = 240_000;

/**
 * A VM that is `starting` (booting, or adopted by a new daemon while it booted)
 * becomes `running` once its guest is ready: wait for that, bounded, saying so.
 */
async function waitWhileBooting(ctx: CliContext, vm: VmView): Promise<VmView> {
  if (vm.state !== 'starting') return vm;
  const t0 = Date.now();
  ctx.note(`vm '${vm.name}' is booting: waiting until it is ready`);
  let said = t0;
  while (vm.state === 'starting') {
    if (Date.now() - t0 > BOOT_WAIT_MS) {
      throw new BangerError(
        'timeout',
        `vm '${vm.name}' is still booting after ${formatDuration(Date.now() - t0)}`,
        { hint: `see \`banger vm logs ${vm.name}\`` },
      );
    }
    if (Date.now() - said >= 10_000) {
      said = Date.now();
      ctx.note(`vm '${vm.name}' still booting (${formatDuration(said - t0)})`);
    }
    await sleep(500);
    vm = await ctx.call('vmShow', { params: { ref: vm.id } });
  }
  return vm;
}

export async function vmSsh(ctx: CliContext, ref: string, command: string[]): Promise<void> {
  const vm = await waitWhileBooting(ctx, await ctx.call('vmShow', { params: { ref } }));
  if (vm.state !== 'running') {
    const why = vm.lastError ? ` (${vm.lastError})` : '';
    throw new BangerError('precondition', `vm '${vm.name}' is ${vm.state}${why}`, {
      hint: `start it with \`banger vm start ${vm.name}\``,
    });
  }
  const code = await sshInto(ctx, vm, command);
  if (command.length === 0) await remindIfRunning(ctx, vm.name);
  if (code !== 0) throw new ExitWith(code);
}

/** ProxyCommand for ssh: a byte pipe between stdio and the guest's port 22, through the daemon. */
export async function proxyCommand(ctx: CliContext, ref: string, port?: string): Promise<void> {
  const sock = await ctx.daemon((c) =>
    c.upgrade('vmSsh', { params: { ref }, query: port ? { port: Number(port) } : {} }),
  );
  await new Promise<void>((resolve) => {
    process.stdin.pipe(sock);
    sock.pipe(process.stdout);
    sock.on('close', () => resolve());
    sock.on('error', () => resolve());
    process.stdin.on('end', () => sock.end());
  });
}

// ------------------------------------------------------------------ list / show / logs / stats

export async function vmList(ctx: CliContext): Promise<void> {
  const { vms } = await ctx.call('vmList');
  if (ctx.flags.json) ctx.printJson(vms);
  else ctx.print(formatVmTable(vms));
}

export async function vmShow(ctx: CliContext, ref: string): Promise<void> {
  const vm = await ctx.call('vmShow', { params: { ref } });
  if (ctx.flags.json) ctx.printJson(vm);
  else ctx.print(formatVm(vm));
}

/** Console text goes to a terminal filtered (no guest escape sequences), to a pipe as it is. */
function writeGuestText(ctx: CliContext): (s: string) => void {
  if (!ctx.out.isTTY) return (s) => ctx.out.write(s);
  const filter = new TerminalFilter();
  return (s) => ctx.out.write(filter.write(s));
}

export async function vmLogs(ctx: CliContext, ref: string, follow: boolean): Promise<void> {
  await ctx.interruptible((signal) =>
    ctx.daemon((c) =>
      c.text('vmLogs', { params: { ref }, query: { follow } }, writeGuestText(ctx), signal),
    ),
  );
}

export function formatStats(stats: VmStats[], now = Date.now()): string {
  const body = table(
    [
      'NAME',
      'STATE',
      'CPU',
      'VMM RSS',
      'GUEST MEM USED',
      'ROOT DISK USED',
      'HOST DISK',
      'SSH',
      'IDLE',
      'AGE',
    ],
    stats.map((s) => {
      const g = s.guest;
      const mem = g
        ? `${formatSize(g.memTotalBytes - g.memAvailableBytes)} / ${formatSize(g.memTotalBytes)}`
        : '-';
      const root = g?.disks.find((d) => d.mount === '/root');
      const rootUse = root
        ? `${formatSize(root.totalBytes - root.freeBytes)} / ${formatSize(root.totalBytes)}`
        : '-';
      const act = s.activity;
      const idle = !act
        ? '-'
        : act.activeReason
          ? 'no'
          : formatDuration(Math.max(0, now - Date.parse(act.lastActiveAt)));
      return [
        s.name,
        s.state,
        s.cpuPercent === null ? '-' : `${s.cpuPercent}%`,
        s.rssBytes === null ? '-' : formatSize(s.rssBytes),
        mem,
        rootUse,
        formatSize(s.disk.overlayBytes + s.disk.workBytes),
        typeof g?.sshSessions !== 'number' ? '-' : g.sshSessions,
        idle,
        s.sampledAt ? formatDuration(Math.max(0, now - Date.parse(s.sampledAt))) : '-',
      ];
    }),
  );
  // A VM whose agent stopped answering: its guest figures are missing, say why.
  const silent = stats
    .filter((s) => s.activity?.agentSilentSince)
    .map((s) => `${s.name}: agent: not answering since ${s.activity!.agentSilentSince}`);
  return [body, ...silent].join('\n');
}

export async function vmStats(ctx: CliContext, refs: string[]): Promise<void> {
  const { vms } = await ctx.call('vmStats', {
    query: refs.length ? { refs: refs.join(',') } : {},
  });
  if (ctx.flags.json) ctx.printJson(vms);
  else ctx.print(formatStats(vms));
}

// ------------------------------------------------------------------ lifecycle over several VMs

function reportResults(ctx: CliContext, verb: string, results: VmResult[]): void {
  if (ctx.flags.json) {
    ctx.printJson(results);
  }
  const failed = results.filter((r) => !r.ok);
  if (failed.length === 0) return;
  if (results.length === 1) throw BangerError.fromJSON(failed[0]!.error as ErrorShape);
  throw new BangerError(
    'precondition',
    `${failed.length} of ${results.length} VMs failed to ${verb}`,
    { hint: 'see the lines above' },
  );
}

async function action(
  ctx: CliContext,
  verb: VmAction,
  refs: string[],
  body: { timeoutMs?: number; signal?: string; force?: boolean } = {},
): Promise<void> {
  const past: Record<typeof verb, string> = {
    start: 'started',
    stop: 'stopped',
    restart: 'restarted',
    kill: 'killed',
    delete: 'deleted',
    suspend: 'suspended',
    resume: 'resumed',
  };
  const { results } = await ctx.stream(
    'vmAction',
    { params: { action: verb }, body: { refs, ...body } },
    {
      onItem: (data) => {
        if (ctx.flags.json) return;
        const r = data as VmResult;
        if (r.ok) ctx.print(`${r.vm?.name ?? r.ref}: ${past[verb]}`);
        else if (refs.length > 1)
          ctx.note(
            `error: ${r.ref}: ${r.error?.message}${r.error?.hint ? `: ${r.error.hint}` : ''}`,
          );
      },
    },
  );
  reportResults(ctx, verb, results);
}

export const vmStart = (ctx: CliContext, refs: string[]): Promise<void> =>
  action(ctx, 'start', refs);
export const vmRestart = (ctx: CliContext, refs: string[], timeout?: string): Promise<void> =>
  action(ctx, 'restart', refs, { timeoutMs: timeout ? parseTimeout(timeout) : undefined });
export const vmStop = (ctx: CliContext, refs: string[], timeout?: string): Promise<void> =>
  action(ctx, 'stop', refs, { timeoutMs: timeout ? parseTimeout(timeout) : undefined });
export const vmKill = (ctx: CliContext, refs: string[], signal?: string): Promise<void> =>
  action(ctx, 'kill', refs, { signal: signal?.toUpperCase() });
export const vmDelete = (ctx: CliContext, refs: string[], force?: boolean): Promise<void> =>
  action(ctx, 'delete', refs, { force: Boolean(force) });
export const vmSuspend = (ctx: CliContext, refs: string[]): Promise<void> =>
  action(ctx, 'suspend', refs);
export const vmResume = (ctx: CliContext, refs: string[]): Promise<void> =>
  action(ctx, 'resume', refs);

function parseTimeout(s: string): number {
  try {
    return /^\d+$/.test(s) ? Number(s) * 1000 : parseDuration(s);
  } catch (e) {
    throw new BangerError('usage', (e as Error).message, { hint: 'use e.g. --timeout 30s' });
  }
}

/** `--auto-stop 30m|never|default` → ms (0 = never) or null (follow auto_stop_stale_after). */
export function parseAutoStop(v: string): number | null {
  const s = v.trim().toLowerCase();
  if (s === 'never' || s === 'off') return 0;
  if (s === 'default' || s === 'config') return null;
  let ms: number;
  try {
    ms = parseDuration(s);
  } catch {
    throw new BangerError('usage', `invalid --auto-stop '${v}'`, {
      hint: 'use a duration (e.g. 30m, 2h), never, or default',
    });
  }
  if (ms > 0 && ms < 1000)
    throw new BangerError('usage', `invalid --auto-stop '${v}': under 1s`, {
      hint: 'use a duration of at least 1s (e.g. 30m), never, or default',
    });
  return ms;
}

export async function vmSet(
  ctx: CliContext,
  refs: string[],
  f: SizingFlags & { nat?: boolean; autoStop?: string },
): Promise<void> {
  const autoStopMs = f.autoStop === undefined ? undefined : parseAutoStop(f.autoStop);
  const { results } = await ctx.stream(
    'vmSet',
    { body: { refs, ...parseSizing(f), nat: f.nat, autoStopMs } },
    {
      onItem: (data) => {
        const r = data as VmResult;
        if (!ctx.flags.json && r.ok) ctx.print(`${r.vm?.name ?? r.ref}: updated`);
        else if (!ctx.flags.json && refs.length > 1)
          ctx.note(`error: ${r.ref}: ${r.error?.message}`);
      },
    },
  );
  reportResults(ctx, 'update', results);
}
