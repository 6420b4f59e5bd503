/**
 * Boot benchmark. Prints JSON:
 *  - banger: wall time of `banger vm run --rm -- true` (create the disks,
 *    boot, ssh `true`, kill and delete the VM)
 *  - baseline: the same work by hand with a bare qemu-system-x86_64: a tap,
 *    the same disks made the same way, the same kernel, initramfs, sizing
 *    (banger's effective defaults, which the banger runs are given
 *    explicitly), booted until sshd answers with its banner, then killed, its
 *    disks and tap removed. Both clocks cover make-boot-remove; banger's also
 *    covers its ssh login and `true`, which the baseline (no key in its
 *    guest) stops short of, so the ratio leans against banger
 *  - ratio banger/baseline (medians); runs alternate banger, baseline, ...
 *  - `vm create --no-start` time for two images of very different sizes
 *    (the big one is checked to really hold over 1 GiB more data)
 *  - warm start (docs/snapshots.md): the first `vm run --rm -- true` of the
 *    shape (boots and keeps a boot snapshot), then `--runs` pairs of
 *    `vm run --rm --cold -- true` and `vm run --rm -- true` (restored from the
 *    boot snapshot), interleaved so both see the same load; their medians and
 *    cold/warm. The other `vm run` figures above are cold (`--cold`).
 *    `--warm-only` measures only this.
 *
 * Everything runs inside a network namespace made here and removed after.
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
 *
 *   node dist/bench/boot.js [--runs N] [--image NAME]... [--images-only] [--warm-only]
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
import { vmEnv, type VmEnv } from '../test/helpers/e2e.js';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const imageNames = process.argv.flatMap((a, i) =>
  a === '--image' && process.argv[i + 1] ? [process.argv[i + 1]!] : [],
);
if (imageNames.length === 0) imageNames.push('debian-bookworm');
const imagesOnly = process.argv.includes('--images-only');
const warmOnly = process.argv.includes('--warm-only');
/** USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s. */
const TICK_MS = 10;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const round = (ms: number): number => Math.round(ms) / 1000;
const GiB = 1024 ** 3;

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
interface Sizing {
  vcpu: number;
  memoryMib: number;
  diskSize: number;
}

