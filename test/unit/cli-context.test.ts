import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { CliContext, mentionsSshKeyPath } from '../../src/cli/context.js';

describe('the CLI: which private key ssh uses', () => {
  const withConfig = (text: string | undefined, fn: (dir: string) => Promise<void>) => async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgt-ctx-'));
    const saved = { ...process.env };
    try {
      process.env.BANGER_CONFIG_DIR = dir;
      process.env.BANGER_STATE_DIR = path.join(dir, 'state');
      delete process.env.BANGER_SSH_KEY_PATH;
      if (text !== undefined) fs.writeFileSync(path.join(dir, 'config.toml'), text);
      await fn(dir);
    } finally {
      process.env = saved;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };

  test(
    'no config file, or one without ssh_key_path: the managed key, without loading the config',
    withConfig('vmm = "qemu"\n', async (dir) => {
      const file = path.join(dir, 'config.toml');
      assert.equal(mentionsSshKeyPath(file, {}), false);
      assert.equal(mentionsSshKeyPath(path.join(dir, 'missing.toml'), {}), false);
      const ctx = new CliContext();
      assert.equal(await ctx.sshKeyPath(), ctx.paths.sshKey);
    }),
  );

  test(
    'ssh_key_path in config.toml or BANGER_SSH_KEY_PATH: the configured key',
    withConfig('ssh_key_path = "/keys/mine"\n', async (dir) => {
      const file = path.join(dir, 'config.toml');
      assert.equal(mentionsSshKeyPath(file, {}), true);
      assert.equal(
        mentionsSshKeyPath(path.join(dir, 'missing.toml'), { BANGER_SSH_KEY_PATH: '/k' }),
        true,
      );
      assert.equal(await new CliContext().sshKeyPath(), '/keys/mine');
      process.env.BANGER_SSH_KEY_PATH = '/keys/from-env';
      assert.equal(await new CliContext().sshKeyPath(), '/keys/from-env');
    }),
  );

  test(
    'a commented-out key still takes the full load, which ignores it',
    withConfig('# ssh_key_path = "/keys/old"\n', async () => {
      const ctx = new CliContext();
      assert.equal(await ctx.sshKeyPath(), ctx.paths.sshKey);
    }),
  );
});
