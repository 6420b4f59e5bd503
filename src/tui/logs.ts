import { terminalSafe } from '../util/terminal.js';

/**
 * The log pane's buffer, pure: console and VMM output split into clean lines
 * (no escape sequences, no control characters), at most MAX_LOG_LINES kept,
 * a scroll position and follow mode (stay at the newest line).
 */
export const MAX_LOG_LINES = 5000;

export interface LogBuffer {
  lines: readonly string[];
  /** Text after the last newline, shown as the last line. */
  partial: string;
  /** First line shown when not following. */
  top: number;
  follow: boolean;
  /** Lines dropped from the front to keep MAX_LOG_LINES. */
  dropped: number;
}

export const emptyLog = (): LogBuffer => ({
  lines: [],
  partial: '',
  top: 0,
  follow: true,
  dropped: 0,
});

/** One line as the terminal may show it: the last carriage-return overwrite, tabs as spaces, terminal-safe. */
export function cleanLine(s: string): string {
  return terminalSafe(s.replace(/\r$/, '').replace(/^.*\r/, '').replace(/\t/g, '    '));
}

export function appendLog(b: LogBuffer, chunk: string): LogBuffer {
  const parts = (b.partial + chunk).split('\n');
  const partial = parts.pop() ?? '';
  let lines = parts.length ? [...b.lines, ...parts.map(cleanLine)] : b.lines;
  let dropped = b.dropped;
  let top = b.top;
  if (lines.length > MAX_LOG_LINES) {
    const cut = lines.length - MAX_LOG_LINES;
    lines = lines.slice(cut);
    dropped += cut;
    top = Math.max(0, top - cut);
  }
  return { ...b, lines, partial, dropped, top };
}

const allLines = (b: LogBuffer): readonly string[] =>
  b.partial ? [...b.lines, cleanLine(b.partial)] : b.lines;

const lastTop = (b: LogBuffer, height: number): number => Math.max(0, allLines(b).length - height);

/** Move by delta lines (negative: up); reaching the end turns follow on, leaving it off. */
export function scrollLog(b: LogBuffer, delta: number, height: number): LogBuffer {
  const from = b.follow ? lastTop(b, height) : b.top;
  const top = Math.min(Math.max(0, from + delta), lastTop(b, height));
  const atEnd = top >= lastTop(b, height);
  return { ...b, top, follow: atEnd && delta >= 0 && (delta > 0 || b.follow) };
}

export const logToTop = (b: LogBuffer): LogBuffer => ({ ...b, top: 0, follow: false });
export const logToEnd = (b: LogBuffer): LogBuffer => ({ ...b, follow: true });

export function toggleFollow(b: LogBuffer, height: number): LogBuffer {
  return b.follow ? { ...b, follow: false, top: lastTop(b, height) } : { ...b, follow: true };
}

/** The lines on screen and the first one's number (1-based, counting dropped lines). */
export function visibleLog(b: LogBuffer, height: number): { lines: string[]; first: number } {
  const all = allLines(b);
  const top = b.follow ? lastTop(b, height) : Math.min(b.top, lastTop(b, height));
  return { lines: all.slice(top, top + height), first: b.dropped + top + 1 };
}

export const logLineCount = (b: LogBuffer): number => b.dropped + allLines(b).length;
