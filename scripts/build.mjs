// Build: compile TypeScript, then stamp dist/build-info.json with a hash of
// the compiled output so a CLI can tell a daemon of another build apart.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
try {
  execFileSync(path.join(root, 'node_modules/.bin/tsc'), ['-p', root], { stdio: 'inherit' });
} catch {
  console.error('build failed: TypeScript errors above');
  process.exit(1);
}

const hash = createHash('sha256');
const walk = (dir) => {
  for (const e of fs
    .readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (p.endsWith('.js')) {
      hash.update(path.relative(root, p));
      hash.update(fs.readFileSync(p));
    }
  }
};
walk(path.join(root, 'dist', 'src'));
// The guest agent: a static binary injected into every image.
try {
  execFileSync(
    'bash',
    [path.join(root, 'scripts/build-agent.sh'), path.join(root, 'dist', 'guest')],
    { stdio: 'inherit' },
  );
} catch {
  console.error(
    'build failed: the guest agent did not compile (is musl-tools or a static libc installed?)',
  );
  process.exit(1);
}
hash.update(fs.readFileSync(path.join(root, 'dist', 'guest', 'banger-agent')));
const build = hash.digest('hex').slice(0, 12);
fs.writeFileSync(path.join(root, 'dist', 'build-info.json'), JSON.stringify({ build }) + '\n');
console.log(`built dist (build ${build})`);
