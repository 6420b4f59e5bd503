import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isRoot, needs, vmEnv, type VmEnv } from '../helpers/e2e.js';
import {
  gitIn,
  makeFixtureRepo,
  makeSubmoduleRepo,
  NON_ASCII_NAME,
} from '../helpers/gitFixture.js';

/**
 * Workspace mode on real VMs (QEMU TCG here), in a network namespace made by
 * the test: `vm run PATH`, `vm workspace prepare`, `ssh-config` and
 * `[[file_sync]]`, end to end. Three boots in all: the first VM stays up for
 * the checks that need a running VM.
 */

const SEP = '=====SEP=====';

/** [[file_sync]]: `~` on both sides, mode 0755, a whole directory, a host path that is missing. */
const FILE_SYNC = `
[[file_sync]]
host = "~/fs/tool.sh"
guest = "~/bin/tool.sh"
mode = "0755"

[[file_sync]]
host = "~/fs/dir"
guest = "/root/synced-dir"

[[file_sync]]
host = "~/fs/missing"
guest = "~/missing"
`;

describe('workspace mode (real VMs)', { timeout: 30 * 60_000 }, () => {
  let env: VmEnv | undefined;
  let tmp = '';
  let home = '';
  let repo = '';
  let vm = '';

  before(async () => {
    if (!isRoot()) return;
    env = await vmEnv('ws', { config: FILE_SYNC });
    home = env.sb.env.HOME!;
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-ws-'));
    repo = path.join(tmp, 'proj');
    makeFixtureRepo(repo, home);
    fs.mkdirSync(path.join(home, 'fs', 'dir', 'b'), { recursive: true });
    fs.writeFileSync(path.join(home, 'fs', 'tool.sh'), '#!/bin/sh\necho tool\n', { mode: 0o600 });
    fs.writeFileSync(path.join(home, 'fs', 'dir', 'a.txt'), 'a\n', { mode: 0o644 });
    fs.writeFileSync(path.join(home, 'fs', 'dir', 'b', 'c.sh'), 'c\n', { mode: 0o750 });
  });
  after(async () => {
    await env?.cleanup();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const e = (): VmEnv => env!;
  const host = (dir: string, ...args: string[]): string => gitIn(dir, home, args);
  const names = async (): Promise<string[]> =>
    (await e().json<{ name: string }[]>(['vm', 'list'])).map((v) => v.name);

  test('vm run PATH: the guest copy has the host git state; the exit status, file_sync and tooling', async (t) => {
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    vm = e().name('ws');
    const script = [
      'git status --porcelain',
      `echo ${SEP}`,
      'git log -1',
      `echo ${SEP}`,
      'git diff',
      `echo ${SEP}`,
      'git diff --cached',
      `echo ${SEP}`,
      'pwd',
      'stat -c "%a %F" run.sh link',
      'readlink link',
      `cat '${NON_ASCII_NAME}'`,
      'ls ignored.log build 2>&1 | wc -l',
      'stat -c "%a %U" ~/bin/tool.sh /root/synced-dir/a.txt /root/synced-dir/b/c.sh',
      'test -e ~/missing && echo missing-exists || echo no-missing',
      'test -f /root/.cache/banger/vm-run-tooling-proj.log && echo tooling-log',
      'exit 7',
    ].join('\n');
    const r = await e().run(['vm', 'run', '--name', vm, repo, '--', 'sh', '-c', script]);
    assert.equal(r.code, 7, r.stderr);
    const [status, log, diff, cached, rest] = r.stdout.split(`${SEP}\n`);
    assert.equal(status, host(repo, 'status', '--porcelain'), 'git status --porcelain');
    assert.equal(status, ' D deleted.txt\n M modified.txt\nM  staged.txt\n?? untracked.txt\n');
    assert.equal(log, host(repo, 'log', '-1'), 'git log -1');
    assert.equal(diff, host(repo, 'diff'), 'git diff');
    assert.equal(cached, host(repo, 'diff', '--cached'), 'git diff --cached');
    assert.deepEqual(rest!.trim().split('\n'), [
      '/root/repo',
      '755 regular file',
      '777 symbolic link',
      'tracked.txt',
      'space and é',
      '2', // ls: both "No such file" lines: nothing ignored was copied
      '755 root',
      '644 root',
      '750 root',
      'no-missing',
      'tooling-log',
    ]);
    assert.match(
      r.stderr,
      /\[\[file_sync\]\] entry 3: \S+\/fs\/missing does not exist on the host: skipped/,
    );
    assert.match(
      r.stderr,
      /mise install runs in the background, log in \/root\/\.cache\/banger\/vm-run-tooling-proj\.log/,
    );
    assert.ok((await names()).includes(vm), 'without --rm the VM stays');
  });

  test('vm run PATH --branch --from: the branch at that commit, started in the subdirectory', async (t) => {
    if (!needs(t, isRoot(), 'needs root')) return;
    const r = await e().run([
      'vm',
      'run',
      '--rm',
      '--name',
      e().name('br'),
      path.join(repo, 'sub'),
      '--branch',
      'feat',
      '--from',
      'HEAD~1',
      '--',
      'sh -c "pwd; git branch --show-current; git rev-parse HEAD; cat ../tracked.txt"',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      '/root/repo/sub',
      'feat',
      host(repo, 'rev-parse', 'HEAD~1').trim(),
      'tracked',
    ]);
  });

  test('vm run PATH without a command: an interactive shell in the matching subdirectory, its exit status', async (t) => {
    if (!needs(t, isRoot(), 'needs root')) return;
    // A real terminal (script(1) gives the CLI a pty): what a user typing into the shell sees.
    const r = await e().sb.run(
      ['vm', 'run', '--rm', '--name', e().name('sh'), path.join(repo, 'sub')],
      {
        wrap: ['ip', 'netns', 'exec', e().ns, 'sh', '-c', 'exec script -qec "$*" /dev/null', 'sh'],
        input: 'echo "in:$(pwd):$(git rev-parse --show-prefix)"\nexit 5\n',
        timeoutMs: 5 * 60_000,
      },
    );
    assert.equal(r.code, 5, r.stdout + r.stderr);
    assert.match(r.stdout, /in:\/root\/repo\/sub:sub\/\r?$/m, r.stdout);
  });

  test('bad input is refused before any VM is made: an unknown --from, a submodule without full_copy', async (t) => {
    if (!needs(t, isRoot(), 'needs root')) return;
    const before = await names();
    const bad = await e().run([
      'vm',
      'run',
      repo,
      '--branch',
      'x',
      '--from',
      'no-such-ref',
      '--',
      'true',
    ]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: no commit 'no-such-ref' in \S+proj: /m);
    const sup = makeSubmoduleRepo(path.join(tmp, 'sm'), home);
    const sub = await e().run(['vm', 'run', sup, '--', 'true']);
    assert.equal(sub.code, 1);
    assert.match(sub.stderr, /has submodules \(lib\).*--mode full_copy/);
    assert.deepEqual(await names(), before, 'no VM was created');
  });

  test('vm run --mode full_copy copies a repository with a submodule', async (t) => {
    if (!needs(t, isRoot(), 'needs root')) return;
    const sup = path.join(tmp, 'sm', 'super');
    const r = await e().run([
      'vm',
      'run',
      '--rm',
      '--name',
      e().name('full'),
      '--mode',
      'full_copy',
      sup,
      '--',
      `sh -c 'git status --porcelain; echo ${SEP}; cat lib/lib.txt; git -C lib rev-parse HEAD; git log --format=%s'`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const [status, rest] = r.stdout.split(`${SEP}\n`);
    assert.equal(status, host(sup, 'status', '--porcelain'));
    assert.equal(status, ' M app.txt\n');
    assert.deepEqual(rest!.trim().split('\n'), [
      'library',
      host(path.join(sup, 'lib'), 'rev-parse', 'HEAD').trim(),
      'with a submodule',
    ]);
  });

  test('vm workspace prepare: copy, update (host deletions disappear), --readonly', async (t) => {
    if (!needs(t, isRoot(), 'needs root')) return;
    const data = path.join(tmp, 'data');
    fs.mkdirSync(path.join(data, 'nested'), { recursive: true });
    fs.writeFileSync(path.join(data, 'keep.txt'), 'keep\n');
    fs.writeFileSync(path.join(data, 'nested', 'gone.txt'), 'gone\n');
    const ssh = (cmd: string) => e().run(['vm', 'ssh', vm, '--', cmd]);

    const first = await e().run([
      'vm',
      'workspace',
      'prepare',
      vm,
      data,
      '--guest-path',
      '/root/data',
    ]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /is not in a git repository: copying it as a plain directory/);
    assert.match(first.stdout, /\/root\/data: 2 files .* copied, 0 unchanged, 0 removed/);
    let ls = await ssh('cd /root/data && find . -type f | sort && touch made-in-guest.txt');
    assert.equal(ls.stdout, './keep.txt\n./nested/gone.txt\n', ls.stderr);

    fs.rmSync(path.join(data, 'nested', 'gone.txt'));
    const second = await e().run([
      'vm',
      'workspace',
      'prepare',
      vm,
      data,
      '--guest-path',
      '/root/data',
      '--readonly',
    ]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /0 files .* copied, 1 unchanged, 1 removed, read-only/);
    ls = await ssh(
      'cd /root/data && find . -type f | sort; touch x 2>&1 | grep -c "Read-only file system"',
    );
    assert.equal(
      ls.stdout,
      './keep.txt\n./made-in-guest.txt\n1\n',
      "gone.txt removed, the guest's own file kept, read-only",
    );

    // The copy `vm run` wrote onto the disk updates the same way: a file deleted on the host goes.
    fs.rmSync(path.join(repo, 'untracked.txt'));
    try {
      const upd = await e().run(['vm', 'workspace', 'prepare', vm, repo]);
      assert.equal(upd.code, 0, upd.stderr);
      assert.match(upd.stdout, /\/root\/repo: .* 1 removed$/m);
      const st = await ssh('cd /root/repo && git status --porcelain');
      assert.equal(st.stdout, host(repo, 'status', '--porcelain'));
      assert.doesNotMatch(st.stdout, /untracked\.txt/);
    } finally {
      fs.writeFileSync(path.join(repo, 'untracked.txt'), 'untracked\n');
    }

    // A git checkout into the running VM: the same state as on the host, over the tar path.
    const third = await e().run([
      'vm',
      'workspace',
      'prepare',
      vm,
      repo,
      '--guest-path',
      '/root/again',
    ]);
    assert.equal(third.code, 0, third.stderr);
    const st = await ssh('cd /root/again && git status --porcelain && git diff');
    assert.equal(st.stdout, host(repo, 'status', '--porcelain') + host(repo, 'diff'));
  });

  test('ssh-config: --install then --uninstall leaves ~/.ssh/config byte-identical; plain ssh NAME.vm works', async (t) => {
    if (!needs(t, isRoot(), 'needs root')) return;
    const sshDir = path.join(home, '.ssh');
    const userConfig = path.join(sshDir, 'config');
    fs.mkdirSync(sshDir, { recursive: true, mode: 0o700 });
    const original = "Host example\n  HostName example.invalid\n\n# the user's own line\n";
    fs.writeFileSync(userConfig, original, { mode: 0o600 });

    const printed = await e().run(['ssh-config']);
    assert.equal(printed.code, 0, printed.stderr);
    assert.equal(printed.stdout, `Include ${e().sb.paths.sshConfig}\n`);

    const inst = await e().run(['ssh-config', '--install']);
    assert.equal(inst.code, 0, inst.stderr);
    const installed = fs.readFileSync(userConfig, 'utf8');
    assert.ok(
      installed.startsWith(`# >>> banger ssh-config >>>\nInclude ${e().sb.paths.sshConfig}\n`),
      installed,
    );
    assert.ok(installed.endsWith(original));
    const again = await e().run(['ssh-config', '--install']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(
      fs.readFileSync(userConfig, 'utf8'),
      installed,
      'installing twice changes nothing',
    );

    const generated = fs.readFileSync(e().sb.paths.sshConfig, 'utf8');
    const view = await e().json<{ ip: string }>(['vm', 'show', vm]);
    assert.match(
      generated,
      new RegExp(
        `^Host ${vm}\\.vm\\n  HostName ${view.ip.replace(/\./g, '\\.')}\\n  User root\\n`,
        'm',
      ),
    );

    // OpenSSH reads the config of the passwd home (/root here), not $HOME: show it this test's home.
    const plain = await e().sh([
      'unshare',
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      `mount --bind "$0" /root && ssh -o BatchMode=yes ${vm}.vm 'echo plain-ssh-ok'`,
      home,
    ]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, 'plain-ssh-ok\n');

    const un = await e().run(['ssh-config', '--uninstall']);
    assert.equal(un.code, 0, un.stderr);
    assert.equal(fs.readFileSync(userConfig, 'utf8'), original, 'byte-identical after --uninstall');
  });

  test('the generated ssh_config follows the VM list: a deleted VM disappears from it', async (t) => {
    if (!needs(t, isRoot(), 'needs root')) return;
    const del = await e().run(['vm', 'delete', '--force', vm]);
    assert.equal(del.code, 0, del.stderr);
    const deadline = Date.now() + 5000;
    let text = fs.readFileSync(e().sb.paths.sshConfig, 'utf8');
    while (text.includes(`Host ${vm}.vm`) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      text = fs.readFileSync(e().sb.paths.sshConfig, 'utf8');
    }
    assert.doesNotMatch(text, new RegExp(`Host ${vm}\\.vm`));
  });
});
