import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Paths } from '../config/paths.js';
import type { Config } from '../config/schema.js';
import { renderSshConfig } from '../guest/sshConfig.js';
import type { Store } from '../store/index.js';
import type { Logger } from '../util/log.js';

/**
 * Keeps ~/.config/banger/ssh_config equal to the VM list: written at daemon
 * start and after every change to the vms table (create, start, stop,
 * delete, rename of an address), only when its text changes. ~/.ssh/config is
 * never touched here (that is `banger ssh-config --install`, on request).
 */
export function keepSshConfig(deps: {
  paths: Paths;
  config(): Config;
  store: Store;
  logger: Logger;
}): () => void {
  const cli = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  const file = deps.paths.sshConfig;
  let queued = false;
  const write = (): void => {
    queued = false;
    try {
      const text = renderSshConfig(
        deps.store.vms.list().map((v) => ({ name: v.name, ip: v.ip })),
        {
          keyPath: deps.config().sshKeyPath ?? deps.paths.sshKey,
          knownHosts: deps.paths.knownHosts,
          proxy: [process.execPath, cli, '__proxy'],
          // The proxy must find this daemon whatever the shell that runs ssh has set.
          env: {
            BANGER_CONFIG_DIR: deps.paths.configDir,
            BANGER_STATE_DIR: deps.paths.stateDir,
            BANGER_CACHE_DIR: deps.paths.cacheDir,
            BANGER_RUNTIME_DIR: deps.paths.runtimeDir,
          },
        },
      );
      let current: string | undefined;
      try {
        current = fs.readFileSync(file, 'utf8');
      } catch {
        current = undefined;
      }
      if (current === text) return;
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      const tmp = `${file}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, text, { mode: 0o600 });
      fs.renameSync(tmp, file);
    } catch (e) {
      deps.logger.warn({ err: e, file }, 'could not write ssh_config');
    }
  };
  const schedule = (): void => {
    if (queued) return;
    queued = true;
    setImmediate(write);
  };
  write();
  return deps.store.vms.onChange(schedule);
}
