import type { ProgressSink } from '../api/events.js';
import { BangerError, toBangerError } from '../errors.js';
import { INIT_DONE_MARKER } from '../guest/bootContract.js';
import type { ReadyResult } from '../guest/agentProtocol.js';
import { isProcessAlive } from '../util/proc.js';
import { sleep } from '../util/sleep.js';
import type { VmHandle } from '../vmm/driver.js';
import type { VmLayout } from './layout.js';
import { consoleSince, consoleSize, initFailure, lastConsoleLine, vmmLogTail } from './logs.js';

/**
 * Waiting for a booting guest: the agent's readiness answer (sshd listens,
 * with its host keys) while the VMM process, the console (banger's init
 * prints a marker line when it fails) and the VMM log are watched, so a
 * failed boot ends with its reason rather than a timeout.
 */

/** How long a boot may take before the VM is declared failed. */
export const bootTimeoutMs = (accel: string | null): number => (accel === 'kvm' ? 60_000 : 180_000);
/** A boot whose console and agent show nothing new for this long has hung. */
export const BOOT_STALL_MS = 90_000;
const POLL_MS = 250;

export interface BootWatch {
  vm: { name: string };
  layout: Pick<VmLayout, 'consoleLog' | 'vmmLog'>;
  handle: Pick<VmHandle, 'pid' | 'pidStartTime'>;
  /** Where this boot's console output starts. */
  consoleStart: number;
  /** The agent's readiness call: resolves with the host keys once sshd listens. */
  agent: {
    waitReady(o: {
      timeoutMs: number;
      signal: AbortSignal;
    }): Promise<Pick<ReadyResult, 'hostKeys'>>;
    readonly connected: boolean;
  };
  /** The driver's reading of its log after the VMM died (driver.diagnoseExit). */
  diagnoseExit(vmName: string, vmmLogTail: string): BangerError | undefined;
  timeoutMs: number;
  emit: ProgressSink;
  signal?: AbortSignal;
}

/** Resolve with the guest's host keys once it is ready; throw the reason it will not be. */
export async function watchBoot(w: BootWatch): Promise<{ hostKeys: string[] }> {
  const { vm, layout: l, consoleStart } = w;
  const ac = new AbortController();
  const onAbort = (): void => ac.abort();
  w.signal?.addEventListener('abort', onAbort, { once: true });
  const ready = w.agent.waitReady({ timeoutMs: w.timeoutMs, signal: ac.signal });
  let failure: BangerError | undefined;
  let lastSize = consoleStart;
  let lastProgress = Date.now();
  const milestones: [string, string][] = [
    [INIT_DONE_MARKER, 'init done, starting systemd'],
    ['banger-agent: started', 'guest agent started'],
  ];
  const seen = new Set<string>();
  const watch = (async () => {
    while (!ac.signal.aborted) {
      await sleep(POLL_MS, ac.signal).catch(() => undefined);
      if (ac.signal.aborted) return;
      const found = bootFailure(w);
      if (found) {
        failure = found;
        ac.abort();
        return;
      }
      const size = consoleSize(l);
      if (size !== lastSize) {
        lastSize = size;
        lastProgress = Date.now();
        const text = consoleSince(l, consoleStart);
        for (const [pat, label] of milestones) {
          if (!seen.has(label) && text.includes(pat)) {
            seen.add(label);
            w.emit({ type: 'log', level: 'debug', message: `${vm.name}: ${label}` });
          }
        }
      } else if (Date.now() - lastProgress > BOOT_STALL_MS && !w.agent.connected) {
        failure = new BangerError(
          'boot_failed',
          `vm '${vm.name}': boot made no progress for ${BOOT_STALL_MS / 1000}s${lastConsoleLine(l, consoleStart)}`,
          { hint: `see \`banger vm logs ${vm.name}\`` },
        );
        ac.abort();
        return;
      }
    }
  })();
  try {
    const r = await ready;
    return { hostKeys: r.hostKeys };
  } catch (e) {
    // The agent channel often notices a dead guest first: let the console and the process say why.
    failure ??= bootFailure(w);
    if (failure) throw failure;
    if (w.signal?.aborted)
      throw new BangerError('cancelled', `starting vm '${vm.name}' was cancelled`);
    const err = toBangerError(e);
    if (err.code === 'timeout') {
      throw new BangerError(
        'timeout',
        `vm '${vm.name}' did not become ready within ${w.timeoutMs / 1000}s${lastConsoleLine(l, consoleStart)}`,
        { hint: `see \`banger vm logs ${vm.name}\``, details: { bootTimeout: true } },
      );
    }
    throw err;
  } finally {
    ac.abort();
    w.signal?.removeEventListener('abort', onAbort);
    await watch;
  }
}

/** Why a boot failed, when the console or the VMM process says so; undefined while it looks healthy. */
function bootFailure(w: BootWatch): BangerError | undefined {
  const { vm, layout: l } = w;
  const init = initFailure(l, w.consoleStart);
  if (init !== undefined) {
    return new BangerError('boot_failed', `vm '${vm.name}': banger's init failed: ${init}`, {
      hint: `see \`banger vm logs ${vm.name}\``,
    });
  }
  if (!isProcessAlive(w.handle.pid, w.handle.pidStartTime)) {
    return (
      w.diagnoseExit(vm.name, vmmLogTail(l)) ??
      new BangerError(
        'boot_failed',
        `vm '${vm.name}': the VMM exited during boot${lastConsoleLine(l, w.consoleStart)}`,
        { hint: `see \`banger vm logs ${vm.name}\`` },
      )
    );
  }
  return undefined;
}
