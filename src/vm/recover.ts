import fs from 'node:fs';
import path from 'node:path';
import { hostAlias, removeKnownHost } from '../guest/ssh.js';
import type { IntentRecord, RecoveryCause } from '../store/journal.js';
import type { VmRecord } from '../store/vms.js';
import type { Logger } from '../util/log.js';
import { isProcessAlive, processCmdline, processStartTime } from '../util/proc.js';
import { cmdlineNamesSocket, jailedId } from '../vmm/jail.js';
import { killVmm } from '../vmm/process.js';
import { sweepVmmScratch, transientVmmFiles } from '../vmm/registry.js';
import type { VmDisks } from './disks.js';
import { isActive, type VmTable } from './records.js';

/**
 * Crash consistency of the VM operations (docs/reliability.md): what each
 * VM operation's intent means when it is found open, and the sweep of what
 * no intent names. Runs at daemon start before adoption (adopt.ts), and as
 * the `failed` recovery of an operation that threw.
 *
 *  - create: rolled back — the row and the VM's directory go;
 *  - start: rolled back unless the row already records the VMM it started
 *    (then adoption finishes the boot): a VMM the row does not know is
 *    killed (pid + /proc start time + its control socket on the command
 *    line), the row is stopped, taps and rules are reconciled;
 *  - stop: rolled back to what the VMM says — still running: `running` again
 *    (a retried stop finishes it); gone: `stopped`;
 *  - delete: completed — VMM killed, directory, known_hosts entry and row removed;
 *  - set (disk growth): completed — both disks grown to the asked size, the row updated.
 */

/** What VM recovery needs from the rest of the lifecycle. */
export interface RecoveryNeeds {
  table: VmTable;
  disks: Pick<VmDisks, 'grow'>;
  liveness: {
    alive(vm: VmRecord): boolean;
    markGone(vm: VmRecord, state: 'stopped'): Promise<VmRecord>;
  };
  knownHosts: string;
  sshConfig: string;
  vmsDir: string;
  /** Where QEMU guests' RAM files live (default /dev/shm). */
  shmDir?: string;
  /** `<state>/jailer`: the jails of jailed VMMs, `<exec name>/<vm id>/` (docs/firecracker.md). */
  jailsDir?: string;
  /** Removes a VM's jail and what goes with it (its cgroup); default: the directory only. */
  releaseJail?(vmId: string): void;
  logger: Logger;
}

/** The VMM an interrupted start recorded (intent data of `start`). */
interface StartMade {
  tap?: string;
  pid?: number;
  pidStartTime?: number | null;
  controlSocket?: string;
}

export class VmRecovery {
  /** A start was rolled back at daemon start: taps and rules must be reconciled even with no VM running. */
  private netDirty = false;

  constructor(private readonly n: RecoveryNeeds) {
    const j = n.table.journal;
    j.onRecover('create', (r) => this.create(r));
    j.onRecover('start', (r, cause) => this.start(r, cause));
    j.onRecover('stop', (r) => this.stop(r));
    j.onRecover('delete', (r) => this.delete(r));
    j.onRecover('set', (r, cause) => this.set(r, cause));
  }

  /** True once if a recovered start may have left a tap or rule (adoption then reconciles). */
  takeNetDirty(): boolean {
    const d = this.netDirty;
    this.netDirty = false;
    return d;
  }

  private async create(r: IntentRecord): Promise<void> {
    const vm = this.n.table.get(r.subject);
    if (vm && !isActive(vm)) {
      this.n.table.delete(vm.id);
      this.n.table.event('vm.create_rolled_back', vm, { step: r.step });
    }
    if (!vm || !isActive(vm)) rmDir(this.n.table.layout({ id: r.subject }).dir);
  }

  private async start(r: IntentRecord, cause: RecoveryCause): Promise<void> {
    const made = r.data as StartMade;
    const vm = this.n.table.get(r.subject);
    const vmm =
      made.pid && made.controlSocket
        ? { pid: made.pid, pidStartTime: made.pidStartTime ?? -1, socket: made.controlSocket }
        : undefined;
    const running = vmm !== undefined && isOurVmm(vmm.pid, vmm.pidStartTime, vmm.socket);
    // At daemon start, a row that records this VMM is a complete start: adoption finishes the boot.
    if (cause === 'restart' && vm && running && vm.pid === vmm.pid && isActive(vm)) return;
    if (running)
      await killVmm(vmm, `the VMM of an interrupted start of vm '${vm?.name ?? r.subject}'`);
    if (cause === 'restart') this.netDirty = true;
    if (!vm) return;
    if (isActive(vm) || vm.tap) {
      const gone = await this.n.liveness.markGone(vm, 'stopped');
      if (cause === 'restart')
        this.n.table.update(gone.id, {
          lastError: `the daemon stopped during vm start (at ${r.step}); start it again`,
        });
    }
  }

