import { AGENT_VIRTIO_PORT_NAME } from '../../guest/agentProtocol.js';
import { BangerError } from '../../errors.js';
import type { LaunchSpec } from '../driver.js';

/**
 * The qemu-system-x86_64 command line for one VM (pure). `-M microvm` with
 * virtio-mmio devices found through ACPI, the serial console to a file, a QMP
 * socket for control and a virtio-serial port for the guest agent.
 */
export interface QemuArgvOptions {
  /** Extra -device serial= for each disk so the guest's /init finds them by role. */
  diskSerials?: Record<string, string>;
  qmpSocket: string;
  /**
   * Confinement: seccomp with everything a VMM never needs denied (old
   * syscalls, setuid and friends, exec, scheduler/affinity changes), and the
   * user QEMU switches to once its files, taps and sockets are open.
   */
  sandbox?: boolean;
  runAs?: string;
  /**
   * Guest RAM as a shared mapping of this file (on tmpfs): the memory stays
   * outside the migration stream (x-ignore-shared) and the daemon can copy it
   * through /proc/<pid>/fd while the VMM runs. Absent: anonymous RAM.
   */
  ramFile?: string;
  /** Start paused, waiting for `migrate-incoming` (a restore). */
  incoming?: boolean;
}

/**
 * QEMU's seccomp policy: every optional group denied. With -runas,
 * elevateprivileges stays allowed because QEMU 7.2 installs the filter before
 * it switches user (the switch would be killed as a "bad system call"); the
 * switch sets all uids and gids and leaves no capabilities, and the filter
 * sets no_new_privs, so the process cannot become root again either way.
 */
export const qemuSandbox = (runAs: boolean): string =>
  `on,obsolete=deny,${runAs ? '' : 'elevateprivileges=deny,'}spawn=deny,resourcecontrol=deny`;

/** QEMU option values use ',' as separator; a literal comma is written ',,'. */
export const qemuEscape = (v: string): string => v.replace(/,/g, ',,');

const DISK_ID_RE = /^[a-z][a-z0-9_-]{0,30}$/;

/**
 * QMP `block_resize` arguments for a drive of buildQemuArgv (its `-drive id=`);
 * QEMU wants a size in whole 512-byte sectors.
 */
export function blockResizeArgs(
  diskId: string,
  sizeBytes: number,
): { device: string; size: number } {
  if (!DISK_ID_RE.test(diskId)) throw new BangerError('internal', `invalid disk id '${diskId}'`);
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % 512 !== 0)
    throw new BangerError('internal', `disk size ${sizeBytes} is not a positive multiple of 512`);
  return { device: diskId, size: sizeBytes };
}

export function buildQemuArgv(spec: LaunchSpec, opts: QemuArgvOptions): string[] {
  if (spec.vcpu < 1 || spec.vcpu > 255)
    throw new BangerError('usage', `vm '${spec.name}': vcpu must be 1-255 (got ${spec.vcpu})`);
  if (spec.memoryMib < 128)
    throw new BangerError('usage', `vm '${spec.name}': memory must be at least 128 MiB`);
  // Without the PIT and PIC a TCG guest can hang calibrating its TSC; with KVM they cost nothing.
  const machine = `microvm,pit=on,pic=on,rtc=on${opts.ramFile ? ',memory-backend=mem' : ''}`;
  const args = [
    '-name',
    `banger-${spec.name},process=banger-${spec.name}`,
    '-M',
    machine,
    '-accel',
    spec.accel,
    '-cpu',
    spec.accel === 'kvm' ? 'host' : 'max',
    '-m',
    `${spec.memoryMib}M`,
    '-smp',
    String(spec.vcpu),
    ...(opts.ramFile
      ? [
          '-object',
          `memory-backend-file,id=mem,size=${spec.memoryMib}M,mem-path=${qemuEscape(opts.ramFile)},share=on`,
        ]
      : []),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-chardev',
    // append: boots add to one log, and the daemon can cap it by truncation
    `file,id=console,path=${qemuEscape(spec.consoleLog)},append=on`,
    '-serial',
    'chardev:console',
    '-kernel',
    spec.kernel.path,
    '-append',
    spec.kernel.cmdline,
  ];
  if (spec.kernel.initrd) args.push('-initrd', spec.kernel.initrd);
  for (const d of spec.disks) {
    if (!DISK_ID_RE.test(d.id)) throw new BangerError('internal', `invalid disk id '${d.id}'`);
    const drive = [
      `id=${d.id}`,
      `file=${qemuEscape(d.path)}`,
      'format=raw',
      'if=none',
      d.readOnly ? 'readonly=on' : 'discard=unmap,auto-read-only=off',
    ];
    args.push('-drive', drive.join(','));
    const serial = opts.diskSerials?.[d.id];
    args.push(
      '-device',
      `virtio-blk-device,drive=${d.id}${serial ? `,serial=${qemuEscape(serial)}` : ''}`,
    );
  }
  if (spec.net) {
    args.push('-netdev', `tap,id=net0,ifname=${qemuEscape(spec.net.tap)},script=no,downscript=no`);
    args.push('-device', `virtio-net-device,netdev=net0,mac=${spec.net.mac}`);
  }
  args.push(
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=agent,path=${qemuEscape(spec.agentSocket)},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=agent,name=${AGENT_VIRTIO_PORT_NAME}`,
    '-qmp',
    `unix:${qemuEscape(opts.qmpSocket)},server=on,wait=off`,
  );
  // -S as well: the restored VM stays paused whatever runstate the stream carries.
  if (opts.incoming) args.push('-S', '-incoming', 'defer');
  if (opts.sandbox) args.push('-sandbox', qemuSandbox(Boolean(opts.runAs)));
  if (opts.runAs) {
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(opts.runAs))
      throw new BangerError('config_invalid', `vmm_user '${opts.runAs}' is not a valid user name`);
    args.push('-runas', opts.runAs);
  }
  if (spec.extraArgs) args.push(...spec.extraArgs);
  return args;
}
