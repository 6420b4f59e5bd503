import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import {
  CMDLINE,
  DISKS,
  INIT_DONE_MARKER,
  INIT_ERROR_MARKER,
  POWER_BUTTON_DEVICE,
} from '../../src/guest/bootContract.js';
import {
  cpioPlan,
  normalizeCpioPath,
  writeCpio,
  type CpioEntry,
} from '../../src/image/kernel/cpio.js';
import {
  BUSYBOX_PATH,
  buildInitramfs,
  initramfsEntries,
  isStaticElf,
  loadBusybox,
} from '../../src/image/kernel/initramfs.js';
import {
  buildInitScript,
  buildShutdownScript,
  guestMachineId,
  SHUTDOWN_APPLETS,
} from '../../src/image/kernel/initScript.js';
import { skipUnless } from '../helpers/ci.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-kinit-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const haveBusybox = fs.existsSync(BUSYBOX_PATH);
const need = (ok: boolean, what: string): { skip?: string } =>
  skipUnless(ok, `${what} is not installed`);

const MODULES = [
  'kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/block/virtio_blk.ko',
  'kernel/drivers/virtio/virtio_mmio.ko',
];
const KVER = '6.1.0-56-cloud-amd64';
const init = buildInitScript({ kernelRelease: KVER, modules: MODULES });
const lines = init.split('\n');
/** Index of the first line containing s (fails when absent). */
const at = (s: string | RegExp): number => {
  const i = lines.findIndex((l) => (typeof s === 'string' ? l.includes(s) : s.test(l)));
  assert.ok(i >= 0, `init has ${String(s)}`);
  return i;
};

