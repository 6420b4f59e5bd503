import net from 'node:net';

/** The longest Unix socket path the kernel accepts (sun_path is 108 bytes with its NUL). */
export const MAX_UNIX_SOCKET_PATH = 107;

/** True when something accepts connections on the Unix socket within the timeout. */
export function socketAnswers(socketPath: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: socketPath });
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

/**
 * Connect to a Unix socket; rejects with the connection error (ENOENT,
 * ECONNREFUSED, …) or, on abort, an AbortError. The socket is returned with a
 * no-op error handler so an error before the caller attaches its own is not
 * thrown.
 */
export function dialUnix(socketPath: string, signal: AbortSignal): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const sock = net.connect({ path: socketPath });
    const done = (): void => {
      signal.removeEventListener('abort', onAbort);
      sock.off('connect', onConnect);
      sock.off('error', onError);
    };
    const onConnect = (): void => {
      done();
      sock.on('error', () => {}); // until the caller attaches its own handler
      resolve(sock);
    };
    const onError = (e: Error): void => {
      done();
      sock.destroy();
      reject(e);
    };
    const onAbort = (): void => {
      const e = new Error('aborted');
      e.name = 'AbortError';
      onError(e);
    };
    sock.once('connect', onConnect);
    sock.once('error', onError);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}
