import http from 'node:http';
import { BangerError, isErrno } from '../../errors.js';
import { stepName, type FcRequest } from './requests.js';

/**
 * The Firecracker API client: HTTP/1.1 with JSON bodies over the VM's API
 * socket. Success is 200/204; anything else carries `{"fault_message": ...}`
 * and becomes one BangerError that names the VM and the step.
 */

export interface FirecrackerApiOptions {
  socketPath: string;
  /** The VM's name, for messages. */
  vmName: string;
  /** Where Firecracker's output goes, for hints. */
  logPath?: string;
  /** Per request; Firecracker answers configuration calls in milliseconds. */
  timeoutMs?: number;
}

export interface FcResponse {
  status: number;
  body: unknown;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const MAX_RESPONSE = 1024 * 1024;

export class FirecrackerApi {
  constructor(readonly opts: FirecrackerApiOptions) {}

  private hint(): string {
    return this.opts.logPath
      ? `see the VMM log ${this.opts.logPath} (banger vm logs ${this.opts.vmName})`
      : `see banger vm logs ${this.opts.vmName}`;
  }

  /** Send one request; resolve with the parsed body (undefined for 204), throw a BangerError otherwise. */
  async call<T = unknown>(
    req: FcRequest,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const res = await this.raw(req, opts);
    if (res.status === 200 || res.status === 204) return res.body as T;
    const fault =
      res.body &&
      typeof res.body === 'object' &&
      typeof (res.body as { fault_message?: unknown }).fault_message === 'string'
        ? (res.body as { fault_message: string }).fault_message
        : typeof res.body === 'string' && res.body.trim()
          ? res.body.trim()
          : `HTTP ${res.status}`;
    throw new BangerError(
      'vmm_failed',
      `firecracker rejected ${stepName(req)} for vm '${this.opts.vmName}': ${fault}`,
      {
        hint: this.hint(),
        details: { step: stepName(req), status: res.status, fault, body: req.body },
      },
    );
  }

  /** Send requests one after the other, stopping at the first failure. */
  async callAll(
    reqs: FcRequest[],
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<void> {
    for (const r of reqs) await this.call(r, opts);
  }

  /** One HTTP exchange; transport failures become BangerErrors, any HTTP status resolves. */
  raw(
    req: FcRequest,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<FcResponse> {
    const step = stepName(req);
    const payload = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
    const timeoutMs = opts.timeoutMs ?? this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise<FcResponse>((resolve, reject) => {
      let settled = false;
      const done = (err: BangerError | undefined, res?: FcResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(res!);
      };
      const headers: http.OutgoingHttpHeaders = { Accept: 'application/json' };
      if (payload) {
        headers['Content-Type'] = 'application/json';
        headers['Content-Length'] = payload.length;
      }
      const r = http.request(
        {
          socketPath: this.opts.socketPath,
          path: req.path,
          method: req.method,
          headers,
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size <= MAX_RESPONSE) chunks.push(c);
          });
          res.on('error', (e) => done(this.transportError(step, e)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown = undefined;
            if (text.trim()) {
              try {
                body = JSON.parse(text);
              } catch {
                body = text;
              }
            }
            done(undefined, { status: res.statusCode ?? 0, body });
          });
        },
      );
      const timer = setTimeout(() => {
        r.destroy();
        done(
          new BangerError(
            'timeout',
            `firecracker did not answer ${step} for vm '${this.opts.vmName}' within ${timeoutMs} ms`,
            {
              hint: this.hint(),
              details: { step },
            },
          ),
        );
      }, timeoutMs);
      const onAbort = (): void => {
        r.destroy();
        done(new BangerError('cancelled', `${step} for vm '${this.opts.vmName}' was cancelled`));
      };
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      r.on('error', (e) => done(this.transportError(step, e)));
      r.end(payload);
    });
  }

  private transportError(step: string, e: Error): BangerError {
    const why = isErrno(e, 'ENOENT')
      ? `its API socket ${this.opts.socketPath} does not exist`
      : isErrno(e, 'ECONNREFUSED')
        ? `nothing listens on its API socket ${this.opts.socketPath}`
        : e.message;
    return new BangerError(
      'vmm_failed',
      `cannot reach firecracker of vm '${this.opts.vmName}' for ${step}: ${why}`,
      {
        hint: `is the VM running? ${this.hint()}`,
        cause: e,
        details: { step, code: (e as NodeJS.ErrnoException).code },
      },
    );
  }
}
