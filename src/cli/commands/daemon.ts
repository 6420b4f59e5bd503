import type { Status } from '../../api/schemas/daemon.js';
import { isProcessAlive } from '../../util/proc.js';
import { sleep } from '../../util/sleep.js';
import { formatDuration } from '../../util/units.js';
import type { CliContext } from '../context.js';
import { newClient, socketAnswers, waitForStop } from '../daemon.js';

export function formatDnsListener(s: Status): string {
  const l = s.dns.listener;
  if (l.state === 'listening')
    return `${l.address} (listening, udp+tcp, ${l.names} name${l.names === 1 ? '' : 's'})`;
  return `${l.configured} (not listening: ${l.error ?? l.state})`;
}

export function formatDnsRouting(s: Status): string {
  const r = s.dns.routing;
  switch (r.state) {
    case 'applied':
    case 'pending':
      return r.detail;
    case 'off':
      return `not routed by banger (${r.detail})`;
    default:
      return `not routed (${r.detail}; see docs/dns-routing.md)`;
  }
}

export function formatStatus(s: Status): string {
  const running = s.counts.vms.running ?? 0;
  const rows: [string, string][] = [
    ['pid', String(s.pid)],
    ['version', s.build],
    ['socket', s.socket],
    ['log', `${s.logPath} (level ${s.logLevel})`],
    ['state', s.stateDir],
    ['config', s.configFile],
    ['dns', formatDnsListener(s)],
    ['.vm', formatDnsRouting(s)],
    ['vmm', s.vmm.resolved ? `${s.vmm.resolved} (${s.vmm.reason})` : `none: ${s.vmm.reason}`],
    ['accel', s.accel],
    ['vms', `${s.counts.vmsTotal} (${running} running)`],
    ['images', String(s.counts.images)],
    ['kernels', String(s.counts.kernels)],
    ['in flight', String(s.inflight)],
    ['uptime', formatDuration(s.uptimeMs)],
  ];
  return ['bangerd is running', ...rows.map(([k, v]) => `  ${`${k}:`.padEnd(11)}${v}`)].join('\n');
}

export async function daemonStatus(ctx: CliContext): Promise<void> {
  const s = await ctx.call('status');
  if (ctx.flags.json) ctx.printJson(s);
  else ctx.print(formatStatus(s));
}

export async function daemonSocket(ctx: CliContext): Promise<void> {
  if (ctx.flags.json) ctx.printJson({ socket: ctx.paths.socket });
  else ctx.print(ctx.paths.socket);
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

export async function daemonStop(ctx: CliContext): Promise<void> {
  if (!(await socketAnswers(ctx.paths.socket))) {
    if (ctx.flags.json) ctx.printJson({ running: false });
    else ctx.print('bangerd is not running');
    return;
  }
  // shutdown is accepted from any CLI version, so an old daemon can always be stopped.
  const r = await newClient(ctx.paths).call('shutdown', { body: { ifIdle: false } });
  if (r.inflight > 0 && !ctx.flags.json)
    ctx.note(`waiting for ${r.inflight} operation(s) to finish...`);
  // The socket goes first; the process exits right after closing its database.
  const stopped = (await waitForStop(ctx.paths, 11 * 60_000)) && (await waitForExit(r.pid, 10_000));
  if (ctx.flags.json) ctx.printJson({ running: !stopped, pid: r.pid });
  else
    ctx.print(
      stopped ? `bangerd stopped (pid ${r.pid})` : `bangerd (pid ${r.pid}) is still stopping`,
    );
}

export async function daemonLogs(
  ctx: CliContext,
  opts: { follow: boolean; lines: number },
): Promise<void> {
  await ctx.interruptible((signal) =>
    ctx.daemon((c) =>
      c.text(
        'daemonLogs',
        { query: { follow: opts.follow, tail: opts.lines } },
        (s) => ctx.out.write(s),
        signal,
      ),
    ),
  );
}
