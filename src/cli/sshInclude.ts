import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../errors.js';
import { sshConfigValue as cfgValue } from '../guest/ssh.js';

/**
 * `banger ssh-config --install` / `--uninstall`: the one marker-fenced block
 * in ~/.ssh/config that includes banger's ssh_config (which the daemon keeps,
 * src/vm/sshConfig.ts), and nothing else of that file. The text builders are
 * pure; the edits below them are the edge. A config that is a symlink is
 * edited where it points, if that place is writable; a symlink into a
 * read-only place (a dotfiles store, a Nix profile) is refused with the line
 * to add by hand. Client side: the file belongs to the user running the CLI.
 */

export const BLOCK_START = '# >>> banger ssh-config >>>';
export const BLOCK_END = '# <<< banger ssh-config <<<';

/** `~/x` for paths under home (how the Include line reads best), else the path. */
export function tildePath(file: string, home: string): string {
  const rel = path.relative(home, file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? `~/${rel}` : file;
}

export const includeLine = (file: string, home: string): string =>
  `Include ${cfgValue(tildePath(file, home))}`;

export function includeBlock(file: string, home: string): string {
  return `${BLOCK_START}\n${includeLine(file, home)}\n${BLOCK_END}\n`;
}

export const hasBlock = (text: string): boolean =>
  text.split('\n').some((l) => l.trim() === BLOCK_START);

/**
 * ~/.ssh/config with the block at the top (an Include inside a Host section
 * would apply to that host only), one blank line between it and what was
 * there. Unchanged when the block is already present.
 */
export function insertBlock(text: string, file: string, home: string): string {
  if (hasBlock(text)) return text;
  const block = includeBlock(file, home);
  return text.length ? `${block}\n${text}` : block;
}

/** ~/.ssh/config without the block (and without the blank line `insertBlock` put after it). */
export function removeBlock(text: string): string {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === BLOCK_START);
  if (start < 0) return text;
  let end = lines.findIndex((l, i) => i > start && l.trim() === BLOCK_END);
  if (end < 0) end = start;
  let count = end - start + 1;
  // The separator insertBlock added: a blank line right after a block at the top.
  if (start === 0 && lines[end + 1] === '' && end + 2 < lines.length) count++;
  lines.splice(start, count);
  return lines.join('\n');
}

export type IncludeChange = 'added' | 'present' | 'removed' | 'absent';

/** The file to edit: `userConfig` itself, or what its symlink points at. */
function target(userConfig: string, includeText: string): string {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(userConfig);
  } catch {
    return userConfig;
  }
  if (!st.isSymbolicLink()) return userConfig;
  let real: string;
  try {
    real = fs.realpathSync(userConfig);
  } catch {
    throw new BangerError(
      'precondition',
      `${userConfig} is a symlink to a file that does not exist`,
      {
        hint: `fix the link, or add the line '${includeText}' at the top of your ssh config yourself`,
      },
    );
  }
  try {
    fs.accessSync(real, fs.constants.W_OK);
  } catch {
    throw new BangerError(
      'permission',
      `${userConfig} is a symlink to ${real}, which is read-only`,
      { hint: `add the line '${includeText}' at the top of the file it is made from, yourself` },
    );
  }
  return real;
}

function write(file: string, text: string, includeText: string): void {
  try {
    if (fs.existsSync(file)) fs.writeFileSync(file, text);
    else fs.writeFileSync(file, text, { mode: 0o600 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
      throw new BangerError('permission', `cannot write ${file}: ${(e as Error).message}`, {
        hint: `add the line '${includeText}' at the top of your ssh config yourself`,
      });
    }
    throw e;
  }
}

export function installInclude(
  userConfig: string,
  includeFile: string,
  home: string,
): IncludeChange {
  const line = includeLine(includeFile, home);
  const sshDir = path.dirname(userConfig);
  if (!fs.existsSync(sshDir)) fs.mkdirSync(sshDir, { recursive: true, mode: 0o700 });
  const file = target(userConfig, line);
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  if (hasBlock(text) && fs.existsSync(file)) return 'present';
  write(file, insertBlock(text, includeFile, home), line);
  return 'added';
}

export function uninstallInclude(
  userConfig: string,
  includeFile: string,
  home: string,
): IncludeChange {
  if (!fs.existsSync(userConfig)) return 'absent';
  const line = includeLine(includeFile, home);
  const file = target(userConfig, line);
  const text = fs.readFileSync(file, 'utf8');
  if (!hasBlock(text)) return 'absent';
  write(file, removeBlock(text), line);
  return 'removed';
}

export function includeInstalled(userConfig: string): boolean {
  try {
    return hasBlock(fs.readFileSync(userConfig, 'utf8'));
  } catch {
    return false;
  }
}
