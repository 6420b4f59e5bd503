/**
 * Child process for the unprivileged ext4 test: converts a tar file to ext4 with
 * whatever credentials it was started with and prints the result as JSON.
 *   node ext4Child.js TAR OUT WORKDIR [staging]
 */
import { tarToExt4 } from '../../src/image/tree/toExt4.js';

const [tar, out, workDir, staging] = process.argv.slice(2) as [string, string, string, string?];
const r = await tarToExt4(tar, out, {
  workDir,
  staging: staging ?? 'disk',
  label: 'unpriv',
});
process.stdout.write(
  JSON.stringify({ uid: process.getuid?.(), fixups: r.fixups, entries: r.entries }) + '\n',
);
