import type { Paths } from '../config/paths.js';
import type { Config } from '../config/schema.js';
import type { Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import type { KeyedMutex } from '../util/mutex.js';

/**
 * What every daemon service (images, kernels, VMs) is built from. Services own
 * their tables and locks; they reach the host only through the edges in
 * src/util, src/network, src/storage and the VMM drivers. The daemon builds
 * one and composes the services from it (src/daemon/app.ts); tests build
 * their own over temp dirs.
 */
export interface ServiceDeps {
  paths: Paths;
  /** The current config (re-read when config.toml changes). */
  config(): Config;
  logger: Logger;
  store: Store;
  locks: KeyedMutex;
}
