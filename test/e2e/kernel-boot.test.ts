import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  AGENT_VIRTIO_PORT_NAME,
  DISKS,
  INIT_DONE_MARKER,
  INIT_ERROR_MARKER,
} from '../../src/guest/bootContract.js';
import type { KernelMeta } from '../../src/image/kernel/build.js';
import { which } from '../../src/util/exec.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';
import { skipUnless } from '../helpers/ci.js';
import { testNetnsName } from '../helpers/owner.js';
import { cannotPull, TEST_CACHE_DIR } from './kernel-helpers.js';

/**
 * Boot smoke of a pulled kernel + banger's initramfs under QEMU microvm (TCG),
 * with a busybox-only base rootfs whose /sbin/init reports what it sees and
 * then does what systemd-shutdown does (pivot into /run/initramfs, run
 * /shutdown). Proves /init: modules, disks by serial and by label, overlay
 * root, work disk, modules disk (modprobe), identity and network from the
 * command line, device links, and a clean overlay disk after shutdown.
 * QEMU runs inside a network namespace this test creates and deletes; its
 * user-mode network has nowhere to go.
 */

/** BANGER_KERNEL_TEST_NAME boots another catalog kernel (e.g. debian-generic-6.1). */
const NAME = process.env.BANGER_KERNEL_TEST_NAME || 'debian-cloud-6.1';
const VM_ID = '0123456789abcdef';
const BOOT_TIMEOUT = 180_000;

function cannotBoot(): string | undefined {
  const r = cannotPull();
  if (r) return r;
  if (!which('qemu-system-x86_64')) return 'qemu-system-x86_64 is not installed';
  if (process.getuid?.() !== 0) return 'needs root for ip netns';
  if (!which('ip')) return 'iproute2 is not installed';
  return undefined;
}
const reason = cannotBoot();

const GUEST_INIT = `#!/bin/sh
export PATH=/bin
echo "TEST: pid=$$"
echo "TEST: hostname=$(hostname)"
echo "TEST: machine-id=$(cat /etc/machine-id)"
echo "TEST: etc-hostname=$(cat /etc/hostname)"
echo "TEST: hosts=$(grep 127.0.1.1 /etc/hosts | tr '\\t' ' ')"
echo "TEST: resolv=$(tr '\\n' ' ' < /etc/resolv.conf)"
echo "TEST: addr=$(ip -4 -o addr show dev eth0 | awk '{print $4}')"
echo "TEST: route=$(ip route show default | cut -d' ' -f1-5)"
echo "TEST: mounts=$(cut -d' ' -f2,3,4 /proc/mounts | tr ' \\n' ':,')"
echo "TEST: root=$(stat -c '%u:%g:%a' /root) ssh=$(stat -c '%u:%g:%a' /root/.ssh) keys=$(stat -c '%u:%g:%a' /root/.ssh/authorized_keys)"
echo "TEST: agent-port=$(readlink /dev/virtio-ports/${AGENT_VIRTIO_PORT_NAME})"
echo "TEST: power=$(readlink /dev/input/power-button)"
if modprobe veth; then echo "TEST: modprobe=ok"; else echo "TEST: modprobe=failed"; fi
echo "TEST: lsmod=$(cut -d' ' -f1 /proc/modules | sort | tr '\\n' ',')"
echo "TEST: boots-before=$(cat /var/boot-count 2>/dev/null || echo 0)"
echo $(( $(cat /var/boot-count 2>/dev/null || echo 0) + 1 )) > /var/boot-count
echo "TEST: initramfs=$(ls /run/initramfs | tr '\\n' ' ')"
sync
# what systemd-shutdown does: bind the API filesystems into /run/initramfs, pivot, run /shutdown
mount --bind /run/initramfs /run/initramfs
for d in dev proc sys run; do mount --bind /$d /run/initramfs/$d; done
cd /run/initramfs
pivot_root . oldroot || { echo "TEST: pivot_root failed"; poweroff -f; }
exec /bin/sh /shutdown poweroff </dev/console >/dev/console 2>&1
`;

