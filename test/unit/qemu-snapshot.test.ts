import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { buildQemuArgv } from '../../src/vmm/qemu/argv.js';
import {
  awaitMigration,
  migrationProgress,
  restoreCommands,
  runCommands,
  saveCommands,
} from '../../src/vmm/qemu/migrate.js';
import { QmpClient } from '../../src/vmm/qemu/qmp.js';
import {
  isRamFileTarget,
  migrationDir,
  ramFdIn,
  ramFilePath,
  receiveToFile,
  sendFile,
  shmRoomProblem,
  sweepMigrationDirs,
} from '../../src/vmm/qemu/ramFile.js';
import type { LaunchSpec } from '../../src/vmm/driver.js';

const spec: LaunchSpec = {
  vmId: 'id1',
  name: 'dev',
  dir: '/s/vms/id1',
  vcpu: 2,
  memoryMib: 1024,
  accel: 'tcg',
  kernel: { path: '/k/bzImage', cmdline: 'console=ttyS0' },
  disks: [
    { id: 'base', path: '/s/base.ext4', readOnly: true },
    { id: 'overlay', path: '/s/vms/id1/overlay.ext4', readOnly: false },
  ],
  agentSocket: '/s/vms/id1/agent.sock',
  consoleLog: '/s/vms/id1/console.log',
  vmmLog: '/s/vms/id1/vmm.log',
};

const after1 = (argv: string[], flag: string): string[] =>
  argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-qsnap-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('qemu argv: file-backed RAM and incoming', () => {
  test('RAM is a shared mapping of the ram file, named as the machine memory backend', () => {
    const argv = buildQemuArgv(spec, { qmpSocket: 'q', ramFile: '/dev/shm/banger-id1.ram' });
    assert.deepEqual(after1(argv, '-object'), [
      'memory-backend-file,id=mem,size=1024M,mem-path=/dev/shm/banger-id1.ram,share=on',
    ]);
    assert.deepEqual(after1(argv, '-M'), ['microvm,pit=on,pic=on,rtc=on,memory-backend=mem']);
    assert.deepEqual(after1(argv, '-m'), ['1024M']);
    assert.deepEqual(after1(argv, '-incoming'), []);
    assert.ok(!argv.includes('-S'));
  });

  test('without a ram file: anonymous memory, no backend', () => {
    const argv = buildQemuArgv(spec, { qmpSocket: 'q' });
    assert.deepEqual(after1(argv, '-object'), []);
    assert.deepEqual(after1(argv, '-M'), ['microvm,pit=on,pic=on,rtc=on']);
  });

  test('a restore starts stopped and waits for migrate-incoming', () => {
    const argv = buildQemuArgv(spec, { qmpSocket: 'q', ramFile: '/r', incoming: true });
    assert.deepEqual(after1(argv, '-incoming'), ['defer']);
    assert.ok(argv.includes('-S'));
  });

  test('writable drives keep their read-write fd across a migration (auto-read-only=off)', () => {
    const drives = after1(buildQemuArgv(spec, { qmpSocket: 'q' }), '-drive');
    assert.equal(drives[0], 'id=base,file=/s/base.ext4,format=raw,if=none,readonly=on');
    assert.equal(
      drives[1],
      'id=overlay,file=/s/vms/id1/overlay.ext4,format=raw,if=none,discard=unmap,auto-read-only=off',
    );
  });
});

