import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { processStartTime } from '../../src/util/proc.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';

/** stderr must be exactly one `error: ...` line, with no schema dump in it. */
function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0]!, /^error: /);
  assert.doesNotMatch(lines[0]!, /[[{]\s*"/, 'no JSON in the message');
  return lines[0]!;
}

describe('bad flags are refused with one line, before anything is created', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await makeSandbox();
  });
  after(async () => {
    await sb.cleanup();
  });

  const cases: [string[], string][] = [
    [
      ['vm', 'create', '--name', 'Bad_Name'],
      "error: invalid VM name 'Bad_Name': use 1-64 lowercase letters, digits or dashes",
    ],
    [
      ['vm', 'run', '--memory', '0', '--', 'true'],
      "error: invalid --memory '0': use at least 128M, e.g. 2G or 2048 (MiB)",
    ],
    [
      ['vm', 'create', '--memory', '64M'],
      "error: invalid --memory '64M': use at least 128M, e.g. 2G or 2048 (MiB)",
    ],
    [
      ['vm', 'create', '--vcpu', '999'],
      "error: invalid --vcpu '999': use a whole number from 1 to 64",
    ],
    [
      ['vm', 'create', '--vcpu', 'two'],
      "error: invalid --vcpu 'two': use a whole number from 1 to 64",
    ],
    [
      ['vm', 'create', '--disk-size', '1K'],
      "error: invalid --disk-size '1K': use at least 1G, e.g. 8G",
    ],
    [
      ['vm', 'set', 'x', '--disk-size', '512M'],
      "error: invalid --disk-size '512M': use at least 1G, e.g. 8G",
    ],
    [
      ['vm', 'set', 'x', '--auto-stop', 'soon'],
      "error: invalid --auto-stop 'soon': use a duration (e.g. 30m, 2h), never, or default",
    ],
    [
      ['vm', 'create', '--disk-size', 'huge'],
      "error: invalid --disk-size 'huge': use at least 1G, e.g. 8G",
    ],
    [['vm', 'fork', 'x', '-n', '0'], "error: invalid -n '0': use a whole number from 1 to 16"],
    [['vm', 'fork', 'x', '-n', 'two'], "error: invalid -n 'two': use a whole number from 1 to 16"],
  ];
  for (const [args, expected] of cases) {
    test(`banger ${args.join(' ')}`, async () => {
      const r = await sb.run(args);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(oneLine(r.stderr), expected);
    });
  }

  test('no daemon was started and no VM directory made for any of them', () => {
    assert.equal(sb.daemonPid(), undefined);
    assert.equal(fs.existsSync(path.join(sb.paths.stateDir, 'vms')), false);
  });
});

describe('schema errors in daemon answers are one line', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await makeSandbox();
  });
  after(async () => {
    await sb.cleanup();
  });

  test('a kernel name the daemon refuses names the value and the rule', async () => {
    const r = await sb.run(['kernel', 'delete', 'Bad/Name']);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      oneLine(r.stderr),
      "error: invalid name 'Bad/Name' in the path parameters of DELETE /v1/kernels/:name: must be 1-64 lowercase letters, digits, dots, dashes or underscores",
    );
  });
});

describe('vm restart --timeout', () => {
  let sb: Sandbox;
  let server: http.Server;
  const bodies: unknown[] = [];
  before(async () => {
    sb = await makeSandbox();
    // A stand-in daemon on the socket: records each request and answers like bangerd.
    fs.mkdirSync(sb.paths.runtimeDir, { recursive: true, mode: 0o700 });
    server = http.createServer((req, res) => {
      let raw = '';
      req.on('data', (c: Buffer) => (raw += c.toString()));
      req.on('end', () => {
        bodies.push({ path: req.url, body: JSON.parse(raw || '{}') as unknown });
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        const item = { ref: 'a', ok: true };
        res.end(
          `${JSON.stringify({ type: 'item', data: item })}\n` +
            `${JSON.stringify({ type: 'result', data: { results: [item] } })}\n`,
        );
      });
    });
    await new Promise<void>((resolve) => server.listen(sb.paths.socket, resolve));
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await sb.cleanup();
  });

  test('reaches the daemon as timeoutMs; the default is 30s', async () => {
    const r = await sb.run(['vm', 'restart', 'a', '--timeout', '7s']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'a: restarted\n');
    const d = await sb.run(['vm', 'restart', 'a']);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(bodies, [
      { path: '/v1/vms/actions/restart', body: { refs: ['a'], timeoutMs: 7000 } },
      { path: '/v1/vms/actions/restart', body: { refs: ['a'], timeoutMs: 30000 } },
    ]);
  });

  test('a bad duration is a usage error', async () => {
    const r = await sb.run(['vm', 'restart', 'a', '--timeout', 'soon']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(oneLine(r.stderr), /^error: .*soon.*: use e\.g\. --timeout 30s$/);
  });
});

describe('vm ssh passes the fate of ssh through', () => {
  let sb: Sandbox;
  let vmm: ChildProcess;
  const fakeBin = (): string => path.join(sb.root, 'fakebin');
  before(async () => {
    sb = await makeSandbox();
    assert.equal((await sb.run(['daemon', 'status'])).code, 0);
    // A "running" VM whose VMM is a sleeping process of ours (no guest, no network).
    vmm = spawn('sleep', ['600'], { stdio: 'ignore' });
    const db = new Database(sb.paths.db);
    db.prepare(
      "INSERT INTO images (id, name, source, rootfs_path, managed, meta, created_at, updated_at) VALUES ('img1', 'img', 'test', '/x', 0, '{}', '2026-01-01', '2026-01-01')",
    ).run();
    db.prepare(
      `INSERT INTO vms (id, name, image_id, state, vmm, vcpu, memory_mib, disk_size, nat, pid, pid_start_time, meta, created_at, updated_at)
       VALUES ('vm1', 'fake', 'img1', 'running', 'qemu', 1, 512, 1073741824, 0, ?, ?, '{}', '2026-01-01', '2026-01-01')`,
    ).run(vmm.pid, processStartTime(vmm.pid!));
    db.close();
    // ssh that dies of a signal (or exits with the code it is told).
    fs.mkdirSync(fakeBin());
    fs.writeFileSync(
      path.join(fakeBin(), 'ssh'),
      '#!/bin/sh\nfor a; do last=$a; done\ncase "$last" in sig-*) kill -s "${last#sig-}" $$ ;; *) exit "$last" ;; esac\n',
      { mode: 0o755 },
    );
  });
  after(async () => {
    vmm.kill('SIGKILL');
    await sb.cleanup();
  });

  const ssh = (...cmd: string[]) =>
    sb.run(['vm', 'ssh', 'fake', '--', ...cmd], {
      env: { PATH: `${fakeBin()}:${process.env.PATH}` },
    });

  test('killed by a signal: 128 + its number', async () => {
    assert.equal((await ssh('sig-TERM')).code, 143);
    assert.equal((await ssh('sig-HUP')).code, 129);
    assert.equal((await ssh('sig-USR1')).code, 138);
  });

  test('an exit status is passed through as it is', async () => {
    assert.equal((await ssh('3')).code, 3);
    assert.equal((await ssh('0')).code, 0);
  });
});
