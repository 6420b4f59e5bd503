import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { migrate, openDb, schemaVersion } from '../../src/store/db.js';
import { openStore } from '../../src/store/index.js';
import { MIGRATIONS } from '../../src/store/migrations.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-store-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const LATEST = Math.max(...MIGRATIONS.map((m) => m.version));
describe('state database', () => {
  test('is created with WAL, foreign keys and all migrations', () => {
    const file = path.join(dir, 'a.db');
    const db = openDb(file);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
    assert.equal(schemaVersion(db), Math.max(...MIGRATIONS.map((m) => m.version)));
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type='table'")
      .all()
      .map((r) => (r as { name: string }).name);
    for (const t of [
      'vms',
      'images',
      'kernels',
      'events',
      'snapshots',
      'intents',
      'schema_migrations',
    ])
      assert.ok(tables.includes(t), t);
    db.close();
    // reopening applies nothing twice
    const again = openDb(file);
    assert.equal(
      (again.prepare('SELECT COUNT(*) AS n FROM schema_migrations').get() as { n: number }).n,
      MIGRATIONS.length,
    );
    again.close();
  });

  test('a newer schema than this build supports is refused', () => {
    const file = path.join(dir, 'b.db');
    const db = openDb(file);
    migrate(db, [...MIGRATIONS, { version: 999, name: 'future', sql: 'CREATE TABLE future (x)' }]);
    db.close();
    assert.throws(() => openDb(file), /schema version 999, newer than this banger supports/);
  });

  test('a failing migration leaves the previous version intact', () => {
    const file = path.join(dir, 'c.db');
    const db = openDb(file);
    assert.throws(
      () =>
        migrate(db, [
          ...MIGRATIONS,
          {
            version: LATEST + 1,
            name: 'bad',
            sql: 'CREATE TABLE ok (x); SELECT nope FROM nowhere;',
          },
        ]),
      /no such table: nowhere/,
    );
    assert.equal(schemaVersion(db), LATEST);
    assert.equal(
      (
        db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'ok'").get() as {
          n: number;
        }
      ).n,
      0,
    );
    db.close();
  });

  test('stores round-trip records and enforce references', () => {
    const store = openStore(path.join(dir, 'd.db'));
    store.kernels.upsert({
      name: 'k1',
      version: '6.1',
      source: 'test',
      dir: '/k',
      kernelPath: '/k/vmlinuz',
      vmlinuxPath: null,
      initrdPath: null,
      managed: true,
      meta: { a: 1 },
    });
    const img = store.images.insert({
      id: 'img1',
      name: 'debian',
      source: 'catalog:debian',
      digest: null,
      kernelName: 'k1',
      kernelPath: null,
      initrdPath: null,
      rootfsPath: '/i/rootfs.ext4',
      workSeedPath: null,
      managed: true,
      sizeBytes: 10,
      meta: {},
    });
    assert.equal(store.images.byName('debian')?.id, img.id);
    const vm = store.vms.insert({
      id: 'abcdef0123456789',
      name: 'dev',
      imageId: 'img1',
      kernelName: 'k1',
      state: 'created',
      vmm: 'qemu',
      accel: 'tcg',
      vcpu: 1,
      memoryMib: 512,
      diskSize: 1,
      nat: true,
      ip: '172.16.0.2',
      mac: null,
      tap: null,
      pid: null,
      pidStartTime: null,
      lastError: null,
      meta: { x: [1] },
      startedAt: null,
      stoppedAt: null,
    });
    assert.equal(vm.nat, true);
    const got = store.vms.get(vm.id)!;
    assert.deepEqual(got.meta, { x: [1] });
    assert.equal(got.nat, true);
    assert.equal(store.vms.byIdPrefix('abc').length, 1);
    assert.equal(store.vms.byIdPrefix('a%').length, 0, 'LIKE wildcards are escaped');
    const updated = store.vms.update(vm.id, { state: 'running', pid: 42 });
    assert.equal(updated.state, 'running');
    assert.equal(store.vms.counts().running, 1);
    assert.deepEqual(store.vms.usedIps(), ['172.16.0.2']);
    assert.throws(() => store.images.delete('img1'), /FOREIGN KEY/);
    assert.throws(() => store.kernels.delete('k1'), /FOREIGN KEY/);
    store.events.append('vm.created', { type: 'vm', id: vm.id }, { name: 'dev' });
    assert.equal(store.events.list({ subjectId: vm.id })[0]?.kind, 'vm.created');
    store.vms.delete(vm.id);
    assert.ok(store.images.delete('img1'));
    store.close();
  });

  test('vm changes are announced once each, after the transaction, and not after a rollback', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgr-store-'));
    const store = openStore(path.join(dir, 'banger.db'));
    try {
      store.images.insert({
        id: 'img2',
        name: 'img2',
        source: 'catalog:debian',
        digest: null,
        kernelName: null,
        kernelPath: null,
        initrdPath: null,
        rootfsPath: '/i/rootfs.ext4',
        workSeedPath: null,
        managed: true,
        sizeBytes: 10,
        meta: {},
      });
      const seen: string[] = [];
      const off = store.vms.onChange((c) => {
        // Listeners run after the write is settled: the row is readable (or gone).
        seen.push(`${c.kind}:${c.id}:${store.vms.get(c.id)?.state ?? 'none'}`);
      });
      const base = {
        name: 'w1',
        imageId: 'img2',
        kernelName: null,
        state: 'created' as const,
        vmm: 'qemu',
        accel: 'tcg',
        vcpu: 1,
        memoryMib: 512,
        diskSize: 1,
        nat: false,
        ip: null,
        mac: null,
        tap: null,
        pid: null,
        pidStartTime: null,
        lastError: null,
        meta: {},
        startedAt: null,
        stoppedAt: null,
      };
      store.vms.insert({ ...base, id: 'w1' });
      store.vms.update('w1', { state: 'running' });
      assert.deepEqual(seen, [], 'nothing is announced during the synchronous write');
      await Promise.resolve();
      assert.deepEqual(seen, ['inserted:w1:running', 'updated:w1:running']);
      seen.length = 0;
      assert.throws(
        () =>
          store.db.transaction(() => {
            store.vms.insert({ ...base, id: 'w2', name: 'w2' });
            throw new Error('roll back');
          })(),
        /roll back/,
      );
      store.vms.delete('w1');
      store.vms.delete('w1');
      await Promise.resolve();
      assert.deepEqual(seen, ['inserted:w2:none', 'deleted:w1:none']);
      off();
      store.vms.insert({ ...base, id: 'w3', name: 'w3' });
      await Promise.resolve();
      assert.equal(seen.length, 2, 'no calls after unsubscribing');
    } finally {
      store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
