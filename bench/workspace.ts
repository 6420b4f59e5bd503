/**
 * Workspace benchmark. Prints JSON:
 *  - workspace: wall time of `banger vm run --rm ./repo -- true` on a generated
 *    git repository (10,000 source-like files, 200 MB, committed and packed as
 *    a clone is, plus a few uncommitted edits), with the daemon's own timing of
 *    the copy step
 *  - bare: `banger vm run --rm -- true` in the same run (same daemon, same image)
 *  - difference of the medians (goal: under 3 s)
 *
 * Runs alternate (bare, workspace, bare, ...) so drift hits both alike.
 * Everything runs inside a network namespace made by vmEnv and removed after.
 *   node dist/bench/workspace.js [--runs N] [--files N] [--mb N]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { vmEnv } from '../test/helpers/e2e.js';
import { gitEnv } from '../test/helpers/gitFixture.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) || dflt : dflt;
};
const runs = arg('--runs', 3);
const FILES = arg('--files', 10_000);
const BYTES = arg('--mb', 200) * 1024 ** 2;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const secs = (ms: number): number => Math.round(ms) / 1000;

const WORDS = [
  'user',
  'account',
  'value',
  'index',
  'count',
  'result',
  'config',
  'handler',
  'request',
  'response',
  'item',
  'list',
  'map',
  'node',
  'tree',
  'cache',
  'buffer',
  'stream',
  'event',
  'state',
  'session',
  'token',
  'query',
  'record',
  'entry',
  'parser',
  'writer',
  'reader',
];

/** Source-like text (identifiers, numbers, structure): compresses like code does, every file differs. */
function sourceText(seed: number, bytes: number): string {
  let x = (seed * 2654435761) >>> 0 || 1;
  const rnd = (n: number): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
  const w = (): string => WORDS[rnd(WORDS.length)]!;
  const cap = (s: string): string => s[0]!.toUpperCase() + s.slice(1);
  const out: string[] = [];
  let len = 0;
  while (len < bytes) {
    const fn = `${w()}${cap(w())}${rnd(1000)}`;
    const lines = [
      `export function ${fn}(${w()}: number, ${w()}: string): number {`,
      `  const ${w()}${rnd(100)} = ${w()}.${w()}(${rnd(100000)}, '${w()}-${rnd(1000)}');`,
      `  if (${w()} > ${rnd(10000)}) return ${w()} * ${rnd(97)};`,
      `  // ${w()} ${w()} ${w()}: ${rnd(1 << 30).toString(36)}`,
      `  return ${w()}${cap(w())}(${rnd(1000)}) + ${rnd(1000)};`,
      '}',
      '',
    ].join('\n');
    out.push(lines);
    len += lines.length + 1;
  }
  return out.join('\n').slice(0, bytes);
}

function generateRepo(dir: string, home: string): { files: number; bytes: number } {
  fs.mkdirSync(dir, { recursive: true });
  const per = Math.floor(BYTES / FILES);
  let bytes = 0;
  for (let i = 0; i < FILES; i++) {
    const d = path.join(dir, `pkg${i % 50}`, `mod${Math.floor(i / 50) % 20}`);
    fs.mkdirSync(d, { recursive: true });
    const text = sourceText(i + 1, per);
    fs.writeFileSync(path.join(d, `file${i}.ts`), text);
    bytes += text.length;
  }
  const env = gitEnv(home);
  const git = (...args: string[]) =>
    execFileSync('git', args, { cwd: dir, env, stdio: ['ignore', 'ignore', 'inherit'] });
  git('init', '-q', '-b', 'main');
  git('config', 'gc.auto', '0'); // no background gc racing the measurements
  git('add', '-A');
  git('commit', '-q', '-m', 'generated');
  // Packed, as a cloned repository is (a fresh commit of 200 MB leaves loose objects).
  git('repack', '-a', '-d', '-q', '--window=0');
  // A working tree as one has it: a few edits, one staged, one untracked file.
  fs.appendFileSync(path.join(dir, 'pkg0', 'mod0', 'file0.ts'), '// edited\n');
  fs.appendFileSync(path.join(dir, 'pkg1', 'mod0', 'file1.ts'), '// staged\n');
  git('add', 'pkg1/mod0/file1.ts');
  fs.writeFileSync(path.join(dir, 'NOTES.md'), 'untracked\n');
  return { files: FILES + 1, bytes };
}

async function main(): Promise<void> {
  const env = await vmEnv('wsbench');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-wsbench-'));
  try {
    const repo = path.join(tmp, 'repo');
    const t0 = performance.now();
    const size = generateRepo(repo, env.sb.env.HOME!);
    const generateMs = performance.now() - t0;
    await env.run(['daemon', 'status']);
    // One warm-up of each, not counted (page cache, first-use costs).
    for (const args of [[], [repo]]) {
      const r = await env.run([
        'vm',
        'run',
        '--rm',
        '--name',
        env.name('warm'),
        ...args,
        '--',
        'true',
      ]);
      if (r.code !== 0) throw new Error(`warm-up failed: ${r.stderr}`);
    }
    const bare: number[] = [];
    const workspace: number[] = [];
    const copy: { ms: number; detail: string }[] = [];
    const read: number[] = [];
    for (let i = 0; i < runs; i++) {
      let t = performance.now();
      let r = await env.run(['vm', 'run', '--rm', '--name', env.name('bare'), '--', 'true']);
      if (r.code !== 0) throw new Error(`bare vm run failed: ${r.stderr}`);
      bare.push(performance.now() - t);
      t = performance.now();
      r = await env.run(['vm', 'run', '--rm', '--name', env.name('ws'), repo, '--', 'true']);
      if (r.code !== 0) throw new Error(`vm run ./repo failed: ${r.stderr}`);
      workspace.push(performance.now() - t);
      // "done: Read <repo> (10001 files, 200 MiB in the working tree, 480ms)"
      const rd = /done: Read \S+ \(([^)]*), ([\d.]+m?s)\)/.exec(r.stderr);
      if (rd) read.push(parseDuration(rd[2]!));
      // "done: Copying <repo> to /root/repo (10009 files, 258 MiB, 2.42s)"
      const m = /done: Copying \S+ to \/root\/repo \(([^)]*), ([\d.]+m?s)\)/.exec(r.stderr);
      if (m) copy.push({ ms: parseDuration(m[2]!), detail: m[1]! });
    }
    const out = {
      host: { cpus: os.cpus().length, load1: Math.round(os.loadavg()[0]! * 100) / 100 },
      runs,
      repo: { files: size.files, bytes: size.bytes, generateS: secs(generateMs) },
      bare: {
        what: 'banger vm run --rm -- true (wall, s)',
        samples: bare.map(secs),
        median: secs(median(bare)),
      },
      workspace: {
        what: 'banger vm run --rm ./repo -- true (wall, s)',
        samples: workspace.map(secs),
        median: secs(median(workspace)),
        readStep: {
          what: "the daemon's listing of the repository (s)",
          samples: read.map(secs),
        },
        copyStep: {
          what: "the daemon's copy onto the work disk: working tree, then .git (the pack is built meanwhile) (s)",
          samples: copy.map((c) => secs(c.ms)),
          detail: copy[0]?.detail ?? null,
        },
      },
      differenceS: secs(median(workspace) - median(bare)),
      goalS: 3,
    };
    console.log(JSON.stringify(out, null, 2));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
    await env.cleanup();
  }
}

function parseDuration(s: string): number {
  return s.endsWith('ms') ? Number(s.slice(0, -2)) : Number(s.slice(0, -1)) * 1000;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
