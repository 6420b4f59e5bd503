import path from 'node:path';

/**
 * The files of one VM, in `<state>/vms/<id>/`. The only place these names are
 * spelled; everything else asks this module. Files a VMM driver keeps there
 * (its control socket) are the driver's own (QEMU_FILES, FC_FILES).
 */
export const VM_FILES = {
  overlayDisk: 'overlay.ext4',
  workDisk: 'work.ext4',
  consoleLog: 'console.log',
  vmmLog: 'vmm.log',
  /** Host end of the guest agent channel (virtio-serial socket, or Firecracker's vsock socket). */
  agentSocket: 'agent.sock',
  /** `vm suspend`: the VMM's device state and the guest memory (docs/snapshots.md). */
  suspendState: 'suspend.state',
  suspendMem: 'suspend.mem',
} as const;

export type VmLayout = { dir: string } & { [K in keyof typeof VM_FILES]: string };

export function vmLayout(vmsDir: string, vmId: string): VmLayout {
  const dir = path.join(vmsDir, vmId);
  const out: Record<string, string> = { dir };
  for (const [k, f] of Object.entries(VM_FILES)) out[k] = path.join(dir, f);
  return out as VmLayout;
}
