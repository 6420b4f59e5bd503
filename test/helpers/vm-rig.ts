import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolvePaths, type Paths } from '../../src/config/paths.js';
import type { Config } from '../../src/config/schema.js';
import { BangerError } from '../../src/errors.js';
import type { ImageRecord } from '../../src/store/images.js';
import type { Store } from '../../src/store/index.js';
import { silentLogger } from '../../src/util/log.js';
import { KeyedMutex } from '../../src/util/mutex.js';
import { VmService } from '../../src/vm/service.js';
import type { FakeDisks, FakeDriver, FakeNetwork } from './fake-vmm.js';

/** A fresh temp root with banger's paths under it and the state dir made. */
export function tempPaths(prefix: string): { root: string; paths: Paths } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const paths = resolvePaths({
    env: {
      BANGER_STATE_DIR: path.join(root, 's'),
      BANGER_CACHE_DIR: path.join(root, 'c'),
      BANGER_CONFIG_DIR: path.join(root, 'cfg'),
      BANGER_RUNTIME_DIR: path.join(root, 'r'),
    },
    uid: 1000,
    home: root,
  });
  fs.mkdirSync(paths.stateDir, { recursive: true });
  return { root, paths };
}

/**
 * A VmService over real SQLite and the fakes (driver, network, disks): one
 * image (`image()` is asked at every create), no kernels, a 4-CPU 8 GiB host
 * without KVM, every tool found.
 */
export function fakeVmService(o: {
  paths: Paths;
  store: Store;
  config: Config;
  image: () => ImageRecord;
  driver: FakeDriver;
  network: FakeNetwork;
  disks: FakeDisks;
}): VmService {
  return new VmService({
    paths: o.paths,
    config: () => o.config,
    logger: silentLogger(),
    store: o.store,
    locks: new KeyedMutex(),
    host: { cpus: 4, memoryBytes: 8 * 1024 ** 3 },
    images: { ensure: async () => o.image() },
    kernels: {
      ensure: async (name) => {
        throw new BangerError('not_found', `kernel '${name}' not found`);
      },
    },
    network: o.network,
    drivers: { driverFor: () => o.driver },
    probe: {
      which: (c) => `/usr/bin/${c}`,
      kvmFacts: () => ({ devKvmRw: false, cpuFlags: [], kvmModules: [] }),
      tscKhz: () => undefined,
    },
    disks: o.disks,
  });
}
