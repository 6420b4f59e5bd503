import path from 'node:path';

/**
 * The files of one VM, in `<state>/vms/<id>/`. The only place these names are
 * spelled; everything else asks this module.
 */
export const VM_FILES = {
  overlayDisk: 'overlay.ext4',
  workDisk: 'work.ext4',
  consoleLog: 'console.log',
  vmmLog: 'vmm.log',
  qmpSocket: 'qmp.sock',
  agentSocket: 'agent.sock',
  firecrackerSocket: 'fc.sock',
  pidFile: 'vmm.pid',
} as const;

export type VmFileKey = keyof typeof VM_FILES;

export interface VmLayout {
  dir: string;
  overlayDisk: string;
  workDisk: string;
  consoleLog: string;
  vmmLog: string;
  qmpSocket: string;
  agentSocket: string;
  firecrackerSocket: string;
  pidFile: string;
}

export function vmLayout(vmsDir: string, vmId: string): VmLayout {
  const dir = path.join(vmsDir, vmId);
  const out = { dir } as VmLayout;
  for (const [k, f] of Object.entries(VM_FILES))
    (out as unknown as Record<string, string>)[k] = path.join(dir, f);
  return out;
}

/** Unix socket paths are limited to 107 bytes. */
export const MAX_SOCKET_PATH = 107;
