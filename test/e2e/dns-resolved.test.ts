import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Status } from '../../src/api/schemas/daemon.js';
import { probeResolved } from '../../src/network/dns/index.js';
import { runProcess } from '../helpers/sandbox.js';
import { isRoot, needs, vmEnv, type VmEnv } from '../helpers/e2e.js';

/**
 * The `.vm` routing through systemd-resolved, on a host where it runs. Test
 * daemons live in a network namespace made by the test, and systemd-resolved
 * in the host's: resolved would read the bridge's interface index as one of
 * its own links, so banger must refuse to route there and say why, and the
 * host's resolved must not learn anything. (The resolvectl commands and the
 * decision are unit-tested in test/unit/dns-routing.test.ts.)
 */

const BRIDGE = 'bgtres0';

describe('.vm routing through systemd-resolved', { timeout: 20 * 60_000 }, () => {
  let env: VmEnv | undefined;
  after(async () => {
    await env?.cleanup();
  });

  test('a daemon in another network namespace does not touch the host resolver', async (t) => {
    const facts = probeResolved();
    if (facts.resolvedPid === undefined || !facts.resolvectl) {
      const why =
        'systemd-resolved is not running on this host: the resolved routing e2e needs it (the resolvectl commands are unit-tested)';
      console.log(`# NOTE: ${why}`);
      t.skip(why);
      return;
    }
    if (!needs(t, isRoot(), 'needs root for network namespaces and taps')) return;
    env = await vmEnv('res', { config: `bridge_name = "${BRIDGE}"\n` });
    const name = env.name('res');
    const c = await env.run(['vm', 'create', '--name', name]);
    assert.equal(c.code, 0, c.stderr);
    const s = await env.json<Status>(['daemon', 'status']);
    assert.deepEqual(s.dns.routing, {
      state: 'not-routed',
      detail: 'systemd-resolved runs in another network namespace than bangerd',
    });
    const port = s.dnsListen.split(':')[1]!;
    const host = await runProcess('resolvectl', ['dns']);
    assert.doesNotMatch(host.stdout, new RegExp(`127\\.0\\.0\\.1:${port}\\b`));
    const domains = await runProcess('resolvectl', ['domain']);
    assert.doesNotMatch(domains.stdout, /~vm\b/);
  });
});
