import type { ProgressSink } from '../api/events.js';
import type { Check, DoctorResult } from '../api/schemas/daemon.js';
import type { Config } from '../config/schema.js';
import { resolveVmSizing, type HostFacts } from '../config/vmDefaults.js';
import { lastLine, run, which } from '../util/exec.js';
import { CHECKS, hostProbe, summarize, type CheckDef, type Probe } from './checks.js';
import { networkChecks } from './network.js';

export interface DoctorDeps {
  config: () => Config;
  stateDir: string;
  runtimeDir: string;
  host: HostFacts;
  probe?: Probe;
  checks?: CheckDef[];
}

/** Runs the doctor checks, streaming each result as it completes. */
export class DoctorService {
  private readonly probe: Probe;

  constructor(private readonly deps: DoctorDeps) {
    this.probe =
      deps.probe ??
      hostProbe(
        async (bin) => {
          const r = await run(bin, ['--version'], { allowFailure: true, timeoutMs: 10_000 }).catch(
            () => undefined,
          );
          if (!r || r.code !== 0) return undefined;
          return r.stdout.split('\n').find((l) => l.trim()) ?? lastLine(r.stderr);
        },
        (c) => which(c),
      );
  }

  async run(emit: ProgressSink, signal?: AbortSignal): Promise<DoctorResult> {
    const config = this.deps.config();
    const ctx = {
      config,
      stateDir: this.deps.stateDir,
      runtimeDir: this.deps.runtimeDir,
      probe: this.probe,
    };
    const checks: Check[] = [];
    const defs = this.deps.checks ?? [...CHECKS, ...networkChecks()];
    const started = Date.now();
    emit({ type: 'step', id: 'doctor', label: 'Running host checks', state: 'start' });
    for (const def of defs) {
      if (signal?.aborted) break;
      let result: Omit<Check, 'id' | 'title'>;
      try {
        result = await def.run(ctx);
      } catch (e) {
        result = {
          status: 'fail',
          detail: `check crashed: ${(e as Error).message}`,
          hint: 'report this as a bug',
        };
      }
      const check: Check = { id: def.id, title: def.title, ...result };
      checks.push(check);
      emit({ type: 'item', data: check });
      emit({
        type: 'progress',
        id: 'doctor',
        current: checks.length,
        total: defs.length,
        unit: 'items',
      });
    }
    const summary = summarize(checks);
    emit({
      type: 'step',
      id: 'doctor',
      label: 'Running host checks',
      state: 'done',
      detail: `${checks.length} checks`,
      ms: Date.now() - started,
    });
    return {
      checks,
      vmDefaults: resolveVmSizing({}, config.vmDefaults, this.deps.host),
      summary,
    };
  }
}
