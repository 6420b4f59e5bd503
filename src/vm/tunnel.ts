import net from 'node:net';
import type { Duplex } from 'node:stream';
import { BangerError } from '../errors.js';
import type { VmRecord } from '../store/vms.js';

/** How long the guest may take to accept a tunnelled connection. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * A byte stream to a TCP port of a running guest, through the bridge (ssh
 * goes through here: the CLI never needs a route to the guest).
 */
export function openTunnel(vm: VmRecord, port: number): Promise<Duplex> {
  if (vm.state !== 'running' || !vm.ip) {
    return Promise.reject(
      new BangerError('precondition', `vm '${vm.name}' is ${vm.state}, not running`, {
        hint:
          vm.state === 'suspended'
            ? `resume it with \`banger vm resume ${vm.name}\``
            : `start it with \`banger vm start ${vm.name}\``,
      }),
    );
  }
  const ip = vm.ip;
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port });
    const t = setTimeout(() => {
      s.destroy();
      reject(
        new BangerError('timeout', `vm '${vm.name}': no answer from ${ip}:${port}`, {
          hint: `see \`banger vm logs ${vm.name}\``,
        }),
      );
    }, CONNECT_TIMEOUT_MS);
    s.once('connect', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(
        new BangerError(
          'network',
          `vm '${vm.name}': cannot connect to ${ip}:${port}: ${e.message}`,
          {
            hint: `see \`banger vm logs ${vm.name}\``,
          },
        ),
      );
    });
  });
}
