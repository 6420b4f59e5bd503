import type { VmView } from '../api/schemas/vms.js';
import { hostAlias } from '../guest/ssh.js';
import type { RunningVmNet } from '../network/index.js';
import type { Store } from '../store/index.js';
import type { Journal } from '../store/journal.js';
import type { VmRecord, VmState } from '../store/vms.js';
import type { Logger } from '../util/log.js';
import { ownNetns } from '../util/netns.js';
import { processConfinement } from '../util/proc.js';
import { userByUid } from '../util/users.js';
import type { VmHandle } from '../vmm/driver.js';
import { jailOfSocket } from '../vmm/jail.js';
import { vmLayout, type VmLayout } from './layout.js';
import { resolveVmRef } from './resolve.js';

/**
 * The `vms` table as the VM services use it: reads, writes, the per-VM
 * event log, views, and the facts derived from a row (its files, its VMM
 * handle, its network). Not a service: every VM service reads and writes
 * through it, under the VM's lock (see docs/architecture.md, "Lock order").
 */

/** States in which a VM has (or should have) a VMM process. */
export const ACTIVE: readonly VmState[] = ['starting', 'running', 'stopping'];

export const isActive = (vm: Pick<VmRecord, 'state'>): boolean => ACTIVE.includes(vm.state);

/** What the lifecycle keeps in `vms.meta`. */
export interface VmMeta {
  /** The driver's control socket (QMP, Firecracker API) of the running VMM. */
  controlSocket?: string;
  bootMs?: number;
  /** A stop or kill was asked for: the VMM's exit is not a crash. */
  stopRequested?: boolean;
  kernelPath?: string;
  /** Size of the console log when this boot began: what is after it is this boot's output. */
  consoleStart?: number;
  /** `vm set --auto-stop`: this VM's idle auto-stop delay (0 = never); absent = the config's. */
  autoStopAfterMs?: number;
  /** The idle auto-stop stopped the boot that began at startedAt, after idleMs idle. */
  idleStop?: { idleMs: number; startedAt: string | null };
  /** How `vm create`/`vm run` started it (warm start, warmStart.ts). */
  start?: StartMeta;
}

/** A warm start restored the boot snapshot; a cold one booted (and may have kept one). */
export interface StartMeta {
  kind: 'warm' | 'cold';
  /** The boot snapshot restored (warm) or kept (cold). */
  snapshot?: string;
}

export const metaOf = (vm: Pick<VmRecord, 'meta'>): VmMeta => vm.meta as VmMeta;

/** The per-VM lock's key in the daemon's KeyedMutex (images and kernels use `image:`/`kernel:`). */
export const vmLockKey = (id: string): string => `vm:${id}`;

