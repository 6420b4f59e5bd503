import fs from 'node:fs';
import { loadConfig, type LoadedConfig } from './load.js';

/**
 * The daemon's view of config.toml: loaded at start and reloaded when the file
 * changes, so an edit applies to the next command without a restart. A broken
 * edit makes `current()` throw the config error until it is fixed.
 */
export class ConfigSource {
  private loaded: LoadedConfig;
  private stamp: string;

  constructor(
    private readonly file: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.loaded = loadConfig({ file, env });
    this.stamp = this.fileStamp();
  }

  private fileStamp(): string {
    try {
      const st = fs.statSync(this.file);
      return `${st.mtimeMs}:${st.size}:${st.ino}`;
    } catch {
      return 'missing';
    }
  }

  current(): LoadedConfig {
    const stamp = this.fileStamp();
    if (stamp !== this.stamp) {
      this.loaded = loadConfig({ file: this.file, env: this.env });
      this.stamp = stamp;
    }
    return this.loaded;
  }
}
