import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { BangerError } from '../../errors.js';
import { run } from '../../util/exec.js';
import { EM_X86_64, ET_EXEC, parseElfHeader, parseProgramHeaders } from './bzimage.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { buildInitScript, buildShutdownScript, INITRAMFS_MODULES_DIR } from './initScript.js';

/**
 * banger's initramfs: busybox-static and its applet links, the guest modules
 * in load order, /init and /shutdown, as an uncompressed reproducible newc
 * cpio (compression costs boot time and saves nothing that matters here).
 */

/** Where Debian's busybox-static puts the binary. */
export const BUSYBOX_PATH = '/bin/busybox';
const PT_INTERP = 3;
const ET_DYN = 3;

export interface InitramfsInputs {
  busybox: Buffer;
  /** `busybox --list` output: the applets to link. */
  applets: readonly string[];
  kernelRelease: string;
  /** Module files in load order: path relative to /lib/modules/<kver>, and contents. */
  modules: readonly { path: string; data: Buffer }[];
}

/** The archive's entries. Pure. */
export function initramfsEntries(inputs: InitramfsInputs): CpioEntry[] {
  const entries: CpioEntry[] = [
    { type: 'file', path: 'bin/busybox', mode: 0o755, data: inputs.busybox },
    {
      type: 'file',
      path: 'init',
      mode: 0o755,
      data: buildInitScript({
        kernelRelease: inputs.kernelRelease,
        modules: inputs.modules.map((m) => m.path),
      }),
    },
    { type: 'file', path: 'shutdown', mode: 0o755, data: buildShutdownScript() },
    // the kernel opens /dev/console for init's stdio before /init mounts devtmpfs
    { type: 'chardev', path: 'dev/console', mode: 0o600, major: 5, minor: 1 },
    { type: 'dir', path: 'proc' },
    { type: 'dir', path: 'sys' },
    { type: 'dir', path: 'run' },
    { type: 'dir', path: 'newroot' },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
  ];
  const applets = new Set(
    inputs.applets.filter((a) => /^[a-z0-9_.[-]+$/i.test(a) && a !== 'busybox'),
  );
  for (const a of [...applets].sort())
    entries.push({ type: 'symlink', path: `bin/${a}`, target: 'busybox' });
  for (const m of inputs.modules) {
    entries.push({
      type: 'file',
      path: `${INITRAMFS_MODULES_DIR.slice(1)}/${m.path}`,
      mode: 0o644,
      data: m.data,
    });
  }
  return entries;
}

export function buildInitramfs(inputs: InitramfsInputs): Buffer {
  return writeCpio(initramfsEntries(inputs));
}

/** True when the ELF has no program interpreter (statically linked). Pure. */
export function isStaticElf(buf: Buffer): boolean {
  const h = parseElfHeader(buf);
  if (!h || !h.class64 || !h.littleEndian || h.machine !== EM_X86_64) return false;
  if (h.type !== ET_EXEC && h.type !== ET_DYN) return false;
  const end = h.phoff + h.phnum * h.phentsize;
  if (h.phnum === 0 || end > buf.length) return false;
  return !parseProgramHeaders(buf.subarray(h.phoff, end), h).some((p) => p.type === PT_INTERP);
}

const busyboxHint =
  'install a static busybox (Debian/Ubuntu: sudo apt-get install busybox-static) or set BANGER_BUSYBOX to one';

/** Read the host's static busybox and its applet list. */
export async function loadBusybox(
  file = process.env.BANGER_BUSYBOX || BUSYBOX_PATH,
): Promise<{ path: string; data: Buffer; applets: string[]; sha256: string }> {
  let data: Buffer;
  try {
    data = await fs.readFile(file);
  } catch {
    throw new BangerError(
      'tool_missing',
      `busybox not found at ${file} (needed for the kernel's initramfs)`,
      {
        hint: busyboxHint,
      },
    );
  }
  if (!isStaticElf(data)) {
    throw new BangerError('tool_missing', `${file} is not a statically linked x86-64 busybox`, {
      hint: busyboxHint,
    });
  }
  const r = await run(file, ['--list'], { what: 'listing busybox applets', timeoutMs: 10_000 });
  const applets = r.stdout
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const need of [
    'sh',
    'mount',
    'insmod',
    'switch_root',
    'findfs',
    'ip',
    'md5sum',
    'poweroff',
  ]) {
    if (!applets.includes(need)) {
      throw new BangerError('tool_missing', `${file} lacks the '${need}' applet`, {
        hint: busyboxHint,
      });
    }
  }
  return {
    path: path.resolve(file),
    data,
    applets,
    sha256: createHash('sha256').update(data).digest('hex'),
  };
}
