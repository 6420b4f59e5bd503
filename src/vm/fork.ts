import { BangerError } from '../errors.js';
import { validateVmName } from './names.js';

/**
 * The names of `vm fork`'s children (pure): `--name NEW` with one child is
 * NEW, with several NEW-1..NEW-N; without --name, `<parent>-1`, `<parent>-2`, …
 * skipping names already taken. Every name is checked before anything is made.
 */
export function forkNames(
  parent: string,
  name: string | undefined,
  count: number,
  taken: Set<string>,
): string[] {
  const fit = (base: string, suffix: string): string =>
    `${base.slice(0, 64 - suffix.length)}${suffix}`;
  let names: string[];
  if (name !== undefined) {
    validateVmName(name);
    names = count === 1 ? [name] : Array.from({ length: count }, (_, i) => fit(name, `-${i + 1}`));
  } else {
    names = [];
    for (let i = 1; names.length < count; i++) {
      const n = fit(parent, `-${i}`);
      if (!taken.has(n)) names.push(n);
    }
  }
  for (const n of names) {
    validateVmName(n);
    if (taken.has(n)) {
      throw new BangerError('conflict', `a VM named '${n}' already exists`, {
        hint: 'choose another --name, or delete the old VM',
      });
    }
  }
  return names;
}
