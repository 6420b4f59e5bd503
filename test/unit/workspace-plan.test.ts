import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { treeScript } from '../../src/storage/ext4Tree.js';
import { parseLsFilesStage, parseLsTree } from '../../src/workspace/git.js';
import { filterConfig, parseConfigList, renderConfig } from '../../src/workspace/gitMeta.js';
import { sessionCommand } from '../../src/guest/ssh.js';
import { manifestPath, setupScript, validateGuestPath } from '../../src/workspace/guestScript.js';
import {
  parseManifest,
  planUpdate,
  signatureOf,
  streamPreamble,
  tarHeader,
  totals,
  withParents,
  type WorkspaceEntry,
} from '../../src/workspace/plan.js';

const T = Date.UTC(2026, 0, 2, 3, 4, 5);
const file = (path: string, size: number, mode = 0o644): WorkspaceEntry => {
  const e = { path, kind: 'file' as const, mode, size, mtimeMs: T, source: `/host/${path}` };
  return { ...e, sig: signatureOf(e) };
};
const link = (path: string, target: string): WorkspaceEntry => {
  const e = { path, kind: 'symlink' as const, mode: 0o777, size: 0, mtimeMs: T, target };
  return { ...e, sig: signatureOf(e) };
};
const dir = (path: string, mode = 0o755): WorkspaceEntry => {
  const e = { path, kind: 'dir' as const, mode, size: 0, mtimeMs: T };
  return { ...e, sig: signatureOf(e) };
};

describe('workspace plan: file list → what to send, remove and remember', () => {
  test('signatures say kind, mode, size and mtime (links: their target)', () => {
    assert.equal(file('a', 12, 0o755).sig, `f:755:12:${T}`);
    assert.equal(link('l', '../x').sig, 'l:../x');
    assert.equal(dir('d', 0o700).sig, 'd:700');
  });

  test('a first copy sends everything, parents before children, and removes nothing', () => {
    const entries = [file('b/x.txt', 3), dir('b'), file('a.txt', 5), link('l', 'a.txt')];
    const p = planUpdate('/root/repo', entries, undefined);
    assert.deepEqual(
      p.send.map((e) => e.path),
      ['a.txt', 'b', 'b/x.txt', 'l'],
    );
    assert.deepEqual(p.removeFiles, []);
    assert.deepEqual(p.removeDirs, []);
    assert.equal(p.unchanged, 0);
    assert.deepEqual(p.manifest, {
      version: 1,
      guestPath: '/root/repo',
      entries: { 'a.txt': `f:644:5:${T}`, b: 'd:755', 'b/x.txt': `f:644:3:${T}`, l: 'l:a.txt' },
    });
  });

  test('an update sends what changed, removes what the host lost, keeps the rest', () => {
    const previous = {
      version: 1,
      guestPath: '/root/repo',
      entries: {
        'same.txt': `f:644:5:${T}`,
        'edited.txt': `f:644:5:${T}`,
        'gone.txt': `f:644:1:${T}`,
        old: 'd:755',
        'old/deeper': 'd:755',
        'old/deeper/f': `f:644:1:${T}`,
        became: `f:644:1:${T}`,
      },
    };
    const now = [
      file('same.txt', 5),
      file('edited.txt', 6),
      file('new.txt', 1),
      dir('became'),
      file('became/inside', 2),
    ];
    const p = planUpdate('/root/repo', now, previous);
    assert.deepEqual(
      p.send.map((e) => e.path),
      ['became', 'became/inside', 'edited.txt', 'new.txt'],
    );
    assert.equal(p.unchanged, 1);
    // A file that became a directory is removed first; files and links before directories.
    assert.deepEqual(p.removeFiles, ['became', 'gone.txt', 'old/deeper/f']);
    assert.deepEqual(p.removeDirs, ['old/deeper', 'old']);
  });

  test('a manifest for another path, of another version or unreadable counts as none', () => {
    const ok = JSON.stringify({ version: 1, guestPath: '/root/repo', entries: { a: 'd:755' } });
    assert.deepEqual(parseManifest(ok, '/root/repo')?.entries, { a: 'd:755' });
    assert.equal(parseManifest(ok, '/root/other'), undefined);
    assert.equal(parseManifest('{"version":2}', '/root/repo'), undefined);
    assert.equal(parseManifest('not json', '/root/repo'), undefined);
    assert.equal(parseManifest('', '/root/repo'), undefined);
  });

  test('tar headers: owned by root, the host mode and mtime, links as links', () => {
    assert.deepEqual(tarHeader(file('run.sh', 10, 0o755)), {
      name: 'run.sh',
      type: 'file',
      mode: 0o755,
      size: 10,
      uid: 0,
      gid: 0,
      uname: 'root',
      gname: 'root',
      mtime: new Date(T),
    });
    assert.equal(tarHeader(dir('d')).name, 'd/');
    assert.equal(tarHeader(dir('d')).type, 'directory');
    assert.deepEqual(
      [tarHeader(link('l', '../t')).type, tarHeader(link('l', '../t')).linkname],
      ['symlink', '../t'],
    );
  });

  test('the stream preamble: three length-prefixed sections, NUL-terminated paths', () => {
    const b = streamPreamble({
      removeFiles: ['a b', 'é'],
      removeDirs: [],
      manifest: { version: 1, guestPath: '/g', entries: {} },
    });
    assert.equal(
      b.toString('utf8'),
      '7\na b\0é\0' + '0\n' + '44\n{"version":1,"guestPath":"/g","entries":{}}\n',
    );
    assert.equal(Buffer.byteLength('a b\0é\0'), 7);
  });

  test('missing parent directories are added once; totals count files and bytes', () => {
    const all = withParents([file('a/b/c.txt', 4), dir('a', 0o700), link('a/l', 'x')], (p) =>
      dir(p),
    );
    assert.deepEqual(all.map((e) => `${e.kind}:${e.path}`).sort(), [
      'dir:a',
      'dir:a/b',
      'file:a/b/c.txt',
      'symlink:a/l',
    ]);
    assert.equal(all.find((e) => e.path === 'a')?.mode, 0o700, 'an explicit directory wins');
    assert.deepEqual(totals(all), { files: 2, bytes: 4 });
  });
});