interface Boot {
  console: string;
  test: Map<string, string>;
  ms: number;
}

describe('kernel boot smoke (QEMU microvm, TCG)', skipUnless(!reason, reason!), () => {
  let sb: Sandbox;
  let dir: string;
  let meta: KernelMeta;
  let ns: string | undefined;
  const kdir = (): string => path.join(sb.paths.kernelsDir, NAME);

  before(async () => {
    fs.mkdirSync(TEST_CACHE_DIR, { recursive: true });
    sb = await makeSandbox({ env: { BANGER_CACHE_DIR: TEST_CACHE_DIR } });
    const r = await sb.run(['kernel', 'pull', NAME], { timeoutMs: 10 * 60_000 });
    assert.equal(r.code, 0, r.stderr);
    meta = JSON.parse(fs.readFileSync(path.join(kdir(), 'meta.json'), 'utf8')) as KernelMeta;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-kboot-'));

    // base rootfs: busybox and the reporting init
    const tree = path.join(dir, 'base');
    for (const d of [
      'bin',
      'sbin',
      'etc',
      'dev',
      'proc',
      'sys',
      'run',
      'root',
      'tmp',
      'var',
      'lib/modules',
    ]) {
      fs.mkdirSync(path.join(tree, d), { recursive: true });
    }
    fs.copyFileSync('/bin/busybox', path.join(tree, 'bin/busybox'));
    fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
    const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);
    for (const a of applets)
      if (a !== 'busybox') fs.symlinkSync('busybox', path.join(tree, 'bin', a));
    fs.writeFileSync(path.join(tree, 'sbin/init'), GUEST_INIT, { mode: 0o755 });
    fs.writeFileSync(path.join(tree, 'etc/hostname'), 'image\n');
    fs.writeFileSync(path.join(tree, 'etc/machine-id'), '');
    fs.writeFileSync(path.join(tree, 'etc/resolv.conf'), 'nameserver 127.0.0.53\n');
    mkfs(tree, path.join(dir, 'base.ext4'), DISKS.base.label, '64M', ['-O', '^has_journal']);
    // overlay disk (empty) and work disk with a key file owned by someone else, too open
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    mkfs(empty, path.join(dir, 'overlay.ext4'), DISKS.overlay.label, '64M');
    const work = path.join(dir, 'work');
    fs.mkdirSync(path.join(work, '.ssh'), { recursive: true });
    fs.writeFileSync(path.join(work, '.ssh/authorized_keys'), 'ssh-ed25519 AAAA test\n', {
      mode: 0o644,
    });
    fs.chownSync(path.join(work, '.ssh/authorized_keys'), 1000, 1000);
    fs.chownSync(path.join(work, '.ssh'), 1000, 1000);
    fs.chmodSync(work, 0o755);
    mkfs(work, path.join(dir, 'work.ext4'), DISKS.work.label, '64M');

    ns = testNetnsName('k', randomBytes(4).toString('hex'));
    execFileSync('ip', ['netns', 'add', ns]);
  });

  after(async () => {
    const del = ns ? spawnSync('ip', ['netns', 'del', ns], { encoding: 'utf8' }) : undefined;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    await sb?.cleanup();
    if (del && del.status !== 0) throw new Error(`ip netns del ${ns} failed: ${del.stderr}`);
  });

  function mkfs(
    tree: string,
    file: string,
    label: string,
    size: string,
    extra: string[] = [],
  ): void {
    execFileSync(
      'mkfs.ext4',
      ['-q', '-F', '-L', label, '-E', 'root_owner=0:0', ...extra, '-d', tree, file, size],
      {
        stdio: 'pipe',
      },
    );
  }

  async function boot(opts: { serials: boolean; kernel: 'vmlinux' | 'vmlinuz' }): Promise<Boot> {
    const mhz = Number(
      /cpu MHz\s*:\s*([\d.]+)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 0,
    );
    const append = [
      'console=ttyS0',
      mhz ? `tsc_early_khz=${Math.round(mhz * 1000)}` : '',
      `ip=172.16.0.9::172.16.0.1:255.255.255.0:calm-otter:eth0:off:172.16.0.1:9.9.9.9`,
      `banger.id=${VM_ID}`,
    ]
      .filter(Boolean)
      .join(' ');
    const drive = (id: string, file: string, serial: string, ro = false): string[] => [
      '-drive',
      `id=${id},file=${file},format=raw,if=none${ro ? ',readonly=on' : ''}`,
      '-device',
      `virtio-blk-device,drive=${id}${opts.serials ? `,serial=${serial}` : ''}`,
    ];
    const consoleLog = path.join(dir, `console-${opts.kernel}-${opts.serials}.log`);
    const args = [
      'netns',
      'exec',
      ns!,
      'qemu-system-x86_64',
      '-M',
      'microvm,pit=on,pic=on,rtc=on',
      '-accel',
      'tcg',
      '-cpu',
      'max',
      '-m',
      '512',
      '-smp',
      '1',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-serial',
      `file:${consoleLog}`,
      '-kernel',
      path.join(kdir(), opts.kernel),
      '-initrd',
      path.join(kdir(), 'initrd.img'),
      '-append',
      append,
      ...drive('base', path.join(dir, 'base.ext4'), DISKS.base.serial, true),
      ...drive('ovl', path.join(dir, 'overlay.ext4'), DISKS.overlay.serial),
      ...drive('work', path.join(dir, 'work.ext4'), DISKS.work.serial),
      ...drive('mods', path.join(kdir(), 'modules.ext4'), DISKS.modules.serial, true),
      '-netdev',
      'user,id=n0,restrict=on',
      '-device',
      'virtio-net-device,netdev=n0',
      '-device',
      'virtio-serial-device',
      '-chardev',
      'null,id=agent',
      '-device',
      `virtserialport,chardev=agent,name=${AGENT_VIRTIO_PORT_NAME}`,
    ];
    const started = Date.now();
    const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), BOOT_TIMEOUT);
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    const text = fs.existsSync(consoleLog) ? fs.readFileSync(consoleLog, 'utf8') : '';
    assert.equal(code, 0, `qemu exited ${code}: ${stderr}\n--- console ---\n${text.slice(-4000)}`);
    const testLines = new Map<string, string>();
    for (const l of text.split(/\r?\n/)) {
      const m = /^TEST: ([a-z-]+)=(.*)$/.exec(l);
      if (m) testLines.set(m[1]!, m[2]!);
    }
    return { console: text, test: testLines, ms: Date.now() - started };
  }

  const clean = (img: string): void => {
    const h = execFileSync('dumpe2fs', ['-h', img], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    assert.match(h, /^Filesystem state:\s+clean$/m, `${path.basename(img)} state`);
    assert.doesNotMatch(h, /needs_recovery/, `${path.basename(img)} journal`);
    execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' });
  };

  test(
    'vmlinux, disks by serial: the root is assembled and the identity applied',
    { timeout: BOOT_TIMEOUT + 10_000 },
    async (t) => {
      const b = await boot({ serials: true, kernel: 'vmlinux' });
      t.diagnostic(`boot to poweroff: ${(b.ms / 1000).toFixed(1)} s`);
      const T = b.test;
      assert.ok(b.console.includes(INIT_DONE_MARKER), 'init reached switch_root');
      assert.ok(!b.console.includes(INIT_ERROR_MARKER), b.console.slice(-2000));
      assert.equal(T.get('pid'), '1');
      assert.equal(T.get('hostname'), 'calm-otter');
      assert.equal(T.get('etc-hostname'), 'calm-otter');
      assert.equal(T.get('hosts'), '127.0.1.1 calm-otter');
      // md5 of banger.id (VM_ID), as `printf %s 0123456789abcdef | md5sum` prints it
      assert.equal(T.get('machine-id'), '4032af8d61035123906e58e067140cc5');
      assert.equal(T.get('resolv'), 'nameserver 172.16.0.1 nameserver 9.9.9.9 ');
      assert.equal(T.get('addr'), '172.16.0.9/24');
      assert.equal(T.get('route'), 'default via 172.16.0.1 dev eth0');
      const mounts = T.get('mounts')!;
      assert.match(
        mounts,
        /(^|,)\/:overlay:rw[^:]*,lowerdir=\/base,upperdir=\/ovl\/upper,workdir=\/ovl\/work,/,
      );
      assert.match(mounts, /,\/root:ext4:rw,noatime/);
      assert.match(mounts, /,\/run\/banger\/base:ext4:ro,[^:]*norecovery/);
      assert.match(mounts, /,\/run\/banger\/overlay:ext4:rw,noatime/);
      assert.match(
        mounts,
        new RegExp(`,/lib/modules/${meta.kernelRelease.replace(/\./g, '\\.')}:ext4:ro`),
      );
      assert.match(mounts, /,\/run:tmpfs:rw,nosuid,nodev/);
      assert.equal(T.get('root'), '0:0:700 ssh=0:0:700 keys=0:0:600');
      assert.match(T.get('agent-port')!, /^\.\.\/vport\d+p\d+$/);
      assert.match(T.get('power')!, /^event\d+$/);
      assert.equal(T.get('modprobe'), 'ok', 'modprobe finds modules.dep on the modules disk');
      assert.match(T.get('lsmod')!, /(^|,)veth,/);
      assert.match(T.get('lsmod')!, /(^|,)virtio_mmio,/);
      assert.equal(T.get('boots-before'), '0');
      assert.match(T.get('initramfs')!, /\bbin\b.*\bshutdown\b/);
      assert.doesNotMatch(b.console, /banger-shutdown: still mounted|TEST: pivot_root failed/);
      clean(path.join(dir, 'overlay.ext4'));
      clean(path.join(dir, 'work.ext4'));
    },
  );

  test(
    'bzImage, no serials (Firecracker-style): disks found by label; the overlay persisted',
    { timeout: BOOT_TIMEOUT + 10_000 },
    async (t) => {
      const b = await boot({ serials: false, kernel: 'vmlinuz' });
      t.diagnostic(`boot to poweroff: ${(b.ms / 1000).toFixed(1)} s`);
      assert.ok(b.console.includes(INIT_DONE_MARKER), b.console.slice(-2000));
      assert.equal(
        b.test.get('boots-before'),
        '1',
        'writes from the first boot are on the overlay disk',
      );
      assert.equal(b.test.get('modprobe'), 'ok');
      assert.equal(b.test.get('hostname'), 'calm-otter');
      clean(path.join(dir, 'overlay.ext4'));
    },
  );

  test(
    'a missing disk fails with the marker line and powers off',
    { timeout: BOOT_TIMEOUT + 10_000 },
    async () => {
      // move the work disk away: /init waits, then reports and powers off (qemu exits 0)
      fs.renameSync(path.join(dir, 'work.ext4'), path.join(dir, 'work.away'));
      fs.writeFileSync(path.join(dir, 'work.ext4'), Buffer.alloc(1024 * 1024));
      try {
        const b = await boot({ serials: false, kernel: 'vmlinux' });
        const line = b.console.split(/\r?\n/).find((l) => l.startsWith(INIT_ERROR_MARKER));
        assert.ok(line, b.console.slice(-2000));
        assert.match(
          line,
          /disks not found \(want banger-base, banger-overlay, banger-work; have: vda vdb vdc vdd/,
        );
        assert.ok(!b.console.includes(INIT_DONE_MARKER));
      } finally {
        fs.renameSync(path.join(dir, 'work.away'), path.join(dir, 'work.ext4'));
      }
    },
  );
});
