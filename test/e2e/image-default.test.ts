import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { AGENT_INSTALL_PATH, AGENT_UNIT_LINK, AGENT_UNIT_PATH } from '../../src/guest/agentUnit.js';
import {
  MISE_INSTALL_PATH,
  MISE_PROFILE_PATH,
  SSH_HOSTKEY_DROPIN_PATH,
  SSHD_DROPIN_PATH,
} from '../../src/guest/contract.js';
import { TMUX_BLOCK_BEGIN, TMUX_BLOCK_END } from '../../src/image/devbox.js';
import { MISE_PIN } from '../../src/image/recipe.js';
import { debugfsLs, debugfsStat, maskedInImage } from '../helpers/debugfs.js';
import { EXPECTED_MASKED_PATHS } from '../helpers/guest-expectations.js';
import { makeSandbox } from '../helpers/sandbox.js';
import {
  defaultImage,
  missingTools,
  registerDefaultImage,
  type CachedImage,
} from '../helpers/image-cache.js';
import { needs } from '../helpers/ci.js';

/**
 * The real default image (debian-bookworm) built once per CI run through the
 * real CLI and daemon, cached under .cache/e2e-images/<inputs key>/ (see
 * image-cache.ts), then checked from the outside with e2fsprogs: no mount,
 * no VM.
 */

const cat = (image: string, p: string): string =>
  execFileSync('debugfs', ['-R', `cat "${p}"`, image], {
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 64 << 20,
  }).toString();
const ls = debugfsLs;
/** Regular files in a directory. */
const lsFiles = (image: string, p: string): string[] =>
  execFileSync('debugfs', ['-R', `ls -p "${p}"`, image], { stdio: ['ignore', 'pipe', 'ignore'] })
    .toString()
    .split('\n')
    .map((l) => l.split('/'))
    .filter((f) => f[2]?.startsWith('100'))
    .map((f) => f[5]!);
