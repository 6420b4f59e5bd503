import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { AGENT_INSTALL_PATH, AGENT_UNIT_LINK } from '../../src/guest/agentUnit.js';
import { SSHD_DROPIN_PATH } from '../../src/guest/contract.js';
import { which } from '../../src/util/exec.js';
import { maskedInImage } from '../helpers/debugfs.js';
import { EXPECTED_MASKED_PATHS } from '../helpers/guest-expectations.js';
import { pushImage, startRegistry, type Registry } from '../helpers/registry.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';
import { gzip, makeTar } from '../helpers/tarWriter.js';
import { needs } from '../helpers/ci.js';

/**
 * `banger image pull <registry>/<repo>:<tag>` through the CLI and daemon from
 * a real registry on loopback: the OCI puller's tree gets the guest contract
 * (the in-memory applier), /root becomes the work-seed.
 */

const ls = (image: string, p: string): string[] =>
  execFileSync('debugfs', ['-R', `ls -p "${p}"`, image], { stdio: ['ignore', 'pipe', 'ignore'] })
    .toString()
    .split('\n')
    .map((l) => l.split('/')[5])
    .filter((n): n is string => n !== undefined && n !== '' && n !== '.' && n !== '..');
const stat = (image: string, p: string): string =>
  execFileSync('debugfs', ['-R', `stat "${p}"`, image], {
    stdio: ['ignore', 'pipe', 'ignore'],
  }).toString();
const cat = (image: string, p: string): string =>
  execFileSync('debugfs', ['-R', `cat "${p}"`, image], {
    stdio: ['ignore', 'pipe', 'ignore'],
  }).toString();

describe('image pull from an OCI registry (CLI + daemon)', { timeout: 5 * 60_000 }, () => {
  let reg: Registry | undefined;
  let sb: Sandbox;
  const ok = Boolean(which('docker-registry') && which('debugfs') && which('mkfs.ext4'));

  before(async () => {
    sb = await makeSandbox();
    if (ok) reg = await startRegistry();
  });
  after(async () => {
    await reg?.stop();
    await sb.cleanup();
  });

  test('the guest contract is applied to a pulled image; /root goes to the work-seed', async (t) => {
    if (!needs(t, ok && Boolean(reg), 'docker-registry, debugfs or mkfs.ext4 not installed'))
      return;
    const layer = makeTar([
      { name: 'etc/', type: 'dir', mode: 0o755 },
      { name: 'etc/os-release', content: 'ID=tiny\n' },
      { name: 'etc/ssh/', type: 'dir', mode: 0o755 },
      { name: 'etc/ssh/ssh_host_rsa_key', content: 'SHARED SECRET', mode: 0o600 },
      { name: 'etc/ssh/sshd_config', content: 'Include /etc/ssh/sshd_config.d/*.conf\n' },
      { name: 'etc/shadow', content: 'root:*:1::::::\n', mode: 0o640, gid: 42 },
      { name: 'usr/', type: 'dir', mode: 0o755 },
      { name: 'usr/bin/', type: 'dir', mode: 0o755 },
      { name: 'usr/bin/su', content: 'x', mode: 0o4755 },
      { name: 'root/', type: 'dir', mode: 0o700 },
      { name: 'root/.profile', content: 'echo hi\n', mode: 0o644 },
      { name: 'root/.config/', type: 'dir', mode: 0o755, uid: 0 },
      { name: 'root/.config/app', content: 'cfg', mode: 0o600, uid: 0 },
      { name: 'tmp/', type: 'dir', mode: 0o1777 },
    ]);
    await pushImage(reg!.host, 'test/tiny', 'v1', [{ data: gzip(layer) }]);
    const r = await sb.run(['image', 'pull', `${reg!.host}/test/tiny:v1`], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^image tiny-v1 /);
    const show = await sb.run(['image', 'show', 'tiny-v1', '--json']);
    const v = JSON.parse(show.stdout) as {
      source: string;
      digest: string;
      managed: boolean;
      rootfsPath: string;
      workSeedPath: string;
      kernel: string;
    };
    assert.match(v.source, new RegExp(`^oci:${reg!.host}/test/tiny:v1@sha256:[0-9a-f]{64}$`));
    assert.match(v.digest, /^sha256:/);
    assert.equal(v.managed, true);
    assert.equal(v.kernel, 'debian-cloud-6.1');
    execFileSync('e2fsck', ['-fn', v.rootfsPath], { stdio: 'ignore' });
    execFileSync('e2fsck', ['-fn', v.workSeedPath], { stdio: 'ignore' });

    const img = v.rootfsPath;
    assert.deepEqual(
      ls(img, '/etc/ssh').filter((n) => n.startsWith('ssh_host_')),
      [],
      'host keys removed',
    );
    assert.match(cat(img, SSHD_DROPIN_PATH), /^PasswordAuthentication no$/m);
    assert.match(stat(img, AGENT_INSTALL_PATH), /Mode:\s+0755/);
    assert.match(
      stat(img, AGENT_UNIT_LINK),
      /Fast link dest: "\/etc\/systemd\/system\/banger-agent\.service"/,
    );
    // Every mask, read from the image, against the list written down in the tests.
    assert.deepEqual(maskedInImage(img), EXPECTED_MASKED_PATHS);
    assert.match(stat(img, '/etc/shadow'), /User:\s+0\s+Group:\s+42/);
    assert.match(stat(img, '/usr/bin/su'), /Mode:\s+04755/);
    assert.doesNotMatch(
      stat(img, '/usr/local/bin/mise').split('\n')[0] ?? '',
      /Inode:/,
      'no mise in OCI images',
    );
    assert.deepEqual(ls(img, '/root'), [], 'base /root is an empty mount point');
    assert.match(stat(img, '/root'), /Mode:\s+0700/);
    const seed = v.workSeedPath;
    assert.deepEqual(ls(seed, '/').sort(), ['.config', '.profile', '.ssh', 'lost+found']);
    assert.equal(cat(seed, '/.config/app'), 'cfg');
    assert.match(stat(seed, '/'), /Mode:\s+0700/);
  });

  test('a missing tag fails with one line and leaves nothing', async (t) => {
    if (!needs(t, ok && Boolean(reg), 'docker-registry not installed')) return;
    const r = await sb.run(['image', 'pull', `${reg!.host}/test/tiny:nope`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim().split('\n').pop()!, /^error: .*tiny:nope/);
    const list = await sb.run(['image', 'list', '--json']);
    assert.deepEqual(
      (JSON.parse(list.stdout) as { name: string }[]).map((i) => i.name),
      ['tiny-v1'],
    );
  });
});
