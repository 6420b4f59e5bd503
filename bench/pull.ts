/**
 * Benchmark: OCI pull + convert to ext4, banger vs skopeo copy + umoci unpack +
 * mkfs.ext4 -d, cold (empty cache) and warm (blobs cached), in the same run
 * against the same local registry and image. Prints one JSON document.
 *
 *   node dist/bench/pull.js [--runs N (default 3)] [--keep]
 *
 * The image (5 layers, ~450 MB uncompressed, ~12k entries, whiteouts in the
 * last layer) is built from this host's /usr content and pushed to a
 * docker-registry started on 127.0.0.1 for the run.
 *
 * Every run checks that both ext4 images hold the same entries (paths): a
 * banger that dropped or added files would look faster, so the benchmark
 * fails instead of printing figures.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { pullOciToExt4 } from '../src/image/oci/pull.js';
import { listExt4 } from '../src/storage/ext4.js';
import { pushImage, startRegistry, type Registry } from '../test/helpers/registry.js';
import { makeTar } from '../test/helpers/tarWriter.js';

const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1]) || 3;
const keep = args.includes('--keep');

const LAYERS: string[][] = [
  ['usr/lib/python3.11', 'usr/lib/python3'],
  ['usr/lib/gcc', 'usr/lib/git-core'],
  ['usr/share/doc', 'usr/share/zoneinfo'],
  ['usr/libexec'],
];

function sh(cmd: string, argv: string[], opts: { cwd?: string } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], cwd: opts.cwd });
    let err = '';
    c.stderr.on('data', (b: Buffer) => (err += b.toString()));
    c.on('error', reject);
    c.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${argv.join(' ')}: ${err.trim()}`)),
    );
  });
}

/** tar + gzip of host paths; returns the diff id (sha256 of the tar). */
async function tarGz(paths: string[], out: string): Promise<string> {
  const existing = paths.filter((p) => fs.existsSync(path.join('/', p)));
  const argv = ['-C', '/', '--numeric-owner', '--ignore-failed-read', '-cf', '-', ...existing];
  const c = spawn('tar', argv, { stdio: ['ignore', 'pipe', 'ignore'] });
  const hash = createHash('sha256');
  c.stdout.on('data', (b: Buffer) => hash.update(b));
  await pipeline(c.stdout, zlib.createGzip({ level: 1 }), fs.createWriteStream(out));
  return `sha256:${hash.digest('hex')}`;
}

const time = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
  const t = performance.now();
  const r = await f();
  return [r, Math.round(performance.now() - t)];
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The paths in an ext4 image, sorted. */
const entriesOf = async (image: string): Promise<string[]> =>
  (await listExt4(image)).map((e) => e.path).sort();

/** Throws when the two images do not hold the same paths, naming the first differences. */
function sameEntries(ours: string[], theirs: string[], what: string): void {
  if (ours.length === theirs.length && ours.every((p, i) => p === theirs[i])) return;
  const a = new Set(ours);
  const b = new Set(theirs);
  const missing = theirs.filter((p) => !a.has(p));
  const extra = ours.filter((p) => !b.has(p));
  throw new Error(
    `${what}: banger's ext4 has ${ours.length} entries, the baseline's ${theirs.length}` +
      (missing.length ? `; missing in banger's: ${missing.slice(0, 5).join(', ')}` : '') +
      (extra.length ? `; only in banger's: ${extra.slice(0, 5).join(', ')}` : ''),
  );
}

