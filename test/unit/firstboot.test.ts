import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  buildFirstbootScript,
  PACKAGE_MANAGERS,
  SSHD_CONTRACT_OPTIONS,
} from '../../src/guest/firstboot.js';

describe('first-boot script for container images', () => {
  const script = buildFirstbootScript('alpine-3');

  test('is valid busybox sh', () => {
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-fb-')), 'firstboot');
    fs.writeFileSync(f, script);
    const r = spawnSync('busybox', ['sh', '-n', f], { encoding: 'utf8' });
    fs.rmSync(path.dirname(f), { recursive: true, force: true });
    assert.equal(r.status, 0, r.stderr);
  });

  test('knows every package manager family of the spec', () => {
    for (const pm of ['apt', 'apk', 'dnf', 'pacman', 'zypper']) {
      assert.ok(
        PACKAGE_MANAGERS.some((m) => m.name === pm),
        pm,
      );
    }
    for (const m of PACKAGE_MANAGERS)
      assert.match(script, new RegExp(`have ${m.detect}; then PM=${m.name}`));
  });

  test('fails fast without NAT and names both ways out', () => {
    assert.match(script, /BANGER-INIT-ERROR: \$\*/);
    assert.match(
      script,
      /has no sshd and this VM has no network access: recreate it with --nat .* or use an image that has sshd/,
    );
  });

  test('starts sshd with the key-only contract when there is no systemd', () => {
    for (const o of SSHD_CONTRACT_OPTIONS) assert.ok(script.includes(`-o ${o}`), o);
    assert.match(script, /PasswordAuthentication=no/);
    assert.match(script, /banger-agent/);
    assert.match(script, /exec "\$SYSTEMD"/);
  });
});
