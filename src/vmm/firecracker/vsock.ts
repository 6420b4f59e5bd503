import fs from 'node:fs';
import net from 'node:net';
import { BangerError, isErrno } from '../../errors.js';

/**
 * Firecracker's vsock transport (docs/vsock.md upstream): the guest's vsock
 * device is backed by Unix sockets on the host.
 * - Host-initiated: connect to `uds_path`, send `CONNECT <port>\n`, read
 *   `OK <host port>\n`; after that the stream is the guest connection.
 * - Guest-initiated: Firecracker connects to `<uds_path>_<port>`, where the
 *   host must listen.
 * The guest agent protocol on top is the same as over QEMU's virtio-serial.
 */

export { AGENT_VSOCK_PORT } from '../../guest/agentProtocol.js';

/** The reply line is short (`OK 1073741824`); anything longer without a newline is not Firecracker. */
const MAX_REPLY = 64;
const DEFAULT_TIMEOUT_MS = 5_000;

export type VsockFailure = 'unreachable' | 'closed' | 'bad-reply' | 'timeout' | 'cancelled';

export interface VsockConnectOptions {
  /** The VM name, for messages. */
  vmName?: string;
  /** Deadline for connect + handshake. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** The path Firecracker connects to for guest-initiated connections to `port`. */
export const vsockListenPath = (udsPath: string, port: number): string => `${udsPath}_${port}`;

const badPort = (port: number): BangerError | undefined =>
  !Number.isInteger(port) || port < 0 || port > 0xffffffff
    ? new BangerError('invalid_request', `vsock port ${port} is not a 32-bit unsigned integer`)
    : undefined;

/**
 * Open a host-initiated connection to `port` in the guest. Resolves with the
 * connected socket once Firecracker said `OK`; any bytes that arrived after
 * the OK line are put back into the socket, so the caller reads them first.
 * The returned socket is in its initial (not flowing) state.
 */
export function connectVsock(
  udsPath: string,
  port: number,
  opts: VsockConnectOptions = {},
): Promise<net.Socket> {
  const invalid = badPort(port);
  if (invalid) return Promise.reject(invalid);
  const who = opts.vmName ? `vm '${opts.vmName}'` : udsPath;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise<net.Socket>((resolve, reject) => {
    const sock = net.createConnection({ path: udsPath });
    let buf = Buffer.alloc(0);
    let settled = false;

    const fail = (reason: VsockFailure, message: string, hint: string, cause?: unknown): void => {
      if (settled) return;
      settled = true;
      cleanup();
      sock.destroy();
      const code =
        reason === 'timeout' ? 'timeout' : reason === 'cancelled' ? 'cancelled' : 'vmm_failed';
      reject(new BangerError(code, message, { hint, cause, details: { reason, udsPath, port } }));
    };
    const onError = (e: Error): void => {
      if (isErrno(e, 'ENOENT', 'ECONNREFUSED')) {
        fail(
          'unreachable',
          `cannot open vsock port ${port} of ${who}: ${udsPath} ${isErrno(e, 'ENOENT') ? 'does not exist' : 'refused the connection'}`,
          'is the VM running on firecracker? (banger vm show)',
          e,
        );
      } else {
        fail(
          'unreachable',
          `cannot open vsock port ${port} of ${who}: ${e.message}`,
          'is the VM running on firecracker?',
          e,
        );
      }
    };
    const onClose = (): void =>
      fail(
        'closed',
        `vsock port ${port} of ${who} closed the connection before 'OK' (nothing listens on that port in the guest yet)`,
        'the guest may still be booting: retry, or see banger vm logs',
      );
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while (!settled && (chunk = sock.read() as Buffer | null) !== null) {
        buf = Buffer.concat([buf, chunk]);
        const nl = buf.indexOf(0x0a);
        if (nl < 0) {
          if (buf.length > MAX_REPLY) badReply(buf);
          continue;
        }
        const line = buf.subarray(0, nl).toString('latin1').replace(/\r$/, '');
        const rest = buf.subarray(nl + 1);
        if (!/^OK \d+$/.test(line)) return badReply(Buffer.from(line, 'latin1'));
        settled = true;
        cleanup();
        if (rest.length > 0) sock.unshift(rest);
        resolve(sock);
        return;
      }
    };
    const badReply = (got: Buffer): void =>
      fail(
        'bad-reply',
        `vsock port ${port} of ${who} answered ${JSON.stringify(got.subarray(0, MAX_REPLY).toString('latin1'))} instead of 'OK <port>'`,
        `is ${udsPath} a firecracker vsock socket?`,
      );
    const onAbort = (): void =>
      fail('cancelled', `opening vsock port ${port} of ${who} was cancelled`, 'retry');
    const timer = setTimeout(
      () =>
        fail(
          'timeout',
          `vsock port ${port} of ${who} did not complete the handshake within ${timeoutMs} ms`,
          'the VM may be hung: see banger vm logs',
        ),
      timeoutMs,
    );
    const cleanup = (): void => {
      clearTimeout(timer);
      sock.off('error', onError);
      sock.off('close', onClose);
      sock.off('end', onClose);
      sock.off('readable', onReadable);
      opts.signal?.removeEventListener('abort', onAbort);
    };

    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.on('end', onClose);
    sock.on('readable', onReadable);
    sock.once('connect', () => {
      if (!settled) sock.write(`CONNECT ${port}\n`);
    });
  });
}

export interface VsockListener {
  /** The socket path Firecracker connects to. */
  path: string;
  server: net.Server;
  /** Stop listening and remove the socket file. */
  close(): Promise<void>;
}

/**
 * Accept guest-initiated connections to `port`: listen on `<uds_path>_<port>`
 * (a stale socket file from an earlier run is replaced).
 */
export async function listenVsock(
  udsPath: string,
  port: number,
  onConnection: (sock: net.Socket) => void,
): Promise<VsockListener> {
  const invalid = badPort(port);
  if (invalid) throw invalid;
  const p = vsockListenPath(udsPath, port);
  removeStaleSocket(p);
  const server = net.createServer(onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(
        new BangerError('vmm_failed', `cannot listen for guest connections on ${p}: ${e.message}`, {
          hint: 'check the VM directory permissions',
          cause: e,
        }),
      ),
    );
    server.listen(p, () => resolve());
  });
  return {
    path: p,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // server.close removes the socket file itself; be sure if it was replaced meanwhile.
        try {
          if (fs.lstatSync(p).isSocket()) fs.unlinkSync(p);
        } catch {
          // gone
        }
      }),
  };
}

/** Remove a leftover Unix socket file; refuse to touch anything else. */
export function removeStaleSocket(p: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return;
  }
  if (!st.isSocket()) {
    throw new BangerError('conflict', `${p} exists and is not a socket`, { hint: 'remove it' });
  }
  fs.unlinkSync(p);
}
