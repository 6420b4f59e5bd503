import net from 'node:net';
import type { GuestListener, VmPorts } from '../api/schemas/ports.js';
import { BangerError, toBangerError } from '../errors.js';
import type { CallOptions } from '../guest/agentClient.js';
import type { ListeningSocket, PortsResult } from '../guest/agentProtocol.js';
import { hostAlias } from '../guest/ssh.js';
import type { VmRecord } from '../store/vms.js';
import { resolveVmRef, type VmLookup } from './resolve.js';

/**
 * `vm ports`: the guest agent lists listening sockets; the daemon (which lives
 * in the bridge's namespace and reaches guests directly) says which of them
 * the host can reach and probes each reachable TCP port for HTTP, with a
 * short deadline so a silent port never holds the answer up. VMs are asked
 * concurrently; one VM's failure is its own entry, the others still answer.
 */

/** What the ports lister needs: the VM table and each VM's agent channel. */
export interface PortsDeps {
  vms: VmLookup & { list(): VmRecord[] };
  /** The agent of a running VM (the VM service keeps one per VM). */
  agent(vm: VmRecord): { ports(opts?: CallOptions): Promise<PortsResult> };
  /** Notice VMMs that died, so states are current. */
  checkLiveness?(): void;
  /** The HTTP probe; tests swap it. */
  probe?: (host: string, port: number, hostHeader: string) => Promise<boolean>;
}

export const AGENT_PORTS_TIMEOUT_MS = 5_000;
export const HTTP_PROBE_TIMEOUT_MS = 1_500;
/** HTTP probes running at once for one VM. */
const PROBES_AT_ONCE = 16;

const V4_LOOPBACK = /^127\./;

/** Where a listener is bound, seen from the host. */
export function listenerScope(address: string, vmIp: string | null): GuestListener['scope'] {
  const a = address.toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)?.[1];
  const v4 = mapped ?? (net.isIPv4(a) ? a : undefined);
  if (v4 !== undefined) {
    if (v4 === '0.0.0.0') return 'any';
    if (V4_LOOPBACK.test(v4)) return 'loopback';
    return v4 === vmIp ? 'vm' : 'other';
  }
  if (a === '::') return 'any';
  if (a === '::1') return 'loopback';
  return 'other';
}

/** The URL a browser on the host opens for an HTTP port of a VM. */
export const portUrl = (vmName: string, port: number): string =>
  `http://${hostAlias(vmName)}:${port}/`;

/** The listeners of one VM with scope and reachability; `http`/`url` not probed yet. */
export function classifyListeners(ports: ListeningSocket[], vmIp: string | null): GuestListener[] {
  return ports.map((p) => {
    const scope = listenerScope(p.address, vmIp);
    return {
      proto: p.proto,
      address: p.address,
      port: p.port,
      pid: p.pid,
      process: p.process,
      cmdline: p.cmdline ?? null,
      scope,
      reachable: vmIp !== null && (scope === 'any' || scope === 'vm'),
      http: null,
      url: null,
    };
  });
}

/**
 * Does host:port answer an HTTP request? Sends `GET /` and looks at the first
 * bytes of the answer only; false on any error, on non-HTTP bytes, or when
 * nothing arrives within the deadline.
 */
export function probeHttp(
  host: string,
  port: number,
  hostHeader: string,
  timeoutMs = HTTP_PROBE_TIMEOUT_MS,
): Promise<boolean> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    let done = false;
    const s = net.connect({ host, port });
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    s.on('connect', () =>
      s.write(
        `GET / HTTP/1.0\r\nHost: ${hostHeader}\r\nUser-Agent: banger-ports-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
      ),
    );
    s.on('data', (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (got.length >= 5) finish(got.subarray(0, 5).toString('latin1') === 'HTTP/');
    });
    s.on('end', () => finish(false));
    s.on('error', () => finish(false));
  });
}

/** Run fns with at most `limit` at once. */
async function limited<T>(fns: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const out: T[] = new Array(fns.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < fns.length) {
      const i = next++;
      out[i] = await fns[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, fns.length) }, worker));
  return out;
}

export class PortsService {
  constructor(private readonly deps: PortsDeps) {}

  /** Ports of the VMs named by refs, or of every running VM. */
  async list(refs: string[]): Promise<VmPorts[]> {
    this.deps.checkLiveness?.();
    if (refs.length === 0) {
      const running = this.deps.vms.list().filter((v) => v.state === 'running');
      return Promise.all(running.map((vm) => this.ofVm(vm.name, vm)));
    }
    return Promise.all(
      refs.map(async (ref) => {
        let vm: VmRecord;
        try {
          vm = resolveVmRef(this.deps.vms, ref);
        } catch (e) {
          return failed(ref, null, e);
        }
        return this.ofVm(ref, vm);
      }),
    );
  }

  private async ofVm(ref: string, vm: VmRecord): Promise<VmPorts> {
    if (vm.state !== 'running') {
      return failed(
        ref,
        vm,
        new BangerError('precondition', `vm '${vm.name}' is ${vm.state}, not running`, {
          hint: `start it with \`banger vm start ${vm.name}\``,
        }),
      );
    }
    let result: PortsResult;
    try {
      result = await this.deps.agent(vm).ports({ timeoutMs: AGENT_PORTS_TIMEOUT_MS });
    } catch (e) {
      const err = toBangerError(e);
      return failed(
        ref,
        vm,
        new BangerError(
          err.code,
          err.message.startsWith(`vm '${vm.name}'`)
            ? err.message
            : `vm '${vm.name}': ${err.message}`,
          {
            hint: `its guest agent did not list the ports; see \`banger vm logs ${vm.name}\``,
          },
        ),
      );
    }
    const listeners = classifyListeners(result.ports, vm.ip);
    const probe = this.deps.probe ?? ((h, p, hh) => probeHttp(h, p, hh));
    // One probe per port: a port bound on both 0.0.0.0 and :: is the same service to the host.
    const byPort = new Map<number, () => Promise<boolean>>();
    for (const l of listeners) {
      if (!l.reachable || !l.proto.startsWith('tcp') || byPort.has(l.port)) continue;
      byPort.set(l.port, () => probe(vm.ip!, l.port, `${hostAlias(vm.name)}:${l.port}`));
    }
    const ports = [...byPort.keys()];
    const answers = await limited([...byPort.values()], PROBES_AT_ONCE);
    const http = new Map(ports.map((p, i) => [p, answers[i]!]));
    for (const l of listeners) {
      if (!l.reachable || !l.proto.startsWith('tcp')) continue;
      l.http = http.get(l.port) ?? false;
      l.url = l.http ? portUrl(vm.name, l.port) : null;
    }
    return {
      ref,
      ok: true,
      name: vm.name,
      ip: vm.ip,
      ports: listeners,
      truncated: result.truncated,
    };
  }
}

function failed(ref: string, vm: VmRecord | null, e: unknown): VmPorts {
  return {
    ref,
    ok: false,
    name: vm?.name ?? null,
    ip: vm?.ip ?? null,
    ports: [],
    truncated: false,
    error: toBangerError(e).toJSON(),
  };
}
