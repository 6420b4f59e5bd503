import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { stringify as toToml } from 'smol-toml';
import { VM_NAME_RE } from '../../src/api/limits.js';
import { ImageName } from '../../src/api/schemas/images.js';
import { VmName } from '../../src/api/schemas/vms.js';
import { loadConfig } from '../../src/config/load.js';
import { FILE_SYNC_FIELDS, TOP_FIELDS, VM_DEFAULT_FIELDS } from '../../src/config/schema.js';
import { BangerError } from '../../src/errors.js';
import { AgentClient, MAX_AGENT_LINE_BYTES } from '../../src/guest/agentClient.js';
import { parseAgentLine } from '../../src/guest/agentProtocol.js';
import { LineSplitter } from '../../src/guest/lineSplitter.js';
import { parseDuration, parseSize } from '../../src/util/units.js';

/**
 * Property-based fuzzing (fast-check, seeded so a failure is reproducible;
 * BANGER_FUZZ_SEED varies it) of what parses user or guest input on the host:
 * sizes, durations, names, the config file, and the agent channel's framing
 * and decoder. Each property runs a bounded number of cases.
 */
const SEED = Number(process.env.BANGER_FUZZ_SEED ?? 1604);
const opts = (numRuns = 500): fc.Parameters<unknown> => ({ seed: SEED, numRuns });

/** Calls f; returns its value, or the error it threw. */
function outcome<T>(f: () => T): { ok: true; value: T } | { ok: false; error: unknown } {
  try {
    return { ok: true, value: f() };
  } catch (error) {
    return { ok: false, error };
  }
}

const UNIT_BYTES: Record<string, number> = { '': 1, k: 1024, m: 1048576, g: 1073741824 };
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 };

describe('fuzz: sizes and durations', () => {
  const sizeLike = fc.oneof(
    fc.string({ maxLength: 30 }),
    fc.stringMatching(/^\s?[0-9]{0,25}(\.[0-9]{0,5})?\s?[a-zA-Z]{0,4}\s?$/),
  );

  test('parseSize: any string gives a safe whole number of bytes or an Error with the input', () => {
    fc.assert(
      fc.property(sizeLike, (s) => {
        const r = outcome(() => parseSize(s));
        if (r.ok) assert.ok(Number.isSafeInteger(r.value) && r.value >= 0, `${s} → ${r.value}`);
        else {
          assert.ok(r.error instanceof Error);
          assert.ok((r.error as Error).message.includes(s), (r.error as Error).message);
        }
      }),
      opts(2000),
    );
  });

  test('parseSize: N<unit> is N times the binary unit, any case', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4096 }),
        fc.constantFrom('', 'k', 'K', 'm', 'M', 'g', 'G', 'kib', 'MiB', 'gb'),
        (n, unit) => {
          const factor = UNIT_BYTES[unit.toLowerCase()[0] ?? ''] ?? 1;
          assert.equal(parseSize(`${n}${unit}`), n * factor);
        },
      ),
      opts(),
    );
  });

  test('parseDuration: any string or number gives a safe whole number of ms or an Error', () => {
    const durationLike = fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.stringMatching(/^([0-9]{1,20}(\.[0-9]{0,4})?(ms|s|m|h|d|x)?){0,4}$/),
      fc.double(),
    );
    fc.assert(
      fc.property(durationLike, (s) => {
        const r = outcome(() => parseDuration(s));
        if (r.ok)
          assert.ok(
            Number.isSafeInteger(r.value) && r.value >= 0,
            `${String(s)} → ${r.value} is not a safe whole number of ms`,
          );
        else assert.ok(r.error instanceof Error);
      }),
      opts(2000),
    );
  });

  test('parseDuration: sums of units add up', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(fc.integer({ min: 0, max: 1000 }), fc.constantFrom('ms', 's', 'm', 'h', 'd')),
          { minLength: 1, maxLength: 4 },
        ),
        (parts) => {
          const text = parts.map(([n, u]) => `${n}${u}`).join('');
          const ms = parts.reduce((sum, [n, u]) => sum + n * UNIT_MS[u]!, 0);
          assert.equal(parseDuration(text), ms);
        },
      ),
      opts(),
    );
  });
});

