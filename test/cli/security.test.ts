import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { needs } from '../helpers/ci.js';
import { OWNER_TAG } from '../helpers/owner.js';
import { makeSandbox, runProcess, type Sandbox } from '../helpers/sandbox.js';

/**
 * The daemon's local security promises (issue 16), against a real daemon:
 * another local user cannot reach it or its state, user strings never meet a
 * shell, names cannot escape the managed directories, the SSH key is private
 * and never logged, and the daemon listens on nothing but its socket and a
 * loopback DNS port. VMs are created with --no-start (no network needed).
 */
const isRoot = process.getuid?.() === 0;
/** Shell syntax that would leave a file behind if any shell ever ran it. */
const EVIL = `odd $(touch PWNED1) ;touch PWNED2; \`touch PWNED3\` 'q" |&>x`;

/** The status, or 400 for a stream (200) that ended in an error event. */
function request(socketPath: string, method: string, p: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: p, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () =>
        resolve(
          res.statusCode === 200 && /\n?\{"type":"error".*\n$/.test(body)
            ? 400
            : (res.statusCode ?? 0),
        ),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describe('local security of the daemon', { timeout: 5 * 60_000 }, () => {
  let sb: Sandbox;
  let pid = 0;
  let imgDir = '';

  before(async () => {
    sb = await makeSandbox();
    // Only banger's own modes protect its files: the test's directories are open to all.
    fs.chmodSync(sb.root, 0o755);
    fs.chmodSync(sb.env.HOME!, 0o755);
    imgDir = path.join(sb.root, EVIL);
    fs.mkdirSync(imgDir);
    const rootfs = path.join(imgDir, 'rootfs $(touch PWNED4).ext4');
    fs.writeFileSync(rootfs, '');
    fs.truncateSync(rootfs, 16 * 1024 * 1024);
    execFileSync('mkfs.ext4', ['-q', '-F', rootfs]);
    fs.writeFileSync(path.join(imgDir, 'vmlinux;touch PWNED5'), 'not a kernel');
    const reg = await sb.run([
      'image',
      'register',
      '--name',
      'odd',
      '--rootfs',
      rootfs,
      '--kernel',
      path.join(imgDir, 'vmlinux;touch PWNED5'),
    ]);
    assert.equal(reg.code, 0, reg.stderr);
    const c = await sb.run(['vm', 'create', '--no-start', '--image', 'odd', '--name', 'sec']);
    assert.equal(c.code, 0, c.stderr);
    pid = (JSON.parse((await sb.run(['daemon', 'status', '--json'])).stdout) as { pid: number })
      .pid;
  });
  after(async () => {
    await sb.run(['daemon', 'stop']);
    await sb.cleanup();
  });

  test('paths with shell syntax reach the tools literally: no shell ran them', () => {
    const cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
    for (const dir of new Set([cwd, sb.root, imgDir, sb.env.HOME!, '/tmp', process.cwd()]))
      for (const n of [1, 2, 3, 4, 5])
        assert.equal(fs.existsSync(path.join(dir, `PWNED${n}`)), false, `PWNED${n} in ${dir}`);
  });

  test('names cannot leave the managed directories', async () => {
    const canary = path.join(sb.root, 'canary');
    fs.writeFileSync(canary, 'keep');
    for (const name of ['../canary', '..', 'a/b', '.', '-rf']) {
      const c = await sb.run(['vm', 'create', '--no-start', '--image', 'odd', '--name', name]);
      assert.equal(c.code, 2, `vm create --name ${name} is a usage error: ${c.stderr}`);
      const r = await sb.run(['image', 'register', '--name', name, '--rootfs', canary]);
      assert.notEqual(r.code, 0, `image register --name ${name} refused`);
    }
    const rel = path.relative(sb.paths.imagesDir, canary);
    for (const [method, p] of [
      ['DELETE', `/v1/images/${encodeURIComponent(rel)}`],
      ['DELETE', `/v1/kernels/${encodeURIComponent(rel)}`],
      ['DELETE', '/v1/images/..%2F..%2Fcanary'],
      ['GET', '/v1/vms/..%2F..%2Fcanary'],
      ['POST', '/v1/images/..%2Fcanary/promote'],
    ] as const) {
      const status = await request(sb.paths.socket, method, p);
      assert.ok(status >= 400 && status < 500, `${method} ${p} → ${status}`);
    }
    assert.equal(fs.readFileSync(canary, 'utf8'), 'keep');
    // every VM directory is a VM id under vms/
    for (const d of fs.readdirSync(sb.paths.vmsDir)) assert.match(d, /^[0-9a-f]{16}$/);
  });

  test('the SSH key is 0600 in a 0700 directory and never reaches a log', async () => {
    const key = sb.paths.sshKey;
    assert.equal(fs.statSync(key).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(key)).mode & 0o077, 0, 'key directory private');
    const body = fs
      .readFileSync(key, 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('-----'));
    assert.ok(body.length > 0);
    const logs = (await sb.run(['daemon', 'logs'])).stdout;
    const files = [sb.paths.log, sb.paths.daemonStderr].filter((f) => fs.existsSync(f));
    const texts = [logs, ...files.map((f) => fs.readFileSync(f, 'utf8'))];
    for (const vm of fs.readdirSync(sb.paths.vmsDir))
      for (const f of ['console.log', 'vmm.log'])
        if (fs.existsSync(path.join(sb.paths.vmsDir, vm, f)))
          texts.push(fs.readFileSync(path.join(sb.paths.vmsDir, vm, f), 'utf8'));
    for (const t of texts)
      for (const line of body) assert.ok(!t.includes(line), 'private key material in a log');
    assert.ok(logs.length > 0, 'the daemon log was read');
  });

  test('the daemon listens on its socket and a loopback DNS port, nothing else', () => {
    const inodes = new Set<string>();
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        // closed meanwhile
      }
    }
    const bound: string[] = [];
    for (const table of ['tcp', 'udp', 'tcp6', 'udp6']) {
      const lines = fs
        .readFileSync(`/proc/${pid}/net/${table}`, 'utf8')
        .trim()
        .split('\n')
        .slice(1);
      for (const l of lines) {
        const f = l.trim().split(/\s+/);
        // local address, state (0A = TCP LISTEN, 07 = UDP unconnected), inode
        if (!inodes.has(f[9]!)) continue;
        if (table.startsWith('tcp') && f[3] !== '0A') continue;
        bound.push(`${table} ${f[1]}`);
      }
    }
    assert.ok(bound.length >= 2, `the DNS listener is there (${bound.join(', ')})`);
    for (const b of bound)
      assert.match(b, /^(tcp|udp) [0-9A-F]{6}7F:[0-9A-F]{4}$/, `${b}: bound to 127.0.0.0/8 only`);
  });

  test('another local user cannot use the socket nor read the state', async (t) => {
    if (!needs(t, isRoot, 'needs root to add a user')) return;
    const user = `bgt${OWNER_TAG}${randomBytes(2).toString('hex')}`.slice(0, 30);
    const add = await runProcess('useradd', [
      '--system',
      '--no-create-home',
      '-s',
      '/bin/false',
      user,
    ]);
    assert.equal(add.code, 0, add.stderr);
    try {
      const probe = `
        const fs = require('fs'), net = require('net');
        const out = {};
        const tryIt = (k, f) => { try { f(); out[k] = 'ok'; } catch (e) { out[k] = e.code; } };
        tryIt('stateDir', () => fs.readdirSync(${JSON.stringify(sb.paths.stateDir)}));
        tryIt('db', () => fs.readFileSync(${JSON.stringify(sb.paths.db)}));
        tryIt('key', () => fs.readFileSync(${JSON.stringify(sb.paths.sshKey)}));
        tryIt('vmsDir', () => fs.readdirSync(${JSON.stringify(sb.paths.vmsDir)}));
        const s = net.connect(${JSON.stringify(sb.paths.socket)});
        s.on('connect', () => { out.socket = 'ok'; console.log(JSON.stringify(out)); s.destroy(); });
        s.on('error', (e) => { out.socket = e.code; console.log(JSON.stringify(out)); });
      `;
      const r = await runProcess('runuser', ['-u', user, '--', process.execPath, '-e', probe], {
        env: { PATH: process.env.PATH },
      });
      assert.equal(r.code, 0, r.stderr);
      const got = JSON.parse(r.stdout) as Record<string, string>;
      assert.deepEqual(got, {
        stateDir: 'EACCES',
        db: 'EACCES',
        key: 'EACCES',
        vmsDir: 'EACCES',
        socket: 'EACCES',
      });
    } finally {
      await runProcess('userdel', [user]);
    }
  });
});
