import type { VmEvent, VmView } from '../api/schemas/vms.js';
import type { VmRecord } from '../store/vms.js';
import type { VmTable } from './records.js';

/** What following the table needs of it. */
export type WatchedTable = Pick<VmTable, 'list' | 'get' | 'onChange' | 'view'>;

/**
 * Follow the vms table for a watcher (the event stream of `GET /v1/events/vms`):
 * every VM as it is now, then each change as the VM's view (`vm`) or `gone`.
 * A write that leaves the view as it was (meta only) sends nothing; a row
 * inserted and rolled back before anyone saw it sends nothing either.
 * Returns the unsubscribe function.
 */
export function watchVms(table: WatchedTable, send: (e: VmEvent) => void): () => void {
  const sent = new Map<string, string>();
  const remember = (v: VmView): boolean => {
    const json = JSON.stringify(v);
    if (sent.get(v.id) === json) return false;
    sent.set(v.id, json);
    return true;
  };
  const off = table.onChange((c) => {
    const vm: VmRecord | undefined = table.get(c.id);
    if (vm) {
      const view = table.view(vm);
      if (remember(view)) send({ type: 'vm', vm: view });
    } else if (sent.delete(c.id)) {
      send({ type: 'gone', id: c.id });
    }
  });
  const vms = table.list().map((v) => table.view(v));
  for (const v of vms) remember(v);
  send({ type: 'snapshot', vms });
  return off;
}