describe('workspace on a disk: the debugfs script', () => {
  test('directories first, one cd per directory, file times; directory modes and times last', () => {
    const s = treeScript('/repo', [
      file('x y.txt', 3, 0o600),
      dir('d', 0o750),
      file('d/run', 1, 0o755),
      link('d/l', '../x y.txt'),
    ]);
    const secs = T / 1000;
    assert.equal(
      s,
      [
        'mkdir "/repo"',
        'mkdir "/repo/d"',
        'cd "/repo"',
        'write "/host/x y.txt" "x y.txt"',
        `sif "x y.txt" mtime @${secs}`,
        'cd "/repo/d"',
        'write "/host/d/run" "run"',
        `sif "run" mtime @${secs}`,
        'symlink "l" "../x y.txt"',
        `sif "l" mtime @${secs}`,
        'cd /',
        'sif "/repo/d" mode 040750',
        `sif "/repo/d" mtime @${secs}`,
        '',
      ].join('\n'),
    );
  });
});

describe('workspace git metadata', () => {
  test('ls-files --stage and ls-tree -r -t output', () => {
    assert.deepEqual(
      parseLsFilesStage(
        '100644 0123456789abcdef0123456789abcdef01234567 0\ta b.txt\0' +
          '160000 89abcdef0123456789abcdef0123456789abcdef 0\tlib\0',
      ),
      [
        {
          mode: 0o100644,
          oid: '0123456789abcdef0123456789abcdef01234567',
          stage: 0,
          path: 'a b.txt',
        },
        { mode: 0o160000, oid: '89abcdef0123456789abcdef0123456789abcdef', stage: 0, path: 'lib' },
      ],
    );
    assert.deepEqual(parseLsTree('040000 tree aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\tsub\0'), [
      { mode: 0o40000, type: 'tree', oid: 'a'.repeat(40), path: 'sub' },
    ]);
  });

  test('the copied config drops host-only keys and keeps the branch only with its upstream', () => {
    const pairs = parseConfigList(
      [
        'core.repositoryformatversion\n0',
        'core.worktree\n/home/u/elsewhere',
        'core.fsmonitor\ntrue',
        'remote.my.origin.url\nhttps://example.invalid/r.git',
        'branch.main.remote\nmy.origin',
        'branch.main.merge\nrefs/heads/main',
        'branch.other.remote\nx',
        'includeif.gitdir:~/w/.path\n/home/u/.gitconfig-work',
        'user.name\nA "quoted" \\ name',
      ].join('\0') + '\0',
    );
    const keep = filterConfig(pairs, 'main').map((p) => p.key);
    assert.deepEqual(keep, [
      'core.repositoryformatversion',
      'remote.my.origin.url',
      'branch.main.remote',
      'branch.main.merge',
      'user.name',
    ]);
    assert.deepEqual(
      filterConfig(pairs, undefined).map((p) => p.key),
      ['core.repositoryformatversion', 'remote.my.origin.url', 'user.name'],
    );
    assert.equal(
      renderConfig(filterConfig(pairs, 'main')),
      [
        '[core]',
        '\trepositoryformatversion = "0"',
        '[remote "my.origin"]',
        '\turl = "https://example.invalid/r.git"',
        '[branch "main"]',
        '\tremote = "my.origin"',
        '\tmerge = "refs/heads/main"',
        '[user]',
        '\tname = "A \\"quoted\\" \\\\ name"',
        '',
      ].join('\n'),
    );
  });
});

