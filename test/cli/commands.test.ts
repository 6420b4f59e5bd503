import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { makeSandbox, runProcess, CLI, type Sandbox } from '../helpers/sandbox.js';

describe('command tree and exit codes', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await makeSandbox();
  });
  after(async () => {
    await sb.cleanup();
  });

  test('--help shows every command group of the spec', async () => {
    const r = await sb.run(['--help']);
    assert.equal(r.code, 0);
    for (const g of [
      'vm',
      'image',
      'kernel',
      'snapshot',
      'doctor',
      'daemon',
      'ssh-config',
      'completion',
      'tui',
    ]) {
      assert.match(r.stdout, new RegExp(`^  ${g}\\b`, 'm'), g);
    }
  });

  test('group help lists the subcommands', async () => {
    const expect: Record<string, string[]> = {
      vm: [
        'run',
        'create',
        'list',
        'show',
        'stats',
        'ssh',
        'start',
        'stop',
        'restart',
        'kill',
        'delete',
        'set',
        'logs',
        'ports',
        'snapshot',
        'restore',
        'fork',
        'workspace',
      ],
      snapshot: ['list', 'show', 'delete'],
      image: ['list', 'show', 'delete', 'pull', 'build', 'register', 'promote'],
      kernel: ['list', 'pull', 'delete'],
      daemon: ['status', 'socket', 'stop', 'logs'],
    };
    for (const [group, subs] of Object.entries(expect)) {
      const r = await sb.run([group, '--help']);
      assert.equal(r.code, 0);
      for (const s of subs) assert.match(r.stdout, new RegExp(`^  ${s}\\b`, 'm'), `${group} ${s}`);
    }
  });

  test('usage errors exit 2 with one line', async () => {
    for (const args of [
      ['vm', 'lst'],
      ['vm', 'show'],
      ['--bogus'],
      ['completion', 'tcsh'],
      ['vm'],
    ]) {
      const r = await sb.run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      if (args[0] !== 'vm' || args.length > 1) {
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
        assert.match(r.stderr, /^error: /);
      }
    }
  });

  test('deleting a VM that does not exist (again) is a not_found error, with or without --force, like docker rm', async () => {
    for (const args of [
      ['vm', 'delete', 'gone-vm'],
      ['vm', 'delete', '--force', 'gone-vm'],
    ]) {
      const r = await sb.run(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^error: VM 'gone-vm' not found/m, args.join(' '));
    }
  });

  test('--version prints the version', async () => {
    const r = await sb.run(['--version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^\d+\.\d+\.\d+\+\w+/);
  });
});

describe('doctor', () => {
  test('prints checks with fix hints and effective vm_defaults; --json is parseable', async () => {
    const sb = await makeSandbox();
    try {
      const r = await sb.run(['doctor']);
      assert.ok(r.code === 0 || r.code === 1);
      assert.match(r.stdout, /\[(ok {2}|warn|FAIL)\] CPU architecture/);
      assert.match(r.stdout, /\[(ok {2}|warn|FAIL)\] KVM access/);
      assert.match(r.stdout, /tool mkfs\.ext4/);
      assert.match(r.stdout, /effective vm_defaults:\n {2}vcpu\s+\d+ \((host|builtin)\)/);
      assert.match(r.stdout, /\d+ passed, \d+ warnings, \d+ failed/);
      const j = await sb.run(['doctor', '--json']);
      const out = JSON.parse(j.stdout) as {
        checks: { id: string; status: string; hint?: string }[];
        summary: { fail: number };
      };
      assert.ok(out.checks.length >= 15);
      for (const c of out.checks)
        if (c.status !== 'pass') assert.ok(c.hint, `${c.id} has a fix hint`);
      assert.equal(j.code, out.summary.fail > 0 ? 1 : 0);
    } finally {
      await sb.cleanup();
    }
  });

  test('a failing check makes doctor exit 1 and names the fix', async () => {
    const sb = await makeSandbox({
      config: 'vmm = "firecracker"\nfirecracker_bin = "/nonexistent/firecracker"\n',
    });
    try {
      const r = await sb.run(['doctor']);
      assert.equal(r.code, 1);
      assert.match(
        r.stdout,
        /\[FAIL\] Firecracker: \/nonexistent\/firecracker not found\n\s+fix: /,
      );
      assert.match(r.stderr, /^error: \d+ doctor check\(s\) failed/m);
    } finally {
      await sb.cleanup();
    }
  });
});

describe('shell completion', () => {
  let sb: Sandbox;
  before(async () => {
    sb = await makeSandbox();
  });
  after(async () => {
    await sb.cleanup();
  });

  const complete = async (...words: string[]): Promise<string[]> => {
    const r = await sb.run(['__complete', '--', ...words]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean);
  };

  test('commands, subcommands and options complete', async () => {
    assert.deepEqual(await complete('v'), ['vm']);
    assert.ok((await complete('vm', '')).includes('run'));
    assert.deepEqual(await complete('vm', 'st'), ['stats', 'start', 'stop']);
    assert.ok((await complete('vm', 'run', '--n')).includes('--name'));
    assert.ok((await complete('vm', 'run', '--n')).includes('--nat'));
    assert.deepEqual(await complete('completion', ''), ['bash', 'zsh', 'fish', 'powershell']);
  });

  test('live names come from the daemon, and nothing when it is down', async () => {
    assert.deepEqual(await complete('kernel', 'delete', ''), []);
    await sb.run(['daemon', 'status']);
    const db = new Database(sb.paths.db);
    db.prepare(
      "INSERT INTO kernels (name, version, source, dir, kernel_path, managed, meta, created_at) VALUES ('debian-cloud-6.1', '6.1', 'test', '/x', '/x/vmlinuz', 1, '{}', '2026-01-01')",
    ).run();
    db.close();
    assert.deepEqual(await complete('kernel', 'delete', 'deb'), ['debian-cloud-6.1']);
    assert.deepEqual(await complete('vm', 'run', '--kernel', ''), ['debian-cloud-6.1']);
  });

  test('every script is generated; bash, zsh and fish load theirs', async () => {
    for (const shell of ['bash', 'zsh', 'fish', 'powershell']) {
      const r = await sb.run(['completion', shell]);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /__complete --/);
    }
    const env = {
      ...sb.env,
      PATH: `${CLI.replace(/\/banger$/, '')}:${process.env.PATH}`,
    } as NodeJS.ProcessEnv;
    const bash = await runProcess(
      'bash',
      [
        '-c',
        'source <(banger completion bash) && complete -p banger && COMP_WORDS=(banger vm st) COMP_CWORD=2 && _banger_complete && printf "%s\\n" "${COMPREPLY[@]}"',
      ],
      { env },
    );
    assert.equal(bash.code, 0, bash.stderr);
    assert.match(bash.stdout, /complete -o filenames -F _banger_complete banger/);
    assert.match(bash.stdout, /^stats$/m);
    assert.match(bash.stdout, /^stop$/m);

    const zsh = await runProcess(
      'zsh',
      [
        '-fc',
        'autoload -Uz compinit && compinit -u -D && source <(banger completion zsh) && print -r -- ${_comps[banger]}',
      ],
      { env },
    );
    assert.equal(zsh.code, 0, zsh.stderr);
    assert.equal(zsh.stdout.trim(), '_banger_complete');

    const fish = await runProcess(
      'fish',
      ['--no-config', '-c', 'banger completion fish | source; complete -C"banger vm st"'],
      { env },
    );
    assert.equal(fish.code, 0, fish.stderr);
    assert.match(fish.stdout, /^stats/m);
    assert.match(fish.stdout, /^stop/m);
  });
});
