import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isAlive, makeSandbox, REPO_ROOT, sleep, type Sandbox } from '../helpers/sandbox.js';

describe('bangerd lifecycle through the CLI', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await makeSandbox();
  });
  after(async () => {
    await sb.cleanup();
  });

  test('daemon status auto-starts a detached daemon and reports it', async () => {
    assert.equal(fs.existsSync(sb.paths.socket), false);
    const r = await sb.run(['daemon', 'status']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /bangerd is running/);
    const pid = sb.daemonPid();
    assert.ok(pid && isAlive(pid), 'daemon pid alive');
    assert.match(r.stdout, new RegExp(`pid:\\s+${pid}`));
    assert.match(
      r.stdout,
      new RegExp(`socket:\\s+${sb.paths.socket.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
    );
    assert.match(r.stdout, /log:\s+.*bangerd\.log \(level info\)/);
    assert.match(r.stdout, /dns:\s+127\.0\.0\.1:\d+ \(listening, udp\+tcp, 0 names\)/);
    assert.match(r.stdout, /vmm:\s+(qemu|firecracker) \(auto/);
    // detached: its own session, not our child
    const stat = fs
      .readFileSync(`/proc/${pid}/stat`, 'utf8')
      .slice(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').lastIndexOf(')') + 2)
      .split(' ');
    assert.equal(stat[3], String(pid), 'daemon is a session leader (setsid)');
    // permissions
    assert.equal(fs.statSync(sb.paths.runtimeDir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(sb.paths.socket).mode & 0o777, 0o600);
  });

  test('daemon status --json has the documented fields', async () => {
    const r = await sb.run(['daemon', 'status', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as Record<string, unknown>;
    for (const k of [
      'pid',
      'socket',
      'logPath',
      'version',
      'build',
      'dnsListen',
      'vmm',
      'counts',
      'apiVersion',
    ]) {
      assert.ok(k in s, `missing ${k}`);
    }
    assert.equal(s.pid, sb.daemonPid());
    assert.equal(s.apiVersion, 'v1');
  });

  test('the log is JSON lines with level and message', async () => {
    const lines = fs.readFileSync(sb.paths.log, 'utf8').trim().split('\n');
    const parsed = lines.map((l) => JSON.parse(l) as { level: number; msg: string; time: string });
    assert.ok(parsed.some((l) => l.msg === 'bangerd started'));
    assert.ok(parsed.every((l) => typeof l.level === 'number' && typeof l.time === 'string'));
    const r = await sb.run(['daemon', 'logs', '-n', '1']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim().split('\n').length, 1);
    JSON.parse(r.stdout);
  });

  test('daemon logs -f streams new lines', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(
      process.execPath,
      [path.join(REPO_ROOT, 'bin/banger'), 'daemon', 'logs', '-f', '-n', '0'],
      { env: sb.env },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    await sleep(700);
    fs.appendFileSync(sb.paths.log, '{"level":30,"msg":"marker-line"}\n');
    const deadline = Date.now() + 5000;
    while (!out.includes('marker-line') && Date.now() < deadline) await sleep(100);
    child.kill('SIGINT');
    assert.match(out, /marker-line/);
  });

  test('daemon socket prints the path', async () => {
    const r = await sb.run(['daemon', 'socket']);
    assert.equal(r.stdout.trim(), sb.paths.socket);
  });

  test('a second daemon refuses to start while one runs', async () => {
    const { runProcess } = await import('../helpers/sandbox.js');
    const r = await runProcess(process.execPath, [path.join(REPO_ROOT, 'bin/bangerd')], {
      env: sb.env,
    });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /another bangerd already runs .*pid \d+/);
    const s = await sb.run(['daemon', 'status', '--json']);
    assert.equal((JSON.parse(s.stdout) as { pid: number }).pid, sb.daemonPid());
  });

  test('a crashed daemon (kill -9) leaves a stale socket that the next start replaces', async () => {
    const pid = sb.daemonPid()!;
    process.kill(pid, 'SIGKILL');
    while (isAlive(pid)) await sleep(20);
    assert.ok(fs.existsSync(sb.paths.socket), 'stale socket left behind');
    const r = await sb.run(['daemon', 'status', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { pid: number };
    assert.notEqual(s.pid, pid);
    assert.ok(isAlive(s.pid));
  });

  test('daemon stop is graceful and leaves nothing behind', async () => {
    const pid = sb.daemonPid()!;
    const r = await sb.run(['daemon', 'stop']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`bangerd stopped \\(pid ${pid}\\)`));
    assert.equal(isAlive(pid), false);
    assert.equal(fs.existsSync(sb.paths.socket), false, 'socket removed');
    assert.equal(fs.existsSync(`${sb.paths.lock}.pid`), false, 'pid file removed');
    const again = await sb.run(['daemon', 'stop']);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /not running/);
  });
});

describe('many clients at once', () => {
  test('50 parallel `daemon status` calls start exactly one daemon and all succeed', async () => {
    const sb = await makeSandbox();
    try {
      const results = await Promise.all(
        Array.from({ length: 50 }, () =>
          sb.run(['daemon', 'status', '--json'], { timeoutMs: 120_000 }),
        ),
      );
      const failures = results.filter((r) => r.code !== 0);
      assert.equal(failures.length, 0, failures.map((f) => f.stderr).join('\n'));
      const pids = new Set(results.map((r) => (JSON.parse(r.stdout) as { pid: number }).pid));
      assert.equal(pids.size, 1, `one daemon, got pids ${[...pids].join(',')}`);
    } finally {
      await sb.cleanup();
    }
  });
});

describe('version handshake', () => {
  test('a CLI of another build replaces an idle daemon', async () => {
    const sb = await makeSandbox();
    // A copy of the build with a different identity, sharing node_modules.
    const other = fs.mkdtempSync(path.join(REPO_ROOT, '.test-build-'));
    try {
      fs.cpSync(path.join(REPO_ROOT, 'dist'), path.join(other, 'dist'), { recursive: true });
      fs.cpSync(path.join(REPO_ROOT, 'bin'), path.join(other, 'bin'), { recursive: true });
      fs.copyFileSync(path.join(REPO_ROOT, 'package.json'), path.join(other, 'package.json'));
      fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(other, 'node_modules'));
      fs.writeFileSync(path.join(other, 'dist', 'build-info.json'), '{"build":"otherbuild"}\n');

      const first = JSON.parse((await sb.run(['daemon', 'status', '--json'])).stdout) as {
        pid: number;
        build: string;
      };
      const r = await sb.run(['daemon', 'status', '--json'], {
        cli: path.join(other, 'bin', 'banger'),
      });
      assert.equal(r.code, 0, r.stderr);
      const second = JSON.parse(r.stdout) as { pid: number; build: string };
      assert.notEqual(second.pid, first.pid, 'daemon replaced');
      assert.match(second.build, /otherbuild$/);
      assert.equal(isAlive(first.pid), false, 'old daemon gone');
    } finally {
      await sb.cleanup();
      fs.rmSync(other, { recursive: true, force: true });
    }
  });
});

describe('an untrusted runtime directory', () => {
  test('a runtime dir pre-created by another user is refused by the CLI and bangerd, starting nothing', async () => {
    const sb = await makeSandbox();
    try {
      const run = sb.paths.runtimeDir;
      fs.mkdirSync(run, { mode: 0o700 });
      fs.chownSync(run, 65534, 65534);
      const r = await sb.run(['daemon', 'status']);
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr,
        `error: refusing runtime dir ${run}: it belongs to uid 65534, not to you (uid 0): remove it if you did not create it, or set BANGER_RUNTIME_DIR to a directory of your own\n`,
      );
      const { runProcess } = await import('../helpers/sandbox.js');
      const d = await runProcess(process.execPath, [path.join(REPO_ROOT, 'bin/bangerd')], {
        env: sb.env,
      });
      assert.notEqual(d.code, 0);
      assert.match(d.stderr, /refusing runtime dir .*belongs to uid 65534/);
      assert.deepEqual(fs.readdirSync(run), [], 'no socket, lock or pid file was made');
      assert.equal(sb.daemonPid(), undefined);
    } finally {
      await sb.cleanup();
    }
  });

  test('a symlinked runtime dir and a group-writable one are refused; a file in place of the socket too', async () => {
    const sb = await makeSandbox();
    try {
      const run = sb.paths.runtimeDir;
      const elsewhere = path.join(sb.root, 'elsewhere');
      fs.mkdirSync(elsewhere, { mode: 0o700 });
      fs.symlinkSync(elsewhere, run);
      let r = await sb.run(['vm', 'list']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error: refusing runtime dir .*: it is a symbolic link: /);
      fs.rmSync(run);
      fs.mkdirSync(run);
      fs.chmodSync(run, 0o770);
      r = await sb.run(['vm', 'list']);
      assert.match(
        r.stderr,
        /^error: refusing runtime dir .*: mode 770 lets other users write to it: chmod 700 /,
      );
      fs.chmodSync(run, 0o700);
      fs.writeFileSync(sb.paths.socket, '');
      r = await sb.run(['vm', 'list']);
      assert.match(r.stderr, /^error: refusing .*bangerd\.sock: it is not a socket of yours/);
      assert.equal(sb.daemonPid(), undefined);
    } finally {
      await sb.cleanup();
    }
  });
});
