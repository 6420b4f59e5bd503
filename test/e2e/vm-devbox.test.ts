import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { TMUX_BLOCK_BEGIN, TMUX_BLOCK_END } from '../../src/image/devbox.js';
import { busyboxDockerArchive } from '../helpers/dockerArchive.js';
import { needs } from '../helpers/ci.js';
import { isRoot, vmEnv, type VmEnv } from '../helpers/e2e.js';
import { runProcess, sleep } from '../helpers/sandbox.js';

/**
 * The default image is a dev box, checked inside one real VM (TCG here, in a
 * network namespace made by the test, no internet): a C program built with
 * make and cc, jq, tmux with banger's persistence block, and Docker with the
 * kernel banger boots — an image the test writes itself (a docker-archive
 * holding the host's static busybox) is loaded, run, published on a port the
 * host side reaches, and still there after a stop/start.
 */

const BUSYBOX = '/bin/busybox';
const TAG = 'banger-test/busybox:1';
const CONTAINER_LINE = 'hello from a container in a banger VM';
const PAGE = 'banger port 8080 answers';

interface Vm {
  name: string;
  ip: string | null;
  state: string;
}

/** GET http://ip:port/ from inside the test's namespace (the host side of the bridge). */
async function httpGetInNs(ns: string, url: string): Promise<{ code: number; body: string }> {
  const probe = `fetch(${JSON.stringify(url)},{signal:AbortSignal.timeout(5000)}).then(async r=>{process.stdout.write(await r.text());process.exit(r.ok?0:3)},()=>process.exit(1))`;
  const r = await runProcess('ip', ['netns', 'exec', ns, process.execPath, '-e', probe], {
    timeoutMs: 15_000,
  });
  return { code: r.code, body: r.stdout };
}

