import fs from 'node:fs';
import type { VmStats } from '../api/schemas/vms.js';
import type { CpuTicks, StatsResult } from '../guest/agentProtocol.js';
import type { VmRecord } from '../store/vms.js';
import { processUsage } from '../util/proc.js';
import { sleep } from '../util/sleep.js';
import { guestCpuPercent } from './idle.js';
import type { VmTable } from './records.js';

/** What stats need from the rest of the lifecycle. */
export interface StatsNeeds {
  table: VmTable;
  alive(vm: VmRecord): boolean;
  /** The guest's own view (memory, load, filesystems), from its agent. */
  guestStats(vm: VmRecord): Promise<StatsResult>;
  /** CPU time and RSS of a process (util/proc processUsage). */
  usage?(pid: number): { ticks: number; rssBytes: number } | undefined;
}

/** USER_HZ: /proc reports CPU time in ticks of 1/100 s. */
const TICKS_PER_S = 100;
/** With no earlier sample of a VMM, CPU use is measured over this window. */
const FIRST_SAMPLE_MS = 300;

/**
 * `vm stats`: the VMM process's CPU and memory from /proc (CPU as the
 * average since the previous call, or over a short window the first time),
 * the guest's view from its agent, and the disks' allocated bytes.
 */
export class VmStatsReader {
  private readonly samples = new Map<string, { ticks: number; at: number }>();
  /** The guest's CPU counters at the previous reading, per VM (and its boot). */
  private readonly guestTicks = new Map<string, { ticks: CpuTicks | null; uptimeMs: number }>();

  constructor(private readonly n: StatsNeeds) {
    n.table.onChange((c) => {
      if (c.kind === 'deleted') {
        this.samples.delete(c.id);
        this.guestTicks.delete(c.id);
      }
    });
  }

  private usage(pid: number): { ticks: number; rssBytes: number } | undefined {
    return (this.n.usage ?? processUsage)(pid);
  }

  async of(vm: VmRecord): Promise<VmStats> {
    const l = this.n.table.layout(vm);
    let cpuPercent: number | null = null;
    let rssBytes: number | null = null;
    let guest: VmStats['guest'] = null;
    if (vm.state === 'running' && vm.pid && this.n.alive(vm)) {
      const p = this.usage(vm.pid);
      if (p) {
        rssBytes = p.rssBytes;
        const prev = this.samples.get(vm.id);
        const now = { ticks: p.ticks, at: Date.now() };
        if (!prev) {
          await sleep(FIRST_SAMPLE_MS);
          const again = this.usage(vm.pid);
          if (again) {
            cpuPercent = cpuPercentOf(again.ticks - p.ticks, FIRST_SAMPLE_MS);
            now.ticks = again.ticks;
            now.at = Date.now();
          }
        } else if (now.at > prev.at) {
          cpuPercent = cpuPercentOf(now.ticks - prev.ticks, now.at - prev.at);
        }
        this.samples.set(vm.id, now);
      }
      try {
        const s = await this.n.guestStats(vm);
        const prev = this.guestTicks.get(vm.id);
        const cpu =
          prev && prev.uptimeMs <= s.uptimeMs
            ? guestCpuPercent(prev.ticks, s.cpuTicks, s.cpus)
            : null;
        this.guestTicks.set(vm.id, { ticks: s.cpuTicks, uptimeMs: s.uptimeMs });
        guest = {
          memTotalBytes: s.memTotalKib * 1024,
          memAvailableBytes: s.memAvailableKib * 1024,
          load1: s.load1,
          uptimeMs: s.uptimeMs,
          cpuPercent: cpu === null ? null : Math.round(cpu * 10) / 10,
          sshSessions: s.sshSessions,
          disks: s.disks.map((d) => ({
            mount: d.mount,
            totalBytes: d.totalBytes,
            freeBytes: d.freeBytes,
          })),
        };
      } catch {
        guest = null;
      }
    }
    return {
      id: vm.id,
      name: vm.name,
      state: vm.state,
      cpuPercent: cpuPercent === null ? null : Math.round(cpuPercent * 10) / 10,
      rssBytes,
      memoryMib: vm.memoryMib,
      guest,
      disk: {
        overlayBytes: allocated(l.overlayDisk),
        workBytes: allocated(l.workDisk),
        workSizeBytes: apparent(l.workDisk),
        overlaySizeBytes: apparent(l.overlayDisk),
      },
      sampledAt: new Date().toISOString(),
    };
  }
}

/** Percent of one CPU used by `ticks` of CPU time over `ms` of wall time. */
export const cpuPercentOf = (ticks: number, ms: number): number =>
  ((ticks / TICKS_PER_S) * 1000 * 100) / ms;

const allocated = (f: string): number => {
  try {
    return fs.statSync(f).blocks * 512;
  } catch {
    return 0;
  }
};

const apparent = (f: string): number => {
  try {
    return fs.statSync(f).size;
  } catch {
    return 0;
  }
};
