import type { StreamEvent } from '../../api/events.js';
import { formatDuration, formatSize } from '../../util/units.js';

/**
 * Renders an operation's progress events. On a terminal: live spinners and
 * byte-count bars that redraw in place, finished steps printed once. Otherwise:
 * one plain line per step start/finish and per log message, no redraws.
 */
export interface RendererOptions {
  stream: NodeJS.WriteStream;
  tty: boolean;
  /** Show debug-level log events. */
  verbose?: boolean;
  /** Called for `item` events (per-object results). */
  onItem?: (data: unknown) => void;
}

interface Active {
  label: string;
  started: number;
  current?: number;
  total?: number;
  unit?: 'bytes' | 'items';
  items?: { current: number; total?: number; label: string };
}

const SPIN = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const BAR_WIDTH = 24;

export class ProgressRenderer {
  private readonly active = new Map<string, Active>();
  private drawn = 0;
  private frame = 0;
  private timer?: NodeJS.Timeout;
  private lastPlainProgress = new Map<string, number>();

  constructor(private readonly opts: RendererOptions) {}

  handle = (ev: StreamEvent): void => {
    switch (ev.type) {
      case 'step':
        return this.step(ev);
      case 'progress': {
        const a = this.active.get(ev.id);
        if (a) {
          a.current = ev.current;
          a.total = ev.total;
          a.unit = ev.unit;
          a.items = ev.items;
        }
        if (!this.opts.tty) this.plainProgress(ev.id, a, ev.current, ev.total, ev.unit);
        return;
      }
      case 'log':
        if (ev.level === 'debug' && !this.opts.verbose) return;
        this.print(`${ev.level === 'info' ? '' : `${ev.level}: `}${ev.message}`);
        return;
      case 'item':
        this.clear();
        this.opts.onItem?.(ev.data);
        this.draw();
        return;
      default:
        return;
    }
  };

  private step(ev: Extract<StreamEvent, { type: 'step' }>): void {
    if (ev.state === 'start') {
      this.active.set(ev.id, { label: ev.label, started: Date.now() });
      if (this.opts.tty) this.ensureTimer();
      else this.print(`${ev.label}...`);
      this.draw();
      return;
    }
    const a = this.active.get(ev.id);
    this.active.delete(ev.id);
    const ms = ev.ms ?? (a ? Date.now() - a.started : undefined);
    const mark = ev.state === 'done' ? '✓' : ev.state === 'skip' ? '-' : '✗';
    const extra = [
      ev.detail,
      ms !== undefined && ev.state !== 'skip' ? formatDuration(ms) : undefined,
    ]
      .filter(Boolean)
      .join(', ');
    this.print(
      `${this.opts.tty ? mark : ev.state === 'done' ? 'done:' : `${ev.state}:`} ${ev.label}${extra ? ` (${extra})` : ''}`,
    );
    if (this.active.size === 0) this.stopTimer();
  }

  private plainProgress(
    id: string,
    a: Active | undefined,
    current: number,
    total?: number,
    unit?: string,
  ): void {
    // Plain output: at most one line per 25% of a known total.
    if (!total || unit !== 'bytes') return;
    const pct = Math.floor((current / total) * 4);
    if ((this.lastPlainProgress.get(id) ?? -1) >= pct) return;
    this.lastPlainProgress.set(id, pct);
    if (pct === 0 || pct >= 4) return;
    const amount =
      unit === 'bytes' ? `${formatSize(current)} / ${formatSize(total)}` : `${current} / ${total}`;
    this.print(`  ${a?.label ?? id}: ${amount}`);
  }

  /** Print a permanent line above the live area. */
  print(line: string): void {
    this.clear();
    this.opts.stream.write(`${line}\n`);
    this.draw();
  }

  private line(a: Active): string {
    const spin = SPIN[this.frame % SPIN.length];
    const i = a.items;
    const elapsed =
      (i ? `${i.current}${i.total !== undefined ? `/${i.total}` : ''} ${i.label} ` : '') +
      formatDuration(Date.now() - a.started);
    if (a.current !== undefined && a.total) {
      const ratio = Math.min(1, a.current / a.total);
      const filled = Math.round(ratio * BAR_WIDTH);
      const bar = `${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)}`;
      const amount =
        a.unit === 'bytes'
          ? `${formatSize(a.current)}/${formatSize(a.total)}`
          : `${a.current}/${a.total}`;
      return `${spin} ${a.label} ${bar} ${amount} ${elapsed}`;
    }
    if (a.current !== undefined) {
      const amount = a.unit === 'bytes' ? formatSize(a.current) : String(a.current);
      return `${spin} ${a.label} ${amount} ${elapsed}`;
    }
    return `${spin} ${a.label} ${elapsed}`;
  }

  private draw(): void {
    if (!this.opts.tty || this.active.size === 0) return;
    const cols = this.opts.stream.columns || 100;
    const lines = [...this.active.values()].map((a) => this.line(a).slice(0, cols - 1));
    this.opts.stream.write(lines.map((l) => `${l}\x1b[K`).join('\n') + '\n');
    this.drawn = lines.length;
  }

  private clear(): void {
    if (!this.opts.tty || this.drawn === 0) return;
    this.opts.stream.write(`\x1b[${this.drawn}A\x1b[J`);
    this.drawn = 0;
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.frame++;
      this.clear();
      this.draw();
    }, 100);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Remove the live area (call when the operation ends). */
  finish(): void {
    this.stopTimer();
    this.clear();
    this.active.clear();
  }
}
