// Build: compile TypeScript, bundle the CLI, then stamp dist/build-info.json
// with a hash of the compiled output so a CLI can tell a daemon of another
// build apart.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { build as esbuild } from 'esbuild';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
try {
  execFileSync(path.join(root, 'node_modules/.bin/tsc'), ['-p', root], { stdio: 'inherit' });
} catch {
  console.error('build failed: TypeScript errors above');
  process.exit(1);
}

// The CLI as one CommonJS bundle (bin/banger requires dist/cli/main.cjs): each
// CLI call starts a Node process, and resolving and loading ~150 ES modules
// costs more than most commands. Modules the CLI imports lazily (per-command
// code, config parsing) stay in the bundle but run only when first imported;
// zod, needed only to validate request bodies, is a bundle of its own
// (dist/cli/zod.cjs) required on first use. The daemon runs from dist/src.
const cliOut = path.join(root, 'dist/cli');
const bundle = (entry, outfile, plugins = []) =>
  esbuild({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    minify: true,
    sourcemap: 'linked',
    // version.ts finds the package root from its own location.
    define: { 'import.meta.url': '__bangerModuleUrl' },
    banner: { js: "var __bangerModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
    plugins,
    metafile: true,
    logLevel: 'warning',
  });
// zod → the separate bundle; node:child_process for commander (it spawns only
// executable subcommands, which banger has none of) → loaded on first use.
const cliPlugin = {
  name: 'banger-cli',
  setup(b) {
    b.onResolve({ filter: /^zod$/ }, () => ({ path: './zod.cjs', external: true }));
    // The TUI (Ink, React, yoga's WebAssembly with top-level await) stays an ES
    // module graph outside the bundle: `banger tui` imports dist/src/tui/main.js.
    b.onResolve({ filter: /\/tui\/main\.js$/ }, (args) =>
      args.importer.includes(`${path.sep}src${path.sep}cli${path.sep}`)
        ? { path: '../src/tui/main.js', external: true }
        : undefined,
    );
    b.onResolve({ filter: /^node:child_process$/ }, (args) =>
      args.importer.includes(`${path.sep}node_modules${path.sep}commander${path.sep}`)
        ? { path: 'lazy-child-process', namespace: 'banger-lazy' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'banger-lazy' }, () => ({
      contents:
        "module.exports = new Proxy({}, { get: (_, k) => require('node:child_process')[k] });",
      loader: 'js',
    }));
  },
};
try {
  const cli = await bundle(path.join(root, 'dist/src/cli/main.js'), path.join(cliOut, 'main.cjs'), [
    cliPlugin,
  ]);
  await bundle(path.join(root, 'node_modules/zod/index.cjs'), path.join(cliOut, 'zod.cjs'));
  fs.writeFileSync(path.join(cliOut, 'meta.json'), JSON.stringify(cli.metafile));
} catch {
  console.error('build failed: bundling the CLI failed (see above)');
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
