/**
 * Keyed locks: operations on one key (a VM id, an image name) run one at a
 * time in arrival order; different keys run in parallel. Not re-entrant:
 * code that already holds a key's lock calls the *Locked variant of a
 * function instead of taking the lock again.
 */
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
