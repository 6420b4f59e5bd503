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