  private async stop(r: IntentRecord): Promise<void> {
    const vm = this.n.table.get(r.subject);
    if (!vm || !isActive(vm)) return;
    if (this.n.liveness.alive(vm)) {
      if (vm.state === 'stopping') this.n.table.update(vm.id, { state: 'running' });
    } else {
      await this.n.liveness.markGone(vm, 'stopped');
    }
  }

  private async delete(r: IntentRecord): Promise<void> {
    await this.removeVm(
      r.subject,
      r.data.name as string | undefined,
      'after an interrupted delete',
    );
  }

  /**
   * A VM removed whole (a completed delete, a rolled-back restore or fork):
   * its recorded VMM killed if it is still that process, its tap released,
   * its directory, known_hosts entry and row removed. Idempotent.
   */
  async removeVm(id: string, name: string | undefined, why: string): Promise<void> {
    const { table } = this.n;
    let vm = table.get(id);
    if (vm && (isActive(vm) || vm.tap)) {
      const h = table.handleOf(vm);
      if (h && this.n.liveness.alive(vm) && isOurVmm(h.pid, h.pidStartTime, h.controlSocket))
        await killVmm(h, `the VMM of vm '${vm.name}'`);
      vm = await this.n.liveness.markGone(table.current(vm), 'stopped');
    }
    rmDir(table.layout({ id }).dir);
    const alias = vm?.name ?? name;
    if (alias) removeKnownHost(this.n.knownHosts, hostAlias(alias));
    if (vm) {
      table.delete(vm.id);
      table.event('vm.deleted', vm, { completed: why });
    }
  }

  /** A VMM an intent recorded, killed if it is still that process (pid, start time, socket); true if it was. */
  async killRecorded(made: Record<string, unknown>, what: string): Promise<boolean> {
    const m = made as StartMade;
    if (!m.pid || !m.controlSocket) return false;
    if (!isOurVmm(m.pid, m.pidStartTime ?? -1, m.controlSocket)) return false;
    await killVmm({ pid: m.pid, pidStartTime: m.pidStartTime ?? -1 }, what);
    return true;
  }

  /** Taps and rules must be reconciled at adoption (a rolled-back operation may have left one). */
  markNetDirty(): void {
    this.netDirty = true;
  }

  private async set(r: IntentRecord, cause: RecoveryCause): Promise<void> {
    const patch = r.data.patch as
      { vcpu?: number; memoryMib?: number; diskSize?: number } | undefined;
    const vm = this.n.table.get(r.subject);
    if (!vm || !patch?.diskSize) return;
    try {
      await this.n.disks.grow(this.n.table.layout(vm), patch.diskSize);
    } catch (e) {
      // A growth that failed while the daemon ran (a full disk) is not retried at every start:
      // its error was the answer; the disks stay as large as they got (they never shrink).
      if (cause === 'failed') {
        this.n.logger.warn({ err: e, vm: vm.name }, 'vm set: completing the disk growth failed');
        return;
      }
      throw e;
    }
    if (vm.diskSize < patch.diskSize || r.step !== 'after-row')
      this.n.table.update(vm.id, {
        vcpu: patch.vcpu ?? vm.vcpu,
        memoryMib: patch.memoryMib ?? vm.memoryMib,
        diskSize: Math.max(vm.diskSize, patch.diskSize),
      });
  }

  /**
   * Daemon start, after the journal's recovery and before adoption: what no
   * intent names. VM directories without a row, processes working on a VM's
   * files that its row does not record as its VMM (a VMM or a disk tool a
   * dead daemon started), known_hosts entries of VMs that are gone, and the
   * temp file of an ssh_config write that was cut short.
   */
  sweep(): { dirs: string[]; processes: number[]; knownHosts: string[] } {
    const { table, vmsDir } = this.n;
    const rows = new Map(table.list().map((v) => [v.id, v]));
    const dirs: string[] = [];
    for (const name of safeReaddir(vmsDir)) {
      if (rows.has(name)) continue;
      rmDir(path.join(vmsDir, name));
      dirs.push(name);
    }
    // A guest RAM file exists only while a VMM is being spawned or restored (it is unlinked
    // once QEMU answers): at daemon start none is, so one of these VMs' is left over.
    for (const id of [...rows.keys(), ...dirs])
      for (const f of transientVmmFiles(id, this.n.shmDir)) fs.rmSync(f, { force: true });
    const scratch = sweepVmmScratch(this.n.shmDir);
    if (scratch.length)
      this.n.logger.info({ dirs: scratch }, 'removed VMM scratch of a dead daemon');
    const processes: number[] = [];
    const jails = this.n.jailsDir ? jailsUnder(this.n.jailsDir) : [];
    for (const p of [...processesUnder(vmsDir), ...jailedProcesses(jails)]) {
      const vm = rows.get(p.vmId);
      if (vm && isActive(vm) && vm.pid === p.pid && this.n.liveness.alive(vm)) continue;
      // Read again just before the signal: the same process (start time) still names the VM's files.
      if (!isProcessAlive(p.pid, p.startTime)) continue;
      try {
        process.kill(p.pid, 'SIGKILL');
        processes.push(p.pid);
      } catch {
        // gone meanwhile, or not ours to kill
      }
    }
    if (processes.length)
      this.n.logger.warn({ pids: processes }, 'killed processes of VMs no row records');
    // A jail belongs to a running VMM only: any other is what a stop or crash left behind.
    for (const j of jails) {
      const vm = rows.get(j.vmId);
      if (vm && isActive(vm) && this.n.liveness.alive(vm)) continue;
      if (this.n.releaseJail) this.n.releaseJail(j.vmId);
      rmDir(j.dir);
      dirs.push(path.relative(path.dirname(vmsDir), j.dir));
    }
    const knownHosts = this.sweepKnownHosts(new Set([...rows.values()].map((v) => v.name)));
    removeDeadTemp(this.n.sshConfig);
    return { dirs, processes, knownHosts };
  }

