/**
 * Boot benchmark. Prints JSON:
 *  - banger: wall time of `banger vm run --rm -- true` (create, boot, ssh, delete)
 *  - baseline: the same kernel, initramfs and disks booted by a bare
 *    qemu-system-x86_64 command until sshd answers with its banner
 *  - ratio banger/baseline (medians)
 *  - `vm create --no-start` time for two images of very different sizes
 *
 * With several `--image NAME` (catalog images, e.g. debian-bookworm and
 * debian-bookworm-slim), each image is booted `--runs` times, interleaved run
 * by run so all see the same host load: `vm create` (boot to ssh ready),
 * `vm show` (the daemon's boot time and the VMM's pid), then the VMM's CPU
 * time so far is read from /proc and the VM deleted. `images` holds, per
 * image, the create wall time, the daemon's `bootMs` and that VMM CPU time;
 * `imageRatio` each median over the first image's. The VMM CPU time is the
 * figure to compare on a shared host: under TCG the guest's whole boot is
 * work of the QEMU process, which other processes' load barely changes,
 * while wall times move with the load. The baseline and the create timings
 * use the first image; `--images-only` skips them (and `vm run`).
 *
 * Everything runs inside a network namespace made here and removed after.
 *   node dist/bench/boot.js [--runs N] [--image NAME]... [--images-only]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DISKS } from '../src/guest/bootContract.js';
import { buildQemuArgv } from '../src/vmm/qemu/argv.js';
import { buildKernelCmdline } from '../src/vm/kernelArgs.js';
import { hostTscKhz, readKvmFacts, resolveAccel } from '../src/vmm/accel.js';
import { createSparseExt4, cloneSparse, growExt4 } from '../src/storage/ext4.js';
import { processUsage } from '../src/util/proc.js';
import { runProcess } from '../test/helpers/sandbox.js';
import { vmEnv } from '../test/helpers/e2e.js';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const imageNames = process.argv.flatMap((a, i) =>
  a === '--image' && process.argv[i + 1] ? [process.argv[i + 1]!] : [],
);
if (imageNames.length === 0) imageNames.push('debian-bookworm');
const imagesOnly = process.argv.includes('--images-only');
/** USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s. */
const TICK_MS = 10;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const round = (ms: number): number => Math.round(ms) / 1000;

interface Kernel {
  vmlinuxPath: string | null;
  kernelPath: string;
  initrdPath: string | null;
  dir: string;
}
interface Image {
  name: string;
  rootfsPath: string;
  workSeedPath: string | null;
  sizeBytes: number | null;
}

