import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createSparseExt4 } from '../../src/storage/ext4.js';
import { writeTreeExt4 } from '../../src/storage/ext4Tree.js';
import { collectWorkspace, type Collected } from '../../src/workspace/collect.js';
import { planUpdate } from '../../src/workspace/plan.js';
import { tarOf } from '../../src/workspace/transfer.js';
import {
  gitIn,
  makeFixtureRepo,
  makeSubmoduleRepo,
  NON_ASCII_NAME,
} from '../helpers/gitFixture.js';

/**
 * The host side of a workspace copy with real git, debugfs and tar: what
 * lands in the guest (read back from the ext4 image, or unpacked from the
 * tar) gives the same `git status`, `git log -1` and `git diff` as the host.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-wscopy-'));
const home = path.join(tmp, 'home');
const repo = path.join(tmp, 'proj');
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const git = (dir: string, ...args: string[]): string => gitIn(dir, home, args);
const gitView = (dir: string): string[] => [
  git(dir, 'status', '--porcelain'),
  git(dir, 'log', '-1'),
  git(dir, 'diff'),
  git(dir, 'diff', '--cached'),
  git(dir, 'status'),
];

async function toImageAndBack(c: Collected, name: string): Promise<string> {
  const img = path.join(tmp, `${name}.ext4`);
  await createSparseExt4(img, 256 * 1024 ** 2, { label: 'test' });
  let last = { files: 0, bytes: 0 };
  const entries = await c.all();
  await writeTreeExt4(img, '/repo', entries, { onProgress: (p) => (last = p) });
  const files = entries.filter((e) => e.kind !== 'dir');
  assert.deepEqual(last, {
    files: files.length,
    bytes: files.reduce((a, e) => a + e.size, 0),
  });
  const out = path.join(tmp, `${name}-out`);
  fs.mkdirSync(out);
  const r = spawnSync('debugfs', ['-R', `rdump /repo ${out}`, img], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return path.join(out, 'repo');
}

async function untar(c: Collected, name: string): Promise<string> {
  const out = path.join(tmp, name);
  fs.mkdirSync(out);
  const child = spawn('tar', ['-x', '-f', '-', '-C', out], { stdio: ['pipe', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number>((r) => child.on('close', r));
  for await (const chunk of tarOf(await c.all())) {
    if (!child.stdin.write(chunk)) await new Promise((r) => child.stdin.once('drain', r));
  }
  child.stdin.end();
  assert.equal(await done, 0, err);
  return out;
}

describe('workspace copy (host git, debugfs, tar)', () => {
  let c: Collected;
  before(async () => {
    fs.mkdirSync(home);
    makeFixtureRepo(repo, home);
    c = await collectWorkspace(path.join(repo, 'sub'), 'shallow', { scratchDir: tmp });
  });
  after(() => c?.dispose());

  test('PATH in a subdirectory: the whole repository, PATH remembered; tooling found', async () => {
    assert.equal(c.source, repo);
    assert.equal(c.prefix, 'sub');
    assert.equal(c.git, true);
    assert.equal(c.branch, 'main');
    assert.equal(c.head, git(repo, 'rev-parse', 'HEAD').trim());
    assert.equal(c.tooling, true);
    const paths = c.worktree.map((e) => e.path);
    assert.ok((await c.metadata).every((e) => e.path === '.git' || e.path.startsWith('.git/')));
    assert.deepEqual(paths.sort(), [
      '.gitignore',
      '.tool-versions',
      'link',
      'modified.txt',
      'run.sh',
      'staged.txt',
      'sub',
      'sub/deep',
      'sub/deep/file.txt',
      'tracked.txt',
      'untracked.txt',
      NON_ASCII_NAME,
    ]);
  });

  test('through the work disk: git status, log, diff and diff --cached equal the host', async () => {
    const copy = await toImageAndBack(c, 'disk');
    assert.deepEqual(gitView(copy), gitView(repo));
    assert.equal(fs.statSync(path.join(copy, 'run.sh')).mode & 0o777, 0o755);
    assert.equal(fs.readlinkSync(path.join(copy, 'link')), 'tracked.txt');
    assert.equal(fs.readFileSync(path.join(copy, NON_ASCII_NAME), 'utf8'), 'space and é\n');
    assert.equal(fs.existsSync(path.join(copy, 'ignored.log')), false);
    assert.equal(fs.existsSync(path.join(copy, 'build')), false);
  });

  test('through the tar: the same', async () => {
    const copy = await untar(c, 'tar-out');
    const index = fs.readFileSync(path.join(copy, '.git', 'index'));
    assert.deepEqual(gitView(copy), gitView(repo));
    assert.ok(
      fs.readFileSync(path.join(copy, '.git', 'index')).equals(index),
      'git status judged the files by their copied mtimes and sizes: nothing re-hashed, the index not rewritten',
    );
    assert.equal(fs.statSync(path.join(copy, 'run.sh')).mode & 0o777, 0o755);
    assert.equal(fs.readlinkSync(path.join(copy, 'link')), 'tracked.txt');
  });

  test('an update after a host deletion removes that file and sends only what changed', async () => {
    const first = planUpdate('/root/repo', await c.all(), undefined).manifest;
    fs.rmSync(path.join(repo, 'untracked.txt'));
    const again = await collectWorkspace(repo, 'shallow', { scratchDir: tmp });
    try {
      const p = planUpdate('/root/repo', await again.all(), first);
      assert.deepEqual(p.removeFiles, ['untracked.txt']);
      // Only the index may differ: `git status` above rewrote it (the pack and refs are the same).
      assert.deepEqual(
        p.send.filter((e) => e.kind !== 'dir' && e.path !== '.git/index').map((e) => e.path),
        [],
      );
      assert.ok(p.unchanged >= 10, `${p.unchanged} unchanged`);
    } finally {
      await again.dispose();
      fs.writeFileSync(path.join(repo, 'untracked.txt'), 'untracked\n');
    }
  });

  test('--from HEAD~1 carries that commit: the branch can be checked out in the copy', async () => {
    const b = await collectWorkspace(repo, 'shallow', {
      scratchDir: tmp,
      branch: 'feat',
      from: 'HEAD~1',
    });
    try {
      const want = git(repo, 'rev-parse', 'HEAD~1').trim();
      assert.deepEqual(b.switchTo, { name: 'feat', from: want, unborn: false });
      const copy = await untar(b, 'branch-out');
      git(copy, 'checkout', '-q', '-B', 'feat', want);
      assert.equal(git(copy, 'rev-parse', 'HEAD').trim(), want);
      assert.equal(fs.readFileSync(path.join(copy, 'tracked.txt'), 'utf8'), 'tracked\n');
    } finally {
      await b.dispose();
    }
    await assert.rejects(
      collectWorkspace(repo, 'shallow', { scratchDir: tmp, branch: 'x', from: 'nope' }),
      /no commit 'nope'/,
    );
  });

  test('submodules: refused in the shallow mode, copied with full_copy', async () => {
    const sup = makeSubmoduleRepo(path.join(tmp, 'sm'), home);
    await assert.rejects(
      collectWorkspace(sup, 'shallow', { scratchDir: tmp }),
      (e: Error & { hint?: string }) =>
        /has submodules \(lib\)/.test(e.message) && /--mode full_copy/.test(e.hint ?? ''),
    );
    const full = await collectWorkspace(sup, 'full_copy', { scratchDir: tmp });
    try {
      const copy = await untar(full, 'full-out');
      assert.equal(git(copy, 'status', '--porcelain'), git(sup, 'status', '--porcelain'));
      assert.equal(fs.readFileSync(path.join(copy, 'lib', 'lib.txt'), 'utf8'), 'library\n');
      assert.equal(
        git(path.join(copy, 'lib'), 'rev-parse', 'HEAD'),
        git(path.join(sup, 'lib'), 'rev-parse', 'HEAD'),
      );
    } finally {
      await full.dispose();
    }
  });

  test('a directory outside any repository is copied as it is, links as links', async () => {
    const plain = path.join(tmp, 'plain');
    fs.mkdirSync(path.join(plain, 'empty'), { recursive: true });
    fs.writeFileSync(path.join(plain, 'f'), 'f\n');
    fs.symlinkSync('/etc/passwd', path.join(plain, 'outside'));
    const d = await collectWorkspace(plain, 'shallow', { scratchDir: tmp });
    assert.equal(d.git, false);
    assert.deepEqual(
      (await d.all()).map((e) => `${e.kind}:${e.path}${e.target ? `->${e.target}` : ''}`).sort(),
      ['dir:empty', 'file:f', 'symlink:outside->/etc/passwd'],
    );
  });
});
