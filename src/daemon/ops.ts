/**
 * In-flight operation tracking, so shutdown can wait for them. (The keyed
 * locks services use are util/mutex.ts.)
 */
export class Operations {
  private readonly running = new Map<number, { name: string; since: number }>();
  private next = 1;
  private idleWaiters: (() => void)[] = [];
  private shuttingDown = false;

  get count(): number {
    return this.running.size;
  }

  list(): { name: string; since: number }[] {
    return [...this.running.values()];
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  beginShutdown(): void {
    this.shuttingDown = true;
  }

  async track<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const id = this.next++;
    this.running.set(id, { name, since: Date.now() });
    try {
      return await fn();
    } finally {
      this.running.delete(id);
      if (this.running.size === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        waiters.forEach((w) => w());
      }
    }
  }

  /** Resolves when nothing is in flight (immediately if idle). */
  idle(): Promise<void> {
    if (this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