describe('qemu migration commands (pure)', () => {
  test('save: x-ignore-shared, full bandwidth, migrate to the unix socket', () => {
    assert.deepEqual(saveCommands('/tmp/m/m.sock'), [
      {
        execute: 'migrate-set-capabilities',
        arguments: { capabilities: [{ capability: 'x-ignore-shared', state: true }] },
      },
      { execute: 'migrate-set-parameters', arguments: { 'max-bandwidth': 8589934592 } },
      { execute: 'migrate', arguments: { uri: 'unix:/tmp/m/m.sock' } },
    ]);
  });

  test('restore: x-ignore-shared, then migrate-incoming on the unix socket', () => {
    assert.deepEqual(restoreCommands('/tmp/m/m.sock'), [
      {
        execute: 'migrate-set-capabilities',
        arguments: { capabilities: [{ capability: 'x-ignore-shared', state: true }] },
      },
      { execute: 'migrate-incoming', arguments: { uri: 'unix:/tmp/m/m.sock' } },
    ]);
  });

  test('query-migrate answers', () => {
    assert.deepEqual(migrationProgress({}), { state: 'running', status: 'none' });
    assert.deepEqual(migrationProgress({ status: 'active' }), {
      state: 'running',
      status: 'active',
    });
    assert.deepEqual(migrationProgress({ status: 'completed' }), { state: 'completed' });
    assert.deepEqual(migrationProgress({ status: 'failed', 'error-desc': 'Broken pipe' }), {
      state: 'failed',
      reason: 'Broken pipe',
    });
    assert.deepEqual(migrationProgress({ status: 'cancelled' }), {
      state: 'failed',
      reason: 'cancelled',
    });
  });
});

/**
 * A QMP server on a real Unix socket: greets, records every command, and
 * answers query-migrate from a script.
 */
