import type { LaunchSpec } from '../../src/vmm/driver.js';

/**
 * A launch spec with made-up paths under /s (state dir) for the pure
 * builders' tests: base, overlay and work disks, a tap, the agent socket and
 * both logs in the VM's directory.
 */
export function sampleLaunchSpec(vmId: string, over: Partial<LaunchSpec> = {}): LaunchSpec {
  const dir = `/s/vms/${vmId}`;
  return {
    vmId,
    name: 'foo',
    dir,
    vcpu: 2,
    memoryMib: 1024,
    accel: 'kvm',
    kernel: {
      path: '/s/kernels/deb/vmlinux',
      initrd: '/s/kernels/deb/initrd.img',
      cmdline: 'console=ttyS0 quiet',
    },
    disks: [
      { id: 'base', path: '/s/images/deb/rootfs.ext4', readOnly: true },
      { id: 'overlay', path: `${dir}/overlay.ext4`, readOnly: false },
      { id: 'work', path: `${dir}/work.ext4`, readOnly: false },
    ],
    net: { tap: 'bgtap3', mac: '06:00:AC:10:00:02' },
    agentSocket: `${dir}/agent.sock`,
    consoleLog: `${dir}/console.log`,
    vmmLog: `${dir}/vmm.log`,
    ...over,
  };
}
