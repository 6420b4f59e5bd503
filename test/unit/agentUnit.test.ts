import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AGENT_INSTALL_PATH,
  AGENT_UNIT_LINK,
  AGENT_UNIT_PATH,
  agentImageFiles,
  agentUnitText,
} from '../../src/guest/agentUnit.js';

/** Parse a unit file into section -> key -> values (keys may repeat). */
function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) {
      section = m[1]!;
      out[section] = {};
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(eq > 0 && section, `bad unit line: ${line}`);
    const key = line.slice(0, eq);
    ((out[section]![key] ??= []) as string[]).push(line.slice(eq + 1));
  }
  return out;
}

describe('agent systemd unit', () => {
  test('starts early, restarts forever, logs to journal and console', () => {
    const u = parseUnit(agentUnitText());
    assert.deepEqual(Object.keys(u), ['Unit', 'Service', 'Install']);
    assert.deepEqual(u.Unit!.DefaultDependencies, ['no']);
    assert.deepEqual(u.Unit!.Conflicts, ['shutdown.target']);
    assert.deepEqual(u.Unit!.Before, ['shutdown.target']);
    assert.deepEqual(u.Unit!.StartLimitIntervalSec, ['0']);
    assert.deepEqual(u.Service!.ExecStart, [AGENT_INSTALL_PATH]);
    assert.deepEqual(u.Service!.Restart, ['always']);
    assert.deepEqual(u.Service!.StandardOutput, ['journal+console']);
    assert.deepEqual(u.Service!.StandardError, ['journal+console']);
    assert.deepEqual(u.Install!.WantedBy, ['sysinit.target']);
    assert.equal(AGENT_INSTALL_PATH, '/usr/local/libexec/banger/banger-agent');
  });

  test('extra arguments are quoted for systemd', () => {
    const u = parseUnit(
      agentUnitText({
        args: ['--transport', 'vsock', '--root', '/a dir/100%'],
        binaryPath: '/opt/agent',
      }),
    );
    assert.deepEqual(u.Service!.ExecStart, ['/opt/agent --transport vsock --root "/a dir/100%%"']);
  });

  test('image files: binary, unit and the enablement link', () => {
    const files = agentImageFiles({ agentBinary: '/build/banger-agent' });
    assert.deepEqual(files, [
      { kind: 'file', path: AGENT_INSTALL_PATH, mode: 0o755, sourcePath: '/build/banger-agent' },
      { kind: 'file', path: AGENT_UNIT_PATH, mode: 0o644, content: agentUnitText() },
      {
        kind: 'symlink',
        path: '/etc/systemd/system/sysinit.target.wants/banger-agent.service',
        target: '/etc/systemd/system/banger-agent.service',
      },
    ]);
    assert.equal(AGENT_UNIT_LINK, files[2]!.path);
    for (const f of files) assert.ok(f.path.startsWith('/') && !f.path.includes('..'));
  });
});
