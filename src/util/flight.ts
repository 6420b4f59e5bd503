import type { ProgressSink } from '../api/events.js';
import { BangerError } from '../errors.js';

/**
 * Keyed single-flight for long operations with progress (pulls, builds):
 * a second caller for the same name joins the running operation, receives its
 * progress events from then on and its result. A caller that goes away
 * (Ctrl-C) is released at once, unless it was the last one: then the
 * operation is cancelled and the caller is answered once it has cleaned up.
 */
interface Flight<T> {
  /** What the running operation makes; a caller asking for something else under the same name is refused. */
  source?: string;
  promise: Promise<T>;
  sinks: Set<ProgressSink>;
  waiters: number;
  controller: AbortController;
}

export interface JoinOptions {
  /** Identifies what is being made under this name (e.g. a source reference). */
  source?: string;
  /** Said to a caller that joins a running operation. */
  joinMessage: string;
  /** The error for a caller that leaves. */
  cancelled: () => BangerError;
  /** The error for a caller asking for another source under a running name. */
  conflict?: () => BangerError;
}

export class Flights<T> {
  private readonly flights = new Map<string, Flight<T>>();

  has(name: string): boolean {
    return this.flights.has(name);
  }

  /** Names with an operation running. */
  names(): string[] {
    return [...this.flights.keys()];
  }

  get size(): number {
    return this.flights.size;
  }

  join(
    name: string,
    emit: ProgressSink,
    signal: AbortSignal | undefined,
    start: (emit: ProgressSink, signal: AbortSignal) => Promise<T>,
    opts: JoinOptions,
  ): Promise<T> {
    if (signal?.aborted) return Promise.reject(opts.cancelled());
    let flight = this.flights.get(name);
    if (flight && opts.source !== undefined && flight.source !== opts.source) {
      return Promise.reject(
        opts.conflict?.() ??
          new BangerError('conflict', `${name} is being made from another source right now`),
      );
    }
    if (flight) {
      emit({ type: 'log', level: 'info', message: opts.joinMessage });
    } else {
      const sinks = new Set<ProgressSink>();
      const controller = new AbortController();
      const fanOut: ProgressSink = (e) => {
        for (const s of sinks) {
          try {
            s(e);
          } catch {
            // a client that went away
          }
        }
      };
      const f: Flight<T> = {
        source: opts.source,
        sinks,
        controller,
        waiters: 0,
        promise: Promise.resolve(undefined as never),
      };
      f.promise = start(fanOut, controller.signal).finally(() => this.flights.delete(name));
      f.promise.catch(() => undefined); // observed by the callers
      this.flights.set(name, f);
      flight = f;
    }
    const fl = flight;
    fl.sinks.add(emit);
    fl.waiters++;
    return new Promise<T>((resolve, reject) => {
      let left = false;
      const leave = (): void => {
        if (left) return;
        left = true;
        fl.sinks.delete(emit);
        fl.waiters--;
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        leave();
        if (fl.waiters > 0) {
          reject(opts.cancelled());
          return;
        }
        // The last caller left: cancel the operation and answer once it has cleaned up.
        fl.controller.abort();
        fl.promise.then(
          () => reject(opts.cancelled()),
          () => reject(opts.cancelled()),
        );
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      fl.promise.then(
        (v) => {
          leave();
          resolve(v);
        },
        (e: unknown) => {
          leave();
          reject(e);
        },
      );
    });
  }
}
