import fs from 'node:fs';
import os from 'node:os';
import type { ProgressSink } from '../api/events.js';
import { BangerError } from '../errors.js';
import { hostAlias, removeKnownHost } from '../guest/ssh.js';
import type { Intent } from '../store/journal.js';
import type { VmRecord } from '../store/vms.js';
import type { VmHandle } from '../vmm/driver.js';
import type { VmmDrivers } from './needs.js';
import { isActive, type VmTable } from './records.js';

/** What stopping and deleting VMs needs from the rest of the lifecycle. */
export interface TeardownNeeds {
  table: VmTable;
  drivers: VmmDrivers;
  knownHosts: string;
  liveness: {
    alive(vm: VmRecord): boolean;
    markGone(vm: VmRecord, state: 'stopped'): Promise<VmRecord>;
  };
  /** The VM's agent client, if one is connected (it can power the guest off). */
  agents: {
    peek(
      vmId: string,
    ): { connected: boolean; poweroff(o: { timeoutMs: number }): Promise<unknown> } | undefined;
  };
}

/**
 * Stop (guest first, then the VMM's graceful stop, then a kill after the
 * timeout), kill with a signal, and delete (the VM's directory, its
 * known_hosts entry and its row). Every method expects the caller to hold
 * the VM's lock and to pass the row as it is now.
 */
export class VmTeardown {
  constructor(private readonly n: TeardownNeeds) {}

  async stopLocked(vm: VmRecord, timeoutMs: number, emit: ProgressSink): Promise<VmRecord> {
    const { table, liveness } = this.n;
    if (!isActive(vm)) return vm;
    const handle = table.handleOf(vm);
    if (!handle || !liveness.alive(vm)) return liveness.markGone(vm, 'stopped');
    // Journaled (recover.ts): a stop cut short leaves the VM as its VMM is (running, or stopped).
    return table.journal.run('stop', vm.id, {}, (intent) =>
      this.stopSteps(vm, handle, timeoutMs, emit, intent),
    );
  }

  private async stopSteps(
    vm: VmRecord,
    handle: VmHandle,
    timeoutMs: number,
    emit: ProgressSink,
    intent: Intent,
  ): Promise<VmRecord> {
    const { table, liveness } = this.n;
    vm = table.update(vm.id, { state: 'stopping', meta: { ...vm.meta, stopRequested: true } });
    const t0 = Date.now();
    emit({ type: 'step', id: `stop:${vm.name}`, label: `Stopping ${vm.name}`, state: 'start' });
    // Ask the guest first (works at any boot stage once the agent runs); the VMM's power button too.
    const agent = this.n.agents.peek(vm.id);
    if (agent?.connected) await agent.poweroff({ timeoutMs: 2000 }).catch(() => undefined);
    intent.step('after-request');
    const { graceful } = await this.n.drivers.driverFor(vm.vmm).stop(handle, { timeoutMs });
    intent.step('after-exit');
    vm = await liveness.markGone(table.current(vm), 'stopped');
    emit({
      type: 'step',
      id: `stop:${vm.name}`,
      label: `Stopping ${vm.name}`,
      state: 'done',
      detail: graceful ? 'guest powered off' : `killed after ${timeoutMs / 1000}s`,
      ms: Date.now() - t0,
    });
    return vm;
  }

  async killLocked(vm: VmRecord, signalName: string): Promise<VmRecord> {
    const { table, liveness } = this.n;
    const sig = (signalName.startsWith('SIG') ? signalName : `SIG${signalName}`) as NodeJS.Signals;
    const handle = table.handleOf(vm);
    if (!isActive(vm) || !handle) {
      throw new BangerError('precondition', `vm '${vm.name}' is not running (${vm.state})`, {
        hint: `start it with \`banger vm start ${vm.name}\``,
      });
    }
    if (!(sig in os.constants.signals)) {
      throw new BangerError('usage', `unknown signal '${signalName}'`, {
        hint: 'use e.g. SIGKILL, SIGTERM, SIGINT',
      });
    }
    table.setMeta(vm, { stopRequested: true });
    await this.n.drivers.driverFor(vm.vmm).kill(handle, sig);
    const after = table.current(vm);
    return liveness.alive(after) ? after : liveness.markGone(after, 'stopped');
  }

  /** Returns the view of the VM as it was, with state `stopped`. */
  async deleteLocked(vm: VmRecord, force: boolean, emit: ProgressSink): Promise<VmRecord> {
    if (!force && isActive(vm) && this.n.liveness.alive(vm)) {
      throw new BangerError('precondition', `vm '${vm.name}' is running`, {
        hint: `stop it first (banger vm stop ${vm.name}) or use --force`,
      });
    }
    // Journaled (recover.ts): a delete cut short is finished at the next daemon start.
    return this.n.table.journal.run('delete', vm.id, { name: vm.name }, (intent) =>
      this.deleteSteps(vm, emit, intent),
    );
  }

  private async deleteSteps(vm: VmRecord, emit: ProgressSink, intent: Intent): Promise<VmRecord> {
    const { table, liveness } = this.n;
    if (isActive(vm) && liveness.alive(vm)) {
      const handle = table.handleOf(vm);
      table.setMeta(vm, { stopRequested: true });
      if (handle) await this.n.drivers.driverFor(vm.vmm).kill(handle, 'SIGKILL');
      vm = await liveness.markGone(table.current(vm), 'stopped');
    } else if (isActive(vm)) {
      vm = await liveness.markGone(vm, 'stopped');
    }
    intent.step('after-stop');
    this.n.drivers.driverFor(vm.vmm).released?.(vm.id);
    fs.rmSync(table.layout(vm).dir, { recursive: true, force: true });
    intent.step('after-files');
    removeKnownHost(this.n.knownHosts, hostAlias(vm.name));
    table.delete(vm.id);
    intent.step('after-row');
    table.event('vm.deleted', vm);
    emit({ type: 'log', level: 'debug', message: `deleted ${vm.name}` });
    return vm;
  }
}
