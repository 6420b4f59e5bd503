import { AgentClient, GUEST_PROTOCOL_FAULT } from '../guest/agentClient.js';
import type { VmRecord } from '../store/vms.js';
import type { AgentChannel } from '../vmm/driver.js';

/**
 * One guest-agent client per VM, dialled through the VM's driver
 * (capabilities.agentTransport: virtio-serial socket or vsock handshake).
 * Clients reconnect on their own; a VM's client is dropped when its VMM is
 * gone.
 */
export class AgentPool {
  private readonly clients = new Map<string, AgentClient>();

  /** `channel` says how to reach a VM's agent (its driver's agentChannel()). */
  constructor(
    private readonly channel: (vm: VmRecord) => AgentChannel,
    /** Told when the host drops a channel because of what the guest sent (too long or unreadable lines). */
    private readonly onDropped: (vm: VmRecord, why: string) => void = () => undefined,
  ) {}

  /** The VM's client, created on first use. */
  get(vm: VmRecord): AgentClient {
    let a = this.clients.get(vm.id);
    if (!a) {
      const ch = this.channel(vm);
      a = AgentClient.fromDialer(ch.dial, {
        label: `vm '${vm.name}'`,
        ...(ch.retryAllFailures ? { isRetryable: () => true } : {}),
      });
      a.on('disconnect', (err?: Error) => {
        if ((err as NodeJS.ErrnoException | undefined)?.code === GUEST_PROTOCOL_FAULT)
          this.onDropped(vm, err!.message);
      });
      this.clients.set(vm.id, a);
    }
    return a;
  }

  /** The VM's client if one exists (no dialling). */
  peek(vmId: string): AgentClient | undefined {
    return this.clients.get(vmId);
  }

  drop(vmId: string): void {
    this.clients.get(vmId)?.close();
    this.clients.delete(vmId);
  }

  closeAll(): void {
    for (const id of [...this.clients.keys()]) this.drop(id);
  }
}
