import fs from 'node:fs';
import path from 'node:path';
import { renderSshConfig, type SshConfigInput } from '../guest/sshConfig.js';
import type { Logger } from '../util/log.js';
import type { VmTable } from './records.js';

/** What keeping ssh_config needs. */
export interface SshConfigNeeds {
  table: Pick<VmTable, 'list' | 'onChange'>;
  /** ~/.config/banger/ssh_config. */
  file: string;
  /** Key, known_hosts, proxy argv and environment, as of now (the config may change). */
  input(): SshConfigInput;
  logger: Pick<Logger, 'warn'>;
}

/**
 * Keeps ~/.config/banger/ssh_config equal to the VM list: a `Host <name>.vm`
 * entry per VM (guest/sshConfig.ts renders it). The file follows the table,
 * not the guest (an entry needs the name and address, both known at
 * create), so it is written when the service starts and after every change
 * to the vms table — create, start, stop, delete — and only when its text
 * changes. ~/.ssh/config is never touched here (`banger ssh-config
 * --install` does that, on request, from the CLI).
 */
export class VmSshConfig {
  private queued = false;
  private readonly unsubscribe: () => void;

  constructor(private readonly n: SshConfigNeeds) {
    this.write();
    this.unsubscribe = n.table.onChange(() => this.schedule());
  }

  stop(): void {
    this.unsubscribe();
  }

  /** Several changes in one tick (a create's insert and updates) give one write. */
  private schedule(): void {
    if (this.queued) return;
    this.queued = true;
    setImmediate(() => this.write());
  }

  /** Write the file now if its text differs (atomically: temp file + rename). */
  write(): void {
    this.queued = false;
    const file = this.n.file;
    try {
      const text = renderSshConfig(
        this.n.table.list().map((v) => ({ name: v.name, ip: v.ip })),
        this.n.input(),
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
      this.n.logger.warn({ err: e, file }, 'could not write ssh_config');
    }
  }
}
