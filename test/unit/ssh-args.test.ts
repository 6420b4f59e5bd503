import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { sshArgs } from '../../src/guest/ssh.js';

describe('sshArgs', () => {
  test('a % in a path reaches ssh as %% (ssh would expand it as a token)', () => {
    const argv = sshArgs({
      alias: 'dev.vm',
      keyPath: '/home/a%h/key',
      knownHosts: '/home/a%h/known_hosts',
      proxyCommand: ['/usr/bin/node', '/opt/100%/banger', '__proxy', 'dev'],
      tty: false,
      command: ['true'],
    });
    assert.ok(argv.includes('IdentityFile=/home/a%%h/key'), argv.join(' '));
    assert.ok(argv.includes('UserKnownHostsFile=/home/a%%h/known_hosts'));
    assert.ok(argv.includes('ProxyCommand=/usr/bin/node /opt/100%%/banger __proxy dev'));
  });
});

describe('no host shell interprets user strings', () => {
  const EVIL = ['/opt/my dir/$(touch PWNED)', `a;b|c&d'e"f\`g\``, '%h %p', '*', '~root', ''];

  test('the ProxyCommand ssh hands to /bin/sh gives the proxy exactly its words', () => {
    const argv = sshArgs({
      alias: 'dev.vm',
      keyPath: '/k',
      knownHosts: '/kh',
      proxyCommand: ['/usr/bin/printf', '[%s]\\n', ...EVIL],
      tty: false,
      command: [],
    });
    const opt = argv.find((a) => a.startsWith('ProxyCommand='))!.slice('ProxyCommand='.length);
    // what ssh does with it: %% → %, then `sh -c` of the result
    const out = execFileSync('/bin/sh', ['-c', opt.replace(/%%/g, '%')], {
      cwd: os.tmpdir(),
      encoding: 'utf8',
    });
    assert.equal(out, EVIL.map((w) => `[${w}]\n`).join(''));
    assert.equal(fs.existsSync(path.join(os.tmpdir(), 'PWNED')), false);
  });

  test('several command words reach the guest shell as those words', () => {
    const argv = sshArgs({
      alias: 'dev.vm',
      keyPath: '/k',
      knownHosts: '/kh',
      tty: false,
      command: ['printf', '[%s]\\n', ...EVIL],
    });
    const remote = argv[argv.indexOf('--') + 1]!;
    const out = execFileSync('/bin/sh', ['-c', remote], { cwd: os.tmpdir(), encoding: 'utf8' });
    assert.equal(out, EVIL.map((w) => `[${w}]\n`).join(''));
  });
});