  /** `<name>.vm` entries of VMs that no longer exist. */
  private sweepKnownHosts(names: Set<string>): string[] {
    let text: string;
    try {
      text = fs.readFileSync(this.n.knownHosts, 'utf8');
    } catch {
      return [];
    }
    const stale = new Set<string>();
    for (const line of text.split('\n')) {
      const alias = line.split(' ')[0] ?? '';
      const m = /^(.+)\.vm$/.exec(alias);
      if (m && !names.has(m[1]!)) stale.add(alias);
    }
    for (const alias of stale) removeKnownHost(this.n.knownHosts, alias);
    return [...stale];
  }
}

/** The process is alive, is the one that started then, and names this control socket. */
export function isOurVmm(
  pid: number,
  startTime: number | null | undefined,
  socket: string,
): boolean {
  const st =
    startTime !== undefined && startTime !== null && startTime >= 0 ? startTime : undefined;
  if (!isProcessAlive(pid, st)) return false;
  return cmdlineNamesSocket(processCmdline(pid), socket);
}

/** Every `<jailsDir>/<exec name>/<vm id>` directory. */
export function jailsUnder(jailsDir: string): { dir: string; vmId: string }[] {
  const out: { dir: string; vmId: string }[] = [];
  for (const exec of safeReaddir(jailsDir))
    for (const id of safeReaddir(path.join(jailsDir, exec)))
      out.push({ dir: path.join(jailsDir, exec, id), vmId: id });
  return out;
}

/** Processes started in one of these jails: `--id <vm id>` on the command line and the jail's root there. */
function jailedProcesses(
  jails: { dir: string; vmId: string }[],
): { pid: number; startTime: number; vmId: string }[] {
  if (!jails.length) return [];
  const ids = new Set(jails.map((j) => j.vmId));
  const out: { pid: number; startTime: number; vmId: string }[] = [];
  for (const name of safeReaddir('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const args = processCmdline(pid);
    // The jailer execs the VMM with `--id=<id>` (one word): what a jailed VMM's command line has.
    const id = args.find((a) => a.startsWith('--id=')) ? jailedId(args) : undefined;
    if (!id || !ids.has(id)) continue;
    const startTime = processStartTime(pid);
    if (startTime !== undefined && isProcessAlive(pid)) out.push({ pid, startTime, vmId: id });
  }
  return out;
}

/** Processes whose command line names a file under `<vmsDir>/<id>/` (not this process). */
export function processesUnder(vmsDir: string): { pid: number; startTime: number; vmId: string }[] {
  const prefix = `${path.resolve(vmsDir)}/`;
  const out: { pid: number; startTime: number; vmId: string }[] = [];
  for (const name of safeReaddir('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const args = processCmdline(pid);
    let vmId: string | undefined;
    for (const a of args) {
      const i = a.indexOf(prefix);
      if (i < 0) continue;
      const id = /^([0-9a-f]+)\//.exec(a.slice(i + prefix.length))?.[1];
      if (id) {
        vmId = id;
        break;
      }
    }
    const startTime = vmId ? processStartTime(pid) : undefined;
    if (vmId && startTime !== undefined && isProcessAlive(pid)) out.push({ pid, startTime, vmId });
  }
  return out;
}

/** `<file>.tmp-<pid>` of a dead process (an atomic write cut short). */
function removeDeadTemp(file: string): void {
  const dir = path.dirname(file);
  const base = `${path.basename(file)}.tmp-`;
  for (const n of safeReaddir(dir)) {
    if (!n.startsWith(base)) continue;
    const pid = Number(n.slice(base.length));
    if (Number.isInteger(pid) && pid !== process.pid && !isProcessAlive(pid))
      fs.rmSync(path.join(dir, n), { force: true });
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function rmDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}
