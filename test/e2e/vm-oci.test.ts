import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { which } from '../../src/util/exec.js';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { catalogImage, SLIM_IMAGE } from '../helpers/image-cache.js';
import { pushImage, startRegistry, type Registry } from '../helpers/registry.js';
import { gzip, makeTar } from '../helpers/tarWriter.js';

/**
 * Container images pulled from a real registry on loopback boot as VMs:
 * a "container-style" Debian image (the slim catalog rootfs without banger's
 * files, no kernel) is pulled, gets the guest contract and is reachable over
 * SSH; an image without sshd fails fast when the VM has no NAT.
 *
 * The registry listens on 127.0.0.1 of the root namespace, so pulls run
 * with a daemon there (pulls create no bridge or address); VMs run with a
 * daemon inside the test's namespace, on the same state.
 */
describe('OCI images boot as VMs', { timeout: 20 * 60_000 }, () => {
  let env: VmEnv | undefined;
  let reg: Registry | undefined;
  let tmp = '';
  const ok = isRoot() && Boolean(which('docker-registry'));

  before(async () => {
    if (!ok) return;
    env = await vmEnv('oci');
    reg = await startRegistry();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-oci-'));
  });
  after(async () => {
    // Pulled images live in the shared e2e state: remove them.
    if (env) {
      for (const n of ['oci-debian', 'oci-nosshd'])
        await env.sb.run(['image', 'delete', n]).catch(() => undefined);
      await env.sb.run(['daemon', 'stop']).catch(() => undefined);
    }
    try {
      await env?.cleanup();
    } finally {
      await reg?.stop();
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  /** Pull in the root namespace (where the registry is), then hand the state back to the namespace's daemon. */
  async function pull(ref: string, name: string): Promise<void> {
    await env!.run(['daemon', 'stop']);
    const r = await env!.sb.run(['image', 'pull', ref, '--name', name], { timeoutMs: 10 * 60_000 });
    await env!.sb.run(['daemon', 'stop']);
    assert.equal(r.code, 0, r.stderr);
  }

  test('a Debian container image (rootfs tar, no kernel) pulls, boots and answers over SSH', async (t) => {
    if (!needs(t, ok, 'needs root and docker-registry')) return;
    // The container image: the slim Debian rootfs without banger's own files (the
    // default image would do too, at 2.5 times the bytes to dump, pack, push and pull).
    const img = await catalogImage(SLIM_IMAGE);
    const root = path.join(tmp, 'rootfs');
    fs.mkdirSync(root);
    execFileSync('debugfs', ['-R', `rdump / ${root}`, img.rootfs], { stdio: 'ignore' });
    const tree = root; // rdump of / writes its contents straight into root
    fs.rmSync(path.join(tree, 'lost+found'), { recursive: true, force: true });
    for (const p of [
      'usr/local/libexec/banger',
      'etc/systemd/system/banger-agent.service',
      'etc/systemd/system/sysinit.target.wants/banger-agent.service',
      'etc/ssh/sshd_config.d/banger.conf',
    ]) {
      fs.rmSync(path.join(tree, p), { recursive: true, force: true });
    }
    const tarFile = path.join(tmp, 'layer.tar');
    execFileSync('tar', [
      '-C',
      tree,
      '--numeric-owner',
      '--xattrs',
      '--xattrs-include=*',
      '-cf',
      tarFile,
      '.',
    ]);
    await pushImage(reg!.host, 'banger/debian', 'bookworm', [
      { data: gzip(fs.readFileSync(tarFile), 1) },
    ]);
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(tarFile);

    await pull(`${reg!.host}/banger/debian:bookworm`, 'oci-debian');
    const show = await env!.json<{
      source: string;
      digest: string;
      meta: { layers: unknown[]; init?: string };
    }>(['image', 'show', 'oci-debian']);
    assert.match(show.source, /banger\/debian:bookworm/);
    assert.match(show.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(show.meta.layers.length, 1);
    assert.equal(show.meta.init, undefined, 'systemd and sshd present: normal boot');

    const name = env!.name('oci');
    const r = await env!.run([
      'vm',
      'run',
      '--rm',
      '--image',
      'oci-debian',
      '--name',
      name,
      '--',
      'grep -h ^ID= /etc/os-release; hostname; test -x /usr/local/libexec/banger/banger-agent && echo agent-injected',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['ID=debian', name, 'agent-injected']);
  });

  test('an image without sshd fails fast without NAT, naming --nat', async (t) => {
    if (
      !needs(t, ok && Boolean(which('busybox')), 'needs root, docker-registry and busybox-static')
    )
      return;
    const busybox = fs.readFileSync(which('busybox')!);
    const layer = makeTar([
      { name: 'bin/', type: 'dir', mode: 0o755 },
      { name: 'bin/busybox', content: busybox, mode: 0o755 },
      { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
      { name: 'etc/', type: 'dir', mode: 0o755 },
      { name: 'etc/os-release', content: 'ID=tiny\n' },
      { name: 'root/', type: 'dir', mode: 0o700 },
      { name: 'tmp/', type: 'dir', mode: 0o1777 },
    ]);
    await pushImage(reg!.host, 'banger/nosshd', 'v1', [{ data: gzip(layer) }]);
    await pull(`${reg!.host}/banger/nosshd:v1`, 'oci-nosshd');
    const show = await env!.json<{ meta: { init?: string } }>(['image', 'show', 'oci-nosshd']);
    assert.equal(show.meta.init, '/usr/local/libexec/banger/firstboot');

    const name = env!.name('nosshd');
    const t0 = Date.now();
    const r = await env!.run([
      'vm',
      'run',
      '--rm',
      '--image',
      'oci-nosshd',
      '--name',
      name,
      '--',
      'true',
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^error: vm '.*': banger's init failed: image oci-nosshd has no sshd and this VM has no network access: recreate it with --nat .* or use an image that has sshd/m,
    );
    assert.ok(Date.now() - t0 < 120_000, 'fails fast');
    const list = await env!.json<{ name: string }[]>(['vm', 'list']);
    assert.equal(list.filter((v) => v.name === name).length, 0, '--rm removed the failed VM');
  });
});
