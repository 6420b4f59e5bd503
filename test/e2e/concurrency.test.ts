import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { ApiClient } from '../../src/api/client.js';
import { VM_STATES } from '../../src/api/vmStates.js';
import { BangerError } from '../../src/errors.js';
import { IDENTITY } from '../../src/version.js';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { isAlive } from '../helpers/sandbox.js';

/**
 * Many clients at once (issue 16): 50 lifecycle operations (create, start,
 * stop, restart, delete, set, ports, stats, show, list) fired together at one
 * daemon over 10 VMs — 2 booted under TCG, 8 created with --no-start — in a
 * seeded order. Conflicting operations on one VM wait for each other (the
 * per-VM lock) or are refused with a clear message; nothing else may fail.
 * Afterwards the store must be whole: every row's files exist, no orphan VM
 * directory, addresses and names unique, states valid, running VMs alive.
 */
const SEED = Number(process.env.BANGER_FUZZ_SEED ?? 1604);
const G = 1024 ** 3;
/** Errors an operation may meet because another one changed the VM first. */
const EXPECTED: { code: string; message: RegExp }[] = [
  { code: 'precondition', message: /is running: vcpu and memory change only while it is stopped/ },
  { code: 'usage', message: /disks only grow/ },
  { code: 'not_found', message: /no VM|not found/i },
  { code: 'conflict', message: /already exists|already|in use/i },
];

