import os from 'node:os';
import path from 'node:path';
import { BangerError } from '../../errors.js';
import type { CliContext } from '../context.js';
import {
  includeInstalled,
  includeLine,
  installInclude,
  tildePath,
  uninstallInclude,
} from '../sshInclude.js';

/**
 * `banger ssh-config`: print the Include line for banger's ssh_config, or add
 * (`--install`) / remove (`--uninstall`) the one marker-fenced block in
 * ~/.ssh/config. The daemon keeps the included file current.
 */
export async function sshConfigCommand(
  ctx: CliContext,
  f: { install?: boolean; uninstall?: boolean },
): Promise<void> {
  if (f.install && f.uninstall) {
    throw new BangerError('usage', '--install and --uninstall exclude each other', {
      hint: 'pass one of them',
    });
  }
  const home = os.homedir();
  const userConfig = path.join(home, '.ssh', 'config');
  const include = includeLine(ctx.paths.sshConfig, home);
  const shown = tildePath(userConfig, home);
  if (f.install) {
    // The daemon writes the included file when it starts; make sure it has.
    await ctx.call('status');
    const r = installInclude(userConfig, ctx.paths.sshConfig, home);
    if (ctx.flags.json) ctx.printJson({ userConfig, include, change: r });
    else
      ctx.print(
        r === 'added'
          ? `added '${include}' to ${shown}`
          : `${shown} already includes banger's ssh_config`,
      );
    return;
  }
  if (f.uninstall) {
    const r = uninstallInclude(userConfig, ctx.paths.sshConfig, home);
    if (ctx.flags.json) ctx.printJson({ userConfig, include, change: r });
    else
      ctx.print(
        r === 'removed' ? `removed banger's block from ${shown}` : `${shown} has no banger block`,
      );
    return;
  }
  if (ctx.flags.json) {
    ctx.printJson({
      include,
      sshConfig: ctx.paths.sshConfig,
      userConfig,
      installed: includeInstalled(userConfig),
    });
    return;
  }
  ctx.print(include);
  if (!includeInstalled(userConfig))
    ctx.note(
      `add it to the top of ${shown} with \`banger ssh-config --install\`; then \`ssh <name>.vm\` works`,
    );
}
