import { faultPoint } from '../util/fault.js';
import { isProcessAlive, processStartTime } from '../util/proc.js';
import type { Db } from './db.js';
import { fromRow, nowIso } from './rows.js';

/**
 * The intent journal (the `intents` table): a multi-step operation records
 * what it is doing and what it has made so far (paths, tap, address, the VMM's
 * pid and start time), step by step, and clears the record when it is done.
 * A record still there at daemon start belongs to an operation the previous
 * daemon did not finish (it crashed, was killed, lost power): the operation's
 * recoverer completes it or rolls it back. See docs/reliability.md.
 *
 * Every step boundary is also a fault point `<op>:<step>` (util/fault.ts):
 * the step is recorded first, then the fault fires, so a crash injected there
 * leaves exactly the record a real crash at that boundary would.
 */

export interface IntentRecord {
  id: number;
  /** The operation: `create`, `start`, `delete`, `image`, `kernel`, … (the fault points' prefix). */
  op: string;
  /** What it works on: a VM id, an image or kernel name. */
  subject: string;
  /** The last step passed (`begin` before the first). */
  step: string;
  /** What the operation has made so far (merged by every step). */
  data: Record<string, unknown>;
  /** The daemon that recorded it. */
  pid: number;
  pidStartTime: number | null;
  createdAt: string;
  updatedAt: string;
}

/** Why a recoverer runs: the daemon restarted over the record, or the operation threw. */
export type RecoveryCause = 'restart' | 'failed';

/**
 * Completes or rolls back one interrupted operation. Must be idempotent (it
 * may run again if the daemon dies during recovery) and must not take VM,
 * image or kernel locks (at `restart` nothing else runs yet; on `failed`
 * the operation still holds its own lock).
 */
export type Recoverer = (rec: IntentRecord, cause: RecoveryCause) => Promise<void>;

export interface RecoveryReport {
  recovered: { op: string; subject: string; step: string }[];
  /** Recoverers that threw: their records stay for the next start. */
  failed: { op: string; subject: string; step: string; error: string }[];
  /** Records of a daemon that still runs (another state-dir user): left alone. */
  skipped: number;
}

const SELF_START = processStartTime(process.pid) ?? null;

export class Intent {
  private data: Record<string, unknown>;
  private closed = false;

  constructor(
    private readonly journal: Journal,
    readonly id: number,
    readonly op: string,
    readonly subject: string,
    data: Record<string, unknown>,
  ) {
    this.data = { ...data };
  }

  /**
   * Record that `step` is reached and what it made (merged into the data),
   * then pass the fault point `<op>:<step>`.
   */
  step(step: string, made: Record<string, unknown> = {}): void {
    this.data = { ...this.data, ...made };
    this.journal.write(this.id, step, this.data);
    faultPoint(this.op, step);
  }

  /** Record what was made without passing a step (no fault point). */
  note(made: Record<string, unknown>): void {
    this.data = { ...this.data, ...made };
    this.journal.write(this.id, undefined, this.data);
  }

  get made(): Readonly<Record<string, unknown>> {
    return this.data;
  }

  /** The record as a recoverer sees it (for an operation that runs its recoverer itself). */
  record(): IntentRecord {
    return this.journal.get(this.id)!;
  }

  /** The operation is complete (or fully undone): the record goes. */
  done(): void {
    if (this.closed) return;
    this.closed = true;
    this.journal.clear(this.id);
  }
}

export class Journal {
  private readonly recoverers = new Map<string, Recoverer>();

  constructor(private readonly db: Db) {}

  /** Say how `op`'s interrupted runs are completed or rolled back (one recoverer per op). */
  onRecover(op: string, fn: Recoverer): void {
    this.recoverers.set(op, fn);
  }

  /** Start recording an operation; the caller must call `done()` (or use `run`). */
  begin(op: string, subject: string, data: Record<string, unknown> = {}): Intent {
    const now = nowIso();
    const r = this.db
      .prepare(
        `INSERT INTO intents (op, subject, step, data, pid, pid_start_time, created_at, updated_at)
         VALUES (?, ?, 'begin', ?, ?, ?, ?, ?)`,
      )
      .run(op, subject, JSON.stringify(data), process.pid, SELF_START, now, now);
    const intent = new Intent(this, Number(r.lastInsertRowid), op, subject, data);
    try {
      faultPoint(op, 'begin');
    } catch (e) {
      // A `fail` at begin: refused before anything was made.
      intent.done();
      throw e;
    }
    return intent;
  }

  /**
   * Run `fn` under an intent. Returns: the record is cleared. Throws: the
   * op's recoverer runs first (cause `failed`) so that whatever the error
   * path of `fn` did not undo is completed or rolled back now, then the
   * record is cleared; if the recoverer throws too, the record stays for the
   * next daemon start.
   */
  async run<T>(
    op: string,
    subject: string,
    data: Record<string, unknown>,
    fn: (intent: Intent) => Promise<T>,
  ): Promise<T> {
    const intent = this.begin(op, subject, data);
    try {
      const out = await fn(intent);
      intent.done();
      return out;
    } catch (e) {
      const rec = this.get(intent.id);
      const recover = this.recoverers.get(op);
      if (rec && recover) {
        try {
          await recover(rec, 'failed');
        } catch {
          throw e;
        }
      }
      intent.done();
      throw e;
    }
  }

  get(id: number): IntentRecord | undefined {
    const r = this.db.prepare('SELECT * FROM intents WHERE id = ?').get(id);
    return r ? toRecord(r) : undefined;
  }

  /** Every record, oldest first. */
  open(): IntentRecord[] {
    return this.db
      .prepare('SELECT * FROM intents ORDER BY id')
      .all()
      .map((r) => toRecord(r));
  }

  /**
   * Daemon start: hand every record a dead daemon left to its op's
   * recoverer, oldest first, and clear it. A record without a recoverer is
   * cleared with a warning (its op no longer exists).
   */
  async recover(warn: (msg: string, rec: IntentRecord) => void): Promise<RecoveryReport> {
    const report: RecoveryReport = { recovered: [], failed: [], skipped: 0 };
    for (const rec of this.open()) {
      const mine = rec.pid === process.pid;
      if (!mine && isProcessAlive(rec.pid, rec.pidStartTime)) {
        report.skipped++;
        continue;
      }
      const what = { op: rec.op, subject: rec.subject, step: rec.step };
      const fn = this.recoverers.get(rec.op);
      if (!fn) warn('no recoverer for an interrupted operation; record dropped', rec);
      try {
        await fn?.(rec, 'restart');
        this.clear(rec.id);
        report.recovered.push(what);
      } catch (e) {
        report.failed.push({ ...what, error: (e as Error).message });
      }
    }
    return report;
  }

  /** @internal Intent's writes. */
  write(id: number, step: string | undefined, data: Record<string, unknown>): void {
    if (step === undefined) {
      this.db
        .prepare('UPDATE intents SET data = ?, updated_at = ? WHERE id = ?')
        .run(JSON.stringify(data), nowIso(), id);
    } else {
      this.db
        .prepare('UPDATE intents SET step = ?, data = ?, updated_at = ? WHERE id = ?')
        .run(step, JSON.stringify(data), nowIso(), id);
    }
  }

  /** @internal */
  clear(id: number): void {
    this.db.prepare('DELETE FROM intents WHERE id = ?').run(id);
  }
}

function toRecord(r: unknown): IntentRecord {
  const row = r as Record<string, unknown>;
  const rec = fromRow<IntentRecord & { data: unknown }>({ ...row, data: undefined });
  return { ...rec, data: JSON.parse((row.data as string) || '{}') as Record<string, unknown> };
}
