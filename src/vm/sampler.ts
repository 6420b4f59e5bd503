import type { VmActivity, VmStats } from '../api/schemas/vms.js';
import type { VmRecord } from '../store/vms.js';
import type { Logger } from '../util/log.js';
import {
  activityReason,
  effectiveAutoStop,
  idleStopDue,
  nextRunDelay,
  samplingPlan,
} from './idle.js';
import { metaOf } from './records.js';

/** What the sampler needs from the rest of the lifecycle. */
export interface SamplerNeeds {
  /** Every VM row (the sampler looks at the running ones). */
  list(): VmRecord[];
  /** stats_poll_interval and auto_stop_stale_after as configured now. */
  config(): { statsPollIntervalMs: number; autoStopStaleAfterMs: number };
  /** An operation holds the VM's lock. */
  isLocked(vmId: string): boolean;
  /** Read one VM's stats (host and guest; guest null when its agent does not answer). */
  read(vm: VmRecord): Promise<VmStats>;
  /** Open daemon tunnels into the VM (ssh). */
  tunnels(vmId: string): number;
  /** Stop a VM idle for idleMs (takes its lock and checks again first). */
  stopIdle(vm: VmRecord, idleMs: number, afterMs: number): Promise<void>;
  logger: Logger;
  /** Epoch ms (tests pass a fake clock). */
  now?(): number;
}

interface Track {
  /** The boot this track belongs to (the row's startedAt). */
  startedAt: string | null;
  lastActiveAt: number;
  activeReason: string | null;
  agentSilentSince: number | null;
  sampledAt: number;
  sample: VmStats | null;
}

/**
 * The daemon's background sampler: every stats_poll_interval it reads each
 * running VM's stats (stats.ts), keeps the last sample and when the VM was
 * last active (idle.ts says what counts), and stops VMs idle longer than
 * their auto-stop delay (auto_stop_stale_after, or `vm set --auto-stop`).
 * Runs never overlap; a VM whose lock is held is not read (the operation in
 * flight counts as activity). Started and stopped with the daemon.
 */
export class VmSampler {
  private readonly tracks = new Map<string, Track>();
  private timer?: NodeJS.Timeout;
  private stopped = true;
  private everyMs = 0;

  constructor(private readonly n: SamplerNeeds) {}

  private now(): number {
    return this.n.now ? this.n.now() : Date.now();
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.loop(), delayMs);
    this.timer.unref();
  }

  private async loop(): Promise<void> {
    const t0 = this.now();
    const plan = this.plan();
    if (plan.sample) {
      try {
        await this.runOnce();
      } catch (e) {
        this.n.logger.warn({ err: e }, 'sampling VMs failed');
      }
    }
    this.schedule(nextRunDelay(plan.everyMs, t0, this.now()));
  }

  /** How often samples are taken under the current config and VM settings. */
  plan(): { sample: boolean; everyMs: number } {
    const c = this.n.config();
    const delays = this.n
      .list()
      .filter((v) => v.state === 'running')
      .map((v) => effectiveAutoStop(c.autoStopStaleAfterMs, metaOf(v).autoStopAfterMs).afterMs)
      .filter((ms) => ms > 0);
    const p = samplingPlan(c.statsPollIntervalMs, delays.length ? Math.min(...delays) : 0);
    this.everyMs = p.sample ? p.everyMs : 0;
    return p;
  }

  /** One round over the running VMs: sample each, then stop the ones idle long enough. */
  async runOnce(): Promise<void> {
    const running = this.n.list().filter((v) => v.state === 'running');
    const ids = new Set(running.map((v) => v.id));
    for (const id of [...this.tracks.keys()]) if (!ids.has(id)) this.tracks.delete(id);
    await Promise.all(running.map((vm) => this.sampleOne(vm)));
  }

  private async sampleOne(vm: VmRecord): Promise<void> {
    const locked = this.n.isLocked(vm.id);
    let stats: VmStats | null = null;
    if (!locked) {
      try {
        stats = await this.n.read(vm);
      } catch (e) {
        this.n.logger.debug({ err: e, vm: vm.name }, 'sampling a VM failed');
      }
    }
    const at = this.now();
    let t = this.tracks.get(vm.id);
    if (!t || t.startedAt !== vm.startedAt) {
      // First seen running (its readiness, or the daemon's start): the idle clock starts here.
      t = {
        startedAt: vm.startedAt,
        lastActiveAt: at,
        activeReason: null,
        agentSilentSince: null,
        sampledAt: at,
        sample: null,
      };
      this.tracks.set(vm.id, t);
    }
    const agentAnswered = Boolean(stats?.guest);
    const reason = activityReason({
      locked,
      agentAnswered,
      guestSshSessions: stats?.guest?.sshSessions ?? null,
      tunnels: this.n.tunnels(vm.id),
      guestCpuPercent: stats?.guest?.cpuPercent ?? null,
      hostCpuPercent: stats?.cpuPercent ?? null,
    });
    t.activeReason = reason;
    if (reason) t.lastActiveAt = at;
    if (!locked) {
      t.sampledAt = at;
      t.sample = stats;
      t.agentSilentSince = agentAnswered ? null : (t.agentSilentSince ?? at);
    }
    const { afterMs } = effectiveAutoStop(
      this.n.config().autoStopStaleAfterMs,
      metaOf(vm).autoStopAfterMs,
    );
    if (!reason && idleStopDue(at, t.lastActiveAt, afterMs)) {
      try {
        await this.n.stopIdle(vm, at - t.lastActiveAt, afterMs);
      } catch (e) {
        this.n.logger.warn({ err: e, vm: vm.name }, 'idle auto-stop failed');
      }
    }
  }

  /** The sampler's view of a running VM; null before its first sample. */
  activity(vmId: string): VmActivity | null {
    const t = this.tracks.get(vmId);
    if (!t) return null;
    return {
      sampledAt: new Date(t.sampledAt).toISOString(),
      agentSilentSince:
        t.agentSilentSince === null ? null : new Date(t.agentSilentSince).toISOString(),
      lastActiveAt: new Date(t.lastActiveAt).toISOString(),
      activeReason: t.activeReason,
    };
  }

  /** The last stats sample of a running VM, if any. */
  lastSample(vmId: string): VmStats | null {
    return this.tracks.get(vmId)?.sample ?? null;
  }

  /** The current sampling interval (0 when not sampling). */
  interval(): number {
    return this.everyMs;
  }
}