async function fakeQmp(
  sock: string,
  migrate: string[],
): Promise<{ commands: string[]; args: unknown[]; close(): void }> {
  const commands: string[] = [];
  const args: unknown[] = [];
  const server = net.createServer((c) => {
    c.write('{"QMP": {"version": {}, "capabilities": []}}\n');
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, i)) as { execute: string; arguments?: unknown };
        buf = buf.slice(i + 1);
        commands.push(msg.execute);
        args.push(msg.arguments);
        if (msg.execute === 'query-migrate') {
          const status = migrate.shift() ?? 'completed';
          const ret = status.startsWith('failed:')
            ? { status: 'failed', 'error-desc': status.slice(7) }
            : { status };
          c.write(`${JSON.stringify({ return: ret })}\n`);
        } else if (msg.execute === 'migrate-incoming' && migrate[0] === 'refuse') {
          c.write('{"error": {"class": "GenericError", "desc": "no incoming"}}\n');
        } else c.write('{"return": {}}\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return { commands, args, close: () => server.close() };
}

describe('qemu migration over QMP (fake QMP server)', () => {
  test('save sequence, then polling until completed', async () => {
    const sock = path.join(tmp, 'q1.sock');
    const srv = await fakeQmp(sock, ['setup', 'active', 'completed']);
    const qmp = await QmpClient.connect(sock);
    try {
      await runCommands(qmp, saveCommands('/x/m.sock'));
      await awaitMigration(qmp, { what: 'saving vm dev', timeoutMs: 5000, pollMs: 1 });
      assert.deepEqual(srv.commands, [
        'qmp_capabilities',
        'migrate-set-capabilities',
        'migrate-set-parameters',
        'migrate',
        'query-migrate',
        'query-migrate',
        'query-migrate',
      ]);
      assert.deepEqual(srv.args[3], { uri: 'unix:/x/m.sock' });
    } finally {
      qmp.close();
      srv.close();
    }
  });

  test("a failed migration is one error with QEMU's reason", async () => {
    const sock = path.join(tmp, 'q2.sock');
    const srv = await fakeQmp(sock, ['active', 'failed:Unable to write to socket: Broken pipe']);
    const qmp = await QmpClient.connect(sock);
    try {
      await assert.rejects(
        awaitMigration(qmp, { what: "saving vm 'dev'", timeoutMs: 5000, pollMs: 1 }),
        {
          message:
            "saving vm 'dev': QEMU's migration failed: Unable to write to socket: Broken pipe",
        },
      );
    } finally {
      qmp.close();
      srv.close();
    }
  });

  test('a refused command stops the sequence there', async () => {
    const sock = path.join(tmp, 'q3.sock');
    const srv = await fakeQmp(sock, ['refuse']);
    const qmp = await QmpClient.connect(sock);
    try {
      await assert.rejects(runCommands(qmp, restoreCommands('/x/m.sock')), {
        message: 'QMP migrate-incoming failed: no incoming',
      });
      assert.deepEqual(srv.commands, [
        'qmp_capabilities',
        'migrate-set-capabilities',
        'migrate-incoming',
      ]);
    } finally {
      qmp.close();
      srv.close();
    }
  });

  test('the stream side failing ends the wait with its reason', async () => {
    const sock = path.join(tmp, 'q4.sock');
    const srv = await fakeQmp(sock, ['active', 'active', 'active']);
    const qmp = await QmpClient.connect(sock);
    try {
      await assert.rejects(
        awaitMigration(qmp, {
          what: "saving vm 'dev'",
          timeoutMs: 5000,
          pollMs: 1,
          failure: () => new Error('ENOSPC: no space left on device'),
        }),
        { message: "saving vm 'dev': ENOSPC: no space left on device" },
      );
    } finally {
      qmp.close();
      srv.close();
    }
  });
});

describe('qemu RAM file and state streams', () => {
  test('migration directories of a dead daemon are swept; live ones and others stay', () => {
    const shm = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-shm-'));
    try {
      const mine = migrationDir(shm);
      assert.match(path.basename(mine.dir), new RegExp(`^banger-mig-${process.pid}-`));
      // pid 2^22+1 is above pid_max's default ceiling on 64-bit Linux: never a live process
      const dead = path.join(shm, 'banger-mig-4194305-abc123');
      fs.mkdirSync(dead);
      fs.writeFileSync(path.join(dead, 'm.sock'), '');
      const other = path.join(shm, 'banger-abc.ram');
      fs.writeFileSync(other, '');
      assert.deepEqual(sweepMigrationDirs(shm), [dead]);
      assert.ok(fs.existsSync(mine.dir) && fs.existsSync(other) && !fs.existsSync(dead));
      mine.remove();
      assert.ok(!fs.existsSync(mine.dir));
    } finally {
      fs.rmSync(shm, { recursive: true, force: true });
    }
  });

  test('ram file name and its /proc fd link', () => {
    assert.equal(ramFilePath('/dev/shm', 'abc'), '/dev/shm/banger-abc.ram');
    assert.equal(isRamFileTarget('/dev/shm', '/dev/shm/banger-abc.ram (deleted)'), true);
    assert.equal(isRamFileTarget('/dev/shm', '/dev/shm/banger-abc.ram'), true);
    assert.equal(isRamFileTarget('/dev/shm', '/dev/shm/other.ram (deleted)'), false);
    assert.equal(isRamFileTarget('/dev/shm', '/tmp/banger-abc.ram'), false);
    assert.equal(
      ramFdIn(
        [
          ['0', '/dev/null'],
          ['7', '/s/vms/id1/overlay.ext4'],
          ['12', '/dev/shm/banger-id1.ram (deleted)'],
        ],
        '/dev/shm',
      ),
      '12',
    );
    assert.equal(ramFdIn([['3', 'anon_inode:[eventfd]']], '/dev/shm'), undefined);
  });

  test('room on the tmpfs: enough is fine, too little is one line with a fix', () => {
    assert.equal(shmRoomProblem('dev', '/dev/shm', 1024, 1024 * 1024 * 1024), undefined);
    const e = shmRoomProblem('dev', '/dev/shm', 4096, 512 * 1024 * 1024);
    assert.equal(e?.message, "vm 'dev' needs 4 GiB of /dev/shm for its memory, 512 MiB free");
    assert.match(e?.hint ?? '', /--memory/);
  });

  test('a state file goes through a socket and comes out the same', async () => {
    const src = path.join(tmp, 'state.in');
    const dst = path.join(tmp, 'state.out');
    const bytes = Buffer.alloc(300_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 0xff;
    fs.writeFileSync(src, bytes);
    const sock = path.join(tmp, 's.sock');
    const recv = await receiveToFile(sock, dst);
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    await sendFile(sock, src, { timeoutMs: 2000, what: 'test' });
    assert.equal(await recv.done, 300_000);
    assert.ok(fs.readFileSync(dst).equals(bytes));
  });
});
