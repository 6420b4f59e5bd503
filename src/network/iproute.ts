import { BangerError } from '../errors.js';

/** Reading iproute2's JSON output (`ip -j`), shared by the host network edges. */

export const IP = 'ip';

export interface IpLinkJson {
  ifname: string;
  flags?: string[];
  address?: string;
  master?: string;
  linkinfo?: {
    info_kind?: string;
    info_data?: { type?: string; multi_queue?: boolean; vnet_hdr?: boolean };
  };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

export const parseJson = <T>(text: string): T[] => {
  const t = text.trim();
  if (!t) return [];
  try {
    return JSON.parse(t) as T[];
  } catch {
    throw new BangerError('tool_failed', `cannot parse \`ip -j\` output: ${t.slice(0, 80)}`, {
      hint: 'banger needs iproute2 with JSON output (iproute2 >= 4.14)',
    });
  }
};

/** iproute2's way of saying the device does not exist. */
export const absent = (stderr: string): boolean =>
  /does not exist|Cannot find device|No such device/i.test(stderr);
