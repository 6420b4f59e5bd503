/**
 * Guest-written text made safe for a terminal: escape sequences (CSI, OSC,
 * DCS and the other string controls, in their 7- and 8-bit forms) are removed
 * whole, other control characters (C0 but tab and newline, DEL, C1) dropped.
 * A guest can then neither recolour, retitle or move the cursor of the user's
 * terminal nor fake earlier output with carriage returns.
 *
 * The filter is stateful so a sequence split across stream chunks is still
 * removed whole.
 */

type State = 'text' | 'esc' | 'csi' | 'string' | 'stringEsc';

const ESC = 0x1b;
const BEL = 0x07;

export class TerminalFilter {
  private state: State = 'text';

  write(s: string): string {
    let out = '';
    for (const ch of s) {
      const c = ch.codePointAt(0)!;
      switch (this.state) {
        case 'text':
          if (c === ESC) this.state = 'esc';
          else if (c === 0x9b) this.state = 'csi';
          else if (c === 0x90 || c === 0x9d || c === 0x98 || c === 0x9e || c === 0x9f)
            this.state = 'string';
          else if (
            c === 0x09 ||
            c === 0x0a ||
            (c >= 0x20 && c !== 0x7f && !(c >= 0x80 && c < 0xa0))
          )
            out += ch;
          break;
        case 'esc':
          // ESC [ → CSI; ESC ] P X ^ _ → a string ended by BEL or ST; any other byte ends it
          if (ch === '[') this.state = 'csi';
          else if (']PX^_'.includes(ch)) this.state = 'string';
          else this.state = c >= 0x20 && c < 0x30 ? 'esc' : 'text'; // intermediates continue
          break;
        case 'csi':
          if (c >= 0x40 && c <= 0x7e) this.state = 'text';
          else if (c < 0x20 || c > 0x3f) this.state = c === ESC ? 'esc' : 'text';
          break;
        case 'string':
          if (c === BEL || c === 0x9c) this.state = 'text';
          else if (c === ESC) this.state = 'stringEsc';
          break;
        case 'stringEsc':
          this.state = ch === '\\' ? 'text' : 'string';
          break;
      }
    }
    return out;
  }
}

/** One-shot form of TerminalFilter for a complete string. */
export const terminalSafe = (s: string): string => new TerminalFilter().write(s);
