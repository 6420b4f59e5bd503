import { BangerError } from '../errors.js';

/**
 * Wait `ms` milliseconds. With a signal, an abort ends the wait early by
 * rejecting with a `cancelled` BangerError (callers that need their own
 * message catch it and throw theirs).
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new BangerError('cancelled', 'cancelled'));
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new BangerError('cancelled', 'cancelled'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