async function main() {
  for (const tool of ['docker-registry', 'skopeo', 'umoci', 'mkfs.ext4']) {
    await sh('sh', ['-c', `command -v ${tool}`]).catch(() => {
      throw new Error(
        `${tool} is needed for the benchmark (apt install docker-registry skopeo umoci e2fsprogs)`,
      );
    });
  }
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-bench-'));
  let reg: Registry | undefined;
  try {
    // ---- the image
    const layerFiles: string[] = [];
    const diffIds: string[] = [];
    for (const [i, paths] of LAYERS.entries()) {
      const f = path.join(root, `layer${i}.tar.gz`);
      diffIds.push(await tarGz(paths, f));
      layerFiles.push(f);
    }
    const docs = fs.readdirSync('/usr/share/doc').sort().slice(0, 40);
    const last = makeTar([
      ...docs.map((d) => ({ name: `usr/share/doc/.wh.${d}`, content: '' })),
      { name: 'usr/lib/git-core/', type: 'dir' as const },
      { name: 'usr/lib/git-core/.wh..wh..opq', content: '' },
      { name: 'usr/lib/git-core/git', content: Buffer.alloc(1 << 20, 1), mode: 0o755 },
      { name: 'etc/bench-release', content: 'bench\n' },
    ]);
    const lastFile = path.join(root, 'layer-last.tar.gz');
    fs.writeFileSync(lastFile, zlib.gzipSync(last, { level: 1 }));
    layerFiles.push(lastFile);
    diffIds.push(`sha256:${createHash('sha256').update(last).digest('hex')}`);

    reg = await startRegistry();
    const img = await pushImage(
      reg.host,
      'bench/image',
      'latest',
      layerFiles.map((f, i) => ({ data: fs.readFileSync(f), diffId: diffIds[i] })),
      { docker: true },
    );
    const ref = `${reg.host}/bench/image:latest`;
    const compressed = img.layers.reduce((a, l) => a + l.size, 0);

    const ours = { cold: [] as Record<string, number>[], warm: [] as Record<string, number>[] };
    const theirs = { cold: [] as Record<string, number>[], warm: [] as Record<string, number>[] };
    let facts: Record<string, number> = {};
    const oursEntries: Record<string, string[]> = {};
    for (let run = 0; run < runs; run++) {
      // ---- banger
      const cache = path.join(root, `cache-${run}`);
      for (const phase of ['cold', 'warm'] as const) {
        const work = path.join(root, `work-${run}-${phase}`);
        fs.mkdirSync(work);
        const out = path.join(work, 'rootfs.ext4');
        let pullMs = 0;
        const t0 = performance.now();
        const [r, total] = await time(() =>
          pullOciToExt4(ref, out, {
            cacheDir: cache,
            workDir: work,
            dockerConfigPath: null,
            prepare: () => {
              pullMs = Math.round(performance.now() - t0);
            },
          }),
        );
        ours[phase].push({ totalMs: total, pullMs, ext4Ms: r.ext4.ms });
        oursEntries[phase] = await entriesOf(out);
        if (run === 0 && phase === 'cold') {
          facts = {
            layers: img.layers.length,
            compressedBytes: compressed,
            contentBytes: r.contentBytes,
            entries: r.ext4.entries,
            imageBytes: r.ext4.sizeBytes,
            imageAllocatedBytes: r.ext4.allocatedBytes,
            ext4Entries: oursEntries[phase]!.length,
          };
        }
        if (!keep) fs.rmSync(work, { recursive: true, force: true });
      }
      // ---- skopeo + umoci + mkfs.ext4 -d
      const layout = path.join(root, `oci-${run}`);
      for (const phase of ['cold', 'warm'] as const) {
        const bundle = path.join(root, `bundle-${run}-${phase}`);
        const out = path.join(root, `baseline-${run}-${phase}.ext4`);
        const [, skopeoMs] = await time(() =>
          sh('skopeo', [
            'copy',
            '--insecure-policy',
            '--quiet',
            '--src-tls-verify=false',
            `docker://${ref}`,
            `oci:${layout}:latest`,
          ]),
        );
        const rootless = process.getuid?.() !== 0 ? ['--rootless'] : [];
        const [, umociMs] = await time(() =>
          sh('umoci', ['unpack', ...rootless, '--image', `${layout}:latest`, bundle]),
        );
        const [, mkfsMs] = await time(async () => {
          fs.writeFileSync(out, '');
          fs.truncateSync(out, facts.imageBytes!);
          await sh('mkfs.ext4', [
            '-q',
            '-F',
            '-T',
            'default',
            '-b',
            '4096',
            '-O',
            '^has_journal',
            '-d',
            path.join(bundle, 'rootfs'),
            out,
          ]);
        });
        theirs[phase].push({ totalMs: skopeoMs + umociMs + mkfsMs, skopeoMs, umociMs, mkfsMs });
        const theirEntries = await entriesOf(out);
        sameEntries(oursEntries[phase]!, theirEntries, `run ${run + 1} (${phase})`);
        if (run === 0 && phase === 'cold') facts.baselineExt4Entries = theirEntries.length;
        fs.rmSync(bundle, { recursive: true, force: true });
        fs.rmSync(out, { force: true });
      }
    }
    const summarize = (xs: Record<string, number>[]) =>
      Object.fromEntries(Object.keys(xs[0]!).map((k) => [k, median(xs.map((x) => x[k]!))]));
    const b = { cold: summarize(ours.cold), warm: summarize(ours.warm) };
    const s = { cold: summarize(theirs.cold), warm: summarize(theirs.warm) };
    const result = {
      bench: 'oci pull + convert to ext4',
      host: { cpus: os.cpus().length, node: process.version, uid: process.getuid?.() },
      runs,
      image: { ref: 'local registry bench/image:latest', ...facts },
      banger: b,
      baseline: { tools: 'skopeo copy + umoci unpack + mkfs.ext4 -d', ...s },
      ratio: {
        cold: Number((s.cold.totalMs! / b.cold.totalMs!).toFixed(2)),
        warm: Number((s.warm.totalMs! / b.warm.totalMs!).toFixed(2)),
        note: 'baseline time / banger time (higher = banger faster)',
      },
    };
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } finally {
    await reg?.stop();
    if (!keep) fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(`bench failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
