import type { Paths } from '../config/paths.js';
import type { Config } from '../config/schema.js';
import type { Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import type { KeyedMutex } from './ops.js';

/**
 * What every daemon service is built from. Services own their tables and
 * locks; they reach the host only through the edges in src/util, src/network,
 * src/storage and the VMM drivers.
 */
export interface ServiceDeps {
  paths: Paths;
  /** The current config (re-read when config.toml changes). */
  config(): Config;
  logger: Logger;
  store: Store;
  locks: KeyedMutex;
}
