import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BangerError } from '../../src/errors.js';
import { AgentClient } from '../../src/guest/agentClient.js';
import {
  AGENT_OPS,
  AGENT_VIRTIO_PORT_NAME,
  type ReadyEvent,
} from '../../src/guest/agentProtocol.js';
import { ed25519HostKey, type Ed25519HostKey } from '../../src/guest/hostKey.js';
import { which } from '../../src/util/exec.js';
import { needs } from '../helpers/ci.js';
import { opensshCheckInt, opensshEd25519PrivateKey } from '../helpers/opensshKey.js';

/**
 * The real guest agent binary (scripts/build-agent.sh) against a fixture root
 * (fake /proc/net/tcp etc.) over Unix sockets, driven by the real AgentClient
 * or by raw lines. Every process started here is stopped by pid; every file
 * lives under one temp dir that is removed at the end.
 */

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-agent-test-'));
let agentBin: string | undefined;
let buildError = '';
const children = new Set<ChildProcess>();

const haveCompiler = Boolean(process.env.CC || which('musl-gcc') || which('gcc'));

before(() => {
  if (process.env.BANGER_AGENT_BIN) {
    agentBin = process.env.BANGER_AGENT_BIN;
    return;
  }
  if (!haveCompiler) return;
  const out = path.join(tmp, 'bin');
  const r = spawnSync('bash', [path.join(REPO_ROOT, 'scripts/build-agent.sh'), out], {
    encoding: 'utf8',
    env: { ...process.env, AGENT_WERROR: '1' },
  });
  if (r.status === 0) agentBin = path.join(out, 'banger-agent');
  else
    buildError = (r.stderr || r.stdout || 'build failed').trim().split('\n').slice(-6).join('\n');
});

/**
 * Whether the agent binary is there to test. A build that fails (with
 * warnings as errors) fails every test, here and in CI; only a host without a
 * C compiler skips them, and not in CI.
 */
function agentBuilt(t: TestContext): boolean {
  if (buildError)
    throw new Error(`the guest agent does not build (AGENT_WERROR=1):\n${buildError}`);
  return needs(
    t,
    Boolean(agentBin),
    'no C compiler for the guest agent: install musl-tools or gcc',
  );
}

