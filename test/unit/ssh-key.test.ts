import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ensureSshKey } from '../../src/guest/ssh.js';

test('concurrent first uses of a fresh install create one SSH key, and all get it', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-sshkey-'));
  try {
    const key = path.join(dir, 'ssh', 'id_ed25519');
    const pubs = await Promise.all([ensureSshKey(key), ensureSshKey(key), ensureSshKey(key)]);
    assert.match(pubs[0]!, /^ssh-ed25519 \S+ banger$/);
    assert.deepEqual(new Set(pubs).size, 1);
    assert.equal(fs.readFileSync(`${key}.pub`, 'utf8').trim(), pubs[0]);
    assert.deepEqual(fs.readdirSync(path.dirname(key)).sort(), ['id_ed25519', 'id_ed25519.pub']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