/** One bare-QEMU boot doing what banger does for a VM, timed from nothing to gone. */
async function baselineRun(
  env: VmEnv,
  i: number,
  o: { tmp: string; kernel: Kernel; image: Image; sizing: Sizing; accel: 'kvm' | 'tcg' },
): Promise<number> {
  const { kernel, image, sizing, accel } = o;
  const dir = path.join(o.tmp, `b${i}`);
  const tap = `bbt${i}`;
  const ip = `172.31.0.${10 + i}`;
  const t0 = performance.now();
  // The tap, as banger makes one per VM (the bridge exists already for both).
  await env.sh(['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  await env.sh(['ip', 'link', 'set', tap, 'master', 'bbr0', 'up']);
  // The disks, as banger makes them for a VM: a sparse overlay and a grown clone of the work seed.
  fs.mkdirSync(dir);
  await createSparseExt4(path.join(dir, 'overlay.ext4'), sizing.diskSize, {
    label: DISKS.overlay.label,
  });
  if (image.workSeedPath) {
    await cloneSparse(image.workSeedPath, path.join(dir, 'work.ext4'));
    await growExt4(path.join(dir, 'work.ext4'), sizing.diskSize);
  } else {
    await createSparseExt4(path.join(dir, 'work.ext4'), sizing.diskSize, {
      label: DISKS.work.label,
    });
  }
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
      vcpu: sizing.vcpu,
      memoryMib: sizing.memoryMib,
      accel,
      kernel: {
        path: kernel.vmlinuxPath ?? kernel.kernelPath,
        initrd: kernel.initrdPath ?? undefined,
        cmdline: buildKernelCmdline({
          vmId: `00000000bench${String(i).padStart(3, '0')}`,
          accel,
          tscKhz: hostTscKhz(),
          ipArg: `ip=${ip}::172.31.0.1:255.255.255.0:bench${i}:eth0:off`,
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
  const child = spawn('ip', ['netns', 'exec', env.ns, 'qemu-system-x86_64', ...argv], {
    stdio: 'ignore',
  });
  const gone = new Promise((r) => child.once('exit', r));
  try {
    await waitForBanner(env.ns, ip, 300_000);
  } finally {
    // Gone as `vm run --rm` leaves it: the VMM killed, its disks removed.
    child.kill('SIGKILL');
    await gone;
    fs.rmSync(dir, { recursive: true, force: true });
    await env.sh(['ip', 'link', 'del', tap]);
  }
  return performance.now() - t0;
}

async function main(): Promise<void> {
  // Warm start on, as for a user; every cold figure asks for --cold.
  const env = await vmEnv('bench', { images: imageNames, config: 'warm_start = true\n' });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'banger-bench-'));
  try {
    await env.run(['daemon', 'status']); // the daemon already runs, as for a user
    const bootTimes = imageNames.length > 1 && !warmOnly ? await bootImages(env) : undefined;
    if (imagesOnly) {
      console.log(
        JSON.stringify({ host: { cpus: os.cpus().length }, runs, ...bootTimes }, null, 2),
      );
      return;
    }
    // banger's effective VM sizing on this host; the baseline boots with the same.
    const doctor = await env.json<{ vmDefaults: Record<keyof Sizing, { value: number }> }>([
      'doctor',
    ]);
    const sizing: Sizing = {
      vcpu: doctor.vmDefaults.vcpu.value,
      memoryMib: doctor.vmDefaults.memoryMib.value,
      diskSize: doctor.vmDefaults.diskSize.value,
    };
    const sizeFlags = [
      '--vcpu',
      String(sizing.vcpu),
      '--memory',
      `${sizing.memoryMib}M`,
      '--disk-size',
      `${sizing.diskSize / 1024 ** 2}M`,
    ];
    const warm = await warmRuns(env, sizeFlags);
    if (warmOnly) {
      console.log(
        JSON.stringify({ host: { cpus: os.cpus().length }, runs, sizing, warm }, null, 2),
      );
      return;
    }
    const kernel = (await env.json<Kernel[]>(['kernel', 'list']))[0]!;
    const image = (await env.json<Image[]>(['image', 'list'])).find(
      (i) => i.name === imageNames[0],
    )!;
    const accel = resolveAccel('auto', readKvmFacts()).accel;
    await env.sh(['ip', 'link', 'add', 'bbr0', 'type', 'bridge']);
    await env.sh(['ip', 'addr', 'add', '172.31.0.1/24', 'dev', 'bbr0']);
    await env.sh(['ip', 'link', 'set', 'bbr0', 'up']);

    // --- A B A B: banger's `vm run --rm -- true`, then the same by hand with bare QEMU
    const banger: number[] = [];
    const baseline: number[] = [];
    for (let i = 0; i < runs; i++) {
      banger.push(await timedVmRun(env, sizeFlags, ['--cold'], 'cold'));
      baseline.push(await baselineRun(env, i, { tmp, kernel, image, sizing, accel }));
    }

    // --- vm create --no-start for a small and a big image
    const big = path.join(tmp, 'big.ext4');
    await cloneSparse(image.rootfsPath, big);
    const pad = path.join(tmp, 'pad.bin');
    fs.writeFileSync(pad, Buffer.alloc(64 * 1024 ** 2, 1));
    // ~1 GiB more of real data inside the filesystem.
    await growExt4(big, (image.sizeBytes ?? fs.statSync(image.rootfsPath).size) + 1.2 * GiB);
    const script = Array.from({ length: 16 }, (_, k) => `write ${pad} /pad${k}.bin`).join('\n');
    fs.writeFileSync(path.join(tmp, 'pad.debugfs'), `${script}\n`);
    const w = await runProcess('debugfs', ['-w', '-f', path.join(tmp, 'pad.debugfs'), big]);
    if (w.code !== 0) throw new Error(`debugfs could not fill ${big}: ${w.stderr}`);
    const allocated = (f: string): number => fs.statSync(f).blocks * 512;
    const extra = allocated(big) - allocated(image.rootfsPath);
    if (extra < GiB)
      throw new Error(
        `the big image is not big: ${big} holds only ${Math.round(extra / 1024 ** 2)} MiB more than ${image.rootfsPath}`,
      );
    const fsck = await runProcess('e2fsck', ['-fn', big], { timeoutMs: 300_000 });
    if (fsck.code !== 0) throw new Error(`the big image is damaged: ${fsck.stdout}`);
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
    const images = [
      [image.name, image.rootfsPath],
      ['bench-big', big],
    ] as const;
    const createMs: Record<string, number[]> = { [image.name]: [], 'bench-big': [] };
    for (let i = 0; i < runs; i++) {
      for (const [img] of images) {
        const name = env.name('create');
        const t0 = performance.now();
        const r = await env.run(['vm', 'create', '--no-start', '--image', img, '--name', name]);
        createMs[img]!.push(performance.now() - t0);
        if (r.code !== 0) throw new Error(`vm create failed: ${r.stderr}`);
        const d = await env.run(['vm', 'delete', name]);
        if (d.code !== 0) throw new Error(`vm delete failed: ${d.stderr}`);
      }
    }
    await env.run(['image', 'delete', 'bench-big']);

    const out = {
      host: { cpus: os.cpus().length, accel },
      runs,
      sizing: { ...sizing, source: 'banger doctor vmDefaults, given to both' },
      banger: {
        what: `banger vm run --rm --image ${imageNames[0]} -- true (wall, s)`,
        samples: banger.map(round),
        median: round(median(banger)),
      },
      ...bootTimes,
      warm,
      baseline: {
        what: 'bare qemu, same tap, disks, kernel+initramfs and sizing: make tap and disks, boot to sshd banner, kill, remove both (s)',
        samples: baseline.map(round),
        median: round(median(baseline)),
      },
      ratio: Math.round((median(banger) / median(baseline)) * 100) / 100,
      createNoStart: Object.fromEntries(
        images.map(([k, file]) => [
          k,
          {
            imageAllocatedBytes: allocated(file),
            samples: createMs[k]!.map(round),
            median: round(median(createMs[k]!)),
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

/**
 * Wall time (ms) of one `vm run --rm --image <first image> EXTRA -- true`,
 * checked to have started `expect` (its `spec:` line).
 */
async function timedVmRun(
  env: VmEnv,
  sizeFlags: string[],
  extra: string[],
  expect: 'warm' | 'cold',
): Promise<number> {
  const t0 = performance.now();
  const r = await env.run([
    'vm',
    'run',
    '--rm',
    '--image',
    imageNames[0]!,
    '--name',
    env.name('bench'),
    ...extra,
    ...sizeFlags,
    '--',
    'true',
  ]);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`vm run ${extra.join(' ')} failed: ${r.stderr}`);
  if (!new RegExp(`^spec: .* start=${expect}$`, 'm').test(r.stderr))
    throw new Error(`vm run ${extra.join(' ')} did not start ${expect}: ${r.stderr}`);
  console.error(`vm run --rm ${extra.join(' ')}-- true: ${expect} ${round(ms)} s`);
  return ms;
}

/**
 * Warm start: the shape's first `vm run --rm -- true` (a boot that keeps the
 * boot snapshot), then cold (`--cold`) and warm runs interleaved; the boot
 * snapshot is pruned after.
 */
async function warmRuns(env: VmEnv, sizeFlags: string[]) {
  const vmRun = (extra: string[], expect: 'warm' | 'cold'): Promise<number> =>
    timedVmRun(env, sizeFlags, extra, expect);
  const first = await vmRun([], 'cold');
  const boot = (await env.json<{ kind: string; sizeBytes: number }[]>(['snapshot', 'list'])).find(
    (s) => s.kind === 'boot',
  );
  const cold: number[] = [];
  const warm: number[] = [];
  for (let i = 0; i < runs; i++) {
    cold.push(await vmRun(['--cold'], 'cold'));
    warm.push(await vmRun([], 'warm'));
  }
  const pruned = await env.run(['snapshot', 'prune']);
  if (pruned.code !== 0) throw new Error(`snapshot prune failed: ${pruned.stderr}`);
  return {
    what: `banger vm run --rm --image ${imageNames[0]} [--cold] -- true (wall, s)`,
    firstKeepingBootSnapshot: round(first),
    bootSnapshotBytes: boot?.sizeBytes ?? null,
    cold: { samples: cold.map(round), median: round(median(cold)) },
    warm: { samples: warm.map(round), median: round(median(warm)) },
    coldOverWarm: Math.round((median(cold) / median(warm)) * 100) / 100,
  };
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
      const r = await env.run(['vm', 'create', '--cold', '--image', img, '--name', name]);
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