after(async () => {
  for (const c of children) await stopChild(c);
  fs.rmSync(tmp, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode === null && c.signalCode === null) {
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await Promise.race([gone, sleep(2000)]);
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  children.delete(c);
}

// ---------- fixture root ----------

const hex4 = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');
const TCP_HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const UDP_HEADER =
  '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops';
// Addresses as the kernel prints them on x86: each 32-bit word in host (little-endian) order.
const V4_ANY = '00000000';
const V4_LOOP = '0100007F';
const V4_GUEST = '0200000A'; // 10.0.0.2
const V4_HOST = '0100000A'; // 10.0.0.1
const V6_ANY = '0'.repeat(32);
const V6_LOOP = '000000000000000000000000' + '01000000';

function sockLine(
  sl: number,
  local: string,
  lport: number,
  rem: string,
  rport: number,
  st: string,
  inode: number,
): string {
  return `${String(sl).padStart(4)}: ${local}:${hex4(lport)} ${rem}:${hex4(rport)} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 100 0 0 10 0`;
}

function tcpTable(sshListening: boolean): string {
  const lines = [
    TCP_HEADER,
    sockLine(0, V4_LOOP, 5432, V4_ANY, 0, '0A', 1002),
    // an outgoing connection *to* port 22 elsewhere must not count as sshd
    sockLine(1, V4_GUEST, 40000, V4_HOST, 22, '01', 0),
    // an ssh session into the guest (established, local port 22)
    sockLine(3, V4_GUEST, 22, V4_HOST, 51000, '01', 1010),
    // one that is closing does not count
    sockLine(4, V4_GUEST, 22, V4_HOST, 51001, '06', 0),
  ];
  if (sshListening) lines.push(sockLine(2, V4_ANY, 22, V4_ANY, 0, '0A', 1001));
  return lines.join('\n') + '\n';
}

interface Fixture {
  root: string;
  setSshListening(on: boolean): void;
}

function makeFixture(name: string, opts: { sshListening?: boolean } = {}): Fixture {
  const root = path.join(tmp, name);
  const w = (rel: string, content: string): void => {
    const p = path.join(root, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    // write then rename, as the kernel's files never appear half-written
    fs.writeFileSync(`${p}.tmp`, content);
    fs.renameSync(`${p}.tmp`, p);
  };
  w('proc/sys/kernel/hostname', 'fixture-vm\n');
  w('proc/sys/kernel/random/boot_id', '0f7c6a2e-1111-4222-8333-944455556666\n');
  w('proc/loadavg', '0.42 0.30 0.10 1/99 1234\n');
  w(
    'proc/meminfo',
    'MemTotal:        2000000 kB\nMemFree:         1500000 kB\nMemAvailable:    1800000 kB\nBuffers: 1 kB\n',
  );
  w(
    'proc/stat',
    'cpu  100 1 50 1000 5 0 2 3 0 0\ncpu0 50 1 25 500 2 0 1 1 0 0\ncpu1 50 0 25 500 3 0 1 2 0 0\n' +
      `intr ${'0 '.repeat(3000)}\nctxt 12345\nbtime 1700000000\n`,
  );
  w('proc/net/tcp', tcpTable(opts.sshListening ?? false));
  w(
    'proc/net/tcp6',
    [
      TCP_HEADER,
      sockLine(0, V6_ANY, 8080, V6_ANY, 0, '0A', 1003),
      sockLine(1, V6_LOOP, 631, V6_ANY, 0, '0A', 1004),
      // an ssh session over IPv6
      sockLine(2, V6_LOOP, 22, V6_LOOP, 52000, '01', 1011),
    ].join('\n') + '\n',
  );
  w(
    'proc/net/udp',
    [
      UDP_HEADER,
      sockLine(0, V4_ANY, 68, V4_ANY, 0, '07', 1005),
      // a connected UDP socket is not a listener
      sockLine(1, V4_GUEST, 50000, V4_HOST, 53, '01', 1006),
    ].join('\n') + '\n',
  );
  w('proc/net/udp6', UDP_HEADER + '\n');
  const proc = (pid: number, comm: string, fds: Record<string, number>): void => {
    w(`proc/${pid}/comm`, `${comm}\n`);
    for (const [fd, inode] of Object.entries(fds)) {
      fs.symlinkSync(`socket:[${inode}]`, path.join(root, `proc/${pid}/fd/${fd}`));
    }
  };
  fs.mkdirSync(path.join(root, 'proc/500/fd'), { recursive: true });
  fs.mkdirSync(path.join(root, 'proc/600/fd'), { recursive: true });
  fs.mkdirSync(path.join(root, 'proc/700/fd'), { recursive: true });
  fs.mkdirSync(path.join(root, 'proc/800/fd'), { recursive: true });
  proc(500, 'sshd', { '3': 1001 });
  proc(600, 'postgres', { '5': 1002, '6': 9999 });
  proc(700, 'node', { '20': 1003 });
  proc(800, 'dhclient', { '4': 1005 });
  // cmdline: NUL-separated arguments (sshd's has none: pid 500 gets no cmdline file)
  w('proc/600/cmdline', '/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/pg\0');
  // 159 bytes, then "€" (3 bytes): the cut at 160 bytes must drop the partial "€"
  w('proc/700/cmdline', `node\0${'x'.repeat(150)}\0a\tb€\0`);
  w('proc/800/cmdline', 'dhclient\0-v\0eth0\0\0');
  fs.symlinkSync('/dev/null', path.join(root, 'proc/800/fd/0'));
  w(
    'etc/ssh/ssh_host_ed25519_key.pub',
    'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEd25519FixtureKey root@fixture\n',
  );
  w(
    'etc/ssh/ssh_host_ecdsa_key.pub',
    'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAFixture root@fixture\n',
  );
  w('etc/ssh/ssh_host_ed25519_key', '-----BEGIN OPENSSH PRIVATE KEY----- (not a public key)\n');
  w('etc/ssh/sshd_config', 'PermitRootLogin prohibit-password\n');
  fs.mkdirSync(path.join(root, 'root'), { recursive: true });
  fs.mkdirSync(path.join(root, 'run/systemd/system'), { recursive: true });
  return { root, setSshListening: (on) => w('proc/net/tcp', tcpTable(on)) };
}

// ---------- running the agent ----------

interface Agent {
  proc: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

async function startAgent(args: string[], waitStarted = true): Promise<Agent> {
  const proc = spawn(agentBin!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let log = '';
  proc.stdout!.on('data', (c: Buffer) => (log += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  const agent = { proc, log: () => log, stop: () => stopChild(proc) };
  if (waitStarted)
    await until('banger-agent: started', () => log.includes('banger-agent: started'));
  return agent;
}

let seq = 0;
const sockPath = (): string => path.join(tmp, `s${++seq}.sock`);

/** A raw line-level connection, for what the typed client never sends. */
async function rawConn(
  p: string,
): Promise<{ send(s: string): void; next(): Promise<Record<string, unknown>>; close(): void }> {
  const sock = net.connect({ path: p });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  let buf = '';
  const lines: string[] = [];
  sock.on('data', (c: Buffer) => {
    buf += c.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  return {
    send: (s) => sock.write(s),
    next: async () => {
      await until('a line from the agent', () => lines.length > 0);
      return JSON.parse(lines.shift()!) as Record<string, unknown>;
    },
    close: () => sock.destroy(),
  };
}

describe('guest agent binary', () => {
  test('builds as a static binary', (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const size = fs.statSync(agentBin).size;
    assert.ok(size > 10_000 && size < 2_000_000, `size ${size}`);
    const v = spawnSync(agentBin, ['--version'], { encoding: 'utf8' });
    assert.equal(v.status, 0);
    assert.match(v.stdout, /^banger-agent \S+ \(protocol 1\)/);
    const bad = spawnSync(agentBin, ['--bogus'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown option '--bogus'/);
  });

  test("the OpenSSH release read from sshd's binary: the release string, not compat patterns, across chunk ends", (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-sshver-'));
    const release = (parts: (string | Buffer)[]): string => {
      const f = path.join(dir, 'sshd');
      fs.writeFileSync(
        f,
        Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p))),
      );
      const r = spawnSync(agentBin!, ['--openssh-release', f], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.trim();
    };
    const pad = (n: number): Buffer => Buffer.alloc(n, 0x41);
    try {
      assert.equal(
        release([pad(100), 'OpenSSH_7.4*\0OpenSSH_6.6.1*\0', pad(10), 'OpenSSH_9.2p1 Debian\0']),
        '902',
      );
      assert.equal(release(['OpenSSH_9.8\0']), '908');
      assert.equal(release(['OpenSSH_10.0 \0']), '1000');
      // the only release string straddles the agent's 64 KiB read
      assert.equal(release([pad(65536 - 5), 'OpenSSH_8.9p1\0', pad(1000)]), '809');
      assert.equal(release([pad(70_000), 'OpenSSH_7.4*', 'OpenSSH_']), '-1');
      assert.equal(release([]), '-1');
      const gone = spawnSync(agentBin!, ['--openssh-release', path.join(dir, 'nope')], {
        encoding: 'utf8',
      });
      assert.equal(gone.stdout.trim(), '-1');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('hello, stats, sync and the startup line', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('hello');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    assert.match(
      agent.log(),
      /banger-agent: started \(.*transport unix listen .*power actions disabled\)/,
    );
    const client = AgentClient.unix(p, { label: 'vm test' });
    try {
      const h = await client.hello();
      assert.equal(h.protocol, 1);
      assert.equal(h.hostname, 'fixture-vm');
      assert.equal(h.bootId, '0f7c6a2e-1111-4222-8333-944455556666');
      assert.equal(h.ready, false);
      assert.equal(h.transport, 'unix');
      assert.deepEqual(h.ops, [...AGENT_OPS]);
      assert.ok(h.uptimeMs > 0);

      const s = await client.stats();
      assert.equal(s.load1, 0.42);
      assert.equal(s.memTotalKib, 2_000_000);
      assert.equal(s.memAvailableKib, 1_800_000);
      assert.equal(s.memFreeKib, 1_500_000);
      assert.equal(s.cpus, 2);
      assert.deepEqual(s.cpuTicks, {
        user: 100,
        nice: 1,
        system: 50,
        idle: 1000,
        iowait: 5,
        irq: 0,
        softirq: 2,
        steal: 3,
        guest: 0,
        guestNice: 0,
      });
      assert.ok(s.clockTicksPerSec > 0);
      assert.deepEqual(
        s.disks.map((d) => d.mount),
        ['/', '/root'],
      );
      assert.equal(s.sshSessions, 2);
      for (const d of s.disks)
        assert.ok(d.totalBytes > 0 && d.freeBytes <= d.totalBytes && d.availBytes <= d.freeBytes);

      assert.deepEqual(await client.sync(), {});
    } finally {
      client.close();
      await agent.stop();
    }
    assert.match(agent.log(), /banger-agent: stopping/);
    assert.equal(fs.existsSync(p), false, 'the listening socket is removed on SIGTERM');
  });

  test("grow-fs: measures banger's mounts and grows nothing on a Unix-socket transport", async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('growfs');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const client = AgentClient.unix(p, { label: 'vm test' });
    try {
      const r = await client.request('grow-fs', {});
      assert.equal(r.dryRun, true);
      assert.deepEqual(
        r.filesystems.map((f) => [f.mount, f.mounted]),
        [
          ['/root', false],
          ['/run/banger/overlay', false],
        ],
      );
      // the fixture's /root is a plain directory: not a mount, said so
      assert.match(r.filesystems[0]!.error ?? '', /^no ext4 filesystem is mounted on \/root$/);
      assert.match(r.filesystems[1]!.error ?? '', /^cannot open \/run\/banger\/overlay: /);
    } finally {
      client.close();
      await agent.stop();
    }
    assert.doesNotMatch(
      agent.log(),
      /grew|grow-fs/,
      'no growth at start on a Unix-socket transport',
    );
  });

  test('ports: tcp, tcp6 and udp listeners with their processes', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('ports', { sshListening: true });
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const client = AgentClient.unix(p);
    try {
      const r = await client.ports();
      assert.equal(r.truncated, false);
      assert.deepEqual(r.ports, [
        { proto: 'tcp', address: '0.0.0.0', port: 22, pid: 500, process: 'sshd', cmdline: null },
        {
          proto: 'tcp',
          address: '127.0.0.1',
          port: 5432,
          pid: 600,
          process: 'postgres',
          cmdline: '/usr/lib/postgresql/15/bin/postgres -D /var/lib/pg',
        },
        { proto: 'tcp6', address: '::1', port: 631, pid: null, process: null, cmdline: null },
        {
          proto: 'tcp6',
          address: '::',
          port: 8080,
          pid: 700,
          process: 'node',
          // NULs and the tab become spaces; the cut keeps whole characters only
          cmdline: `node ${'x'.repeat(150)} a b`,
        },
        {
          proto: 'udp',
          address: '0.0.0.0',
          port: 68,
          pid: 800,
          process: 'dhclient',
          cmdline: 'dhclient -v eth0',
        },
      ]);
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test('ports: 1024 listeners with long escaped command lines fit one answer under 64 KiB, marked truncated', async (t) => {
    if (!agentBuilt(t)) return;
    const fx = makeFixture('manyports');
    const lines = [TCP_HEADER];
    for (let i = 0; i < 1024; i++)
      lines.push(sockLine(i, V4_ANY, 10000 + i, V4_ANY, 0, '0A', 50000 + i));
    fs.writeFileSync(path.join(fx.root, 'proc/net/tcp'), lines.join('\n') + '\n');
    const fd = path.join(fx.root, 'proc/900/fd');
    fs.mkdirSync(fd, { recursive: true });
    fs.writeFileSync(path.join(fx.root, 'proc/900/comm'), 'server\n');
    // every byte of the command line needs escaping in JSON: the worst case per entry
    fs.writeFileSync(path.join(fx.root, 'proc/900/cmdline'), '"\\'.repeat(100));
    for (let i = 0; i < 1024; i++)
      fs.symlinkSync(`socket:[${50000 + i}]`, path.join(fd, String(i + 3)));
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    // the client drops the channel on a line over 64 KiB, so an answer at all proves the cap
    const client = AgentClient.unix(p);
    try {
      const r = await client.ports();
      assert.equal(r.truncated, true);
      assert.ok(r.ports.length >= 100, `only ${r.ports.length} entries`);
      assert.ok(r.ports.length < 1024);
      assert.equal(r.ports[0]!.cmdline!.length, 160);
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test('wait-ready answers when sshd starts listening, serving other requests meanwhile', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('ready');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const client = AgentClient.unix(p);
    const events: ReadyEvent[] = [];
    client.on('ready', (e) => events.push(e));
    try {
      await client.connect();
      let settled = false;
      const waiting = client.waitReady({ timeoutMs: 10_000 }).finally(() => (settled = true));
      // a second waiter on another connection
      const other = AgentClient.unix(p);
      const waiting2 = other.waitReady({ timeoutMs: 10_000 });
      await sleep(300);
      assert.equal(settled, false);
      // the agent keeps answering while the waiters are parked
      const [h, ports, stats] = await Promise.all([client.hello(), client.ports(), client.stats()]);
      assert.equal(h.ready, false);
      assert.equal(ports.ports.length, 4);
      assert.equal(stats.cpus, 2);
      assert.equal(settled, false);

      const before = Date.now();
      fx.setSshListening(true);
      const r = await waiting;
      assert.ok(Date.now() - before < 2000, 'answered soon after the flip');
      assert.deepEqual(r.hostKeys, [
        'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAFixture root@fixture',
        'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEd25519FixtureKey root@fixture',
      ]);
      assert.equal(r.sshPort, 22);
      assert.ok(r.readyAtMs > 0);
      assert.deepEqual(await waiting2, r);
      other.close();

      await until('the ready event', () => events.length === 1);
      assert.deepEqual(events[0], { event: 'ready', ...r });
      assert.match(agent.log(), /banger-agent: sshd ready after \d+ ms/);

      // once ready, later calls answer at once with the same first-seen time
      assert.deepEqual(await client.waitReady({ timeoutMs: 1000 }), r);
      assert.equal((await client.hello()).ready, true);
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test('wait-ready times out in the agent with a clear error', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('notready');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const client = AgentClient.unix(p, { label: 'vm slow' });
    try {
      const err = await client.waitReady({ timeoutMs: 300 }).then(
        () => assert.fail('resolved'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof BangerError);
      assert.equal(err.code, 'timeout');
      assert.match(err.message, /^vm slow: sshd is not listening on port 22 after \d+ ms$/);
      // the connection is still usable
      assert.equal((await client.hello()).ready, false);
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test('bad requests get one-line errors and the agent keeps serving', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('bad');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const c = await rawConn(p);
    try {
      c.send('{"id":1,"op":"frobnicate"}\n');
      assert.deepEqual(await c.next(), {
        id: 1,
        ok: false,
        code: 'unknown_op',
        error:
          'unknown op "frobnicate" (known: hello, wait-ready, ports, stats, sync, poweroff, reboot, set-time, set-identity, grow-fs)',
      });
      c.send('this is not json\n');
      const bad = await c.next();
      assert.equal(bad.id, null);
      assert.equal(bad.code, 'bad_request');
      assert.match(String(bad.error), /^invalid JSON at byte 0/);
      c.send(
        '{"id":2}\n{"op":"hello"}\n{"id":3,"op":"hello","nested":{"a":1}}\n{"id":-1,"op":"hello"}\n',
      );
      assert.match(String((await c.next()).error), /missing or invalid "op"/);
      assert.match(String((await c.next()).error), /missing or invalid "id"/);
      const nested = await c.next();
      assert.equal(nested.id, 3, 'the id is salvaged from a line that fails to parse');
      assert.match(String(nested.error), /nested objects and arrays are not supported/);
      assert.match(String((await c.next()).error), /missing or invalid "id"/);
      c.send('{"id":4,"op":"wait-ready","timeoutMs":"soon"}\n');
      assert.match(String((await c.next()).error), /"timeoutMs" must be a non-negative number/);

      // over 64 KiB: one error (with the id, found at the start), then business as usual
      c.send(`{"id":5,"op":"hello","pad":"${'x'.repeat(70_000)}"}\n{"id":6,"op":"hello"}\n`);
      const big = await c.next();
      assert.equal(big.id, 5);
      assert.equal(big.code, 'too_large');
      assert.match(String(big.error), /request too large/);
      const after = await c.next();
      assert.equal(after.id, 6);
      assert.equal(after.ok, true);

      // blank lines (the host's resync) and CRLF are fine; strings may be escaped
      c.send('\n\r\n  {"id":7,"op":"\\u0068ello"}\r\n');
      assert.equal((await c.next()).id, 7);
    } finally {
      c.close();
      await agent.stop();
    }
  });

  test('poweroff and reboot answer first and are dry runs on Unix sockets', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('power');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const client = AgentClient.unix(p);
    try {
      assert.deepEqual(await client.poweroff(), {
        action: 'poweroff',
        method: 'systemctl',
        dryRun: true,
      });
      await until('the dry-run log line', () =>
        agent.log().includes('poweroff requested by the host (dry run'),
      );
      fs.rmSync(path.join(fx.root, 'run/systemd'), { recursive: true });
      assert.deepEqual(await client.reboot(), {
        action: 'reboot',
        method: 'reboot(2)',
        dryRun: true,
      });
      await until('the dry-run log line', () =>
        agent.log().includes('reboot requested by the host (dry run'),
      );
      assert.equal(agent.proc.exitCode, null, 'still running');
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test('set-time reports the step to the host clock; on a Unix socket it is a dry run', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('settime');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const client = AgentClient.unix(p);
    try {
      const ahead = await client.request('set-time', { unixMs: Date.now() + 60_000 });
      assert.equal(ahead.dryRun, true);
      assert.ok(
        ahead.stepMs > 59_000 && ahead.stepMs <= 60_000,
        `a clock 60 s behind steps ~60000 ms (got ${ahead.stepMs})`,
      );
      const now = await client.setTime();
      assert.ok(Math.abs(now.stepMs) < 1000, `the host's own time steps ~0 ms (got ${now.stepMs})`);
      const raw = await rawConn(p);
      raw.send('{"id":9,"op":"set-time","unixMs":1.5}\n');
      assert.deepEqual(await raw.next(), {
        id: 9,
        ok: false,
        code: 'bad_request',
        error: 'missing or invalid "unixMs": expected a positive integer',
      });
      raw.close();
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test('set-identity: machine-id, hostname, hosts and a new host key; a dry run of the kernel parts on Unix sockets', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('identity');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const client = AgentClient.unix(p);
    const ident = (hostname: string, machineId: string) => ({
      hostname,
      machineId,
      iface: 'eth0',
      mac: '52:54:00:12:34:56',
      ip: '172.30.0.7',
      prefix: 24,
      gateway: '172.30.0.1',
      entropy: 'ab'.repeat(64),
      timeMs: 1_760_000_000_000,
    });
    const keyFile = path.join(fx.root, 'etc/ssh/ssh_host_ed25519_key');
    try {
      const r1 = await client.setIdentity(ident('fork-1', '0123456789abcdef0123456789abcdef'));
      assert.equal(r1.dryRun, true);
      assert.equal(r1.hostname, 'fork-1');
      assert.equal(
        fs.readFileSync(path.join(fx.root, 'etc/machine-id'), 'utf8'),
        '0123456789abcdef0123456789abcdef\n',
      );
      assert.equal(fs.readFileSync(path.join(fx.root, 'etc/hostname'), 'utf8'), 'fork-1\n');
      assert.equal(
        fs.readFileSync(path.join(fx.root, 'etc/hosts'), 'utf8'),
        '127.0.0.1\tlocalhost\n127.0.1.1\tfork-1\n::1\tlocalhost ip6-localhost ip6-loopback\n',
      );
      const ed1 = r1.hostKeys.find((k) => k.startsWith('ssh-ed25519 '));
      assert.ok(ed1, `an ed25519 key in ${JSON.stringify(r1.hostKeys)}`);
      assert.notEqual(ed1, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEd25519FixtureKey root@fixture');
      // the answered key is the public half of the private key now on disk
      const derived = spawnSync('ssh-keygen', ['-y', '-f', keyFile], { encoding: 'utf8' });
      assert.equal(derived.status, 0, derived.stderr);
      assert.equal(
        derived.stdout.trim().split(' ').slice(0, 2).join(' '),
        ed1.split(' ').slice(0, 2).join(' '),
      );
      assert.equal(fs.existsSync(`${keyFile}.new`), false);

      const r2 = await client.setIdentity(ident('fork-2', 'fedcba9876543210fedcba9876543210'));
      const ed2 = r2.hostKeys.find((k) => k.startsWith('ssh-ed25519 '));
      assert.ok(ed2);
      assert.notEqual(ed2, ed1, 'each identity gets its own key');
      assert.equal(fs.readFileSync(path.join(fx.root, 'etc/hostname'), 'utf8'), 'fork-2\n');

      const raw = await rawConn(p);
      raw.send(
        `${JSON.stringify({ id: 9, op: 'set-identity', ...ident('fork-3', 'f'.repeat(32)), mac: 'zz' })}\n`,
      );
      assert.deepEqual(await raw.next(), {
        id: 9,
        ok: false,
        error: 'invalid "mac"',
        code: 'bad_request',
      });
      raw.close();
      assert.equal(fs.readFileSync(path.join(fx.root, 'etc/hostname'), 'utf8'), 'fork-2\n');
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test("set-identity with the host's ed25519 key: written in OpenSSH's format as it is (no ssh-keygen for it); other types the image has are still regenerated", async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('identity-hostkey');
    const sshDir = path.join(fx.root, 'etc/ssh');
    // an image with an ecdsa key too: that one is still made by ssh-keygen
    fs.writeFileSync(path.join(sshDir, 'ssh_host_ecdsa_key'), 'old ecdsa key\n', { mode: 0o600 });
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const client = AgentClient.unix(p);
    const ident = (key: Ed25519HostKey) => ({
      hostname: 'fork-k',
      machineId: '0123456789abcdef0123456789abcdef',
      iface: 'eth0',
      mac: '52:54:00:12:34:56',
      ip: '172.30.0.7',
      prefix: 24,
      gateway: '172.30.0.1',
      entropy: 'ab'.repeat(64),
      hostKeySeed: key.seedHex,
      hostKeyPublic: key.publicHex,
    });
    const keyFile = path.join(sshDir, 'ssh_host_ed25519_key');
    const ecdsaPub = path.join(sshDir, 'ssh_host_ecdsa_key.pub');
    const oldEcdsa = fs.readFileSync(ecdsaPub, 'utf8');
    try {
      const key = ed25519HostKey();
      const r = await client.setIdentity(ident(key));
      assert.equal(r.dryRun, true);
      assert.equal(r.hostname, 'fork-k');
      assert.equal(r.hostKeys.filter((k) => k.startsWith('ssh-ed25519 ')).length, 1);
      assert.ok(r.hostKeys.includes(key.publicLine), JSON.stringify(r.hostKeys));

      // byte for byte the openssh-key-v1 file of that seed (the check ints are the agent's)
      const text = fs.readFileSync(keyFile, 'utf8');
      const seed = Buffer.from(key.seedHex, 'hex');
      const pub = Buffer.from(key.publicHex, 'hex');
      assert.equal(text, opensshEd25519PrivateKey(seed, pub, opensshCheckInt(text)));
      assert.equal(fs.statSync(keyFile).mode & 0o777, 0o600);
      assert.equal(fs.readFileSync(`${keyFile}.pub`, 'utf8'), `${key.publicLine}\n`);
      assert.equal(fs.statSync(`${keyFile}.pub`).mode & 0o777, 0o644);
      assert.equal(fs.existsSync(`${keyFile}.new`), false);
      assert.equal(fs.existsSync(`${keyFile}.new.pub`), false);
      // the real ssh-keygen accepts the file and derives exactly the line answered
      const derived = spawnSync('ssh-keygen', ['-y', '-f', keyFile], { encoding: 'utf8' });
      assert.equal(derived.status, 0, derived.stderr);
      assert.equal(derived.stdout, `${key.publicLine}\n`);

      // ecdsa: a new key from ssh-keygen, answered too
      const ecdsa = r.hostKeys.find((k) => k.startsWith('ecdsa-sha2-nistp256 '));
      assert.ok(ecdsa, JSON.stringify(r.hostKeys));
      assert.notEqual(`${ecdsa}\n`, oldEcdsa);
      const ecdsaDerived = spawnSync(
        'ssh-keygen',
        ['-y', '-f', path.join(sshDir, 'ssh_host_ecdsa_key')],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(ecdsaDerived.status, 0, ecdsaDerived.stderr);
      assert.equal(
        ecdsaDerived.stdout.trim().split(' ').slice(0, 2).join(' '),
        ecdsa.split(' ').slice(0, 2).join(' '),
      );

      // a second identity: the new key replaces the first
      const key2 = ed25519HostKey();
      const r2 = await client.setIdentity(ident(key2));
      assert.ok(r2.hostKeys.includes(key2.publicLine));
      assert.ok(!r2.hostKeys.includes(key.publicLine));

      // both or neither, 64 hex characters each; a refused request changes nothing
      const raw = await rawConn(p);
      const line = (over: Record<string, unknown>) =>
        `${JSON.stringify({ id: 9, op: 'set-identity', ...ident(key), hostname: 'fork-x', timeMs: 1_760_000_000_000, ...over })}\n`;
      for (const [over, field] of [
        [{ hostKeySeed: 'ab'.repeat(31) }, 'hostKeySeed'],
        [{ hostKeySeed: 'zz'.repeat(32) }, 'hostKeySeed'],
        [{ hostKeySeed: 7 }, 'hostKeySeed'],
        [{ hostKeyPublic: 'ab'.repeat(33) }, 'hostKeyPublic'],
        [{ hostKeySeed: undefined }, 'hostKeySeed'],
        [{ hostKeyPublic: undefined }, 'hostKeyPublic'],
      ] as const) {
        raw.send(line(over));
        assert.deepEqual(await raw.next(), {
          id: 9,
          ok: false,
          error: `invalid "${field}"`,
          code: 'bad_request',
        });
      }
      raw.close();
      assert.equal(fs.readFileSync(path.join(fx.root, 'etc/hostname'), 'utf8'), 'fork-k\n');
      assert.equal(fs.readFileSync(`${keyFile}.pub`, 'utf8'), `${key2.publicLine}\n`);
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test('serves several host connections at once', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('multi');
    const p = sockPath();
    const agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
    const clients = Array.from({ length: 5 }, () => AgentClient.unix(p));
    try {
      const hellos = await Promise.all(clients.flatMap((c) => [c.hello(), c.hello(), c.hello()]));
      assert.equal(hellos.length, 15);
      // a client that goes away with a parked waiter does not disturb the others
      const gone = await rawConn(p);
      gone.send('{"id":1,"op":"wait-ready"}\n');
      await sleep(100);
      gone.close();
      assert.equal((await clients[0]!.hello()).hostname, 'fixture-vm');
    } finally {
      for (const c of clients) c.close();
      await agent.stop();
    }
  });

  test('client: dials until the agent listens, and reconnects after the agent restarts', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('redial');
    const p = sockPath();
    const client = AgentClient.unix(p, { label: 'vm redial' });
    let disconnects = 0;
    client.on('disconnect', () => disconnects++);
    let agent: Agent | undefined;
    try {
      const connecting = client.connect({ timeoutMs: 10_000 });
      await sleep(300); // nothing listens yet: ENOENT, retried
      agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
      await connecting;
      assert.equal((await client.hello()).hostname, 'fixture-vm');

      await agent.stop();
      await until('the disconnect', () => disconnects === 1);
      assert.equal(client.connected, false);
      const pending = client.hello({ timeoutMs: 10_000 }); // dials again once the agent is back
      await sleep(200);
      agent = await startAgent(['--root', fx.root, '--listen-unix', p]);
      assert.equal((await pending).hostname, 'fixture-vm');
    } finally {
      client.close();
      await agent?.stop();
    }
  });

  test('--connect-unix: the agent reconnects when the host drops the connection', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    const fx = makeFixture('connect');
    const p = sockPath();
    const accepted: net.Socket[] = [];
    const server = net.createServer((s) => accepted.push(s));
    await new Promise<void>((r) => server.listen(p, r));
    const agent = await startAgent(['--root', fx.root, '--connect-unix', p]);
    try {
      await until('the first connection', () => accepted.length === 1);
      const first = AgentClient.fromStream(accepted[0]!, { label: 'vm dial' });
      assert.equal((await first.hello()).transport, 'unix');
      // a partial line from this host must not leak into the next session
      accepted[0]!.write('{"id":99,"op":"hel');
      await sleep(50);
      accepted[0]!.destroy();
      await until('the agent to dial again', () => accepted.length === 2, 5000);
      const second = AgentClient.fromStream(accepted[1]!);
      assert.equal((await second.hello()).hostname, 'fixture-vm');
      assert.match(agent.log(), /connection to .* closed; reconnecting/);
      // the first client cannot reconnect by itself: it says so
      const err = await first.hello().catch((e: unknown) => e);
      assert.ok(err instanceof BangerError);
      assert.equal(err.code, 'vmm_failed');
      assert.match(err.message, /^vm dial: guest agent channel is closed$/);
      second.close();
    } finally {
      await agent.stop();
      for (const s of accepted) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  test('virtio-serial: finds the port by name in sysfs and does not spin while the host is away', async (t) => {
    if (!agentBuilt(t) || !agentBin) return;
    if (!needs(t, spawnSync('socat', ['-V']).status === 0, 'socat is not installed')) return;
    const fx = makeFixture('serial');
    // sysfs as the kernel shows a virtio port; the device node is a pty that socat
    // bridges to a Unix socket (a pty hangs up like a port with no host attached)
    fs.mkdirSync(path.join(fx.root, 'sys/class/virtio-ports/vport0p1'), { recursive: true });
    fs.mkdirSync(path.join(fx.root, 'sys/class/virtio-ports/vport0p2'), { recursive: true });
    fs.writeFileSync(
      path.join(fx.root, 'sys/class/virtio-ports/vport0p1/name'),
      'org.qemu.guest_agent.0\n',
    );
    fs.writeFileSync(
      path.join(fx.root, 'sys/class/virtio-ports/vport0p2/name'),
      `${AGENT_VIRTIO_PORT_NAME}\n`,
    );
    fs.mkdirSync(path.join(fx.root, 'dev'));
    const host = sockPath();
    const startSocat = (): ChildProcess => {
      const s = spawn(
        'socat',
        [`PTY,link=${path.join(fx.root, 'dev/vport0p2')},raw,echo=0`, `UNIX-LISTEN:${host}`],
        { stdio: 'ignore' },
      );
      children.add(s);
      return s;
    };
    const socat = startSocat();
    await until(
      'the pty link',
      () => fs.existsSync(path.join(fx.root, 'dev/vport0p2')) && fs.existsSync(host),
    );
    const agent = await startAgent(['--root', fx.root, '--transport', 'virtio-serial']);
    try {
      await until('the serial transport', () => agent.log().includes('vport0p2'));
      assert.match(agent.log(), /started \(.*transport virtio-serial .*\/dev\/vport0p2/);
      const client = AgentClient.unix(host, { label: 'vm serial' });
      const h = await client.hello();
      assert.equal(h.transport, 'virtio-serial');
      client.close();
      // socat exits with its one client; the pty hangs up, as a port does when QEMU's socket has no client
      await until('socat to exit', () => socat.exitCode !== null || socat.signalCode !== null);
      children.delete(socat);
      const cpu0 = cpuTicks(agent.proc.pid!);
      await sleep(1500);
      const used = cpuTicks(agent.proc.pid!) - cpu0;
      assert.ok(used < 30, `agent used ${used} ticks in 1.5 s while the host was away`);
      assert.equal(agent.proc.exitCode, null);
    } finally {
      await agent.stop();
      await stopChild(socat);
    }
  });
});

function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
}
