import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { BangerError, type ErrorCode } from '../errors.js';
import { sleep } from '../util/sleep.js';
import { dialUnix } from '../util/socket.js';
import { formatDuration } from '../util/units.js';
import {
  AgentResultSchemas,
  ReadyEventSchema,
  encodeAgentRequest,
  parseAgentLine,
  type AgentArgs,
  type AgentEvent,
  type AgentOp,
  type AgentResponse,
  type AgentResult,
  type HelloResult,
  type PortsResult,
  type PowerResult,
  type ReadyEvent,
  type ReadyResult,
  type SetIdentityResult,
  type SetTimeResult,
  type StatsResult,
} from './agentProtocol.js';
import { agentError, DeadlineError, isRetryableDialError, raceDeadline } from './agentErrors.js';
import { LineSplitter } from './lineSplitter.js';

export { agentError, isRetryableDialError } from './agentErrors.js';

/**
 * Host side of the guest agent channel. One client per VM: QEMU's chardev
 * socket takes a single client at a time. The client opens the stream through
 * a dialer (a Unix socket path for QEMU; for Firecracker, a function that does
 * the vsock `CONNECT` handshake) and dials again lazily after the stream
 * drops; or it wraps one already-connected stream. Requests carry ids and are
 * matched to answers, validated with the shared schemas, bounded by a timeout
 * and an optional AbortSignal; failures are one-line BangerErrors naming the
 * VM (label).
 */

/** Opens one connected stream to the agent, or rejects. Must honour the signal. */
export type AgentDialer = (signal: AbortSignal) => Promise<Duplex>;

export interface AgentClientOptions {
  /** Names the VM or channel in error messages, e.g. `vm dev1`. */
  label?: string;
  /** Default time a request may take, connecting included (ms). */
  requestTimeoutMs?: number;
  /** Default time `connect()` keeps dialing (ms). */
  connectTimeoutMs?: number;
  /** Pause between dial attempts (ms). */
  retryIntervalMs?: number;
  /** Which dial failures mean "not up yet, try again". Default: the usual errno codes. */
  isRetryable?: (e: unknown) => boolean;
}

