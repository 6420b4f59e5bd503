import fs from 'node:fs';
import type { AccelChoice } from '../config/schema.js';
import type { Accel } from './driver.js';

/**
 * `accel = auto|kvm|tcg`. The device node alone proves nothing: on hosts with
 * paravirtual nested KVM (kvm_pvm) /dev/kvm opens but cannot run a stock
 * guest. auto picks KVM only when the CPU advertises VMX/SVM, /dev/kvm is
 * usable and no known-broken KVM module is loaded. Pure, given the facts.
 */
export interface KvmFacts {
  /** The device probed (default /dev/kvm). */
  device?: string;
  devKvmRw: boolean;
  cpuFlags: string[];
  /** Loaded kernel modules whose name starts with kvm. */
  kvmModules: string[];
}

export interface AccelDecision {
  accel: Accel;
  reason: string;
  /** Set when auto fell back to TCG: shown once to the user. */
  warning?: string;
}

const BROKEN_KVM_MODULES = ['kvm_pvm'];

export function resolveAccel(choice: AccelChoice, facts: KvmFacts): AccelDecision {
  if (choice === 'tcg') return { accel: 'tcg', reason: 'accel = "tcg"' };
  if (choice === 'kvm') return { accel: 'kvm', reason: 'accel = "kvm"' };
  const why = kvmUnusable(facts);
  if (!why) return { accel: 'kvm', reason: 'auto: KVM available' };
  return {
    accel: 'tcg',
    reason: `auto: ${why}`,
    warning: `KVM is not usable (${why}): using TCG software emulation, boots are much slower`,
  };
}

function kvmUnusable(f: KvmFacts): string | undefined {
  if (!f.devKvmRw) return `${f.device ?? '/dev/kvm'} is missing or not read/writable`;
  if (!f.cpuFlags.includes('vmx') && !f.cpuFlags.includes('svm'))
    return 'the CPU does not advertise vmx/svm';
  const broken = f.kvmModules.find((m) => BROKEN_KVM_MODULES.includes(m));
  if (broken) return `KVM is provided by ${broken}, which cannot run stock guests`;
  return undefined;
}

/**
 * The KVM device every probe looks at: `/dev/kvm`, or `BANGER_KVM_DEVICE` in
 * the daemon's environment. Tests point it at a file they control so a probe
 * sees the same thing on hosts with and without the device.
 */
export const KVM_DEVICE_ENV = 'BANGER_KVM_DEVICE';
export function kvmDevicePath(env: NodeJS.ProcessEnv = process.env): string {
  return env[KVM_DEVICE_ENV] || '/dev/kvm';
}

export function readKvmFacts(dev = kvmDevicePath()): KvmFacts {
  let devKvmRw = false;
  try {
    fs.accessSync(dev, fs.constants.R_OK | fs.constants.W_OK);
    devKvmRw = true;
  } catch {
    // not usable
  }
  let cpuFlags: string[] = [];
  try {
    const m = /^flags\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    cpuFlags = m ? m[1]!.split(/\s+/) : [];
  } catch {
    // unknown
  }
  let kvmModules: string[] = [];
  try {
    kvmModules = fs.readdirSync('/sys/module').filter((m) => m.startsWith('kvm'));
  } catch {
    // unknown
  }
  return { device: dev, devKvmRw, cpuFlags, kvmModules };
}

/** Host TSC frequency in kHz for `tsc_early_khz=` (TCG guests on microvm have no other calibration source). */
export function hostTscKhz(): number | undefined {
  try {
    const m = /^cpu MHz\s*:\s*([0-9.]+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    return m ? Math.round(Number(m[1]) * 1000) : undefined;
  } catch {
    return undefined;
  }
}
