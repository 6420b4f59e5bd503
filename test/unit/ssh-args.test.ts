import assert from 'node:assert/strict';
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