describe('default image: a dev box with Docker (real VM)', { timeout: 25 * 60_000 }, () => {
  let env: VmEnv | undefined;
  let vm = '';
  const ok = isRoot() && isStaticBusybox();

  before(async () => {
    if (!ok) return;
    env = await vmEnv('devbox');
    vm = env.name('dev');
    const r = await env.run(['vm', 'create', '--name', vm], { timeoutMs: 10 * 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /image=debian-bookworm /, 'the default image');
  });
  after(async () => {
    await env?.cleanup();
  });

  /** Run a shell command in the VM; fails the test with its output unless it exits 0. */
  async function ssh(cmd: string, opts: { input?: string; timeoutMs?: number } = {}) {
    const r = await env!.run(['vm', 'ssh', vm, '--', cmd], {
      timeoutMs: opts.timeoutMs ?? 5 * 60_000,
      input: opts.input,
    });
    assert.equal(r.code, 0, `${cmd}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r.stdout;
  }
  const skip = (t: Parameters<typeof needs>[0]): boolean =>
    !needs(t, ok && env !== undefined, 'needs root and a static busybox (busybox-static)');

  test('make and cc build a hello-world C program in /root; jq works', async (t) => {
    if (skip(t)) return;
    const out = await ssh(
      [
        'set -e',
        'mkdir -p /root/hello && cd /root/hello',
        `printf '%s\\n' '#include <stdio.h>' 'int main(void) { puts("hello from cc"); return 0; }' > hello.c`,
        `printf 'hello: hello.c\\n\\tcc -O2 -o hello hello.c\\n' > Makefile`,
        'make -s',
        './hello',
        `echo '{"sizes":[1,2,39]}' | jq -c '.sizes | add'`,
      ].join('\n'),
    );
    assert.deepEqual(out.trim().split('\n'), ['hello from cc', '42']);
  });

  test('/root/.tmux.conf holds exactly one banger block, and tmux starts with it (TPM loaded)', async (t) => {
    if (skip(t)) return;
    const conf = await ssh('cat /root/.tmux.conf');
    const lines = conf.split('\n');
    assert.equal(lines.filter((l) => l === TMUX_BLOCK_BEGIN).length, 1, conf);
    assert.equal(lines.filter((l) => l === TMUX_BLOCK_END).length, 1, conf);
    assert.match(conf, /^set -g @plugin 'tmux-plugins\/tmux-resurrect'$/m);
    assert.match(conf, /^set -g @plugin 'tmux-plugins\/tmux-continuum'$/m);
    const out = await ssh(
      [
        'set -e',
        'tmux new-session -d -s work',
        'tmux show-options -gv @continuum-restore',
        'tmux show-options -gv @continuum-save-interval',
        // set by TPM, which the block runs in the background: wait for it
        'for i in $(seq 60); do tmux show-environment -g TMUX_PLUGIN_MANAGER_PATH 2>/dev/null && break; sleep 1; done',
        'tmux list-sessions -F "#{session_name}"',
        'tmux kill-server',
      ].join('\n'),
    );
    assert.deepEqual(out.trim().split('\n'), [
      'off',
      '15',
      'TMUX_PLUGIN_MANAGER_PATH=/root/.tmux/plugins/',
      'work',
    ]);
  });

  test('docker load of an image the test built, docker run prints its line; no docker info warnings', async (t) => {
    if (skip(t)) return;
    const archive = busyboxDockerArchive({
      tag: TAG,
      busybox: BUSYBOX,
      applets: ['sh', 'echo', 'cat', 'httpd'],
      files: { 'www/index.html': `${PAGE}\n` },
      cmd: ['/bin/echo', CONTAINER_LINE],
    });
    const loaded = await ssh('base64 -d > /root/busybox.tar && docker load -i /root/busybox.tar', {
      input: archive.toString('base64'),
    });
    assert.match(loaded, new RegExp(`^Loaded image: ${TAG}$`, 'm'));
    assert.equal((await ssh(`docker run --rm ${TAG}`)).trim(), CONTAINER_LINE);
    const info = await env!.run([
      'vm',
      'ssh',
      vm,
      '--',
      "docker info --format '{{.Driver}} {{.CgroupVersion}} {{.CgroupDriver}} {{json .Warnings}}'",
    ]);
    assert.equal(info.code, 0, info.stderr);
    // overlay2 works (Docker's data dir is on ext4, not on the overlayfs root), cgroup v2
    assert.equal(info.stdout.trim(), 'overlay2 2 systemd null');
    assert.equal(info.stderr.trim(), '', 'docker info prints no warnings');
  });

  test('cgroup v2 is delegated: memory, pids and cpu limits reach the container', async (t) => {
    if (skip(t)) return;
    const out = await ssh(
      `docker run --rm --memory 64m --pids-limit 50 --cpus 0.5 ${TAG} cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max`,
    );
    assert.deepEqual(out.trim().split('\n'), ['67108864', '50', '50000 100000']);
  });

  test('-p 8080:80 answers on the guest address from the host side; the modules came from the modules disk', async (t) => {
    if (skip(t)) return;
    await ssh(`docker run -d --name web -p 8080:80 ${TAG} /bin/httpd -f -p 80 -h /www`);
    const { ip } = await env!.json<Vm>(['vm', 'show', vm]);
    assert.ok(ip);
    let res = { code: -1, body: '' };
    for (let i = 0; i < 30 && res.code !== 0; i++) {
      res = await httpGetInNs(env!.ns, `http://${ip}:8080/`);
      if (res.code !== 0) await sleep(1000);
    }
    assert.equal(res.code, 0, `GET http://${ip}:8080/ from the host side`);
    assert.equal(res.body, `${PAGE}\n`);
    // what Docker's networking loaded on demand, from the kernel's modules disk
    const mods = await ssh(
      'set -e; cut -d" " -f1 /proc/modules; findmnt -no FSTYPE,OPTIONS "/lib/modules/$(uname -r)"; modinfo -n br_netfilter',
    );
    const loaded = new Set(mods.split('\n'));
    for (const m of ['overlay', 'bridge', 'br_netfilter', 'veth', 'nf_nat', 'xt_MASQUERADE']) {
      assert.ok(loaded.has(m), `module ${m} loaded`);
    }
    assert.match(mods, /^ext4\s+ro,/m, 'the modules disk is mounted read-only');
    assert.match(mods, /^\/lib\/modules\/[^/]+\/kernel\/net\/bridge\/br_netfilter\.ko/m);
    await ssh('docker rm -f web');
  });

  test('the loaded image is still there after vm stop / vm start', async (t) => {
    if (skip(t)) return;
    const stop = await env!.run(['vm', 'stop', vm], { timeoutMs: 3 * 60_000 });
    assert.equal(stop.code, 0, stop.stderr);
    t.diagnostic(stop.stderr.trim().split('\n').pop() ?? '');
    const start = await env!.run(['vm', 'start', vm], { timeoutMs: 10 * 60_000 });
    assert.equal(start.code, 0, start.stderr);
    const out = await ssh(
      `docker images --format '{{.Repository}}:{{.Tag}}'; docker run --rm ${TAG}`,
    );
    assert.deepEqual(out.trim().split('\n'), [TAG, CONTAINER_LINE]);
  });
});

function isStaticBusybox(): boolean {
  try {
    const head = Buffer.alloc(4096);
    const fd = fs.openSync(BUSYBOX, 'r');
    fs.readSync(fd, head, 0, head.length, 0);
    fs.closeSync(fd);
    // a dynamic ELF names its interpreter (PT_INTERP → "/lib64/ld-linux...")
    return head.subarray(0, 4).toString('latin1') === '\x7fELF' && !head.includes('/ld-linux');
  } catch {
    return false;
  }
}
