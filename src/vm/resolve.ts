import { BangerError } from '../errors.js';
import type { VmRecord } from '../store/vms.js';

/** Finding a VM from what the user typed: an exact name, else a unique id prefix. */
export interface VmLookup {
  byName(name: string): VmRecord | undefined;
  byIdPrefix(prefix: string): VmRecord[];
}

export function resolveVmRef(store: VmLookup, ref: string): VmRecord {
  const byName = store.byName(ref);
  if (byName) return byName;
  if (/^[0-9a-f]{1,16}$/.test(ref)) {
    const matches = store.byIdPrefix(ref);
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) {
      throw new BangerError(
        'ambiguous',
        `VM id prefix '${ref}' matches ${matches.length} VMs (${matches.map((m) => m.name).join(', ')})`,
        {
          hint: 'use more characters of the id, or the name',
        },
      );
    }
  }
  throw new BangerError('not_found', `VM '${ref}' not found`, {
    hint: 'list VMs with `banger vm list`',
  });
}
