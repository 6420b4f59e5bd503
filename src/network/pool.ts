import type { HostNetwork } from './host.js';
import { isPoolTap, poolTapName, tapNameForVm } from './names.js';

/**
 * A warm pool of `tap_pool_size` taps, already attached to the bridge and
 * up, so a VM start costs one `ip link set` instead of creating a tap.
 * Pool taps are named `bgr-<hex>`; a VM keeps the name of the tap it took
 * (the VM service stores it with the VM).
 */
export class TapPool {
  private readonly idle: string[] = [];
  private filling: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly net: HostNetwork,
    readonly size: number,
    private readonly opts: {
      /** Background refill failures (logged by the daemon, never thrown). */
      onError?: (e: unknown) => void;
      /** uid that may open the taps (non-root VMM). */
      owner?: number;
      newName?: () => string;
    } = {},
  ) {}

  get idleTaps(): string[] {
    return [...this.idle];
  }

  /** Creates taps until `size` are idle. Concurrent calls share one run. */
  fill(): Promise<void> {
    if (!this.filling) {
      this.filling = (async () => {
        try {
          while (!this.closed && this.idle.length < this.size) {
            const name = (this.opts.newName ?? poolTapName)();
            await this.net.createTap(name, { owner: this.opts.owner });
            if (this.closed) {
              await this.net.deleteTap(name);
              break;
            }
            this.idle.push(name);
          }
        } finally {
          this.filling = undefined;
        }
      })();
    }
    return this.filling;
  }

  private refillInBackground(): void {
    if (this.size === 0 || this.closed) return;
    this.fill().catch((e) => this.opts.onError?.(e));
  }

  /**
   * A tap for `vmId`, attached and up: a warm one when available, else a
   * fresh `tapNameForVm(vmId)`. Refills the pool in the background.
   */
  async take(vmId: string): Promise<string> {
    while (this.idle.length > 0) {
      const name = this.idle.shift()!;
      try {
        // Cheap re-check: fails when someone deleted the tap meanwhile.
        await this.net.attachTap(name);
        this.refillInBackground();
        return name;
      } catch {
        await this.net.deleteTap(name).catch(() => false);
      }
    }
    const name = tapNameForVm(vmId);
    await this.net.createTap(name, { owner: this.opts.owner });
    this.refillInBackground();
    return name;
  }

  /**
   * A VM is done with its tap (its VMM has exited). Pool taps go back to the
   * pool when there is room and nobody holds them; anything else is deleted.
   */
  async give(name: string): Promise<void> {
    if (!this.closed && isPoolTap(name) && this.idle.length < this.size) {
      const info = await this.net.tapInfo(name);
      if (info && !info.inUse && !info.multiQueue) {
        if (!this.idle.includes(name)) this.idle.push(name);
        return;
      }
    }
    await this.net.deleteTap(name);
  }

  /** Takes over idle pool taps found at daemon start; returns those adopted. */
  adopt(names: string[]): string[] {
    const adopted: string[] = [];
    for (const n of names) {
      if (this.idle.length >= this.size) break;
      if (isPoolTap(n) && !this.idle.includes(n)) {
        this.idle.push(n);
        adopted.push(n);
      }
    }
    return adopted;
  }

  /** Deletes the idle taps and stops refilling (daemon shutdown, tests). */
  async drain(): Promise<void> {
    this.closed = true;
    await this.filling?.catch(() => undefined);
    while (this.idle.length > 0) await this.net.deleteTap(this.idle.pop()!).catch(() => false);
  }
}