describe('/init builder', () => {
  test('is a busybox sh script that mounts proc, sys and devtmpfs first', () => {
    assert.ok(init.startsWith('#!/bin/sh\n'));
    assert.ok(at('mount -t proc proc /proc') < at('mount -t devtmpfs devtmpfs /dev'));
    assert.ok(at('mount -t devtmpfs') < at(/^load '/));
  });

  test('loads the modules in the given order before looking for disks', () => {
    const loads = lines.filter((l) => l.startsWith('load ')).map((l) => l.slice(6, -1));
    assert.deepEqual(loads, MODULES);
    assert.ok(at(`load '${MODULES.at(-1)}'`) < at('find_disk() {'));
    assert.match(init, /insmod "\/lib\/modules\/\$1" \|\| fail/);
  });

  test('finds disks by the contract serials with label fallback, modules disk optional', () => {
    for (const d of [DISKS.base, DISKS.overlay, DISKS.work]) {
      assert.match(init, new RegExp(`find_disk ${d.serial} ${d.label}\\)`));
    }
    assert.match(init, /\/sys\/block\/vd\*\/serial/);
    assert.match(init, /findfs "LABEL=\$2"/);
    assert.match(
      init,
      new RegExp(
        `MODS=\\$\\(find_disk ${DISKS.modules.serial} ${DISKS.modules.label}\\) \\|\\| MODS=`,
      ),
    );
  });

  test('mounts base ro,noload, overlay upper/work, overlayfs root, work disk at /root, modules at /lib/modules/<kver>', () => {
    const base = at('mount -t ext4 -o ro,noload "$BASE" /base');
    const ovl = at('mount -t ext4 -o noatime "$OVL" /ovl');
    const root = at(
      'mount -t overlay overlay -o lowerdir=/base,upperdir=/ovl/upper,workdir=/ovl/work /newroot',
    );
    const work = at('mount -t ext4 -o noatime "$WORK" /newroot/root');
    const mods = at(`mount -t ext4 -o ro "$MODS" /newroot/lib/modules/${KVER}`);
    assert.ok(base < ovl && ovl < root && root < work && work < mods);
    const run = at('mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run');
    assert.ok(at('mount --move /base /newroot/run/banger/base') > run);
    assert.ok(at('mount --move /ovl /newroot/run/banger/overlay') > run);
  });

  test('fixes /root and /root/.ssh ownership and modes', () => {
    assert.match(init, /chown 0:0 \/newroot\/root && chmod 0700 \/newroot\/root/);
    assert.match(init, /chown -R 0:0 \/newroot\/root\/\.ssh/);
    assert.match(init, /chmod 0600 \/newroot\/root\/\.ssh\/authorized_keys/);
  });

  test('identity: machine-id from banger.id, hostname/hosts/resolv.conf/address/route from ip=', () => {
    assert.match(init, new RegExp(`${CMDLINE.id.replace('.', '\\.')}=\\*\\) VM_ID=`));
    assert.match(init, /md5sum \| cut -c1-32/);
    assert.match(init, /> \/newroot\/etc\/machine-id/);
    assert.match(init, /> \/newroot\/etc\/hostname/);
    assert.match(init, /> \/newroot\/etc\/hosts/);
    assert.match(init, /> \/newroot\/etc\/resolv\.conf/);
    assert.match(init, /ip addr add "\$CLIENT\/\$\(mask2prefix/);
    assert.match(init, /ip route add default via "\$GW" dev "\$DEV"/);
  });

  test('never generates SSH host keys', () => {
    assert.doesNotMatch(init, /ssh-keygen|ssh_host_/);
  });

  test('device links, shutdown initramfs, markers, then switch_root', () => {
    assert.match(init, /\/sys\/class\/virtio-ports\/vport\*/);
    assert.match(init, /ln -sf "\.\.\/\$\{p##\*\/\}" "\/dev\/virtio-ports\/\$\(cat "\$p\/name"\)"/);
    assert.ok(init.includes(`ln -sf "\${e##*/}" ${POWER_BUTTON_DEVICE}`));
    assert.match(init, /cp \/shutdown \/newroot\/run\/initramfs\/shutdown/);
    for (const a of SHUTDOWN_APPLETS) assert.ok(init.includes(` ${a}`), a);
    assert.match(init, new RegExp(`echo "${INIT_ERROR_MARKER} \\$\\*"`));
    assert.ok(at(`echo "${INIT_DONE_MARKER}"`) < at('exec switch_root /newroot "$NEXT_INIT"'));
    assert.equal(lines.filter((l) => l.trim()).at(-1), 'exec switch_root /newroot "$NEXT_INIT"');
    // failure powers the VM off rather than leaving it hanging
    assert.match(
      init,
      /fail\(\) \{\n {4}echo "BANGER-INIT-ERROR: \$\*"\n {4}sync\n {4}poweroff -f/,
    );
  });

  test('rejects unsafe inputs', () => {
    assert.throws(
      () => buildInitScript({ kernelRelease: '6.1; rm -rf /', modules: [] }),
      /invalid kernel release '6\.1; rm -rf \/'$/,
    );
    assert.throws(
      () => buildInitScript({ kernelRelease: KVER, modules: ['../../etc/passwd.ko'] }),
      /invalid module path '\.\.\/\.\.\/etc\/passwd\.ko'$/,
    );
    assert.throws(
      () => buildInitScript({ kernelRelease: KVER, modules: ["a'b.ko"] }),
      /invalid module path 'a'b\.ko'$/,
    );
  });

  test('passes busybox sh -n', need(haveBusybox, 'busybox'), () => {
    for (const [name, text] of [
      ['init', init],
      ['shutdown', buildShutdownScript()],
    ]) {
      const f = path.join(tmp, name!);
      fs.writeFileSync(f, text!);
      const r = spawnSync(BUSYBOX_PATH, ['sh', '-n', f], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
    }
  });

  test(
    'its helpers behave under busybox sh: mask2prefix, ip= split, machine-id',
    need(haveBusybox, 'busybox'),
    () => {
      const fn = init.slice(
        init.indexOf('mask2prefix() {'),
        init.indexOf('\n}\n', init.indexOf('mask2prefix() {')) + 3,
      );
      const sh = (script: string): string =>
        execFileSync(BUSYBOX_PATH, ['sh', '-c', script], { encoding: 'utf8' }).trim();
      assert.equal(sh(`${fn}\nmask2prefix 255.255.255.0`), '24');
      assert.equal(sh(`${fn}\nmask2prefix 255.255.240.0`), '20');
      assert.equal(sh(`${fn}\nmask2prefix 255.255.255.252`), '30');
      const split = sh(
        `IP_ARG=172.16.0.9::172.16.0.1:255.255.255.0:calm-otter:eth0:off:172.16.0.1:9.9.9.9\n` +
          `IFS=:\nset -- $IP_ARG\nunset IFS\necho "$1|$3|$4|$5|$6|$8|$9"`,
      );
      assert.equal(split, '172.16.0.9|172.16.0.1|255.255.255.0|calm-otter|eth0|172.16.0.1|9.9.9.9');
      const ucs = init.slice(
        init.indexOf('uptime_cs() {'),
        init.indexOf('\n', init.indexOf('uptime_cs() {')),
      );
      const cs = Number(sh(`${ucs}\nuptime_cs`));
      const up = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
      assert.ok(Math.abs(cs - up * 100) < 200, `uptime_cs ${cs} vs ${up}`);
      assert.equal(
        sh(`${ucs.replace('read -r up _ < /proc/uptime', 'up=0.08')}\nuptime_cs`),
        '8',
        'no octal trap',
      );
      // The init script's own machine-id pipeline under busybox, and the host-side function,
      // both give the md5 of the VM id (as coreutils' md5sum prints it).
      const pipeline = /MID=\$\((.*md5sum[^)]*)\)/.exec(init)?.[1];
      assert.ok(pipeline, 'the init script derives machine-id with md5sum');
      const ID = '0123456789abcdef';
      const MD5 = '4032af8d61035123906e58e067140cc5';
      assert.equal(sh(`VM_ID=${ID}\n${pipeline}`), MD5);
      assert.equal(guestMachineId(ID), MD5);
    },
  );
});

describe('/shutdown builder', () => {
  const s = buildShutdownScript();
  test('unmounts everything under /oldroot deepest first, then acts on $1', () => {
    assert.match(s, /cut -d' ' -f2 \/proc\/mounts \| sort -r/);
    assert.match(s, /\/oldroot \| \/oldroot\/\*\) umount "\$m"/);
    assert.ok(s.indexOf('sync') < s.indexOf('poweroff -f'));
    assert.match(s, /reboot \| kexec\) reboot -f/);
    assert.match(s, /halt\) halt -f/);
  });
  test('only uses applets installed in /run/initramfs/bin', () => {
    const used = new Set(
      s
        .split('\n')
        .filter((l) => !l.trim().startsWith('#'))
        .flatMap((l) =>
          [
            ...l.matchAll(
              /(?:^|[;|(]|\$\(|\s)(mount|umount|cut|sort|grep|tr|sync|poweroff|reboot|halt)\b/g,
            ),
          ].map((m) => m[1]!),
        ),
    );
    for (const u of used) assert.ok((SHUTDOWN_APPLETS as readonly string[]).includes(u), u);
  });
});

describe('cpio newc writer', () => {
  const entries: CpioEntry[] = [
    { type: 'file', path: 'init', mode: 0o755, data: '#!/bin/sh\necho hi\n' },
    {
      type: 'file',
      path: 'lib/modules/kernel/a.ko',
      mode: 0o644,
      data: Buffer.from([0, 1, 2, 3, 4]),
    },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'file', path: 'bin/busybox', mode: 0o755, data: Buffer.alloc(1001, 7) },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
    { type: 'chardev', path: 'dev/console', mode: 0o600, major: 5, minor: 1 },
    { type: 'file', path: 'empty', mode: 0o600, data: '' },
  ];

  test('plan: normalised paths, parents added, bytewise sorted', () => {
    const plan = cpioPlan(entries).map((e) => e.path);
    assert.deepEqual(plan, [
      'bin',
      'bin/busybox',
      'bin/sh',
      'dev',
      'dev/console',
      'empty',
      'init',
      'lib',
      'lib/modules',
      'lib/modules/kernel',
      'lib/modules/kernel/a.ko',
      'tmp',
    ]);
    assert.equal(normalizeCpioPath('./a//b/'), 'a/b');
    assert.throws(
      () => normalizeCpioPath('a/../../b'),
      /invalid initramfs path 'a\/\.\.\/\.\.\/b'$/,
    );
    assert.throws(() => cpioPlan([entries[0]!, entries[0]!]), /duplicate/);
    assert.throws(
      () =>
        cpioPlan([
          { type: 'file', path: 'x', mode: 0o644, data: '' },
          { type: 'file', path: 'x/y', mode: 0o644, data: '' },
        ]),
      /not a directory/,
    );
  });

  test('reproducible: same input, same bytes; 4-byte aligned; ends with the trailer', () => {
    const a = writeCpio(entries);
    const b = writeCpio([...entries].reverse());
    assert.ok(a.equals(b));
    assert.equal(a.length % 4, 0);
    assert.ok(a.subarray(0, 6).toString() === '070701');
    assert.ok(a.includes(Buffer.from('TRAILER!!!\0')));
  });

  test(
    'round-trips through GNU cpio (list with owners and modes, extract contents)',
    need(fs.existsSync('/usr/bin/cpio'), 'cpio'),
    () => {
      const file = path.join(tmp, 'test.cpio');
      fs.writeFileSync(file, writeCpio(entries));
      const list = execFileSync('cpio', ['-itv', '--quiet', '-F', file], { encoding: 'utf8' });
      const byName = new Map(
        list
          .trim()
          .split('\n')
          .map((l) => [l.replace(/^.* 1970 /, ''), l]),
      );
      assert.match(byName.get('init')!, /^-rwxr-xr-x\s+1 root\s+root\s+18 Jan {2}1 {2}1970 init$/);
      assert.match(byName.get('bin/sh -> busybox')!, /^lrwxrwxrwx/);
      assert.match(byName.get('tmp')!, /^drwxrwxrwt/);
      assert.match(byName.get('dev/console')!, /^crw-------\s+1 root\s+root\s+5,\s+1 /);
      assert.match(byName.get('bin/busybox')!, /Jan {2}1 {2}1970 bin\/busybox$/);
      const out = path.join(tmp, 'x');
      fs.mkdirSync(out);
      execFileSync(
        'cpio',
        ['-id', '--quiet', '--no-absolute-filenames', '-F', file, '--nonmatching', 'dev/console'],
        { cwd: out },
      );
      assert.equal(fs.readFileSync(path.join(out, 'init'), 'utf8'), '#!/bin/sh\necho hi\n');
      assert.deepEqual(
        [...fs.readFileSync(path.join(out, 'lib/modules/kernel/a.ko'))],
        [0, 1, 2, 3, 4],
      );
      assert.ok(fs.readFileSync(path.join(out, 'bin/busybox')).equals(Buffer.alloc(1001, 7)));
      assert.equal(fs.readlinkSync(path.join(out, 'bin/sh')), 'busybox');
      assert.equal(fs.statSync(path.join(out, 'empty')).size, 0);
    },
  );
});

describe('initramfs assembly', () => {
  test('busybox, applet links, init, shutdown, console node, modules under /lib/modules', () => {
    const e = initramfsEntries({
      busybox: Buffer.from('bb'),
      applets: ['sh', 'mount', 'busybox', 'insmod', '../evil', 'switch_root'],
      kernelRelease: KVER,
      modules: [{ path: 'kernel/drivers/virtio/virtio.ko', data: Buffer.from('ko') }],
    });
    const by = new Map(e.map((x) => [x.path, x]));
    assert.equal(by.get('bin/busybox')?.type, 'file');
    assert.deepEqual(by.get('bin/sh'), { type: 'symlink', path: 'bin/sh', target: 'busybox' });
    assert.equal(by.has('bin/busybox') && by.get('bin/busybox')!.type, 'file');
    assert.equal(by.has('bin/../evil'), false);
    assert.equal(by.get('lib/modules/kernel/drivers/virtio/virtio.ko')?.type, 'file');
    assert.equal((by.get('init') as { mode: number }).mode, 0o755);
    assert.match(
      String((by.get('init') as { data: string }).data),
      /load 'kernel\/drivers\/virtio\/virtio\.ko'/,
    );
    assert.equal(by.get('dev/console')?.type, 'chardev');
    assert.ok(by.has('shutdown') && by.has('newroot') && by.has('proc') && by.has('sys'));
    // the whole archive builds
    assert.ok(
      buildInitramfs({
        busybox: Buffer.from('bb'),
        applets: ['sh'],
        kernelRelease: KVER,
        modules: [],
      }).length > 0,
    );
  });

  test('static ELF detection', need(haveBusybox, 'busybox'), () => {
    assert.equal(isStaticElf(fs.readFileSync(BUSYBOX_PATH)), true);
    assert.equal(isStaticElf(fs.readFileSync(process.execPath)), false, 'node is dynamic');
    assert.equal(isStaticElf(Buffer.from('#!/bin/sh\n')), false);
  });

  test(
    'loadBusybox lists applets and rejects a dynamic binary with an install hint',
    need(haveBusybox, 'busybox'),
    async () => {
      const bb = await loadBusybox(BUSYBOX_PATH);
      for (const a of ['sh', 'insmod', 'switch_root', 'findfs', 'md5sum'])
        assert.ok(bb.applets.includes(a), a);
      assert.equal(
        bb.sha256,
        createHash('sha256').update(fs.readFileSync(BUSYBOX_PATH)).digest('hex'),
      );
      await assert.rejects(
        loadBusybox(process.execPath),
        (e: Error & { hint?: string }) =>
          /not a statically linked/.test(e.message) && /busybox-static/.test(e.hint ?? ''),
      );
      await assert.rejects(
        loadBusybox(path.join(tmp, 'nope')),
        (e: Error & { hint?: string }) =>
          /busybox not found/.test(e.message) && /busybox-static/.test(e.hint ?? ''),
      );
    },
  );
});
