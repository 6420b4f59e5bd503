import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isRoot, needs } from '../helpers/e2e.js';
import { makeFixtureRepo, makeSubmoduleRepo } from '../helpers/gitFixture.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';

/**
 * Workspace mode and ssh-config through the real CLI and daemon, where no VM
 * is needed: bad input is refused before anything is created, and
 * ~/.ssh/config is edited only inside banger's block.
 */
describe('workspace and ssh-config without VMs', () => {
  let sb: Sandbox;
  let home = '';
  let repo = '';
  before(async () => {
    sb = await makeSandbox();
    home = sb.env.HOME!;
    repo = path.join(sb.root, 'proj');
    makeFixtureRepo(repo, home);
  });
  after(async () => {
    await sb.cleanup();
  });

  const vmCount = async (): Promise<number> => {
    const r = await sb.run(['vm', 'list', '--json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as unknown[]).length;
  };

  test('vm run PATH refuses bad input with one line, and creates no VM', async () => {
    const cases: [string[], number, RegExp][] = [
      [
        ['vm', 'run', repo, '--branch', 'b', '--from', 'nope', '--', 'true'],
        1,
        /^error: no commit 'nope' in .*proj: pass a branch, tag or commit/,
      ],
      [['vm', 'run', repo, '--from', 'HEAD', '--', 'true'], 2, /^error: --from needs --branch: /],
      [
        ['vm', 'run', '--branch', 'b', '--', 'true'],
        2,
        /^error: --branch needs a PATH to copy: e\.g\. banger vm run \. --branch feat$/m,
      ],
      [
        ['vm', 'run', '--mode', 'full_copy', '--', 'true'],
        2,
        /^error: --mode needs a PATH to copy: e\.g\. banger vm run \. --mode full_copy$/m,
      ],
      [
        ['vm', 'run', repo, '--mode', 'deep', '--', 'true'],
        2,
        /^error: invalid --mode 'deep': use shallow or full_copy/,
      ],
      [
        ['vm', 'run', repo, '--branch', 'bad..name', '--', 'true'],
        2,
        /^error: 'bad\.\.name' is not a valid branch name/,
      ],
      [
        ['vm', 'run', path.join(repo, 'run.sh'), '--', 'true'],
        2,
        /^error: \S+run\.sh is not a directory: /,
      ],
      [
        ['vm', 'run', path.join(sb.root, 'nowhere'), '--', 'true'],
        1,
        /^error: \S+nowhere does not exist: /,
      ],
    ];
    for (const [args, code, re] of cases) {
      const r = await sb.run(args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
    const sup = makeSubmoduleRepo(path.join(sb.root, 'sm'), home);
    const r = await sb.run(['vm', 'run', sup, '--', 'true']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^error: \S+super has submodules \(lib\), which the default shallow copy cannot carry: copy the whole repository with --mode full_copy\n$/,
    );
    assert.equal(await vmCount(), 0, 'nothing was created');
  });

  test('ssh-config prints the Include line; --install/--uninstall edit only the block', async () => {
    const printed = await sb.run(['ssh-config']);
    assert.equal(printed.code, 0, printed.stderr);
    assert.equal(printed.stdout, `Include ${sb.paths.sshConfig}\n`);
    assert.match(printed.stderr, /banger ssh-config --install/);

    const cfg = path.join(home, '.ssh', 'config');
    fs.mkdirSync(path.dirname(cfg), { recursive: true, mode: 0o700 });
    const original = 'Host example\n  User me\n\n# mine\n';
    fs.writeFileSync(cfg, original);
    const inst = await sb.run(['ssh-config', '--install']);
    assert.equal(inst.code, 0, inst.stderr);
    assert.equal(
      fs.readFileSync(cfg, 'utf8'),
      `# >>> banger ssh-config >>>\nInclude ${sb.paths.sshConfig}\n# <<< banger ssh-config <<<\n\n${original}`,
    );
    assert.ok(fs.existsSync(sb.paths.sshConfig), 'the daemon wrote the included file');
    const un = await sb.run(['ssh-config', '--uninstall']);
    assert.equal(un.code, 0, un.stderr);
    assert.equal(fs.readFileSync(cfg, 'utf8'), original);
  });

  test('ssh-config --install refuses a config that is a symlink into a read-only place', async (t) => {
    if (!needs(t, isRoot(), 'needs root to mount a read-only file system')) return;
    const ro = path.join(sb.root, 'ro');
    const cfg = path.join(home, '.ssh', 'config');
    fs.mkdirSync(ro);
    fs.rmSync(cfg, { force: true });
    fs.symlinkSync(path.join(ro, 'ssh_config'), cfg);
    const r = await sb.run(['ssh-config', '--install'], {
      wrap: [
        'unshare',
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        'mount -t tmpfs tmpfs "$0" && echo "Host a" > "$0/ssh_config" && mount -o remount,ro "$0" && exec "$@"',
        ro,
      ],
    });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^error: \S+\/\.ssh\/config is a symlink to \S+\/ro\/ssh_config, which is read-only: add the line 'Include \S+ssh_config' at the top/,
    );
    fs.rmSync(cfg);
  });
});
