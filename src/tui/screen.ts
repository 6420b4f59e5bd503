import { EventEmitter } from 'node:events';

/**
 * Drawing frames on the terminal, only the lines that changed. Ink renders
 * (in its debug mode) each whole frame to a FrameSink instead of the
 * terminal; the sink compares the frame with the one on screen and writes
 * just the changed lines, each at its row, inside one synchronized update.
 * Ink's own incremental writer (6.8) lands every changed line one row low
 * when the frame ends in a newline, and its full-screen path clears the
 * terminal on every update, hence this.
 */

const CSI = '\x1b[';
/** Begin and end a synchronized update (terminals that lack it ignore both). */
const BSU = `${CSI}?2026h`;
const ESU = `${CSI}?2026l`;
export const HIDE_CURSOR = `${CSI}?25l`;
export const SHOW_CURSOR = `${CSI}?25h`;

/**
 * The bytes that turn the screen showing `prev` (undefined: unknown, redraw
 * all) into `next`: for each changed row, move there, write the line, erase
 * the rest of it. Rows beyond `rows` are not drawn. Empty when nothing changed.
 */
export function frameUpdate(
  prev: readonly string[] | undefined,
  next: readonly string[],
  rows: number,
): string {
  const out: string[] = [];
  const n = Math.min(rows, Math.max(next.length, prev?.length ?? rows));
  for (let i = 0; i < n; i++) {
    const line = next[i] ?? '';
    if (prev && (prev[i] ?? '') === line) continue;
    out.push(`${CSI}${i + 1};1H${line}${CSI}0m${CSI}K`);
  }
  return out.length ? BSU + out.join('') + ESU : '';
}

/** The frame as lines (Ink's frames have no trailing newline; tolerate one). */
export const frameLines = (frame: string): string[] =>
  (frame.endsWith('\n') ? frame.slice(0, -1) : frame).split('\n');

export interface Terminal {
  columns: number;
  rows: number;
  write(s: string): unknown;
  on(event: 'resize', fn: () => void): unknown;
  off(event: 'resize', fn: () => void): unknown;
}

/** What Ink takes for its stdout: the terminal's size, frames written to it, resize events. */
export class FrameSink extends EventEmitter {
  readonly isTTY = true;
  private shown?: string[];
  private pending?: string;
  private scheduled = false;
  private readonly onResize = (): void => {
    // The terminal reflows what it shows: draw everything again on a clean screen.
    this.shown = undefined;
    // Not while another program (ssh) has the terminal: its screen is its own.
    if (this.enabled) this.term.write(`${CSI}2J`);
    this.emit('resize');
  };

  constructor(private readonly term: Terminal) {
    super();
    term.on('resize', this.onResize);
  }

  get columns(): number {
    return this.term.columns || 80;
  }

  get rows(): number {
    return this.term.rows || 24;
  }

  /** Off while the terminal is lent out (ssh) or given back: frames are dropped. */
  enabled = true;

  /** A frame from Ink: drawn on the next turn (several updates in one turn draw once). */
  write(frame: string | Uint8Array): boolean {
    if (!this.enabled) return true;
    this.pending = typeof frame === 'string' ? frame : Buffer.from(frame).toString('utf8');
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  flush(): void {
    this.scheduled = false;
    if (this.pending === undefined || !this.enabled) return;
    const next = frameLines(this.pending);
    this.pending = undefined;
    const bytes = frameUpdate(this.shown, next, this.rows);
    this.shown = next;
    if (bytes) this.term.write(HIDE_CURSOR + bytes);
  }

  /** Forget what is on screen (after another program used the terminal). */
  invalidate(): void {
    this.shown = undefined;
  }

  close(): void {
    this.term.off('resize', this.onResize);
  }
}