describe('fuzz: names', () => {
  const SAFE_NAME = /^[a-z0-9][a-z0-9._-]*$/;
  test('a VM or image name the schemas accept is never a path, an option or shell syntax', () => {
    const nameLike = fc.oneof(
      fc.string({ maxLength: 70 }),
      fc.stringMatching(/^[a-z0-9._\-/ $;`'"|&\\\n]{0,70}$/),
    );
    fc.assert(
      fc.property(nameLike, (s) => {
        for (const schema of [VmName, ImageName]) {
          if (!schema.safeParse(s).success) continue;
          assert.match(s, SAFE_NAME, `accepted ${JSON.stringify(s)}`);
          assert.ok(s.length <= 64 && s !== '.' && s !== '..' && !s.startsWith('-'));
        }
        if (VmName.safeParse(s).success) assert.match(s, /^[a-z0-9][a-z0-9-]{0,63}$/);
        assert.equal(VmName.safeParse(s).success, VM_NAME_RE.test(s));
      }),
      opts(3000),
    );
  });
});

describe('fuzz: config parsing', () => {
  const inputs = { file: '/nonexistent/config.toml', env: {}, home: '/home/u' };
  const keys = [...TOP_FIELDS.map((f) => f.key), 'bogus', 'vm_defaults', 'file_sync'];
  const scalar = fc.oneof(
    fc.string({ maxLength: 20 }),
    fc.integer(),
    fc.double({ noNaN: false }),
    fc.boolean(),
    fc.constantFrom('0', '1G', '30s', 'off', '127.0.0.1:53', '10.0.0.0/8', 'true', '~/x'),
  );
  const value = fc.oneof(
    { weight: 4, arbitrary: scalar },
    { weight: 1, arbitrary: fc.array(scalar, { maxLength: 4 }) },
    {
      weight: 1,
      arbitrary: fc.dictionary(
        fc.constantFrom(...VM_DEFAULT_FIELDS.map((f) => f.key), 'x'),
        scalar,
      ),
    },
    {
      weight: 1,
      arbitrary: fc.array(
        fc.dictionary(fc.constantFrom(...FILE_SYNC_FIELDS.map((f) => f.key), 'y'), scalar),
        { maxLength: 3 },
      ),
    },
  );

  /** The only way loading may fail: a config error naming the file. */
  const check = (text: string, env: Record<string, string> = {}): void => {
    const r = outcome(() => loadConfig({ ...inputs, env, text }));
    if (r.ok) return;
    assert.ok(r.error instanceof BangerError, `not a BangerError: ${String(r.error)}`);
    assert.equal(r.error.code, 'config_invalid');
    assert.ok(r.error.message.length > 0 && !r.error.message.includes('\n'), r.error.message);
  };

  test('random TOML tables: a config or one config_invalid error, never a crash', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...keys), value), (table) => {
        let text: string;
        try {
          text = toToml(table);
        } catch {
          return; // not representable in TOML (e.g. mixed arrays)
        }
        check(text);
      }),
      opts(1500),
    );
  });

  test('random text and cut-off valid files: one config_invalid error with a line, never a crash', () => {
    const valid =
      'log_level = "debug"\nvmm = "qemu"\ncidr = "172.16.0.0/24"\n[vm_defaults]\nvcpu = 2\ndisk_size = "8G"\n[[file_sync]]\nhost = "~/.gitconfig"\nguest = "~/.gitconfig"\n';
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 200 }),
          fc.nat({ max: valid.length }).map((n) => valid.slice(0, n)),
          fc
            .tuple(fc.nat({ max: valid.length }), fc.string({ maxLength: 5 }))
            .map(([n, s]) => valid.slice(0, n) + s + valid.slice(n)),
        ),
        (text) => check(text),
      ),
      opts(1500),
    );
  });

  test('random environment overrides: a config or one config_invalid error', () => {
    const envKeys = [
      ...TOP_FIELDS.map((f) => `BANGER_${f.key.toUpperCase()}`),
      ...VM_DEFAULT_FIELDS.map((f) => `BANGER_VM_DEFAULTS_${f.key.toUpperCase()}`),
    ];
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...envKeys), fc.string({ maxLength: 30 })), (env) =>
        check('', env),
      ),
      opts(1500),
    );
  });

  test('accepted values are within their documented ranges', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...keys), value), (table) => {
        let text: string;
        try {
          text = toToml(table);
        } catch {
          return;
        }
        const r = outcome(() => loadConfig({ ...inputs, env: {}, text }));
        if (!r.ok) return;
        const c = r.value.config;
        for (const v of [c.autoStopStaleAfterMs, c.statsPollIntervalMs, c.logMaxBytes])
          assert.ok(Number.isSafeInteger(v) && v >= 0, `${v} in ${text}`);
        for (const f of c.fileSync) {
          assert.ok(f.guest.startsWith('/root/') && !f.guest.split('/').includes('..'));
          if (f.mode !== undefined)
            assert.ok(
              Number.isInteger(f.mode) && f.mode >= 0 && f.mode <= 0o7777,
              `mode ${f.mode}`,
            );
        }
      }),
      opts(1500),
    );
  });

  test('[[file_sync]] entries: guest paths stay under /root, modes are file modes', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 30 }),
          fc.constantFrom('~/a', '/root/a/../../etc/x', '/root/ok'),
        ),
        fc.oneof(
          fc.integer(),
          fc.string({ maxLength: 6 }),
          fc.constantFrom('0600', 0o644, 4095, 4096),
        ),
        (guest, mode) => {
          const text = toToml({ file_sync: [{ host: '~/x', guest, mode }] });
          const r = outcome(() => loadConfig({ ...inputs, env: {}, text }));
          if (!r.ok) {
            assert.ok(r.error instanceof BangerError && r.error.code === 'config_invalid');
            return;
          }
          const f = r.value.config.fileSync[0]!;
          assert.ok(f.guest.startsWith('/root/') && !f.guest.split('/').includes('..'), f.guest);
          assert.ok(
            f.mode! >= 0 && f.mode! <= 0o7777,
            `mode ${f.mode} from ${JSON.stringify(mode)}`,
          );
        },
      ),
      opts(1500),
    );
  });
});

describe('fuzz: the agent channel on the host side', () => {
  test('LineSplitter: any chunking of short lines yields exactly the lines', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.string({ maxLength: 40 }).map((s) => s.replace(/\n/g, '')),
          { maxLength: 20 },
        ),
        fc.array(fc.nat({ max: 50 }), { maxLength: 30 }),
        (lines, cuts) => {
          const all = Buffer.from(lines.map((l) => `${l}\n`).join(''));
          const s = new LineSplitter(200);
          const got: string[] = [];
          let pos = 0;
          for (const c of [...cuts, all.length]) {
            const end = Math.min(all.length, pos + c);
            const r = s.push(all.subarray(pos, end));
            assert.equal(r.tooLong, false);
            got.push(...r.lines);
            pos = end;
          }
          assert.deepEqual(got, lines);
          assert.equal(s.pending, 0);
        },
      ),
      opts(),
    );
  });

  test('LineSplitter: never holds more than the cap, whatever the bytes', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (chunks) => {
        const s = new LineSplitter(100);
        for (const c of chunks) {
          const r = s.push(Buffer.from(c));
          for (const l of r.lines) assert.ok(Buffer.byteLength(l) <= 100 * 3);
          assert.ok(s.pending <= 100, `pending ${s.pending}`);
        }
      }),
      opts(),
    );
  });

  test('parseAgentLine: any line is a message or an Error, never something else', () => {
    const lineLike = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc
        .record(
          {
            id: fc.oneof(fc.integer(), fc.constant(null), fc.string()),
            ok: fc.oneof(fc.boolean(), fc.constant('true')),
            result: fc.jsonValue({ maxDepth: 2 }),
            error: fc.oneof(fc.string(), fc.integer()),
            event: fc.oneof(fc.constant('ready'), fc.string(), fc.integer()),
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v)),
    );
    fc.assert(
      fc.property(lineLike, (line) => {
        const r = outcome(() => parseAgentLine(line));
        if (r.ok) assert.ok(r.value.kind === 'response' || r.value.kind === 'event');
        else {
          assert.ok(r.error instanceof Error);
          assert.ok((r.error as Error).message.length < 200, 'the reason quotes a bounded prefix');
        }
      }),
      opts(3000),
    );
  });

  test('AgentClient: random bytes from the guest end in answers or one clean disconnect', async () => {
    const frame = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc
        .constantFrom(
          '{"id":1,"ok":true,"result":{"protocol":1}}\n',
          '{"id":1,"ok":false,"error":"x","code":"busy"}\n',
          '{"event":"ready","hostKeys":[],"readyAtMs":1,"sshPort":22}\n',
          '{"event":"ready"}\n',
          '{"id":null,"ok":false,"error":"garbage"}\n',
          '\n',
        )
        .map((s) => Buffer.from(s)),
      fc.nat({ max: 3 }).map((n) => Buffer.alloc(n * MAX_AGENT_LINE_BYTES, 0x61)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(frame, { maxLength: 12 }), async (frames) => {
        const guest = new PassThrough();
        const host = new PassThrough();
        // host writes go to `host`, guest bytes arrive on `guest`
        const stream = Object.assign(guest, {
          write: host.write.bind(host),
        }) as unknown as PassThrough;
        const client = AgentClient.fromStream(stream);
        const warnings: string[] = [];
        client.on('warning', (w) => warnings.push(w));
        let disconnects = 0;
        client.on('disconnect', () => disconnects++);
        const call = client.hello({ timeoutMs: 200 }).then(
          () => 'answered',
          (e: unknown) => {
            assert.ok(e instanceof BangerError, `a BangerError: ${String(e)}`);
            return 'failed';
          },
        );
        for (const f of frames) guest.write(f);
        await call;
        assert.ok(disconnects <= 1, 'at most one disconnect');
        client.close();
      }),
      opts(200),
    );
  });
});
