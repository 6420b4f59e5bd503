import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Git repositories for workspace tests, made with the real git: every kind of
 * working-tree state `git status` can show, a submodule, and a generated big
 * repository for the benchmark. Commits have fixed authors and dates.
 */

export function gitEnv(home: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_AUTHOR_NAME: 'Banger Test',
    GIT_AUTHOR_EMAIL: 'test@banger.invalid',
    GIT_AUTHOR_DATE: '2026-01-02T03:04:05Z',
    GIT_COMMITTER_NAME: 'Banger Test',
    GIT_COMMITTER_EMAIL: 'test@banger.invalid',
    GIT_COMMITTER_DATE: '2026-01-02T03:04:05Z',
    LC_ALL: 'C',
  };
}

export function gitIn(dir: string, home: string, args: string[]): string {
  return execFileSync('git', ['-c', 'protocol.file.allow=always', ...args], {
    cwd: dir,
    env: gitEnv(home),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export const NON_ASCII_NAME = 'with space é.txt';

/**
 * A repository with two commits and, in its working tree: a tracked file, a
 * modified one, a staged one, a deleted one, an untracked and an ignored file,
 * an executable, a symlink, a name with a space and non-ASCII, a subdirectory
 * and a `.tool-versions` (so `vm run` starts its tooling install).
 */
export function makeFixtureRepo(dir: string, home: string): void {
  fs.mkdirSync(path.join(dir, 'sub', 'deep'), { recursive: true });
  const g = (...args: string[]): string => gitIn(dir, home, args);
  g('init', '-q', '-b', 'main');
  const w = (p: string, text: string, mode = 0o644): void => {
    fs.writeFileSync(path.join(dir, p), text);
    fs.chmodSync(path.join(dir, p), mode);
  };
  w('tracked.txt', 'tracked\n');
  w('modified.txt', 'modified\n');
  w('staged.txt', 'staged\n');
  w('deleted.txt', 'deleted\n');
  w('run.sh', '#!/bin/sh\necho run\n', 0o755);
  w(NON_ASCII_NAME, 'space and é\n');
  w('sub/deep/file.txt', 'deep\n');
  w('.gitignore', '*.log\nbuild/\n');
  w('.tool-versions', 'nodejs 20.0.0\n');
  fs.symlinkSync('tracked.txt', path.join(dir, 'link'));
  g('add', '-A');
  g('commit', '-q', '-m', 'first commit');
  fs.appendFileSync(path.join(dir, 'tracked.txt'), 'second line\n');
  g('commit', '-q', '-a', '-m', 'second commit');
  // The working-tree state on top of HEAD.
  fs.appendFileSync(path.join(dir, 'modified.txt'), 'changed, not staged\n');
  fs.appendFileSync(path.join(dir, 'staged.txt'), 'changed and staged\n');
  g('add', 'staged.txt');
  fs.rmSync(path.join(dir, 'deleted.txt'));
  w('untracked.txt', 'untracked\n');
  w('ignored.log', 'ignored\n');
  fs.mkdirSync(path.join(dir, 'build'));
  w('build/out.bin', 'ignored too\n');
}

/** A repository `super` with a submodule `lib` (its own repository `lib-origin`). */
export function makeSubmoduleRepo(parent: string, home: string): string {
  const lib = path.join(parent, 'lib-origin');
  const sup = path.join(parent, 'super');
  fs.mkdirSync(lib, { recursive: true });
  fs.mkdirSync(sup, { recursive: true });
  gitIn(lib, home, ['init', '-q', '-b', 'main']);
  fs.writeFileSync(path.join(lib, 'lib.txt'), 'library\n');
  gitIn(lib, home, ['add', '-A']);
  gitIn(lib, home, ['commit', '-q', '-m', 'lib']);
  gitIn(sup, home, ['init', '-q', '-b', 'main']);
  fs.writeFileSync(path.join(sup, 'app.txt'), 'app\n');
  gitIn(sup, home, ['submodule', 'add', '-q', lib, 'lib']);
  gitIn(sup, home, ['add', '-A']);
  gitIn(sup, home, ['commit', '-q', '-m', 'with a submodule']);
  fs.appendFileSync(path.join(sup, 'app.txt'), 'edited\n');
  return sup;
}