const superblock = (image: string): string =>
  execFileSync('dumpe2fs', ['-h', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();

describe('default image (debian-bookworm), built for real', { timeout: 30 * 60_000 }, () => {
  let img: CachedImage | undefined;

  const need = (t: Parameters<typeof needs>[0]): CachedImage | undefined => {
    if (!needs(t, Boolean(img), 'the default image was not built (see the first test)'))
      return undefined;
    return img;
  };

  test('builds through `banger image pull debian-bookworm` (cached by inputs)', async (t) => {
    const missing = missingTools();
    if (!needs(t, missing.length === 0, `missing tools: ${missing.join(', ')}`)) return;
    img = await defaultImage();
    const view = img.info.view as {
      name: string;
      source: string;
      managed: boolean;
      meta: Record<string, unknown>;
    };
    t.diagnostic(
      `${img.built ? 'built' : 'cached'} ${img.dir} (built in ${Math.round(img.info.buildMs / 1000)} s on ${img.info.builtAt})`,
    );
    assert.equal(view.name, 'debian-bookworm');
    assert.equal(view.source, 'catalog:debian-bookworm');
    assert.equal(view.managed, true);
    assert.equal(view.meta.kernel, 'debian-cloud-6.1');
  });

  test('both file systems pass e2fsck -fn; labels, journal only on the work-seed; sparse', (t) => {
    const i = need(t);
    if (!i) return;
    for (const f of [i.rootfs, i.workSeed]) execFileSync('e2fsck', ['-fn', f], { stdio: 'ignore' });
    const base = superblock(i.rootfs);
    assert.match(base, /^Filesystem volume name:\s+banger-base$/m);
    assert.doesNotMatch(base, /^Filesystem features:.*has_journal/m, 'read-only base: no journal');
    const seed = superblock(i.workSeed);
    assert.match(seed, /^Filesystem volume name:\s+banger-work$/m);
    assert.match(seed, /^Filesystem features:.*has_journal/m);
    for (const f of [i.rootfs, i.workSeed]) {
      const st = fs.statSync(f);
      t.diagnostic(`${path.basename(f)}: ${st.size} bytes apparent, ${st.blocks * 512} allocated`);
      assert.ok(st.blocks * 512 < st.size, `${f} is sparse`);
    }
  });

  test('ownership and modes survive rootless conversion: /etc/shadow, setuid sudo, /root', (t) => {
    const i = need(t);
    if (!i) return;
    const s = debugfsStat(i.rootfs, [
      '/etc/shadow',
      '/usr/bin/sudo',
      '/root',
      '/tmp',
      '/usr/bin/passwd',
    ]);
    assert.deepEqual(
      [s.get('/etc/shadow')?.uid, s.get('/etc/shadow')?.gid, s.get('/etc/shadow')?.mode],
      [0, 42, 0o640],
    );
    assert.deepEqual([s.get('/usr/bin/sudo')?.uid, s.get('/usr/bin/sudo')?.mode], [0, 0o4755]);
    assert.equal(s.get('/usr/bin/passwd')?.mode, 0o4755);
    assert.equal(s.get('/tmp')?.mode, 0o1777);
    assert.deepEqual(
      [s.get('/root')?.uid, s.get('/root')?.gid, s.get('/root')?.mode],
      [0, 0, 0o700],
    );
    assert.deepEqual(ls(i.rootfs, '/root'), [], '/root is only a mount point in the base');
  });

  test('the work-seed holds /root: root-owned 0700, Debian dotfiles, .ssh 0700', (t) => {
    const i = need(t);
    if (!i) return;
    const s = debugfsStat(i.workSeed, ['/', '/.bashrc', '/.profile', '/.ssh']);
    assert.deepEqual([s.get('/')?.uid, s.get('/')?.gid, s.get('/')?.mode], [0, 0, 0o700]);
    assert.equal(s.get('/.bashrc')?.type, 'regular');
    assert.equal(s.get('/.profile')?.type, 'regular');
    assert.deepEqual(
      [s.get('/.ssh')?.type, s.get('/.ssh')?.mode, s.get('/.ssh')?.uid],
      ['directory', 0o700, 0],
    );
  });

  test('sshd: the contract drop-in, no host keys, first-boot key generation', (t) => {
    const i = need(t);
    if (!i) return;
    const conf = cat(i.rootfs, SSHD_DROPIN_PATH);
    for (const l of [
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
    ]) {
      assert.match(conf, new RegExp(`^${l}$`, 'm'));
    }
    assert.match(
      cat(i.rootfs, '/etc/ssh/sshd_config'),
      /^Include \/etc\/ssh\/sshd_config\.d\/\*\.conf$/m,
    );
    assert.deepEqual(
      ls(i.rootfs, '/etc/ssh').filter((n) => n.startsWith('ssh_host_')),
      [],
      'no SSH host keys in the image',
    );
    assert.match(cat(i.rootfs, SSH_HOSTKEY_DROPIN_PATH), /ssh-keygen -q -t ed25519/);
    const s = debugfsStat(i.rootfs, ['/etc/systemd/system/multi-user.target.wants/ssh.service']);
    assert.equal(s.get('/etc/systemd/system/multi-user.target.wants/ssh.service')?.type, 'symlink');
  });

  test('guest agent: binary, unit, sysinit.target.wants link', (t) => {
    const i = need(t);
    if (!i) return;
    const s = debugfsStat(i.rootfs, [AGENT_INSTALL_PATH, AGENT_UNIT_PATH, AGENT_UNIT_LINK]);
    const bin = s.get(AGENT_INSTALL_PATH);
    assert.deepEqual([bin?.type, bin?.mode, bin?.uid], ['regular', 0o755, 0]);
    assert.ok(bin!.size > 10_000);
    assert.equal(s.get(AGENT_UNIT_PATH)?.type, 'regular');
    assert.deepEqual(
      [s.get(AGENT_UNIT_LINK)?.type, s.get(AGENT_UNIT_LINK)?.link],
      ['symlink', AGENT_UNIT_PATH],
    );
  });

  test('every unit and generator the contract masks is a symlink to /dev/null', (t) => {
    const i = need(t);
    if (!i) return;
    // What the image masks, read from the image, against the list written down in the tests;
    // the dev box masks systemd-logind as well (no PAM sessions to track).
    assert.deepEqual(
      maskedInImage(i.rootfs),
      [...EXPECTED_MASKED_PATHS, '/etc/systemd/system/systemd-logind.service'].sort(),
    );
    const def = debugfsStat(i.rootfs, ['/etc/systemd/system/default.target']).get(
      '/etc/systemd/system/default.target',
    );
    assert.equal(def?.link, '/lib/systemd/system/multi-user.target');
    assert.deepEqual(ls(i.rootfs, '/etc/systemd/system/getty.target.wants'), [
      'serial-getty@ttyS0.service',
    ]);
  });

  test('mise is on PATH for login shells and runs (unstripped)', (t) => {
    const i = need(t);
    if (!i) return;
    const s = debugfsStat(i.rootfs, [MISE_INSTALL_PATH, MISE_PROFILE_PATH]);
    assert.deepEqual(
      [s.get(MISE_INSTALL_PATH)?.type, s.get(MISE_INSTALL_PATH)?.mode],
      ['regular', 0o755],
    );
    assert.match(cat(i.rootfs, MISE_PROFILE_PATH), /mise activate bash/);
    assert.match(cat(i.rootfs, '/etc/profile'), /profile\.d/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-mise-'));
    try {
      const out = path.join(dir, 'mise');
      execFileSync('debugfs', ['-R', `dump ${MISE_INSTALL_PATH} ${out}`, i.rootfs], {
        stdio: 'ignore',
      });
      fs.chmodSync(out, 0o755);
      const v = execFileSync(out, ['--version'], {
        env: { ...process.env, MISE_YES: '1', HOME: dir },
      }).toString();
      assert.match(v, new RegExp(MISE_PIN.version.replaceAll('.', '\\.')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the tools the spec lists are installed; no documentation', (t) => {
    const i = need(t);
    if (!i) return;
    const bins = [
      '/usr/bin/git',
      '/usr/bin/curl',
      '/usr/bin/tmux',
      '/usr/bin/ss',
      '/usr/sbin/ip',
      '/usr/sbin/sshd',
      '/usr/bin/less',
      '/usr/bin/vim.tiny',
      '/lib/systemd/systemd',
      '/usr/sbin/modprobe',
      // the dev box
      '/usr/bin/docker',
      '/usr/sbin/dockerd',
      '/usr/bin/containerd',
      '/usr/bin/cc',
      '/usr/bin/gcc',
      '/usr/bin/make',
      '/usr/bin/pkg-config',
      '/usr/bin/jq',
      '/usr/bin/python3',
      '/usr/bin/ssh',
      '/usr/bin/rsync',
      '/usr/bin/htop',
      '/usr/bin/strace',
      '/usr/bin/file',
      '/usr/share/tmux-plugin-manager/tpm',
    ];
    const s = debugfsStat(i.rootfs, bins);
    for (const b of bins) assert.ok(s.get(b), `${b} present`);
    assert.deepEqual(ls(i.rootfs, '/usr/share/man'), []);
    assert.deepEqual(lsFiles(i.rootfs, '/usr/share/doc/git'), ['copyright']);
    assert.ok(
      !debugfsStat(i.rootfs, ['/usr/sbin/udevadm', '/lib/systemd/systemd-udevd']).size,
      'no udev',
    );
  });

  test('Docker is socket-activated: nothing of it starts at boot; its data dir is bound to the overlay disk', (t) => {
    const i = need(t);
    if (!i) return;
    const wants = (d: string) => ls(i.rootfs, d);
    assert.ok(wants('/etc/systemd/system/sockets.target.wants').includes('docker.socket'));
    assert.ok(!wants('/etc/systemd/system/multi-user.target.wants').includes('docker.service'));
    assert.ok(!wants('/etc/systemd/system/multi-user.target.wants').includes('containerd.service'));
    assert.ok(!wants('/etc/systemd/system/sysinit.target.wants').includes('apparmor.service'));
    assert.ok(!wants('/lib/systemd/system/multi-user.target.wants').includes('dbus.service'));
    const logind = debugfsStat(i.rootfs, ['/etc/systemd/system/systemd-logind.service']);
    assert.equal(logind.get('/etc/systemd/system/systemd-logind.service')?.link, '/dev/null');
    assert.match(
      cat(i.rootfs, '/etc/systemd/system/banger-docker-data.service'),
      /^ExecStart=\/bin\/mount --bind \/run\/banger\/overlay\/docker \/var\/lib\/docker$/m,
    );
    assert.match(
      cat(i.rootfs, '/etc/systemd/system/docker.service.d/banger.conf'),
      /^Requires=banger-docker-data\.service$/m,
    );
  });

  test("tmux persistence: one banger block in the work-seed's .tmux.conf, an empty plugin dir", (t) => {
    const i = need(t);
    if (!i) return;
    const conf = cat(i.workSeed, '/.tmux.conf');
    assert.equal(conf.split('\n').filter((l) => l === TMUX_BLOCK_BEGIN).length, 1);
    assert.equal(conf.split('\n').filter((l) => l === TMUX_BLOCK_END).length, 1);
    assert.match(conf, /^run-shell -b '\{ \/usr\/share\/tmux-plugin-manager\/tpm; /m);
    const s = debugfsStat(i.workSeed, ['/.tmux.conf', '/.tmux/plugins']);
    assert.deepEqual([s.get('/.tmux.conf')?.uid, s.get('/.tmux.conf')?.mode], [0, 0o644]);
    assert.equal(s.get('/.tmux/plugins')?.type, 'directory');
  });

  test('reuse: `image register` of the cached files into another sandbox; delete leaves the cache alone', async (t) => {
    const i = need(t);
    if (!i) return;
    const sb = await makeSandbox();
    try {
      await registerDefaultImage(sb, i, 'bookworm-cached');
      const show = await sb.run(['image', 'show', 'bookworm-cached', '--json']);
      assert.equal(show.code, 0, show.stderr);
      const v = JSON.parse(show.stdout) as {
        managed: boolean;
        rootfsPath: string;
        workSeedPath: string;
        kernel: string;
      };
      assert.deepEqual(
        [v.managed, v.rootfsPath, v.workSeedPath, v.kernel],
        [false, i.rootfs, i.workSeed, 'debian-cloud-6.1'],
      );
      const del = await sb.run(['image', 'delete', 'bookworm-cached']);
      assert.equal(del.code, 0, del.stderr);
      assert.ok(fs.existsSync(i.rootfs) && fs.existsSync(i.workSeed));
    } finally {
      await sb.cleanup();
    }
  });
});
