/**
 * Key names, pure: what Ink reports for a key press (its input text and
 * flags) as the names the keymap uses ('q', 'K', 'space', 'enter', 'esc',
 * 'up', 'pgdn', 'S-tab', 'C-c', 'backspace', ...). Text that is not a single
 * key (a paste, several keys in one read) is named by itself and typed.
 */
export interface KeyFlags {
  upArrow?: boolean;
  downArrow?: boolean;
  leftArrow?: boolean;
  rightArrow?: boolean;
  pageUp?: boolean;
  pageDown?: boolean;
  home?: boolean;
  end?: boolean;
  return?: boolean;
  escape?: boolean;
  ctrl?: boolean;
  shift?: boolean;
  tab?: boolean;
  backspace?: boolean;
  delete?: boolean;
  meta?: boolean;
}

export function keyName(input: string, key: KeyFlags): string {
  if (key.upArrow) return 'up';
  if (key.downArrow) return 'down';
  if (key.leftArrow) return 'left';
  if (key.rightArrow) return 'right';
  if (key.pageUp) return 'pgup';
  if (key.pageDown) return 'pgdn';
  if (key.home) return 'home';
  if (key.end) return 'end';
  if (key.return) return 'enter';
  if (key.tab) return key.shift ? 'S-tab' : 'tab';
  // Terminals send DEL (0x7f) for the backspace key; Ink calls that "delete".
  if (key.backspace || key.delete) return 'backspace';
  if (key.escape) return 'esc';
  if (key.ctrl && input.length === 1) return `C-${input.toLowerCase()}`;
  if (input === ' ') return 'space';
  return input;
}

/** One character of a multi-key read as a key name. */
function charName(ch: string): string {
  const c = ch.charCodeAt(0);
  if (ch === '\x7f' || ch === '\b') return 'backspace';
  if (ch === '\r' || ch === '\n') return 'enter';
  if (ch === '\t') return 'tab';
  if (ch === ' ') return 'space';
  if (c < 32) return `C-${String.fromCharCode(c + 96)}`;
  return ch;
}

/**
 * The key presses in one read. Ink passes text without escape sequences as
 * one event, so keys typed faster than they are read (or sent by tmux
 * send-keys) arrive together ('\x7f\x7fab'): each character is its own key.
 */
export function keyPresses(input: string, key: KeyFlags): { name: string; input: string }[] {
  if (input.length <= 1 || input.startsWith('\x1b')) return [{ name: keyName(input, key), input }];
  return [...input].map((ch) => ({ name: charName(ch), input: ch }));
}
