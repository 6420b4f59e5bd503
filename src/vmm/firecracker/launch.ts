import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../../errors.js';
import { lastLine } from '../../util/exec.js';
import { socketAnswers } from '../../util/socket.js';
import { sleep } from '../../util/sleep.js';
import type { LaunchSpec, VmHandle } from '../driver.js';
import { jailOfSocket } from '../jail.js';
import {
  describeExit,
  killVmm,
  settleExit,
  spawnVmm,
  vmmAlive,
  type VmmProcess,
} from '../process.js';
import { FirecrackerApi } from './api.js';
import {
  describeInstance,
  isValidInstanceId,
  type FcRequest,
  type InstanceInfo,
} from './requests.js';
import { removeStaleSocket } from './vsock.js';

/**
 * Bringing up one Firecracker process: refuse a live one on the same socket,
 * clear stale sockets, spawn it detached (src/vmm/process.ts), wait for its
 * API socket, send the requests in order. Any failure kills what was spawned
 * and removes its sockets, and is reported with the end of the VMM log.
 */

/** File names inside a VM's directory that belong to this driver. */
export const FC_FILES = {
  apiSocket: 'fc.sock',
} as const;

export const apiSocketPath = (vmDir: string): string => path.join(vmDir, FC_FILES.apiSocket);

export interface LaunchOptions {
  bin: string;
  spec: LaunchSpec;
  /** Sent in order once the API socket answers (boot configuration, or a snapshot load). */
  requests: FcRequest[];
  env?: NodeJS.ProcessEnv;
  installHint: string;
  socketTimeoutMs: number;
  apiTimeoutMs?: number;
  killWaitMs: number;
  pollMs: number;
  signal?: AbortSignal;
  /**
   * A jailed start: the jailer's argv (bin is then the jailer) and the host
   * paths of the sockets Firecracker makes inside the jail.
   */
  jailed?: { args: string[]; apiSocket: string; agentSocket: string };
}

/** The VM id of a handle: its control socket lives in vms/<id>/, or in its jail. */
export const vmRef = (h: Pick<VmHandle, 'controlSocket'>): string =>
  jailOfSocket(h.controlSocket)?.id ?? path.basename(path.dirname(h.controlSocket));

/** `firecracker of vm '<id>'` for a handle. */
export const processLabel = (h: Pick<VmHandle, 'controlSocket'>): string =>
  `firecracker of vm '${vmRef(h)}'`;

export const api = (
  socketPath: string,
  vmName: string,
  o: { logPath?: string; timeoutMs?: number } = {},
): FirecrackerApi =>
  new FirecrackerApi({ socketPath, vmName, logPath: o.logPath, timeoutMs: o.timeoutMs });

/** GET / on a socket; undefined when nothing answers in time. */
export async function describeAt(
  sock: string,
  vmName: string,
  timeoutMs: number,
): Promise<InstanceInfo | undefined> {
  try {
    return await api(sock, vmName).call<InstanceInfo>(describeInstance(), { timeoutMs });
  } catch {
    return undefined;
  }
}

export async function launchFirecracker(o: LaunchOptions): Promise<VmHandle> {
  const { spec, signal } = o;
  const sock = o.jailed?.apiSocket ?? apiSocketPath(spec.dir);
  const agentSock = o.jailed?.agentSocket ?? spec.agentSocket;
  fs.mkdirSync(spec.dir, { recursive: true });
  await clearStaleSockets(spec, sock, agentSock);

  let args: string[];
  if (o.jailed) args = [...o.jailed.args];
  else {
    args = ['--api-sock', sock];
    if (isValidInstanceId(spec.vmId)) args.push('--id', spec.vmId);
  }
  if (spec.extraArgs) args.push(...spec.extraArgs);
  const proc = await spawnVmm({
    bin: o.bin,
    args,
    cwd: spec.dir,
    log: spec.vmmLog,
    env: o.env,
    installHint: o.installHint,
  });
  const handle: VmHandle = {
    pid: proc.pid,
    pidStartTime: proc.pidStartTime ?? -1,
    controlSocket: sock,
  };
  try {
    await waitForSocket(o, sock, proc);
    if (proc.pidStartTime === undefined) throw await exitedEarly(spec, proc);
    const client = api(sock, spec.name, { logPath: spec.vmmLog, timeoutMs: o.apiTimeoutMs });
    for (const req of o.requests) {
      if (signal?.aborted) throw cancelled(spec);
      try {
        await client.call(req, { signal });
      } catch (e) {
        // A rejected call may be the VMM dying: report its last words rather than ECONNRESET.
        if (proc.exited() || !vmmAlive(handle)) throw await exitedEarly(spec, proc);
        throw e;
      }
    }
    return handle;
  } catch (e) {
    await killVmm(handle, processLabel(handle), o.killWaitMs);
    removeSockets(sock, agentSock);
    throw e;
  }
}

/** Refuse to start over a live Firecracker; remove sockets a dead one left behind. */
export async function clearStaleSockets(
  spec: LaunchSpec,
  sock: string,
  agentSock: string,
): Promise<void> {
  // A process that is still exiting may accept a connection but never answers HTTP.
  if ((await socketAnswers(sock, 500)) && (await describeAt(sock, spec.name, 1_000))) {
    throw new BangerError(
      'conflict',
      `vm '${spec.name}' already has a firecracker answering on ${sock}`,
      {
        hint: `stop it first (banger vm stop ${spec.name})`,
      },
    );
  }
  removeSockets(sock, agentSock);
}

function removeSockets(sock: string, agentSock: string): void {
  for (const p of [sock, agentSock]) {
    try {
      removeStaleSocket(p);
    } catch {
      // not a socket: leave it, Firecracker will say what is wrong
    }
  }
}

async function waitForSocket(o: LaunchOptions, sock: string, proc: VmmProcess): Promise<void> {
  const { spec, signal } = o;
  const deadline = Date.now() + o.socketTimeoutMs;
  for (;;) {
    if (signal?.aborted) throw cancelled(spec);
    if (proc.exited()) throw await exitedEarly(spec, proc);
    if (await socketAnswers(sock, 500)) return;
    if (Date.now() > deadline) {
      const tail = proc.logTail();
      throw new BangerError(
        'timeout',
        `firecracker of vm '${spec.name}' did not open its API socket ${sock} within ${o.socketTimeoutMs} ms${tail ? `; its log ends with: ${lastLine(tail)}` : ''}`,
        { hint: `see the VMM log ${spec.vmmLog}`, details: { logTail: tail } },
      );
    }
    await sleep(o.pollMs);
  }
}

async function exitedEarly(spec: LaunchSpec, proc: VmmProcess): Promise<BangerError> {
  // The exit status may arrive a moment after the API connection broke.
  const ex = await settleExit(proc);
  const tail = proc.logTail();
  return new BangerError(
    'vmm_failed',
    `firecracker of vm '${spec.name}' exited during startup (${describeExit(ex)})${tail ? `: ${lastLine(tail)}` : ''}`,
    { hint: `see the VMM log ${spec.vmmLog}`, details: { logTail: tail, exit: ex } },
  );
}

export const cancelled = (spec: Pick<LaunchSpec, 'name'>): BangerError =>
  new BangerError('cancelled', `starting vm '${spec.name}' was cancelled`);

/** After the process is gone: its API socket is stale. */
export function removeApiSocket(h: Pick<VmHandle, 'controlSocket'>): void {
  try {
    removeStaleSocket(h.controlSocket);
  } catch {
    // not a socket: not ours
  }
}
