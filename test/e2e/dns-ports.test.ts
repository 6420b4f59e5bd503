import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { VmPorts } from '../../src/api/schemas/ports.js';
import type { Status } from '../../src/api/schemas/daemon.js';
import { which } from '../../src/util/exec.js';
import { isRoot, needs, vmEnv, type VmEnv } from '../helpers/e2e.js';

/**
 * `<name>.vm` DNS and `vm ports` with a real VM (QEMU, TCG here) inside a
 * network namespace made by the test. The daemon's DNS listens on a free
 * loopback port of that namespace (dns_listen 127.0.0.1:0); `dig` runs there
 * too. One VM serves every check: HTTP on :8080 (busybox httpd, copied in
 * from the host's busybox-static), the same on the guest's loopback only
 * (:9001), and sshd on :22 as the listener that does not speak HTTP.
 */

interface Vm {
  id: string;
  name: string;
  ip: string | null;
  state: string;
}

const BUSYBOX = '/bin/busybox';

describe('dns for <name>.vm and vm ports (real VM)', { timeout: 20 * 60_000 }, () => {
  let env: VmEnv | undefined;
  let port = 0;
  let vm: Vm | undefined;

  before(async () => {
    if (!isRoot()) return;
    env = await vmEnv('dns');
  });
  after(async () => {
    await env?.cleanup();
  });

  const e = (): VmEnv => env!;
  const dig = async (...args: string[]): Promise<string> => {
    const r = await e().sh([
      'dig',
      '@127.0.0.1',
      '-p',
      String(port),
      '+time=2',
      '+tries=1',
      ...args,
    ]);
    assert.equal(r.code, 0, `dig ${args.join(' ')}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const status = (out: string): string | undefined => /status: (\w+)/.exec(out)?.[1];
  const ok = (t: Parameters<typeof needs>[0]): boolean =>
    needs(t, isRoot(), 'needs root for network namespaces and taps') &&
    needs(t, which('dig') !== undefined, 'dig is not installed (dnsutils; scripts/setup.sh)') &&
    needs(t, fs.existsSync(BUSYBOX), `${BUSYBOX} is missing (busybox-static; scripts/setup.sh)`);

  test('dig <name>.vm over UDP and TCP returns the guest address; other zones are refused', async (t) => {
    if (!ok(t)) return;
    const name = e().name('web');
    const c = await e().run(['vm', 'create', '--name', name]);
    assert.equal(c.code, 0, c.stderr);
    vm = await e().json<Vm>(['vm', 'show', name]);
    assert.equal(vm.state, 'running');
    assert.ok(vm.ip);
    const s = await e().json<Status>(['daemon', 'status']);
    assert.equal(s.dns.listener.state, 'listening', JSON.stringify(s.dns));
    port = Number(s.dnsListen.split(':')[1]);
    assert.ok(port > 0);
    assert.equal(s.dns.listener.names, 1);
    // The daemon runs in the test's namespace: it never routes .vm through a host resolver, and says so.
    assert.equal(s.dns.routing.state, 'not-routed');
    const doctor = await e().json<{ checks: { id: string; status: string; hint?: string }[] }>([
      'doctor',
    ]);
    const routing = doctor.checks.find((c) => c.id === 'dns:routing');
    assert.equal(routing?.status, 'warn');
    assert.match(routing?.hint ?? '', /docs\/dns-routing\.md/);

    assert.equal((await dig('+short', `${name}.vm`)).trim(), vm.ip);
    assert.equal((await dig('+short', '+tcp', `${name.toUpperCase()}.VM`)).trim(), vm.ip);
    assert.equal((await dig('+short', `${vm.id.slice(0, 8)}.vm`)).trim(), vm.ip);
    const aaaa = await dig(`${name}.vm`, 'AAAA');
    assert.equal(status(aaaa), 'NOERROR');
    assert.match(aaaa, /ANSWER: 0,/);
    assert.equal(status(await dig('nosuchvm.vm')), 'NXDOMAIN');
    assert.equal(status(await dig('example.com')), 'REFUSED');
    assert.equal(status(await dig('+tcp', 'example.com')), 'REFUSED');
  });

  test('vm ports: the HTTP port with its URL, sshd without, the loopback-only port marked', async (t) => {
    if (!ok(t) || !vm) return;
    const name = vm.name;
    // busybox-static from the host: base64 over the ssh channel (the image has no HTTP server).
    const copy = await e().run(
      ['vm', 'ssh', name, '--', 'base64 -d > /root/busybox && chmod 755 /root/busybox'],
      {
        input: fs.readFileSync(BUSYBOX).toString('base64'),
      },
    );
    assert.equal(copy.code, 0, copy.stderr);
    const serve = await e().run([
      'vm',
      'ssh',
      name,
      '--',
      `mkdir -p /root/www && echo "hello from ${name}" > /root/www/index.html && ` +
        '/root/busybox httpd -p 8080 -h /root/www && /root/busybox httpd -p 127.0.0.1:9001 -h /root/www',
    ]);
    assert.equal(serve.code, 0, serve.stderr);

    const [one] = await e().json<VmPorts[]>(['vm', 'ports', name]);
    assert.ok(one?.ok, JSON.stringify(one));
    const at = (p: number) => one.ports.find((l) => l.port === p && l.proto.startsWith('tcp'));
    const web = at(8080);
    assert.deepEqual(web && [web.scope, web.reachable, web.http, web.url, web.process], [
      'any',
      true,
      true,
      `http://${name}.vm:8080/`,
      'busybox',
    ]);
    assert.match(web?.cmdline ?? '', /^\/root\/busybox httpd -p 8080 -h \/root\/www$/);
    assert.ok(web?.pid && web.pid > 1);
    const ssh = one.ports.find((l) => l.port === 22);
    assert.deepEqual(ssh && [ssh.reachable, ssh.http, ssh.url], [true, false, null]);
    const local = at(9001);
    assert.deepEqual(
      local && [local.address, local.scope, local.reachable, local.http, local.url],
      ['127.0.0.1', 'loopback', false, null, null],
    );

    // The table (all running VMs): no TTY, so the URL is plain text.
    const table = await e().run(['vm', 'ports']);
    assert.equal(table.code, 0, table.stderr);
    t.diagnostic(`vm ports:\n${table.stdout}`);
    assert.match(
      table.stdout,
      new RegExp(
        `^${name}\\s+tcp6?\\s+(::|0\\.0\\.0\\.0)\\s+8080\\s+busybox\\[\\d+\\]\\s+http://${name}\\.vm:8080/\\s+/root/busybox httpd`,
        'm',
      ),
    );
    assert.match(
      table.stdout,
      new RegExp(
        `^${name}\\s+tcp\\s+127\\.0\\.0\\.1\\s+9001\\s+.*guest loopback only: not reachable from the host`,
        'm',
      ),
    );
    assert.ok(!table.stdout.includes('\u001b'), 'no escape sequences off a TTY');
  });

  test('the URL fetched from the host side, resolved through banger DNS, returns the page', async (t) => {
    if (!ok(t) || !vm) return;
    const url = `http://${vm.name}.vm:8080/`;
    // Node in the namespace: a resolver that asks only banger's DNS, then a plain GET.
    const script = `
      const dns = require('node:dns');
      const http = require('node:http');
      const r = new dns.Resolver();
      r.setServers(['127.0.0.1:${port}']);
      const lookup = (host, opts, cb) => r.resolve4(host, (err, a) => err ? cb(err) : opts.all ? cb(null, [{ address: a[0], family: 4 }]) : cb(null, a[0], 4));
      http.get(${JSON.stringify(url)}, { lookup, timeout: 10000 }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => { console.log(res.statusCode + ' ' + body.trim()); });
      }).on('error', (e) => { console.error(e.message); process.exit(1); });`;
    const r = await e().sh([process.execPath, '-e', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `200 hello from ${vm.name}`);
  });

  test('a deleted VM is NXDOMAIN at once', async (t) => {
    if (!ok(t) || !vm) return;
    const d = await e().run(['vm', 'delete', '--force', vm.name]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(status(await dig(`${vm.name}.vm`)), 'NXDOMAIN');
    assert.equal(status(await dig('+tcp', `${vm.name}.vm`)), 'NXDOMAIN');
  });
});
