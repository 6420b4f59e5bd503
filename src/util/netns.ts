import fs from 'node:fs';

let link: string | null | undefined;

/**
 * This process's network namespace as /proc/self/ns/net names it
 * (`net:[4026531840]`); null where there is none to read. Two processes
 * with the same one reach the same addresses.
 */
export function ownNetns(): string | null {
  if (link === undefined) {
    try {
      link = fs.readlinkSync('/proc/self/ns/net');
    } catch {
      link = null;
    }
  }
  return link;
}