/** A small deterministic PRNG (mulberry32), so the order is reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('50 concurrent lifecycle operations on 10 VMs', { timeout: 25 * 60_000 }, () => {
  let env: VmEnv | undefined;
  const booted: string[] = [];
  const idle: string[] = [];

  before(async () => {
    if (!isRoot()) return;
    const e = await vmEnv('cc', { config: 'vmm = "qemu"\n' });
    env = e;
    for (let i = 0; i < 2; i++) {
      const n = e.name(`b${i}`);
      const c = await e.run(['vm', 'create', '--name', n, '--memory', '512M'], {
        timeoutMs: 10 * 60_000,
      });
      assert.equal(c.code, 0, c.stderr);
      booted.push(n);
    }
    for (let i = 0; i < 8; i++) {
      const n = e.name(`s${i}`);
      const c = await e.run(['vm', 'create', '--no-start', '--name', n]);
      assert.equal(c.code, 0, c.stderr);
      idle.push(n);
    }
  });
  after(async () => {
    await env?.cleanup();
  });

  test('only per-VM conflicts fail, and the store is whole afterwards', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    const e = env!;
    const client = new ApiClient({ socketPath: e.sb.paths.socket, version: IDENTITY });
    const none = (): void => undefined;
    const [b0, b1] = booted as [string, string];
    const fresh = [0, 1, 2, 3].map((i) => e.name(`c${i}`));
    type Op = [string, () => Promise<unknown>];
    const action = (a: 'start' | 'stop' | 'restart' | 'delete', refs: string[]): Op => [
      `${a} ${refs.join(',')}`,
      () => client.stream('vmAction', { params: { action: a }, body: { refs, force: true } }, none),
    ];
    const set = (ref: string, body: Record<string, unknown>): Op => [
      `set ${ref} ${JSON.stringify(body)}`,
      () => client.stream('vmSet', { body: { refs: [ref], ...body } }, none),
    ];
    const ops: Op[] = [
      // the booted VMs
      action('stop', [b0]),
      action('start', [b0]),
      action('restart', [b1]),
      set(b0, { nat: true }),
      set(b0, { nat: false }),
      set(b1, { nat: true }),
      set(b1, { memoryMib: 1024 }),
      set(b1, { autoStopMs: 3_600_000 }),
      ...[b0, b1, b0, b1].map((r): Op => [
        `ports ${r}`,
        () => client.call('vmPorts', { query: { refs: r } }),
      ]),
      ...[b0, b1].map((r): Op => [
        `stats ${r}`,
        () => client.call('vmStats', { query: { refs: r } }),
      ]),
      ...[b0, b1].map((r): Op => [
        `show ${r}`,
        () => client.call('vmShow', { params: { ref: r } }),
      ]),
      // the stopped VMs
      ...idle.slice(0, 6).map((r, i) => set(r, { vcpu: 1 + (i % 3), memoryMib: 256 + 128 * i })),
      set(idle[0]!, { diskSize: 10 * G }),
      set(idle[0]!, { diskSize: 9 * G }),
      set(idle[1]!, { diskSize: 12 * G }),
      set(idle[2]!, { nat: true }),
      set(idle[3]!, { nat: true, autoStopMs: 0 }),
      action('delete', [idle[6]!]),
      action('delete', [idle[7]!]),
      action('delete', [idle[7]!]),
      [`show ${idle[7]}`, () => client.call('vmShow', { params: { ref: idle[7]! } })],
      [`show ${idle[5]}`, () => client.call('vmShow', { params: { ref: idle[5]! } })],
      // new VMs, one name asked for twice
      ...fresh.map((n): Op => [
        `create ${n}`,
        () => client.stream('vmCreate', { body: { name: n, start: false } }, none),
      ]),
      [
        `create ${fresh[0]} again`,
        () => client.stream('vmCreate', { body: { name: fresh[0]!, start: false } }, none),
      ],
      action('delete', [fresh[3]!]),
      ...[1, 2, 3].map((i): Op => [`list ${i}`, () => client.call('vmList')]),
      ['completion', () => client.call('completionNames')],
      ['status', () => client.call('status')],
    ];
    while (ops.length < 50) ops.push(['list', () => client.call('vmList')]);
    assert.equal(ops.length, 50);
    const rand = rng(SEED);
    for (let i = ops.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [ops[i], ops[j]] = [ops[j]!, ops[i]!];
    }

    const started = Date.now();
    const results = await Promise.allSettled(ops.map(([, f]) => f()));
    const seconds = (Date.now() - started) / 1000;
    const unexpected: string[] = [];
    const refused: string[] = [];
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') return;
      const err = r.reason as unknown;
      const ok =
        err instanceof BangerError &&
        EXPECTED.some((x) => x.code === err.code && x.message.test(err.message));
      if (ok) refused.push(`${ops[i]![0]}: ${err.message}`);
      else
        unexpected.push(
          `${ops[i]![0]}: ${String((err as Error)?.message ?? err)} (${(err as BangerError).code})`,
        );
    });
    t.diagnostic(
      `50 operations in ${seconds.toFixed(1)} s, ${refused.length} refused: ${refused.join(' | ')}`,
    );
    assert.deepEqual(unexpected, [], 'only expected per-VM conflicts');

    // ---- the store afterwards ----
    const { vms } = await client.call('vmList');
    const problems: string[] = [];
    const unique = (what: string, values: (string | null)[]): void => {
      const seen = new Set<string>();
      for (const v of values) {
        if (v === null) continue;
        if (seen.has(v)) problems.push(`${what} ${v} used twice`);
        seen.add(v);
      }
    };
    unique(
      'name',
      vms.map((v) => v.name),
    );
    unique(
      'ip',
      vms.map((v) => v.ip),
    );
    unique(
      'mac',
      vms.map((v) => v.mac),
    );
    for (const v of vms) {
      if (!(VM_STATES as readonly string[]).includes(v.state))
        problems.push(`${v.name}: state ${v.state}`);
      for (const f of ['work.ext4', 'overlay.ext4'])
        if (!fs.existsSync(path.join(v.dir, f))) problems.push(`${v.name}: ${f} missing`);
      if (v.state === 'running' && !(v.pid && isAlive(v.pid)))
        problems.push(`${v.name}: running without a VMM`);
      if (v.state === 'stopped' && v.pid && isAlive(v.pid))
        problems.push(`${v.name}: stopped with a live VMM`);
    }
    const dirs = fs.readdirSync(e.sb.paths.vmsDir);
    for (const d of dirs)
      if (!vms.some((v) => path.basename(v.dir) === d)) problems.push(`orphan VM directory ${d}`);
    for (const gone of [idle[6]!, idle[7]!, fresh[3]!])
      if (vms.some((v) => v.name === gone)) problems.push(`${gone} was deleted but is listed`);
    for (const made of fresh.slice(0, 3))
      if (!vms.some((v) => v.name === made)) problems.push(`${made} was created but is missing`);
    const grown = vms.find((v) => v.name === idle[1]);
    if (grown?.diskSize !== 12 * G) problems.push(`${idle[1]} disk ${grown?.diskSize}, want 12G`);
    const db = new Database(e.sb.paths.db, { readonly: true, fileMustExist: true });
    try {
      const check = db.pragma('integrity_check', { simple: true });
      if (check !== 'ok') problems.push(`sqlite integrity_check: ${String(check)}`);
    } finally {
      db.close();
    }
    assert.deepEqual(problems, []);
    // and the daemon still answers
    assert.equal((await e.run(['vm', 'list'])).code, 0);
  });
});
