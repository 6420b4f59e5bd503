import fs from 'node:fs';
import { BangerError } from '../errors.js';

/** Create (or check) a directory that only the current user may enter (0700). */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.statSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid) {
    throw new BangerError(
      'permission',
      `${dir} belongs to uid ${st.uid}, not to you (uid ${uid})`,
      {
        hint: 'set BANGER_RUNTIME_DIR to a directory of your own',
      },
    );
  }
  if ((st.mode & 0o077) !== 0) fs.chmodSync(dir, 0o700);
}
