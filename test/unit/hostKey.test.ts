import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ed25519HostKey, ed25519PublicLine } from '../../src/guest/hostKey.js';
import { parseHostKey } from '../../src/guest/agentProtocol.js';
import { which } from '../../src/util/exec.js';
import { needs } from '../helpers/ci.js';
import { opensshCheckInt, opensshEd25519PrivateKey } from '../helpers/opensshKey.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-hostkey-test-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

// RFC 8032, section 7.1, TEST 1
const RFC_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const RFC_PUB = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
const RFC_LINE = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea';

function ssh(args: string[], input?: string): { status: number | null; out: string } {
  const r = spawnSync('ssh-keygen', args, { encoding: 'utf8', input });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('ed25519 host key made on the host', () => {
  test('the pair of a seed is the RFC 8032 one; the public line is OpenSSH’s', () => {
    const k = ed25519HostKey(Buffer.from(RFC_SEED, 'hex'));
    assert.deepEqual(k, { seedHex: RFC_SEED, publicHex: RFC_PUB, publicLine: RFC_LINE });
    assert.equal(ed25519PublicLine(Buffer.from(RFC_PUB, 'hex')), RFC_LINE);
    assert.deepEqual(parseHostKey(RFC_LINE), {
      type: 'ssh-ed25519',
      key: RFC_LINE.split(' ')[1],
    });
    assert.throws(() => ed25519HostKey(Buffer.alloc(31)), /32 bytes, not 31/);
    assert.throws(() => ed25519PublicLine(Buffer.alloc(33)), /32 bytes, not 33/);
  });

  test('fresh keys: hex of 32 bytes, a new pair each time', () => {
    const a = ed25519HostKey();
    const b = ed25519HostKey();
    for (const k of [a, b]) {
      assert.match(k.seedHex, /^[0-9a-f]{64}$/);
      assert.match(k.publicHex, /^[0-9a-f]{64}$/);
      assert.equal(k.publicLine, ed25519PublicLine(Buffer.from(k.publicHex, 'hex')));
      // the seed determines the public key
      assert.deepEqual(ed25519HostKey(Buffer.from(k.seedHex, 'hex')), k);
    }
    assert.notEqual(a.seedHex, b.seedHex);
    assert.notEqual(a.publicHex, b.publicHex);
  });

  test('ssh-keygen reads the private key file the agent writes and derives exactly the public line; its signatures verify', (t) => {
    if (!needs(t, Boolean(which('ssh-keygen')), 'ssh-keygen is not installed (openssh-client)'))
      return;
    const k = ed25519HostKey();
    const seed = Buffer.from(k.seedHex, 'hex');
    const pub = Buffer.from(k.publicHex, 'hex');
    const file = path.join(tmp, 'ssh_host_ed25519_key');
    const text = opensshEd25519PrivateKey(seed, pub, 0x1234abcd);
    assert.equal(opensshCheckInt(text), 0x1234abcd);
    fs.writeFileSync(file, text, { mode: 0o600 });
    const y = ssh(['-y', '-f', file]);
    assert.equal(y.status, 0, y.out);
    assert.equal(y.out, `${k.publicLine}\n`);

    // ssh-keygen -y only reads the public half stored in the file: a signature
    // made with the file and verified against the public line proves the pair.
    const msg = path.join(tmp, 'msg');
    fs.writeFileSync(msg, 'banger');
    const signers = path.join(tmp, 'allowed_signers');
    fs.writeFileSync(signers, `host ${k.publicLine}\n`);
    const signAndVerify = (keyFile: string): boolean => {
      fs.rmSync(`${msg}.sig`, { force: true });
      const sign = ssh(['-Y', 'sign', '-f', keyFile, '-n', 'banger-test', msg]);
      if (sign.status !== 0) return false;
      const v = ssh(
        ['-Y', 'verify', '-f', signers, '-I', 'host', '-n', 'banger-test', '-s', `${msg}.sig`],
        'banger',
      );
      return v.status === 0 && /Good "banger-test" signature for host with ED25519 key/.test(v.out);
    };
    assert.equal(signAndVerify(file), true);

    // the same public half with another seed: -y cannot tell, the signature can
    const wrong = path.join(tmp, 'wrong_key');
    const otherSeed = Buffer.from(ed25519HostKey().seedHex, 'hex');
    fs.writeFileSync(wrong, opensshEd25519PrivateKey(otherSeed, pub, 7), { mode: 0o600 });
    assert.equal(ssh(['-y', '-f', wrong]).out, `${k.publicLine}\n`);
    assert.equal(signAndVerify(wrong), false);
  });
});
