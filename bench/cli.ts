/**
 * CLI start-up benchmark. Prints one JSON document: the wall time of
 *  - `banger --version`
 *  - `banger vm list` with 100 VMs in the store
 *  - `banger __complete -- vm show ''` (what shell completion runs; it asks the
 *    daemon for live VM names)
 * each against `node -e 0` measured in the same run, interleaved (one round
 * runs every command once, in a rotating order), as medians over the rounds
 * and ratios to the baseline. Goal: every ratio ≤ 1.5.
 *
 *   node dist/bench/cli.js [--runs N] [--cli PATH]
 *
 * The VMs are rows inserted through src/store into a temp state database (none
 * boots); the daemon runs with temp BANGER_*_DIRs and is stopped at the end.
 * `--cli` measures another checkout's bin/banger against the same baseline.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { openStore } from '../src/store/index.js';
import { CLI, makeSandbox } from '../test/helpers/sandbox.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const runs = Number(opt('--runs')) || 15;
const cli = path.resolve(opt('--cli') ?? CLI);
const VMS = 100;
const GOAL = 1.5;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const ms = (x: number): number => Math.round(x * 10) / 10;

interface Case {
  name: string;
  argv: string[];
  /** Throws when the output is not what the command should print. */
  check(stdout: string): void;
}

function seed(db: string): void {
  const store = openStore(db);
  try {
    const image = store.images.insert({
      id: 'img0000000000000000',
      name: 'bench-image',
      source: 'register:/nonexistent',
      digest: null,
      kernelName: null,
      kernelPath: '/nonexistent/vmlinuz',
      initrdPath: null,
      rootfsPath: '/nonexistent/rootfs.ext4',
      workSeedPath: null,
      managed: false,
      sizeBytes: null,
      meta: {},
    });
    store.db.transaction(() => {
      for (let i = 0; i < VMS; i++) {
        store.vms.insert({
          id: `vm${String(i).padStart(30, '0')}`,
          name: `bench-${String(i).padStart(3, '0')}`,
          imageId: image.id,
          kernelName: null,
          state: 'stopped',
          vmm: 'qemu',
          accel: 'tcg',
          vcpu: 2,
          memoryMib: 2048,
          diskSize: 8 * 1024 ** 3,
          nat: false,
          ip: null,
          mac: null,
          tap: null,
          pid: null,
          pidStartTime: null,
          lastError: null,
          meta: {},
          startedAt: null,
          stoppedAt: null,
        });
      }
    })();
  } finally {
    store.close();
  }
}

async function main(): Promise<void> {
  const sb = await makeSandbox();
  try {
    seed(sb.paths.db);
    const env = { ...sb.env } as NodeJS.ProcessEnv;
    const up = spawnSync(process.execPath, [cli, 'daemon', 'status'], { env, encoding: 'utf8' });
    if (up.status !== 0) throw new Error(`the daemon did not start: ${up.stderr}`);

    const cases: Case[] = [
      {
        name: 'node -e 0',
        argv: ['-e', '0'],
        check: () => undefined,
      },
      {
        name: 'banger --version',
        argv: [cli, '--version'],
        check: (out) => {
          if (!/^\d+\.\d+\.\d+\+\w+\n$/.test(out)) throw new Error(`--version printed ${out}`);
        },
      },
      {
        name: `banger vm list (${VMS} VMs)`,
        argv: [cli, 'vm', 'list'],
        check: (out) => {
          const lines = out.trim().split('\n');
          if (lines.length !== VMS + 1 || !/bench-099/.test(out))
            throw new Error(`vm list printed ${lines.length} lines`);
        },
      },
      {
        name: "banger __complete -- vm show ''",
        argv: [cli, '__complete', '--', 'vm', 'show', ''],
        check: (out) => {
          const names = out.trim().split('\n');
          if (names.length !== VMS || names[0] !== 'bench-000')
            throw new Error(`completion printed ${names.length} names`);
        },
      },
    ];

    const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
    const once = (c: Case): number => {
      const t = performance.now();
      const r = spawnSync(process.execPath, c.argv, { env, encoding: 'utf8' });
      const elapsed = performance.now() - t;
      if (r.status !== 0) throw new Error(`${c.name} exited ${r.status}: ${r.stderr}`);
      c.check(r.stdout);
      return elapsed;
    };
    for (const c of cases) once(c); // warm the page cache and the daemon
    for (let round = 0; round < runs; round++) {
      for (let k = 0; k < cases.length; k++) {
        const c = cases[(round + k) % cases.length]!;
        times.get(c.name)!.push(once(c));
      }
    }

    const base = median(times.get('node -e 0')!);
    const results = cases.slice(1).map((c) => {
      const m = median(times.get(c.name)!);
      return {
        command: c.name,
        medianMs: ms(m),
        minMs: ms(Math.min(...times.get(c.name)!)),
        ratio: Math.round((m / base) * 100) / 100,
      };
    });
    console.log(
      JSON.stringify(
        {
          runs,
          cli,
          node: process.version,
          baseline: { command: 'node -e 0', medianMs: ms(base) },
          results,
          goal: `each ratio <= ${GOAL}`,
          met: results.every((r) => r.ratio <= GOAL),
        },
        null,
        2,
      ),
    );
  } finally {
    await sb.cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(`bench/cli: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
