import { z } from 'zod';
import { ErrorShapeSchema } from '../events.js';

/** `banger vm ports`: what listens in each VM, and what the host can reach. */

export const LISTENER_SCOPES = ['any', 'vm', 'loopback', 'other'] as const;

export const GuestListenerSchema = z.object({
  proto: z.enum(['tcp', 'tcp6', 'udp', 'udp6']),
  address: z.string(),
  port: z.number().int().min(0).max(65535),
  pid: z.number().int().nullable(),
  /** Process name (comm). */
  process: z.string().nullable(),
  /** Its command line (at most 160 bytes). */
  cmdline: z.string().nullable(),
  /**
   * any: a wildcard address; vm: the VM's own address; loopback: only the
   * guest's loopback; other: another address of the guest (not routed from the host).
   */
  scope: z.enum(LISTENER_SCOPES),
  /** The host can connect to it at the VM's address. */
  reachable: z.boolean(),
  /** TCP and reachable: whether it answered the HTTP probe; null when not probed. */
  http: z.boolean().nullable(),
  /** `http://<name>.vm:<port>/` when it answered HTTP. */
  url: z.string().nullable(),
});
export type GuestListener = z.infer<typeof GuestListenerSchema>;

export const VmPortsSchema = z.object({
  /** What was asked for (the name when all running VMs were listed). */
  ref: z.string(),
  ok: z.boolean(),
  name: z.string().nullable(),
  ip: z.string().nullable(),
  ports: z.array(GuestListenerSchema),
  /** The agent listed its maximum (1024) and stopped. */
  truncated: z.boolean(),
  error: ErrorShapeSchema.optional(),
});
export type VmPorts = z.infer<typeof VmPortsSchema>;

export const VmPortsResultSchema = z.object({ vms: z.array(VmPortsSchema) });