export class VmTable {
  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly vmsDir: string,
  ) {}

  list(): VmRecord[] {
    return this.store.vms.list();
  }

  /** The intent journal: every multi-step VM operation records its steps there (recover.ts). */
  get journal(): Journal {
    return this.store.journal;
  }

  get(id: string): VmRecord | undefined {
    return this.store.vms.get(id);
  }

  /** The row as it is now; throws not_found if the VM was deleted meanwhile. */
  current(vm: Pick<VmRecord, 'id'>): VmRecord {
    const cur = this.store.vms.get(vm.id);
    if (!cur) return resolveVmRef(this.store.vms, vm.id);
    return cur;
  }

  resolve(ref: string): VmRecord {
    return resolveVmRef(this.store.vms, ref);
  }

  update(id: string, patch: Partial<Omit<VmRecord, 'id' | 'createdAt'>>): VmRecord {
    return this.store.vms.update(id, patch);
  }

  delete(id: string): void {
    this.store.vms.delete(id);
  }

  /** Follow every insert, update and delete of the table (store.vms.onChange). */
  onChange(fn: Parameters<Store['vms']['onChange']>[0]): () => void {
    return this.store.vms.onChange(fn);
  }

  setMeta(vm: Pick<VmRecord, 'id' | 'meta'>, patch: Partial<VmMeta>): VmRecord {
    return this.update(vm.id, { meta: { ...vm.meta, ...patch } });
  }

  /** Append to the events table and the daemon log. */
  event(kind: string, vm: Pick<VmRecord, 'id' | 'name'>, data: Record<string, unknown> = {}): void {
    this.store.events.append(kind, { type: 'vm', id: vm.id }, { name: vm.name, ...data });
    this.logger.info({ vm: vm.name, id: vm.id, ...data }, kind);
  }

  layout(vm: Pick<VmRecord, 'id'>): VmLayout {
    return vmLayout(this.vmsDir, vm.id);
  }

  /** The running VMM's handle, when the row has one. */
  handleOf(vm: VmRecord): VmHandle | undefined {
    const meta = metaOf(vm);
    if (!vm.pid || !meta.controlSocket) return undefined;
    return { pid: vm.pid, pidStartTime: vm.pidStartTime ?? 0, controlSocket: meta.controlSocket };
  }

  /** Network facts of every VM with a VMM (except one), for NAT rules. */
  runningNets(except?: string): RunningVmNet[] {
    return this.list()
      .filter((v) => v.id !== except && isActive(v) && v.ip)
      .map(netOf);
  }

  view(vm: VmRecord): VmView {
    const meta = metaOf(vm);
    return {
      id: vm.id,
      name: vm.name,
      state: vm.state,
      image: this.store.images.get(vm.imageId)?.name ?? vm.imageId,
      imageId: vm.imageId,
      kernel: vm.kernelName,
      vmm: vm.vmm,
      accel: vm.accel,
      vcpu: vm.vcpu,
      memoryMib: vm.memoryMib,
      diskSize: vm.diskSize,
      nat: vm.nat,
      ip: vm.ip,
      mac: vm.mac,
      tap: vm.tap,
      pid: isActive(vm) ? vm.pid : null,
      createdAt: vm.createdAt,
      startedAt: vm.startedAt,
      stoppedAt: vm.stoppedAt,
      lastError: vm.lastError,
      sshHost: hostAlias(vm.name),
      netns: ownNetns(),
      dir: this.layout(vm).dir,
      bootMs: meta.bootMs ?? null,
      confinement: isActive(vm) && vm.pid ? describeConfinement(vm.pid, meta.controlSocket) : null,
      idleStop:
        vm.state === 'stopped' && vm.stoppedAt && meta.idleStop?.startedAt === vm.startedAt
          ? { idleMs: meta.idleStop.idleMs, at: vm.stoppedAt }
          : null,
    };
  }
}

export const netOf = (v: VmRecord): RunningVmNet => ({
  id: v.id,
  ip: v.ip ?? '',
  nat: v.nat,
  tap: v.tap ?? undefined,
  mac: v.mac ?? undefined,
});

/** uid → name of the VMM users seen: views are built on every change event, /etc/passwd need not be. */
const vmmUserNames = new Map<number, string>();

function userName(uid: number): string {
  let name = vmmUserNames.get(uid);
  if (name === undefined) {
    name = userByUid(uid)?.name;
    if (name === undefined) return '?';
    vmmUserNames.set(uid, name);
  }
  return name;
}

/**
 * For vm show, from /proc: `uid 998 (banger-vmm), seccomp filter, no_new_privs`;
 * a VMM started through a jailer (its control socket is in a jail):
 * `jailer (chroot, uid 998 (banger-vmm), seccomp filter)`.
 */
export function describeConfinement(pid: number, controlSocket?: string): string | null {
  const c = processConfinement(pid);
  if (!c) return null;
  const who = c.uid === 0 ? 'root' : `uid ${c.uid} (${userName(c.uid)})`;
  const seccomp = ['no seccomp', 'seccomp strict', 'seccomp filter'][c.seccomp] ?? 'seccomp ?';
  if (controlSocket && jailOfSocket(controlSocket)) return `jailer (chroot, ${who}, ${seccomp})`;
  return [who, seccomp, c.noNewPrivs ? 'no_new_privs' : 'may gain privileges'].join(', ');
}
