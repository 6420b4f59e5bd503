import net from 'node:net';
import { BangerError } from '../../errors.js';

/**
 * A minimal QMP client: connect to QEMU's control socket, negotiate
 * capabilities, run commands one at a time. Events are ignored.
 */
export class QmpClient {
  private buf = '';
  private waiters: ((msg: Record<string, unknown>) => void)[] = [];

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if ('event' in msg) continue;
        this.waiters.shift()?.(msg);
      }
    });
    sock.on('close', () => {
      const w = this.waiters;
      this.waiters = [];
      for (const fn of w) fn({ error: { class: 'Closed', desc: 'QMP connection closed' } });
    });
    sock.on('error', () => undefined);
  }

  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(path);
      const t = setTimeout(() => {
        s.destroy();
        reject(
          new BangerError('timeout', `QMP socket ${path} did not answer within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
    const c = new QmpClient(sock);
    const greeting = await c.next(timeoutMs);
    if (!('QMP' in greeting))
      throw new BangerError('vmm_failed', `unexpected QMP greeting on ${path}`);
    await c.execute('qmp_capabilities', undefined, timeoutMs);
    return c;
  }

  private next(timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(new BangerError('timeout', `QMP did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (m: Record<string, unknown>): void => {
        clearTimeout(t);
        resolve(m);
      };
      this.waiters.push(done);
    });
  }

  async execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = 5000,
  ): Promise<unknown> {
    const reply = this.next(timeoutMs);
    this.sock.write(
      `${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`,
    );
    const msg = await reply;
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      throw new BangerError('vmm_failed', `QMP ${command} failed: ${e.desc ?? e.class ?? 'error'}`);
    }
    return msg.return;
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Run one QMP command on a fresh connection. */
export async function qmpOnce(
  path: string,
  command: string,
  args?: Record<string, unknown>,
  timeoutMs = 5000,
): Promise<unknown> {
  const c = await QmpClient.connect(path, timeoutMs);
  try {
    return await c.execute(command, args, timeoutMs);
  } finally {
    c.close();
  }
}