describe('workspace guest scripts', () => {
  test('guest paths: absolute, plain, not a system directory', () => {
    assert.equal(validateGuestPath('/root/repo/'), '/root/repo');
    assert.equal(validateGuestPath('/srv//work'), '/srv/work');
    for (const bad of ['root/repo', '/', '/root', '/etc', '/root/../etc', '/root/a b', "/root/'x"])
      assert.throws(() => validateGuestPath(bad), /invalid guest path/, bad);
  });

  test('the manifest lives under /root/.cache, one per destination', () => {
    assert.match(
      manifestPath('/root/repo'),
      /^\/root\/\.cache\/banger\/workspaces\/[0-9a-f]{16}\.json$/,
    );
    assert.notEqual(manifestPath('/root/repo'), manifestPath('/root/repo2'));
  });

  test('setup: the branch switch stops on failure, tooling is detached, then cd', () => {
    const s = setupScript({
      guestPath: '/root/repo',
      workdir: '/root/repo/sub dir',
      branch: { name: 'feat', from: 'abc123', unborn: false },
      toolingLog: '/root/.cache/banger/vm-run-tooling-proj.log',
    });
    const lines = s.split('\n');
    assert.equal(lines[0], 'cd /root/repo || exit 1');
    assert.match(lines[1]!, /^git checkout -q -B feat abc123 \|\| \{ .* exit 1; \}$/);
    assert.match(
      s,
      /setsid -f nice -n 10 sh -c .*mise install.*<\/dev\/null >\/root\/\.cache\/banger\/vm-run-tooling-proj\.log 2>&1 \|\| true/s,
    );
    assert.equal(lines[lines.length - 1], "cd '/root/repo/sub dir' || exit 1");
  });

  test('session command: one word is a command line, several are quoted, none is a login shell', () => {
    assert.equal(sessionCommand('cd /r', ['exit 7']), 'cd /r\nexit 7');
    assert.equal(
      sessionCommand('cd /r', ['sh', '-c', "echo 'x'"]),
      `cd /r\nsh -c 'echo '\\''x'\\'''`,
    );
    assert.equal(sessionCommand('cd /r', []), 'cd /r\nexec "${SHELL:-/bin/bash}" -l');
  });
});
