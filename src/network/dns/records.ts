import type { DnsQuery, DnsReply } from './packet.js';

/**
 * The `vm` zone as data, and the answer to a query as a pure decision.
 * `<name>.vm` (any letter case) or `<id prefix>.vm` → the VM's IPv4 address.
 */

export const DNS_ZONE = 'vm';
/** Seconds resolvers may cache an answer: short, since VMs come and go. */
export const RECORD_TTL = 5;

export interface VmAddress {
  id: string;
  name: string;
  ip: string | null;
}

export interface ZoneRecords {
  /** lower-case VM name → address */
  byName: ReadonlyMap<string, string>;
  /** VM id → address (for unique id prefixes) */
  byId: ReadonlyMap<string, string>;
}

/** Every VM that has an address gets a record. */
export function buildRecords(vms: readonly VmAddress[]): ZoneRecords {
  const byName = new Map<string, string>();
  const byId = new Map<string, string>();
  for (const v of vms) {
    if (!v.ip) continue;
    byName.set(v.name.toLowerCase(), v.ip);
    byId.set(v.id.toLowerCase(), v.ip);
  }
  return { byName, byId };
}

/** The address for one label (a name, else a unique id prefix), or undefined. */
export function lookupLabel(records: ZoneRecords, label: string): string | undefined {
  const l = label.toLowerCase();
  const named = records.byName.get(l);
  if (named) return named;
  if (!/^[0-9a-f]{1,16}$/.test(l)) return undefined;
  let hit: string | undefined;
  for (const [id, ip] of records.byId) {
    if (!id.startsWith(l)) continue;
    if (hit !== undefined) return undefined; // ambiguous prefix: no answer
    hit = ip;
  }
  return hit;
}

/** Where a name sits relative to the zone: its label inside `vm`, the apex, or outside. */
export function zoneLabel(name: string): { inZone: false } | { inZone: true; label?: string } {
  const n = name.replace(/\.$/, '').toLowerCase();
  if (n === DNS_ZONE) return { inZone: true };
  if (!n.endsWith(`.${DNS_ZONE}`)) return { inZone: false };
  return { inZone: true, label: n.slice(0, -(DNS_ZONE.length + 1)) };
}

/**
 * The reply to a query:
 * - not a standard query → NOTIMP; not exactly one question → FORMERR;
 * - a name outside `vm` (or a class other than IN) → REFUSED;
 * - a known `<name>.vm`: A → the address, any other type → NOERROR, no answer;
 * - the zone apex `vm` → NOERROR, no answer; any other `.vm` name → NXDOMAIN.
 */
export function answerQuery(records: ZoneRecords, q: DnsQuery): DnsReply {
  const reply = (rcode: DnsReply['rcode'], authoritative = true): DnsReply => ({
    rcode,
    questions: q.questions,
    answers: [],
    authoritative,
  });
  if (q.opcode !== 'QUERY') return reply('NOTIMP', false);
  if (q.questions.length !== 1) return reply('FORMERR', false);
  const question = q.questions[0]!;
  const where = zoneLabel(question.name);
  if (!where.inZone || (question.class !== 'IN' && question.class !== 'ANY'))
    return reply('REFUSED', false);
  if (where.label === undefined) return reply('NOERROR');
  const ip = lookupLabel(records, where.label);
  if (ip === undefined) return reply('NXDOMAIN');
  const out = reply('NOERROR');
  if (question.type === 'A' || question.type === 'ANY')
    out.answers.push({ name: question.name, ttl: RECORD_TTL, address: ip });
  return out;
}
