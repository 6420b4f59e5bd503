import { routes } from '../../api/routes.js';
import { BangerError } from '../../errors.js';
import { followFile, tailFile } from '../../util/tail.js';
import type { VmService } from '../../vm/service.js';
import { acceptUpgrade, type ApiServer } from '../http.js';
import fs from 'node:fs';

const DEFAULT_STOP_TIMEOUT_MS = 30_000;

/** VM routes → the VM service. */
export function registerVmRoutes(server: ApiServer, vms: VmService): void {
  server.json(routes.vmList, () => ({ vms: vms.list() }));
  server.json(routes.vmShow, ({ params }) => vms.show(params.ref));
  server.stream(routes.vmCreate, ({ body, signal }, emit) => vms.create(body, emit, signal));

  server.stream(routes.vmAction, ({ params, body, signal }, emit) => {
    const timeout = body.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    switch (params.action) {
      case 'start':
        return vms.many(body.refs, emit, (ref) => vms.start(ref, emit, signal));
      case 'stop':
        return vms.many(body.refs, emit, (ref) => vms.stop(ref, timeout, emit));
      case 'restart':
        return vms.many(body.refs, emit, (ref) => vms.restart(ref, timeout, emit, signal));
      case 'kill':
        return vms.many(body.refs, emit, (ref) => vms.kill(ref, body.signal ?? 'SIGKILL'));
      case 'delete':
        return vms.many(body.refs, emit, (ref) => vms.delete(ref, body.force ?? false, emit));
      case 'suspend':
        return vms.many(body.refs, emit, (ref) => vms.suspend(ref, emit));
      case 'resume':
        return vms.many(body.refs, emit, (ref) => vms.resume(ref, emit, signal));
    }
  });

  server.stream(routes.vmSet, ({ body }, emit) => {
    const { refs, ...patch } = body;
    if (Object.values(patch).every((v) => v === undefined)) {
      throw new BangerError('usage', 'nothing to change', {
        hint: 'pass --vcpu, --memory, --disk-size, --nat, --no-nat or --auto-stop',
      });
    }
    return vms.many(refs, emit, (ref) => vms.set(ref, patch));
  });

  server.text(routes.vmLogs, async ({ params, query, signal }, write) => {
    const { console: consoleLog, vmm } = vms.logFiles(params.ref);
    const tail = query.tail ?? 1000;
    if (fs.existsSync(vmm) && fs.statSync(vmm).size > 0) {
      write(`==> VMM log (${vmm}) <==\n`);
      write(await tailFile(vmm, Math.min(tail, 100)));
      write(`\n==> serial console (${consoleLog}) <==\n`);
    }
    if (fs.existsSync(consoleLog)) write(await tailFile(consoleLog, tail));
    if (query.follow) {
      fs.appendFileSync(consoleLog, '');
      await followFile(consoleLog, write, signal);
    }
  });

  server.upgrade(routes.vmSsh, async ({ params, query }, socket, head) => {
    const guest = await vms.tunnel(params.ref, query.port ?? 22);
    acceptUpgrade(socket);
    if (head.length) guest.write(head);
    socket.pipe(guest);
    guest.pipe(socket);
    const close = (): void => {
      socket.destroy();
      guest.destroy();
    };
    socket.on('error', close);
    guest.on('error', close);
    socket.on('close', close);
    guest.on('close', close);
  });

  server.watch(routes.vmEvents, async ({ signal }, send) => {
    const off = vms.watch(send);
    try {
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        else signal.addEventListener('abort', () => resolve(), { once: true });
      });
    } finally {
      off();
    }
  });

  server.json(routes.vmStats, async ({ query }) => ({
    vms: await vms.stats(query.refs ? query.refs.split(',').filter(Boolean) : []),
  }));
}
