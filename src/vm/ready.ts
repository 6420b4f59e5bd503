import type { ProgressSink } from '../api/events.js';
import { toBangerError, type BangerError } from '../errors.js';
import { hostAlias, setKnownHost } from '../guest/ssh.js';
import { nowIso } from '../store/rows.js';
import type { VmRecord } from '../store/vms.js';
import type { VmHandle, VmmDriver } from '../vmm/driver.js';
import type { AgentPool } from './agents.js';
import { bootTimeoutMs, watchBoot } from './bootWatch.js';
import type { VmNetworking } from './needs.js';
import type { VmTable } from './records.js';

/**
 * What a ready VM has, and how a VM gets it. The boot path (boot.ts) and
 * adoption of a VM that was still booting when a daemon died (adopt.ts) both
 * call `VmReadiness.bringUp`, so the two can never disagree: the agent is
 * connected and has said the guest is ready (sshd listens), every ReadyStep
 * has been applied with what the guest reported, and only then is the VM
 * `running`. A feature that gives ready VMs something (an ssh_config entry,
 * DNS records, port forwards) adds a step here; see docs/architecture.md.
 */

/** What the guest reports when it is ready (asked from the agent, never trusted on first use). */
export interface ReadyFacts {
  hostKeys: string[];
}

/** One thing every ready VM has. Applied in order after the guest reported ready; must be idempotent. */
export interface ReadyStep {
  name: string;
  apply(vm: VmRecord, facts: ReadyFacts): void | Promise<void>;
}

/** The steps of a ready VM today. */
export function readySteps(paths: { knownHosts: string }): ReadyStep[] {
  return [
    {
      name: 'known_hosts',
      apply: (vm, f) => setKnownHost(paths.knownHosts, hostAlias(vm.name), f.hostKeys),
    },
  ];
}

/** What bringing a VM up needs from the rest of the lifecycle. */
export interface ReadinessNeeds {
  table: VmTable;
  agents: Pick<AgentPool, 'get' | 'drop'>;
  network: Pick<VmNetworking, 'released'>;
  monitor: { ensureMonitor(): void };
  steps: ReadyStep[];
}

export interface BringUp {
  driver: VmmDriver;
  handle: VmHandle;
  /** Where this boot's console output starts. */
  consoleStart: number;
  /** When the boot began (epoch ms), for the boot time. */
  bootStart: number;
  /** How long the guest may take from now; default the full boot timeout for its accelerator. */
  timeoutMs?: number;
  emit: ProgressSink;
  signal?: AbortSignal;
  /**
   * Where the guest's ready facts come from; default waiting for the booting
   * guest (watchBoot). A restored VM's come from its new identity (restore.ts).
   */
  facts?: () => Promise<ReadyFacts>;
  /**
   * On an abort, leave the VM as it is (still `starting`, VMM running) instead
   * of abandoning the boot: a daemon shutting down hands it to the next one.
   */
  leaveOnAbort?: boolean;
  /** The progress step's label (default `Booting (<vmm>, <accel>)`). */
  label?: string;
  /** Run once the agent answered, before the ready steps (a resume steps the guest clock here). */
  afterAgent?: (vm: VmRecord) => Promise<void>;
  /**
   * On a failure, leave the VMM as it is and only throw: the caller settles
   * the VM (a resume saves it again rather than lose the guest).
   */
  keepOnFailure?: boolean;
}

export class VmReadiness {
  constructor(private readonly n: ReadinessNeeds) {}

  /**
   * Wait until the guest is ready, apply every ReadyStep, mark the VM
   * running. If the guest never gets there, its VMM is killed, its network
   * released and the VM is left in `error` with the reason, which is thrown.
   * The caller holds the VM's lock.
   */
  async bringUp(vm: VmRecord, b: BringUp): Promise<VmRecord> {
    const label = b.label ?? `Booting (${b.driver.name}, ${vm.accel})`;
    try {
      const facts = b.facts
        ? await b.facts()
        : await watchBoot({
            vm,
            layout: this.n.table.layout(vm),
            handle: b.handle,
            consoleStart: b.consoleStart,
            agent: this.n.agents.get(vm),
            diagnoseExit: (name, tail) => b.driver.diagnoseExit(name, tail),
            timeoutMs: b.timeoutMs ?? bootTimeoutMs(vm.accel),
            emit: b.emit,
            signal: b.signal,
          });
      if (b.afterAgent) await b.afterAgent(this.n.table.current(vm));
      const cur = this.n.table.current(vm);
      for (const step of this.n.steps) await step.apply(cur, facts);
      const bootMs = Date.now() - b.bootStart;
      const ready = this.n.table.update(vm.id, {
        state: 'running',
        meta: { ...cur.meta, bootMs },
      });
      b.emit({ type: 'step', id: 'boot', label, state: 'done', detail: 'ssh ready', ms: bootMs });
      this.n.table.event('vm.running', ready, { bootMs });
      this.n.monitor.ensureMonitor();
      return ready;
    } catch (e) {
      if (b.leaveOnAbort && b.signal?.aborted) throw e;
      if (b.keepOnFailure) throw e;
      throw await this.abandon(vm, b, e);
    }
  }

  /**
   * A VM that is already running (adopted by a new daemon): ask its agent
   * again and re-apply every ReadyStep. Nothing is killed if the agent does
   * not answer; the error is for the caller to log.
   */
  async refresh(vm: VmRecord, o: { timeoutMs: number; signal?: AbortSignal }): Promise<void> {
    const facts = await this.n.agents.get(vm).waitReady(o);
    const cur = this.n.table.current(vm);
    for (const step of this.n.steps) await step.apply(cur, { hostKeys: facts.hostKeys });
  }

  /**
   * A boot that will not finish: kill the VMM, drop the agent client, release
   * the network, leave the VM in `error` with the reason. Returns the error
   * for the caller to throw.
   */
  async abandon(
    vm: VmRecord,
    b: Omit<BringUp, 'consoleStart' | 'bootStart'>,
    e: unknown,
  ): Promise<BangerError> {
    const err = toBangerError(e);
    b.emit({
      type: 'step',
      id: 'boot',
      label: b.label ?? 'Booting',
      state: 'fail',
      detail: err.message,
    });
    await b.driver.kill(b.handle, 'SIGKILL').catch(() => undefined);
    this.n.agents.drop(vm.id);
    const cur = this.n.table.get(vm.id) ?? vm;
    await this.n.network
      .released(cur, () => this.n.table.runningNets(vm.id))
      .catch(() => undefined);
    this.n.table.update(vm.id, {
      state: 'error',
      pid: null,
      tap: null,
      stoppedAt: nowIso(),
      lastError: err.message,
    });
    this.n.table.event('vm.boot_failed', vm, { error: err.message });
    return err;
  }
}
