import { BangerError } from '../errors.js';

/**
 * The agent client's failure plumbing: which dial errors mean "not up yet",
 * agent error answers as BangerErrors, and a promise raced against a
 * deadline and an AbortSignal.
 */

const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EAGAIN', 'EPIPE', 'ENOTCONN']);

/**
 * "Not up yet, try again": connection refused or missing socket, or a
 * BangerError from a dialer whose details.reason says the same (Firecracker's
 * vsock handshake reports `unreachable`, or `closed` while nothing in the
 * guest listens on the port yet).
 */
export function isRetryableDialError(e: unknown): boolean {
  if (e instanceof BangerError) {
    const reason = e.details?.reason;
    return reason === 'unreachable' || reason === 'closed';
  }
  return e instanceof Error && RETRYABLE.has((e as NodeJS.ErrnoException).code ?? '');
}

/** A raceDeadline that ran out of time. */
export class DeadlineError extends Error {}

/** Map an agent error answer to a BangerError. */
export function agentError(
  label: string,
  op: string,
  message: string,
  code: string | undefined,
): BangerError {
  switch (code) {
    case 'timeout':
      return new BangerError('timeout', `${label}: ${message}`, {
        hint: 'see `banger vm logs` for what the guest is doing',
      });
    case 'unknown_op':
      return new BangerError('not_implemented', `${label}: the guest agent does not know '${op}'`, {
        hint: "the VM's image carries an older agent: rebuild or pull the image again",
      });
    case 'busy':
      return new BangerError('conflict', `${label}: ${message}`);
    case 'bad_request':
    case 'too_large':
      return new BangerError('internal', `${label}: guest agent rejected ${op}: ${message}`);
    default:
      return new BangerError('vmm_failed', `${label}: guest agent ${op} failed: ${message}`);
  }
}

export function abortError(): Error {
  const e = new Error('aborted');
  e.name = 'AbortError';
  return e;
}

export function raceDeadline<T>(p: Promise<T>, deadline: number, signal?: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => finish(() => reject(new DeadlineError('deadline'))),
      Math.max(0, deadline - performance.now()),
    );
    const onAbort = (): void => finish(() => reject(abortError()));
    const finish = (f: () => void): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      f();
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => finish(() => resolve(v)),
      (e: unknown) => finish(() => reject(e)),
    );
  });
}
