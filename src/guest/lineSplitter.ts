/**
 * Newline framing for a byte stream from the guest, with a hard cap per line.
 * Each chunk is scanned once (no rescanning of what is already buffered), and a
 * line that grows past the cap is reported instead of buffered: a guest cannot
 * make the host hold or rescan more than `maxLineBytes`.
 */
export interface SplitResult {
  /** Lines completed by the chunk, without their newline, decoded as UTF-8. */
  lines: string[];
  /** True when a line passed the cap; nothing after it in the chunk was read. */
  tooLong: boolean;
}

export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;

  constructor(readonly maxLineBytes: number) {}

  push(chunk: Buffer): SplitResult {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      if (this.size + (end - start) > this.maxLineBytes) {
        this.parts = [];
        this.size = 0;
        return { lines, tooLong: true };
      }
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      lines.push(
        this.size === 0
          ? piece.toString('utf8')
          : Buffer.concat([...this.parts, piece]).toString('utf8'),
      );
      this.parts = [];
      this.size = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.parts.push(chunk.subarray(start));
      this.size += chunk.length - start;
    }
    return { lines, tooLong: false };
  }

  /** Bytes of the unfinished line held. */
  get pending(): number {
    return this.size;
  }
}
