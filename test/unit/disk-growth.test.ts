import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { BangerError } from '../../src/errors.js';
import { GrowFsResultSchema, type GrowFsResult } from '../../src/guest/agentProtocol.js';
import { diskFileSize, growDiskFile } from '../../src/storage/growFile.js';
import { growDisksOnline, growFsVerdict } from '../../src/vm/diskGrowth.js';
import { vmLayout } from '../../src/vm/layout.js';
import { blockResizeArgs } from '../../src/vmm/qemu/argv.js';
import type { VmHandle } from '../../src/vmm/driver.js';

/**
 * Disk growth without e2fsprogs on guest data: the host grows files, the VMM
 * is told, the guest agent grows the filesystems (src/vm/diskGrowth.ts).
 */
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-diskgrowth-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const G = 1024 ** 3;

const fsAnswer = (deviceBytes: number, error: string | null = null): GrowFsResult =>
  GrowFsResultSchema.parse({
    dryRun: false,
    filesystems: [
      { mount: '/root', mounted: true, beforeBytes: 100, afterBytes: 200, deviceBytes, error },
      {
        mount: '/run/banger/overlay',
        mounted: true,
        beforeBytes: 100,
        afterBytes: 200,
        deviceBytes,
        error,
      },
    ],
  });

function vmDir(name: string, sizes = 8 * G): ReturnType<typeof vmLayout> {
  const l = vmLayout(tmp, name);
  fs.mkdirSync(l.dir, { recursive: true });
  for (const f of [l.overlayDisk, l.workDisk]) {
    fs.writeFileSync(f, '');
    fs.truncateSync(f, sizes);
  }
  return l;
}

const handle: VmHandle = { pid: 1, pidStartTime: 1, controlSocket: '/nonexistent' };

describe('disk growth', () => {
  test('disk files grow to whole 4 KiB blocks', () => {
    assert.equal(diskFileSize(8 * G), 8 * G);
    assert.equal(diskFileSize(8 * G + 1), 8 * G + 4096);
  });

  test('growDiskFile: sparse, never shrinks, returns the old size', async () => {
    const f = path.join(tmp, 'one.ext4');
    fs.writeFileSync(f, 'data');
    assert.equal(await growDiskFile(f, 10 * G), 4);
    assert.equal(fs.statSync(f).size, 10 * G);
    assert.ok(fs.statSync(f).blocks * 512 < 1024 * 1024, 'no data blocks were written');
    const fd = fs.openSync(f, 'r');
    const head = Buffer.alloc(4);
    fs.readSync(fd, head, 0, 4, 0);
    fs.closeSync(fd);
    assert.equal(head.toString(), 'data');
    await assert.rejects(growDiskFile(f, G), /cannot shrink/);
    assert.equal(fs.statSync(f).size, 10 * G);
  });

  test('block_resize arguments: the drive id and a size in whole sectors', () => {
    assert.deepEqual(blockResizeArgs('work', 10 * G), { device: 'work', size: 10 * G });
    assert.throws(() => blockResizeArgs('work', 1000), /multiple of 512/);
    assert.throws(() => blockResizeArgs('work,x=1', G), /invalid disk id/);
  });

  test("growFsVerdict: wait until the guest sees the size, then done or the agent's error", () => {
    assert.deepEqual(growFsVerdict(fsAnswer(10 * G), 10 * G), { state: 'done' });
    assert.equal(growFsVerdict(fsAnswer(8 * G), 10 * G).state, 'wait');
    assert.deepEqual(growFsVerdict(fsAnswer(10 * G, 'growing /root failed: EPERM'), 10 * G), {
      state: 'failed',
      why: 'growing /root failed: EPERM',
    });
    const none = GrowFsResultSchema.parse({ dryRun: false, filesystems: [] });
    assert.equal(growFsVerdict(none, G).state, 'failed');
  });

  test('online: files grown, each writable drive resized, the agent asked until the guest caught up', async () => {
    const l = vmDir('on1');
    const calls: string[] = [];
    let asked = 0;
    const r = await growDisksOnline({
      vmName: 'on1',
      layout: l,
      handle,
      driver: {
        name: 'qemu',
        resizeDisk: async (_h, d, size) => {
          calls.push(`${d.id} ${path.basename(d.path)} ${size}`);
        },
      },
      growFs: async () => (++asked < 3 ? fsAnswer(8 * G) : fsAnswer(12 * G)),
      sizeBytes: 12 * G,
    });
    assert.deepEqual(calls, [`overlay overlay.ext4 ${12 * G}`, `work work.ext4 ${12 * G}`]);
    assert.equal(asked, 3);
    assert.equal(r.filesystems.length, 2);
    assert.equal(fs.statSync(l.workDisk).size, 12 * G);
    assert.equal(fs.statSync(l.overlayDisk).size, 12 * G);
  });

  test('online: a VMM that cannot resize leaves the files as they were', async () => {
    const l = vmDir('on2');
    await assert.rejects(
      growDisksOnline({
        vmName: 'on2',
        layout: l,
        handle,
        driver: {
          name: 'qemu',
          resizeDisk: async () => {
            throw new Error('QMP: device not found');
          },
        },
        growFs: async () => fsAnswer(12 * G),
        sizeBytes: 12 * G,
      }),
      (e: unknown) =>
        e instanceof BangerError &&
        /could not resize its disks: QMP: device not found/.test(e.message),
    );
    assert.equal(fs.statSync(l.workDisk).size, 8 * G);
    assert.equal(fs.statSync(l.overlayDisk).size, 8 * G);
    await assert.rejects(
      growDisksOnline({
        vmName: 'on2',
        layout: l,
        handle,
        driver: { name: 'firecracker' },
        growFs: async () => fsAnswer(12 * G),
        sizeBytes: 12 * G,
      }),
      /cannot resize a disk while the VM runs/,
    );
  });

  test('online: a guest that never catches up fails with the reason and a way out', async () => {
    const l = vmDir('on3');
    await assert.rejects(
      growDisksOnline({
        vmName: 'on3',
        layout: l,
        handle,
        driver: { name: 'qemu', resizeDisk: async () => undefined },
        growFs: async () => fsAnswer(8 * G),
        sizeBytes: 12 * G,
        timeoutMs: 300,
      }),
      (e: unknown) =>
        e instanceof BangerError &&
        /did not grow its filesystems: the guest sees \/root's disk at 8589934592 bytes, not 12884901888 yet$/.test(
          e.message,
        ) &&
        /banger vm restart on3/.test(e.hint ?? ''),
    );
  });
});
