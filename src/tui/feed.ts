import type { TuiHost } from './host.js';
import { applyPorts, applyStats, applyVmEvent, type TuiStore } from './store.js';

/**
 * What keeps the store current: the VM event stream (`GET /v1/events/vms`,
 * no polling of the VM list), and until the daemon samples stats itself, a
 * modest poll of `vm stats` and `vm ports` while VMs run. Images and kernels
 * are read when their view opens and after changes. The first connection
 * starts the daemon if it is down, as every command does; a lost daemon is
 * retried quietly (without starting it) and `connect()` starts it on request.
 */
export interface FeedOptions {
  statsEveryMs?: number;
  portsEveryMs?: number;
  retryMs?: number;
}

const wait = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

export class Feed {
  private readonly ac = new AbortController();
  private wake?: AbortController;
  private startRequested = true;
  private readonly opts: Required<FeedOptions>;

  constructor(
    private readonly store: TuiStore,
    private readonly host: TuiHost,
    opts: FeedOptions = {},
  ) {
    this.opts = { statsEveryMs: 3000, portsEveryMs: 10_000, retryMs: 2000, ...opts };
  }

  start(): void {
    void this.watchLoop();
    void this.pollLoop(this.opts.statsEveryMs, () => this.pollStats());
    void this.pollLoop(this.opts.portsEveryMs, () => this.pollPorts());
  }

  stop(): void {
    this.ac.abort();
  }

  /** Connect now, starting the daemon if it is down. */
  connect(): void {
    this.startRequested = true;
    this.wake?.abort();
  }

  private get signal(): AbortSignal {
    return this.ac.signal;
  }

  private async watchLoop(): Promise<void> {
    while (!this.signal.aborted) {
      const autostart = this.startRequested;
      this.startRequested = false;
      this.store.set({ conn: { state: 'connecting', since: Date.now() } });
      try {
        await this.host.daemon(
          (c) =>
            c.watch(
              'vmEvents',
              {},
              (e) => {
                const was = e.type === 'vm' ? this.store.get().vms.get(e.vm.id)?.state : undefined;
                this.store.update((s) => applyVmEvent(s, e));
                if (e.type === 'snapshot') void this.refreshLists();
                // A VM that just became ready gets its first sample now, not at the next poll.
                if (e.type === 'vm' && e.vm.state === 'running' && was !== 'running')
                  void this.pollStats().catch(() => undefined);
              },
              this.signal,
            ),
          { autostart },
        );
      } catch (e) {
        if (this.signal.aborted) return;
        this.store.set({ conn: { state: 'down', message: this.host.errorLine(e) } });
      }
      if (this.signal.aborted) return;
      if (this.store.get().conn.state === 'up') {
        // The stream ended (daemon stopped or restarted): say so until it is back.
        this.store.set({
          conn: { state: 'down', message: `lost bangerd at ${this.host.socket}` },
        });
      }
      this.wake = new AbortController();
      await wait(this.opts.retryMs, AbortSignal.any([this.signal, this.wake.signal]));
    }
  }

  private async pollLoop(everyMs: number, fn: () => Promise<void>): Promise<void> {
    while (!this.signal.aborted) {
      await wait(everyMs, this.signal);
      if (this.signal.aborted) return;
      const s = this.store.get();
      const active = [...s.vms.values()].some((v) => v.state === 'running');
      if (s.conn.state !== 'up' || !active) continue;
      try {
        await fn();
      } catch {
        // The event stream reports a lost daemon; a failed sample is retried next time.
      }
    }
  }

  async pollStats(): Promise<void> {
    const { vms } = await this.host.daemon((c) => c.call('vmStats', {}), { autostart: false });
    this.store.update((s) => applyStats(s, vms));
  }

  async pollPorts(): Promise<void> {
    const { vms } = await this.host.daemon((c) => c.call('vmPorts', {}), { autostart: false });
    this.store.update((s) => applyPorts(s, vms));
  }

  /** Read images and kernels (after a connection, on entering their views, after changes). */
  async refreshLists(): Promise<void> {
    try {
      const [images, kernels] = await this.host.daemon(
        (c) => Promise.all([c.call('imageList', {}), c.call('kernelList', {})]),
        { autostart: false },
      );
      this.store.set({ images: images.images, kernels: kernels.kernels });
    } catch (e) {
      if (this.store.get().conn.state === 'up') this.store.status(this.host.errorLine(e), 'error');
    }
  }
}
