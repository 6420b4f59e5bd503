import { Command, Option } from '@commander-js/extra-typings';
import { IDENTITY } from '../version.js';
import type { CreateFlags, SizingFlags } from './commands/vm.js';
import type { PrepareFlags, WorkspaceRunFlags } from './commands/workspace.js';
import type { CliContext } from './context.js';

/**
 * The command tree of spec §4. Definitions only: each action calls a plain
 * async function in ./commands with typed options. Command modules are
 * imported when their command runs, so `banger --version` or completion loads
 * none of them.
 *
 * Argument names matter for shell completion: <vm>, <image>, <kernel> (and
 * their variadic forms) complete live names from the daemon.
 */

const vmCommands = () => import('./commands/vm.js');
const imageCommands = () => import('./commands/image.js');
const kernelCommands = () => import('./commands/kernel.js');
const daemonCommands = () => import('./commands/daemon.js');
const completionCommands = () => import('./commands/completion.js');
const tuiCommand = () => import('./commands/tui.js');
const workspaceCommands = () => import('./commands/workspace.js');
const snapshotCommands = () => import('./commands/snapshot.js');

export function buildProgram(ctx: CliContext): Command {
  const program = new Command()
    .name('banger')
    .description('One-command development sandboxes on microVMs')
    .version(IDENTITY, '-V, --version')
    .option('--json', 'machine-readable output')
    .option('--debug', 'show stack traces and debug progress')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s),
      // Errors are printed once, in banger's format, by the catch in main.ts.
      outputError: () => undefined,
    })
    .configureHelp({ sortSubcommands: false })
    .hook('preAction', (_this, action) => {
      const g = action.optsWithGlobals() as { json?: boolean; debug?: boolean };
      ctx.flags = { json: Boolean(g.json), debug: Boolean(g.debug) };
    });

  // ---- vm -----------------------------------------------------------------
  const vm = program.command('vm').description('create, run and manage VMs');

  vm.command('run')
    .description('create a VM, start it and open a shell (or run -- CMD and exit with its status)')
    .argument('[path]', 'git checkout to copy into the VM (workspace mode)')
    .option('--name <name>', 'VM name (default: generated)')
    .option('--image <image>', 'image to boot')
    .option('--kernel <kernel>', 'kernel to boot')
    .option('--vcpu <n>', 'number of vCPUs')
    .option('--memory <size>', 'memory, e.g. 2G or 2048M')
    .option('--disk-size <size>', 'work disk size, e.g. 8G')
    .option('--nat', 'give the VM outbound network access')
    .option('--cold', 'boot, even if a boot snapshot could be restored (warm start)')
    .option('--rm', 'delete the VM when the session or command ends')
    .option('--branch <branch>', 'create this branch in the guest checkout')
    .option('--from <ref>', 'start the branch from this ref')
    .option('--mode <mode>', 'git metadata: shallow (default) or full_copy (the whole .git)')
    .action(async (path, opts) =>
      path !== undefined ||
      opts.branch !== undefined ||
      opts.from !== undefined ||
      opts.mode !== undefined
        ? (await workspaceCommands()).vmRunWorkspace(
            ctx,
            path,
            opts as WorkspaceRunFlags,
            ctx.guestCommand,
          )
        : (await vmCommands()).vmRun(ctx, opts, ctx.guestCommand),
    );

  vm.command('create')
    .description('create a VM (and start it unless --no-start)')
    .option('--name <name>', 'VM name (default: generated)')
    .option('--image <image>', 'image to boot')
    .option('--kernel <kernel>', 'kernel to boot')
    .option('--vcpu <n>', 'number of vCPUs')
    .option('--memory <size>', 'memory, e.g. 2G or 2048M')
    .option('--disk-size <size>', 'work disk size, e.g. 8G')
    .option('--nat', 'give the VM outbound network access')
    .option('--cold', 'boot, even if a boot snapshot could be restored (warm start)')
    .option('--no-start', 'only create')
    .action(async (opts) => (await vmCommands()).vmCreate(ctx, opts as CreateFlags));

  vm.command('list')
    .alias('ls')
    .description('list VMs')
    .action(async () => (await vmCommands()).vmList(ctx));
  vm.command('show')
    .description('show one VM')
    .argument('<vm>', 'VM name or id prefix')
    .action(async (ref) => (await vmCommands()).vmShow(ctx, ref));
  vm.command('stats')
    .description('CPU, memory and disk usage')
    .argument('[vm...]', 'VMs (default: all running)')
    .action(async (refs) => (await vmCommands()).vmStats(ctx, refs));
  vm.command('ssh')
    .description('open a shell in a VM (or run -- CMD)')
    .argument('<vm>', 'VM name or id prefix')
    .action(async (ref) => (await vmCommands()).vmSsh(ctx, ref, ctx.guestCommand));
  vm.command('start')
    .description('start VMs')
    .argument('<vm...>', 'VM names or id prefixes')
    .action(async (refs) => (await vmCommands()).vmStart(ctx, refs));
  vm.command('stop')
    .description('stop VMs gracefully (guest shutdown, then kill after a timeout)')
    .argument('<vm...>', 'VM names or id prefixes')
    .option('--timeout <duration>', 'how long to wait for the guest', '30s')
    .action(async (refs, opts) => (await vmCommands()).vmStop(ctx, refs, opts.timeout));
  vm.command('restart')
    .description('restart VMs (graceful stop, kill after a timeout, then start)')
    .argument('<vm...>', 'VM names or id prefixes')
    .option('--timeout <duration>', 'how long to wait for the guest to stop', '30s')
    .action(async (refs, opts) => (await vmCommands()).vmRestart(ctx, refs, opts.timeout));
  vm.command('suspend')
    .description('save VMs to disk and free their memory (address kept; resume continues them)')
    .argument('<vm...>', 'VM names or id prefixes')
    .action(async (refs) => (await vmCommands()).vmSuspend(ctx, refs));
  vm.command('resume')
    .description('continue suspended VMs where they were')
    .argument('<vm...>', 'VM names or id prefixes')
    .action(async (refs) => (await vmCommands()).vmResume(ctx, refs));
  vm.command('kill')
    .description('send a signal to the VMM of VMs')
    .argument('<vm...>', 'VM names or id prefixes')
    .option('--signal <sig>', 'signal to send', 'SIGKILL')
    .action(async (refs, opts) => (await vmCommands()).vmKill(ctx, refs, opts.signal));
  vm.command('delete')
    .alias('rm')
    .description('delete VMs and their disks')
    .argument('<vm...>', 'VM names or id prefixes')
    .option('-f, --force', 'stop running VMs first')
    .action(async (refs, opts) => (await vmCommands()).vmDelete(ctx, refs, opts.force));
  vm.command('set')
    .description(
      'change VM settings (vcpu/memory only while stopped; disks only grow, also while running)',
    )
    .argument('<vm...>', 'VM names or id prefixes')
    .option('--vcpu <n>', 'number of vCPUs')
    .option('--memory <size>', 'memory, e.g. 2G or 2048M')
    .option('--disk-size <size>', 'disk size, e.g. 8G (only grows; a running VM grows online)')
    .option('--nat', 'enable NAT')
    .option('--no-nat', 'disable NAT')
    .option('--auto-stop <duration>', 'stop when idle this long: e.g. 30m, never, default (config)')
    .action(async (refs, opts) =>
      (await vmCommands()).vmSet(
        ctx,
        refs,
        opts as SizingFlags & { nat?: boolean; autoStop?: string },
      ),
    );
  vm.command('logs')
    .description('VMM and serial console log')
    .argument('<vm>', 'VM name or id prefix')
    .option('-f, --follow', 'keep printing new output')
    .action(async (ref, opts) => (await vmCommands()).vmLogs(ctx, ref, Boolean(opts.follow)));
  vm.command('ports')
    .description('listening ports in VMs, with http://<name>.vm:<port>/ for HTTP ones')
    .argument('[vm...]', 'VMs (default: all running)')
    .action(async (refs) => (await import('./commands/ports.js')).vmPorts(ctx, refs));
  vm.command('snapshot')
    .description('save a running VM (memory, devices, disks) as a snapshot; it keeps running')
    .argument('<vm>', 'VM name or id prefix')
    .option('--name <snapshot>', 'snapshot name (default: <vm>-snap<N>)')
    .action(async (ref, opts) => (await snapshotCommands()).vmSnapshot(ctx, ref, opts.name));
  vm.command('restore')
    .description('start a new VM from a snapshot (its own name, address, host keys)')
    .argument('<snapshot>', 'snapshot name or id prefix')
    .option('--name <name>', 'VM name (default: generated)')
    .action(async (ref, opts) => (await snapshotCommands()).vmRestore(ctx, ref, opts.name));
  vm.command('fork')
    .description('start copies of a running VM as it is now; the VM keeps running')
    .argument('<vm>', 'VM name or id prefix')
    .option('--name <name>', 'child name (with -n: NAME-1..NAME-N; default: <vm>-<N>)')
    .option('-n, --count <n>', 'how many children (1-16)', '1')
    .action(async (ref, opts) => (await snapshotCommands()).vmFork(ctx, ref, opts));
  vm.command('workspace')
    .description('workspace operations')
    .command('prepare')
    .description('copy a git checkout into a VM')
    .argument('<vm>', 'VM name or id prefix')
    .argument('[path]', 'git checkout or directory (default: .)')
    .option('--guest-path <path>', 'destination in the guest', '/root/repo')
    .option('--mode <mode>', 'git metadata: shallow (default) or full_copy (the whole .git)')
    .option('--readonly', 'make the guest copy read-only')
    .action(async (ref, path, opts) =>
      (await workspaceCommands()).workspacePrepare(ctx, ref, path, opts as PrepareFlags),
    );

  // ---- snapshot -------------------------------------------------------------
  const snapshot = program.command('snapshot').description('manage VM snapshots');
  snapshot
    .command('list')
    .alias('ls')
    .description('list snapshots')
    .action(async () => (await snapshotCommands()).snapshotList(ctx));
  snapshot
    .command('prune')
    .description('remove the boot snapshots kept for warm starts, and say what that freed')
    .action(async () => (await snapshotCommands()).snapshotPrune(ctx));
  snapshot
    .command('show')
    .description('show one snapshot')
    .argument('<snapshot>', 'snapshot name or id prefix')
    .action(async (ref) => (await snapshotCommands()).snapshotShow(ctx, ref));
  snapshot
    .command('delete')
    .alias('rm')
    .description('delete snapshots and their files')
    .argument('<snapshot...>', 'snapshot names or id prefixes')
    .action(async (refs) => (await snapshotCommands()).snapshotDelete(ctx, refs));

  // ---- image ----------------------------------------------------------------
  const image = program.command('image').description('manage images');
  image
    .command('list')
    .alias('ls')
    .description('list images')
    .option('--available', 'show the catalog (with sizes)')
    .action(async (opts: { available?: boolean }) =>
      (await imageCommands()).imageList(ctx, { available: Boolean(opts.available) }),
    );
  image
    .command('show')
    .description('show one image')
    .argument('<image>', 'image name')
    .action(async (name) => (await imageCommands()).imageShow(ctx, name));
  image
    .command('delete')
    .alias('rm')
    .description('delete images')
    .argument('<image...>', 'image names')
    .action(async (names) => (await imageCommands()).imageDelete(ctx, names));
  image
    .command('pull')
    .description(
      'pull a catalog image (debian-bookworm, debian-bookworm-slim) or an OCI image (registry/repo:tag)',
    )
    .argument('<ref>', 'catalog name or OCI reference')
    .option('--name <name>', 'name for the image')
    .option('--kernel-ref <kernel>', 'kernel to pair with the image')
    .option('--insecure', 'allow plain HTTP to a non-loopback registry')
    .action(async (ref, opts) => (await imageCommands()).imagePull(ctx, ref, opts));
  image
    .command('build')
    .description('build a new image from an existing one')
    .requiredOption('--name <name>', 'name of the new image')
    .requiredOption('--from-image <image>', 'image to start from')
    .option('--packages <list>', 'comma-separated Debian packages to add')
    .option('--docker', 'add Docker (docker.io)')
    .action(async (opts) => (await imageCommands()).imageBuild(ctx, opts));
  image
    .command('register')
    .description('register an existing rootfs as an unmanaged image')
    .requiredOption('--name <name>', 'image name')
    .requiredOption('--rootfs <path>', 'ext4 root filesystem')
    .option('--kernel-ref <kernel>', 'registered kernel to use')
    .option('--kernel <path>', 'kernel image file')
    .option('--initrd <path>', 'initramfs file')
    .option('--work-seed <path>', 'ext4 seed for /root')
    .action(async (opts) => (await imageCommands()).imageRegister(ctx, opts));
  image
    .command('promote')
    .description("copy an unmanaged image under banger's ownership")
    .argument('<image>', 'image name')
    .action(async (name) => (await imageCommands()).imagePromote(ctx, name));

  // ---- kernel ---------------------------------------------------------------
  const kernel = program.command('kernel').description('manage kernels');
  kernel
    .command('list')
    .alias('ls')
    .description('list kernels')
    .option('--available', 'show the catalog')
    .action(async (opts) =>
      (await kernelCommands()).kernelList(ctx, { available: Boolean(opts.available) }),
    );
  kernel
    .command('pull')
    .description('fetch a kernel from the catalog')
    .argument('<catalog-kernel>', 'catalog name')
    .action(async (name) => (await kernelCommands()).kernelPull(ctx, name));
  kernel
    .command('delete')
    .alias('rm')
    .description('delete kernels')
    .argument('<kernel...>', 'kernel names')
    .action(async (names) => (await kernelCommands()).kernelDelete(ctx, names));

  // ---- host -----------------------------------------------------------------
  program
    .command('doctor')
    .description('check that this host can run banger VMs')
    .action(async () => (await import('./commands/doctor.js')).doctorCommand(ctx));

  const daemon = program.command('daemon').description('control bangerd, the per-user daemon');
  daemon
    .command('status')
    .description('start bangerd if needed and show its state')
    .action(async () => (await daemonCommands()).daemonStatus(ctx));
  daemon
    .command('socket')
    .description('print the socket path')
    .action(async () => (await daemonCommands()).daemonSocket(ctx));
  daemon
    .command('stop')
    .description('stop bangerd after in-flight operations finish')
    .action(async () => (await daemonCommands()).daemonStop(ctx));
  daemon
    .command('logs')
    .description('show the daemon log (JSON lines)')
    .option('-f, --follow', 'keep printing new lines')
    .option('-n, --lines <n>', 'lines to show', '200')
    .action(async (opts) =>
      (await daemonCommands()).daemonLogs(ctx, {
        follow: Boolean(opts.follow),
        lines: Number(opts.lines),
      }),
    );

  program
    .command('ssh-config')
    .description('manage the ssh_config for <name>.vm hosts')
    .option('--install', 'add an Include line to ~/.ssh/config')
    .option('--uninstall', 'remove that line')
    .action(async (opts) => (await import('./commands/sshConfig.js')).sshConfigCommand(ctx, opts));

  program
    .command('completion')
    .description('print a shell completion script')
    .addArgument(
      new Command()
        .createArgument('<shell>', 'bash, zsh, fish or powershell')
        .choices(['bash', 'zsh', 'fish', 'powershell']),
    )
    .action(async (shell) => (await completionCommands()).completionCommand(ctx, program, shell));

  program
    .command('tui')
    .description('full-screen fleet view: VMs, images and kernels, live, keyboard driven')
    .action(async () => (await tuiCommand()).tui(ctx));

  program
    .command('__proxy', { hidden: true })
    .description('ssh ProxyCommand: a byte pipe to a VM port through bangerd')
    .argument('<vm>')
    .argument('[port]')
    .action(async (ref, port) => (await vmCommands()).proxyCommand(ctx, ref, port));

  program
    .command('__complete', { hidden: true })
    .argument('[words...]')
    .allowUnknownOption()
    .helpOption(false)
    .action(async (words) => (await completionCommands()).completeCommand(ctx, program, words));

  return program as unknown as Command;
}

export { Option };
