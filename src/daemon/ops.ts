/**
 * In-flight operation tracking (so shutdown can wait for them) and keyed
 * locks (one VM's operations run one at a time; different VMs in parallel).
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

export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /** Run fn while holding the lock for key; waiters queue in order. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  isLocked(key: string): boolean {
    return this.tails.has(key);
  }
}