async function main(): Promise<void> {
  const env = await vmEnv('bench', { images: imageNames });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-bench-'));
  try {
    await env.run(['daemon', 'status']); // the daemon already runs, as for a user
    const images = imageNames.length > 1 ? await bootImages(env) : undefined;
    if (imagesOnly) {
      console.log(JSON.stringify({ host: { cpus: os.cpus().length }, runs, ...images }, null, 2));
      return;
    }

    // --- banger: vm run --rm -- true
    const banger: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const r = await env.run([
        'vm',
        'run',
        '--rm',
        '--image',
        imageNames[0]!,
        '--name',
        env.name('bench'),
        '--',
        'true',
      ]);
      if (r.code !== 0) throw new Error(`vm run --image ${imageNames[0]} failed: ${r.stderr}`);
      banger.push(performance.now() - t0);
      console.error(`vm run --image ${imageNames[0]}: ${round(performance.now() - t0)} s`);
    }

    // --- baseline: bare qemu with the same kernel + disks, until sshd's banner
    const kernels = (await env.json<{ kernels: Kernel[] } | Kernel[]>([
      'kernel',
      'list',
    ])) as unknown;
    const kernel = (
      Array.isArray(kernels) ? kernels : (kernels as { kernels: Kernel[] }).kernels
    )[0]!;
    const listed = (await env.json<Image[] | { images: Image[] }>(['image', 'list'])) as unknown;
    const imageList = Array.isArray(listed)
      ? (listed as Image[])
      : (listed as { images: Image[] }).images;
    const image = imageList.find((i) => i.name === imageNames[0])!;
    const accel = resolveAccel('auto', readKvmFacts()).accel;
    await env.sh(['ip', 'link', 'add', 'bbr0', 'type', 'bridge']);
    await env.sh(['ip', 'addr', 'add', '172.31.0.1/24', 'dev', 'bbr0']);
    await env.sh(['ip', 'link', 'set', 'bbr0', 'up']);
    const baseline: number[] = [];
    for (let i = 0; i < runs; i++) {
      const dir = path.join(tmp, `b${i}`);
      fs.mkdirSync(dir);
      await createSparseExt4(path.join(dir, 'overlay.ext4'), 8 * 1024 ** 3, {
        label: DISKS.overlay.label,
      });
      if (image.workSeedPath) {
        await cloneSparse(image.workSeedPath, path.join(dir, 'work.ext4'));
        await growExt4(path.join(dir, 'work.ext4'), 8 * 1024 ** 3);
      } else {
        await createSparseExt4(path.join(dir, 'work.ext4'), 8 * 1024 ** 3, {
          label: DISKS.work.label,
        });
      }
      const tap = `bbt${i}`;
      await env.sh(['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
      await env.sh(['ip', 'link', 'set', tap, 'master', 'bbr0', 'up']);
      const disks = [
        { id: 'base', path: image.rootfsPath, readOnly: true },
        { id: 'overlay', path: path.join(dir, 'overlay.ext4'), readOnly: false },
        { id: 'work', path: path.join(dir, 'work.ext4'), readOnly: false },
      ];
      const modules = path.join(kernel.dir, 'modules.ext4');
      if (fs.existsSync(modules)) disks.push({ id: 'modules', path: modules, readOnly: true });
      const argv = buildQemuArgv(
        {
          vmId: `bench${i}`,
          name: `bench${i}`,
          dir,
          vcpu: 1,
          memoryMib: 1024,
          accel,
          kernel: {
            path: kernel.vmlinuxPath ?? kernel.kernelPath,
            initrd: kernel.initrdPath ?? undefined,
            cmdline: buildKernelCmdline({
              vmId: `00000000bench00${i}`,
              accel,
              tscKhz: hostTscKhz(),
              ipArg: `ip=172.31.0.${10 + i}::172.31.0.1:255.255.255.0:bench${i}:eth0:off`,
            }),
          },
          disks,
          net: { tap, mac: `02:00:00:00:00:${(16 + i).toString(16)}` },
          agentSocket: path.join(dir, 'agent.sock'),
          consoleLog: path.join(dir, 'console.log'),
          vmmLog: path.join(dir, 'vmm.log'),
        },
        {
          qmpSocket: path.join(dir, 'qmp.sock'),
          diskSerials: Object.fromEntries(Object.entries(DISKS).map(([k, d]) => [k, d.serial])),
        },
      );
      const t0 = performance.now();
      const child = spawn('ip', ['netns', 'exec', env.ns, 'qemu-system-x86_64', ...argv], {
        stdio: 'ignore',
      });
      try {
        await waitForBanner(env.ns, `172.31.0.${10 + i}`, 180_000);
        baseline.push(performance.now() - t0);
      } finally {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
        await env.sh(['ip', 'link', 'del', tap]);
      }
    }

    // --- vm create --no-start for a small and a big image
    const big = path.join(tmp, 'big.ext4');
    await cloneSparse(image.rootfsPath, big);
    const pad = path.join(tmp, 'pad.bin');
    fs.writeFileSync(pad, Buffer.alloc(64 * 1024 ** 2, 1));
    // ~1 GiB more of real data inside the filesystem.
    await growExt4(big, (image.sizeBytes ?? fs.statSync(image.rootfsPath).size) + 1.2 * 1024 ** 3);
    const script = Array.from({ length: 16 }, (_, k) => `write ${pad} /pad${k}.bin`).join('\n');
    fs.writeFileSync(path.join(tmp, 'pad.debugfs'), `${script}\n`);
    await runProcess('debugfs', ['-w', '-f', path.join(tmp, 'pad.debugfs'), big]);
    const reg = await env.run([
      'image',
      'register',
      '--name',
      'bench-big',
      '--rootfs',
      big,
      '--kernel-ref',
      'debian-cloud-6.1',
      ...(image.workSeedPath ? ['--work-seed', image.workSeedPath] : []),
    ]);
    if (reg.code !== 0) throw new Error(`image register failed: ${reg.stderr}`);
    const createTimes: Record<string, { imageBytes: number; ms: number[] }> = {};
    for (const [img, file] of [
      [image.name, image.rootfsPath],
      ['bench-big', big],
    ] as const) {
      const ms: number[] = [];
      for (let i = 0; i < runs; i++) {
        const name = env.name('create');
        const t0 = performance.now();
        const r = await env.run(['vm', 'create', '--no-start', '--image', img, '--name', name]);
        ms.push(performance.now() - t0);
        if (r.code !== 0) throw new Error(`vm create failed: ${r.stderr}`);
        await env.run(['vm', 'delete', name]);
      }
      createTimes[img] = { imageBytes: fs.statSync(file).blocks * 512, ms };
    }
    await env.run(['image', 'delete', 'bench-big']);

    const out = {
      host: { cpus: os.cpus().length, accel },
      runs,
      banger: {
        what: `banger vm run --rm --image ${imageNames[0]} -- true (wall, s)`,
        samples: banger.map(round),
        median: round(median(banger)),
      },
      ...images,
      baseline: {
        what: 'bare qemu, same kernel+initramfs+disks, to sshd banner (s)',
        samples: baseline.map(round),
        median: round(median(baseline)),
      },
      ratio: Math.round((median(banger) / median(baseline)) * 100) / 100,
      createNoStart: Object.fromEntries(
        Object.entries(createTimes).map(([k, v]) => [
          k,
          {
            imageAllocatedBytes: v.imageBytes,
            samples: v.ms.map(round),
            median: round(median(v.ms)),
          },
        ]),
      ),
    };
    console.log(JSON.stringify(out, null, 2));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
    await env.cleanup();
  }
}

interface BootSample {
  createMs: number;
  bootMs: number;
  vmmCpuMs: number;
}

/**
 * Each image booted `runs` times, interleaved: `vm create` (to ssh ready),
 * `vm show` for the daemon's boot time and the VMM's pid, the VMM's CPU time
 * from /proc (the bench runs as root in the daemon's pid namespace), delete.
 */
async function bootImages(env: Awaited<ReturnType<typeof vmEnv>>) {
  const per = new Map<string, BootSample[]>(imageNames.map((n) => [n, []]));
  for (let i = 0; i < runs; i++) {
    for (const img of imageNames) {
      const name = env.name('boot');
      const t0 = performance.now();
      const r = await env.run(['vm', 'create', '--image', img, '--name', name]);
      const createMs = performance.now() - t0;
      if (r.code !== 0) throw new Error(`vm create --image ${img} failed: ${r.stderr}`);
      const vm = await env.json<{ pid: number | null; bootMs: number | null }>([
        'vm',
        'show',
        name,
      ]);
      const usage = vm.pid ? processUsage(vm.pid) : undefined;
      await env.run(['vm', 'delete', '--force', name]);
      if (!usage || vm.bootMs === null) throw new Error(`vm show ${name}: no pid or boot time`);
      const s = { createMs, bootMs: vm.bootMs, vmmCpuMs: usage.ticks * TICK_MS };
      per.get(img)!.push(s);
      console.error(
        `${img}: create ${round(createMs)} s, boot ${round(s.bootMs)} s, VMM CPU ${round(s.vmmCpuMs)} s`,
      );
    }
  }
  const fields = ['createMs', 'bootMs', 'vmmCpuMs'] as const;
  const med = (img: string, f: (typeof fields)[number]) => median(per.get(img)!.map((x) => x[f]));
  const first = imageNames[0]!;
  return {
    images: {
      what: 'per image: vm create wall, daemon bootMs (VMM start to ssh ready), VMM CPU time at ready (s)',
      ...Object.fromEntries(
        imageNames.map((n) => [
          n,
          Object.fromEntries(
            fields.map((f) => [
              f.replace(/Ms$/, ''),
              { samples: per.get(n)!.map((x) => round(x[f])), median: round(med(n, f)) },
            ]),
          ),
        ]),
      ),
    },
    imageRatio: Object.fromEntries(
      imageNames.map((n) => [
        n,
        Object.fromEntries(
          fields.map((f) => [
            f.replace(/Ms$/, ''),
            Math.round((med(n, f) / med(first, f)) * 1000) / 1000,
          ]),
        ),
      ]),
    ),
  };
}

/** Poll (politely) until a TCP connect to ip:22 returns an SSH banner, inside the namespace. */
async function waitForBanner(ns: string, ip: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const probe = `const s=require('net').connect(22,'${ip}');s.setTimeout(1500,()=>process.exit(2));s.on('data',d=>process.exit(String(d).startsWith('SSH-')?0:3));s.on('error',()=>process.exit(1));`;
  while (Date.now() < deadline) {
    const r = await runProcess('ip', ['netns', 'exec', ns, process.execPath, '-e', probe], {
      timeoutMs: 5000,
    }).catch(() => ({ code: 9 }));
    if (r.code === 0) return;
    await new Promise((res) => setTimeout(res, 200));
  }
  throw new Error(`no ssh banner from ${ip} within ${timeoutMs / 1000}s`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
