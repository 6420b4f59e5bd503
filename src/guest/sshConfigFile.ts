import fs from 'node:fs';
import path from 'node:path';
import { BangerError } from '../errors.js';
import { hasBlock, includeLine, insertBlock, removeBlock } from './sshConfig.js';

/**
 * The edge that edits ~/.ssh/config for `banger ssh-config --install` and
 * `--uninstall`: only the marker-fenced block, nothing else. A config that is
 * a symlink is edited where it points, if that place is writable; a symlink
 * into a read-only place (a dotfiles store, a Nix profile) is refused with the
 * line to add by hand.
 */

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
