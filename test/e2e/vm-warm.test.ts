import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { needs } from '../helpers/ci.js';
import { makeFixtureRepo } from '../helpers/gitFixture.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';

/**
 * Warm start on real QEMU microVMs (TCG here), in a network namespace made by
 * the test: the first `vm run` of a shape boots and keeps a boot snapshot;
 * the next ones are restored from it as new machines (hostname, host key
 * checked by ssh against the managed known_hosts, machine-id, address), with
 * their [[file_sync]] file and a workspace (`vm run PATH`) written after the
 * restore; `--cold` boots.
 */

interface Snapshot {
  name: string;
  kind: string;
  sourceVm: string;
  dir: string;
}

/** What each VM prints about itself. */
const IDENTITY =
  'echo host=$(hostname); echo mid=$(cat /etc/machine-id); echo key=$(cut -d" " -f2 /etc/ssh/ssh_host_ed25519_key.pub); echo ip=$(ip -4 -o addr show dev eth0 | awk \'{print $4}\'); echo sync=$(cat /root/warm-sync.txt 2>&1)';

const parse = (out: string): Record<string, string> =>
  Object.fromEntries(
    out
      .split('\n')
      .map((l) => /^(\w+)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  );

describe('warm start (qemu, real VMs)', { timeout: 30 * 60_000 }, () => {
  let env: VmEnv | undefined;
  let dir = '';

  before(async () => {
    if (!isRoot()) return;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-warm-e2e-'));
    const synced = path.join(dir, 'sync.txt');
    fs.writeFileSync(synced, 'synced-from-host\n');
    env = await vmEnv('warm', {
      config: [
        'vmm = "qemu"',
        'warm_start = true',
        '[vm_defaults]',
        'vcpu = 1',
        'memory_mib = 512',
        '[[file_sync]]',
        `host = "${synced}"`,
        'guest = "~/warm-sync.txt"',
        '',
      ].join('\n'),
    });
  });
  after(async () => {
    if (env) await env.run(['snapshot', 'prune']).catch(() => undefined);
    await env?.cleanup();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const e = (): VmEnv => env!;
  const boots = async (): Promise<Snapshot[]> =>
    (await e().json<Snapshot[]>(['snapshot', 'list'])).filter((s) => s.kind === 'boot');

  test('the first vm run boots and keeps a boot snapshot; the next are restored as new machines with their file_sync files; --cold boots', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    // 1. cold: the first VM of the shape; it stays up so the next one cannot reuse its address
    const src = e().name('wsrc');
    const r1 = await e().run(['vm', 'run', '--name', src, '--', IDENTITY]);
    assert.equal(r1.code, 0, r1.stderr);
    assert.match(r1.stderr, /^spec: .* start=cold$/m);
    const a = parse(r1.stdout);
    assert.equal(a.host, src);
    assert.equal(a.sync, 'synced-from-host', 'file_sync written after the snapshot');
    const [boot, ...more] = await boots();
    assert.ok(boot, 'a boot snapshot was kept');
    assert.deepEqual(more, []);
    assert.equal(boot.sourceVm, src);
    assert.match(boot.name, /^boot-[0-9a-f]{16}$/);
    const srcShow = await e().json<{ start: string }>(['vm', 'show', src]);
    assert.equal(srcShow.start, `cold (kept boot snapshot ${boot.name})`);

    // 2. warm: restored, a new machine, its file_sync file there
    const warm = e().name('wwarm');
    const r2 = await e().run(['vm', 'run', '--rm', '--name', warm, '--', IDENTITY]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stderr, /^spec: .* start=warm$/m);
    assert.doesNotMatch(r2.stderr, /warm start .* failed/);
    const b = parse(r2.stdout);
    assert.equal(b.host, warm);
    assert.notEqual(b.mid, a.mid);
    assert.notEqual(b.key, a.key, 'new SSH host keys (ssh checked them against known_hosts)');
    assert.notEqual(b.ip, a.ip);
    assert.equal(b.sync, 'synced-from-host');
    const d = await e().run(['vm', 'delete', '--force', src]);
    assert.equal(d.code, 0, d.stderr);

    // 3. the everyday case, warm again
    const r3 = await e().run(['vm', 'run', '--rm', '--', 'true']);
    assert.equal(r3.code, 0, r3.stderr);
    assert.match(r3.stderr, /^spec: .* start=warm$/m);

    // 3b. workspace mode, warm: the checkout goes over ssh after the restore, git state intact
    const repo = path.join(dir, 'repo');
    fs.mkdirSync(repo);
    makeFixtureRepo(repo, dir);
    const ws = await e().run([
      'vm',
      'run',
      '--rm',
      repo,
      '--',
      'sh',
      '-c',
      'git status --porcelain; cat /root/warm-sync.txt',
    ]);
    assert.equal(ws.code, 0, ws.stderr);
    assert.match(ws.stderr, /^spec: .* start=warm$/m);
    assert.equal(
      ws.stdout,
      ' D deleted.txt\n M modified.txt\nM  staged.txt\n?? untracked.txt\nsynced-from-host\n',
    );

    // 4. --cold boots, keeps nothing new
    const r4 = await e().run(['vm', 'run', '--rm', '--cold', '--', 'cat /root/warm-sync.txt']);
    assert.equal(r4.code, 0, r4.stderr);
    assert.match(r4.stderr, /^spec: .* start=cold$/m);
    assert.equal(r4.stdout.trim(), 'synced-from-host');
    assert.equal((await boots()).length, 1);

    // 5. prune: the boot snapshot and its files go, and it says what that freed
    const p = await e().run(['snapshot', 'prune']);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, new RegExp(`^removed 1 boot snapshot \\(${boot.name}\\), freed \\d`));
    assert.deepEqual(await boots(), []);
    assert.ok(!fs.existsSync(boot.dir));
  });
});