export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface AgentClientEvents {
  /** Every unsolicited event line from the agent. */
  event: [AgentEvent];
  /** The agent saw sshd listening (sent once per agent start, best effort). */
  ready: [ReadyEvent];
  connect: [];
  disconnect: [Error | undefined];
  /** A stray first line of a connection, ignored (later unreadable lines drop the channel). */
  warning: [string];
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
export const DEFAULT_WAIT_READY_TIMEOUT_MS = 120_000;
/** Extra time the host waits beyond the agent-side wait-ready limit, so the agent's answer wins. */
const WAIT_READY_GRACE_MS = 2_000;
/** The agent keeps every answer under 64 KiB; a longer line is a broken or hostile guest. */
export const MAX_AGENT_LINE_BYTES = 64 * 1024;

/** Dialer for a Unix socket where the VMM is the server (QEMU `-chardev socket,server=on`). */
export function unixDialer(socketPath: string): AgentDialer {
  return (signal) => dialUnix(socketPath, signal);
}

interface Pending {
  op: AgentOp;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/** Code of the error a `disconnect` carries when the host dropped the channel for what the guest sent. */
export const GUEST_PROTOCOL_FAULT = 'guest_protocol';
const guestFault = (why: string): Error =>
  Object.assign(new Error(why), { code: GUEST_PROTOCOL_FAULT });

export class AgentClient extends EventEmitter<AgentClientEvents> {
  readonly label: string;
  private readonly requestTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly retryIntervalMs: number;
  private readonly isRetryable: (e: unknown) => boolean;
  private readonly lifetime = new AbortController();
  private stream: Duplex | undefined;
  private dialing: Promise<void> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  private constructor(
    private readonly dialer: AgentDialer | undefined,
    opts: AgentClientOptions,
    defaultLabel: string,
  ) {
    super();
    this.label = opts.label ?? defaultLabel;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.retryIntervalMs = opts.retryIntervalMs ?? 100;
    this.isRetryable = opts.isRetryable ?? isRetryableDialError;
  }

  /** A client for QEMU's agent chardev socket; dials on first use and again after a drop. */
  static unix(socketPath: string, opts: AgentClientOptions = {}): AgentClient {
    return new AgentClient(unixDialer(socketPath), opts, `agent socket ${socketPath}`);
  }

  /** A client that dials with a custom dialer (e.g. Firecracker's vsock handshake). */
  static fromDialer(dialer: AgentDialer, opts: AgentClientOptions = {}): AgentClient {
    return new AgentClient(dialer, opts, 'guest agent');
  }

  /** A client over one already-connected stream; it does not reconnect. */
  static fromStream(stream: Duplex, opts: AgentClientOptions = {}): AgentClient {
    const c = new AgentClient(undefined, opts, 'guest agent');
    c.attach(stream);
    return c;
  }

  get connected(): boolean {
    return this.stream !== undefined;
  }

  /** Dial until connected, for up to timeoutMs (the VM may still be starting). */
  async connect(opts: CallOptions = {}): Promise<void> {
    const timeoutMs = opts.timeoutMs ?? this.connectTimeoutMs;
    await this.ensureStream(performance.now() + timeoutMs, timeoutMs, 'connect', opts.signal);
  }

  hello(opts?: CallOptions): Promise<HelloResult> {
    return this.request('hello', {}, opts);
  }

  /**
   * Resolve when sshd listens in the guest, with its host keys. The agent
   * answers as soon as it sees port 22 in LISTEN state (it never connects to
   * sshd); other requests are served meanwhile.
   */
  waitReady(opts: CallOptions = {}): Promise<ReadyResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_WAIT_READY_TIMEOUT_MS;
    const hostDeadline = performance.now() + timeoutMs;
    return this.call(
      'wait-ready',
      // the agent's own limit is what is left of ours when the request leaves
      () => ({ timeoutMs: Math.max(0, Math.floor(hostDeadline - performance.now())) }),
      timeoutMs + WAIT_READY_GRACE_MS,
      opts.signal,
    );
  }

  ports(opts?: CallOptions): Promise<PortsResult> {
    return this.request('ports', {}, opts);
  }

  stats(opts?: CallOptions): Promise<StatsResult> {
    return this.request('stats', {}, opts);
  }

  sync(opts?: CallOptions): Promise<Record<string, never>> {
    return this.request('sync', {}, opts) as Promise<Record<string, never>>;
  }

  /** The agent answers first, then powers the guest off. */
  poweroff(opts?: CallOptions): Promise<PowerResult> {
    return this.request('poweroff', {}, opts);
  }

  reboot(opts?: CallOptions): Promise<PowerResult> {
    return this.request('reboot', {}, opts);
  }

  /**
   * Step the guest clock to the host's time (after a restore it is behind);
   * the time is taken as the request leaves, after any dialing.
   */
  setTime(opts: CallOptions = {}): Promise<SetTimeResult> {
    return this.call(
      'set-time',
      () => ({ unixMs: Date.now() }),
      opts.timeoutMs ?? this.requestTimeoutMs,
      opts.signal,
    );
  }

  /**
   * A restored VM's new identity; resolves with its new host keys once sshd
   * uses them. `timeMs` is the host's clock as the request leaves, after any dialing.
   */
  setIdentity(
    args: Omit<AgentArgs['set-identity'], 'timeMs'>,
    opts: CallOptions = {},
  ): Promise<SetIdentityResult> {
    return this.call(
      'set-identity',
      () => ({ ...args, timeMs: Date.now() }),
      opts.timeoutMs ?? this.requestTimeoutMs,
      opts.signal,
    );
  }

  request<O extends AgentOp>(
    op: O,
    args: AgentArgs[O],
    opts: CallOptions = {},
  ): Promise<AgentResult<O>> {
    return this.call(op, () => args, opts.timeoutMs ?? this.requestTimeoutMs, opts.signal);
  }

  /** Stop: fail pending requests, drop the stream, never dial again. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.lifetime.abort();
    this.failPending(new BangerError('cancelled', `${this.label}: agent client closed`));
    const s = this.stream;
    this.stream = undefined;
    s?.destroy();
  }

  // ---------- internals ----------

  private async call<O extends AgentOp>(
    op: O,
    args: () => AgentArgs[O],
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<AgentResult<O>> {
    const deadline = performance.now() + timeoutMs;
    if (signal?.aborted) throw this.cancelled(op);
    const stream = await this.ensureStream(deadline, timeoutMs, op, signal);
    const id = this.nextId++;
    const line = encodeAgentRequest(id, op, args());
    return new Promise<AgentResult<O>>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.pending.delete(id);
      };
      const onAbort = (): void => {
        cleanup();
        reject(this.cancelled(op));
      };
      const timer = setTimeout(
        () => {
          cleanup();
          reject(
            new BangerError(
              'timeout',
              `${this.label}: guest agent did not answer ${op} within ${formatDuration(timeoutMs)}`,
              {
                hint: 'the guest may still be booting, or its agent is not running: see `banger vm logs`',
              },
            ),
          );
        },
        Math.max(0, deadline - performance.now()),
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        op,
        resolve: (v) => {
          cleanup();
          resolve(v as AgentResult<O>);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      });
      stream.write(line);
    });
  }

  /** The current stream, dialing (with retries) until the deadline when there is none. */
  private async ensureStream(
    deadline: number,
    budgetMs: number,
    op: string,
    signal?: AbortSignal,
  ): Promise<Duplex> {
    let lastError: unknown;
    for (;;) {
      if (this.closed) throw new BangerError('cancelled', `${this.label}: agent client closed`);
      if (this.stream) return this.stream;
      if (!this.dialer) {
        throw new BangerError('vmm_failed', `${this.label}: guest agent channel is closed`, {
          hint: 'the VM may have stopped: see `banger vm logs`',
        });
      }
      this.dialing ??= this.dialOnce().finally(() => {
        this.dialing = undefined;
      });
      try {
        await raceDeadline(this.dialing, deadline, signal);
        continue;
      } catch (e) {
        if (signal?.aborted) throw this.cancelled(op);
        if (!(e instanceof DeadlineError) && !this.isRetryable(e)) throw this.dialFailed(e);
        if (!(e instanceof DeadlineError)) lastError = e;
        if (e instanceof DeadlineError || performance.now() >= deadline) {
          const why = lastError instanceof Error ? `: ${lastError.message}` : '';
          throw new BangerError(
            'timeout',
            `${this.label}: could not reach the guest agent within ${formatDuration(budgetMs)}${why}`,
            { hint: 'check that the VM is running: `banger vm show` / `banger vm logs`' },
          );
        }
      }
      const pause = Math.min(this.retryIntervalMs, Math.max(0, deadline - performance.now()));
      await sleep(pause, signal).catch(() => {
        throw this.cancelled(op);
      });
    }
  }

  private async dialOnce(): Promise<void> {
    const s = await this.dialer!(this.lifetime.signal);
    if (this.closed) {
      s.destroy();
      return;
    }
    this.attach(s);
  }

  private dialFailed(e: unknown): BangerError {
    if (e instanceof BangerError) return e;
    const err = e as NodeJS.ErrnoException;
    const code: ErrorCode =
      err?.code === 'EACCES' || err?.code === 'EPERM' ? 'permission' : 'vmm_failed';
    return new BangerError(
      code,
      `${this.label}: cannot connect to the guest agent: ${err?.message ?? String(e)}`,
      {
        cause: e,
        hint: 'check that the VM is running and the socket is accessible',
      },
    );
  }

  private cancelled(op: string): BangerError {
    return new BangerError('cancelled', `${this.label}: ${op} was cancelled`);
  }

  private attach(stream: Duplex): void {
    this.stream = stream;
    const splitter = new LineSplitter(MAX_AGENT_LINE_BYTES);
    let gone = false;
    let lineNo = 0;
    const onData = (chunk: Buffer | string): void => {
      const { lines, tooLong } = splitter.push(
        typeof chunk === 'string' ? Buffer.from(chunk) : chunk,
      );
      for (const line of lines) {
        if (gone) return;
        if (!line.trim()) continue;
        // The first line may be the tail of an answer meant for a previous host
        // connection; after that, anything unreadable means the channel is broken.
        const problem = this.onLine(line, lineNo++ === 0);
        if (problem) onGone(guestFault(problem));
      }
      if (tooLong && !gone) {
        onGone(guestFault(`a line from the agent exceeded ${MAX_AGENT_LINE_BYTES} bytes`));
      }
    };
    const onGone = (err?: Error): void => {
      if (gone) return;
      gone = true;
      stream.off('data', onData);
      stream.destroy();
      if (this.stream === stream) this.stream = undefined;
      const why = err ? `: ${err.message}` : '';
      this.failPending(
        new BangerError('vmm_failed', `${this.label}: guest agent channel closed${why}`, {
          hint: 'the VM may have stopped or rebooted: see `banger vm logs`',
        }),
      );
      if (!this.closed) this.emit('disconnect', err);
    };
    stream.on('data', onData);
    // `on`, not `once`: a write racing the teardown may emit a second error
    stream.on('error', (e: Error) => onGone(e));
    stream.once('close', () => onGone());
    stream.once('end', () => onGone());
    // An empty line ends whatever partial line a previous host connection left
    // in the agent's buffer (a virtio-serial port keeps its state across hosts).
    stream.write('\n');
    this.emit('connect');
  }

  /** Handle one line; returns why the channel must be dropped, if it must. */
  private onLine(line: string, lenient: boolean): string | undefined {
    let msg;
    try {
      msg = parseAgentLine(line);
    } catch (e) {
      const why = (e as Error).message;
      if (!lenient) return `the guest agent sent an unreadable line (${why})`;
      this.emit('warning', `${this.label}: ignoring a line from the guest agent (${why})`);
      return undefined;
    }
    if (msg.kind === 'event') {
      this.emit('event', msg.event);
      if (msg.event.event === 'ready') {
        const ready = ReadyEventSchema.safeParse(msg.event);
        if (ready.success) this.emit('ready', ready.data);
        else this.emit('warning', `${this.label}: malformed ready event from the guest agent`);
      }
      return undefined;
    }
    this.onResponse(msg.response);
    return undefined;
  }

  private onResponse(res: AgentResponse): void {
    const p = res.id === null ? undefined : this.pending.get(res.id);
    if (!p) {
      // an answer to a request that timed out, or from a previous connection
      if (!res.ok && res.id === null)
        this.emit('warning', `${this.label}: guest agent error: ${res.error}`);
      return;
    }
    if (!res.ok) {
      p.reject(agentError(this.label, p.op, res.error, res.code));
      return;
    }
    const parsed = AgentResultSchemas[p.op].safeParse(res.result);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue ? ` (${issue.path.join('.') || 'result'}: ${issue.message})` : '';
      p.reject(
        new BangerError(
          'internal',
          `${this.label}: guest agent sent an invalid ${p.op} result${where}`,
        ),
      );
      return;
    }
    p.resolve(parsed.data);
  }

  private failPending(err: BangerError): void {
    for (const p of [...this.pending.values()]) p.reject(err);
    this.pending.clear();
  }
}
