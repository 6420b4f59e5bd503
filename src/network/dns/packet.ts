import dnsPacket from 'dns-packet';

/**
 * The vendor boundary for DNS wire format: `dns-packet` is imported here and
 * nowhere else. The rest of banger's DNS code sees only the small shapes below
 * (a decoded query, the reply to send), so swapping the library touches one file.
 */

/** Responses codes banger's server sends (RFC 1035 §4.1.1, RFC 6891 §9). */
export const RCODES = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;
export type Rcode = keyof typeof RCODES;

/** The largest query accepted, on UDP and TCP alike; anything bigger is dropped. */
export const MAX_QUERY_BYTES = 512;
/** What banger advertises in its own EDNS record (RFC 6891) when the query has one. */
export const EDNS_UDP_SIZE = 1232;

const opt = (udpPayloadSize: number): dnsPacket.OptAnswer => ({
  type: 'OPT',
  name: '.',
  udpPayloadSize,
  extendedRcode: 0,
  ednsVersion: 0,
  flags: 0,
  flag_do: false,
  options: [],
});

export interface DnsQuestion {
  /** As sent (case preserved: resolvers may check the echo, RFC draft 0x20). */
  name: string;
  /** 'A', 'AAAA', 'MX', … or 'UNKNOWN_<n>'. */
  type: string;
  /** 'IN' normally. */
  class: string;
}

export interface DnsQuery {
  id: number;
  /** 'QUERY' for ordinary lookups. */
  opcode: string;
  recursionDesired: boolean;
  questions: DnsQuestion[];
  /** The query carried an EDNS OPT record. */
  edns: boolean;
}

export interface DnsAnswerA {
  name: string;
  ttl: number;
  address: string;
}

export interface DnsReply {
  rcode: Rcode;
  /** Echoed back in the question section (usually one). */
  questions: DnsQuestion[];
  answers: DnsAnswerA[];
  /** Authoritative answer (banger owns the `vm` zone). */
  authoritative: boolean;
}

/**
 * Decode a query. Returns undefined for anything that is not a well-formed
 * query (responses, garbage, truncated or oversized packets): the server
 * drops those without an answer.
 */
export function decodeQuery(buf: Buffer): DnsQuery | undefined {
  if (buf.length < 12 || buf.length > MAX_QUERY_BYTES) return undefined;
  let p: dnsPacket.DecodedPacket;
  try {
    p = dnsPacket.decode(buf);
  } catch {
    return undefined;
  }
  if (p.type !== 'query' || typeof p.id !== 'number') return undefined;
  const flags = p.flags ?? 0;
  // TC set on a query makes no sense; treat it as malformed.
  if (flags & dnsPacket.TRUNCATED_RESPONSE) return undefined;
  const raw = p as unknown as { opcode?: string };
  return {
    id: p.id,
    opcode: raw.opcode ?? 'QUERY',
    recursionDesired: (flags & dnsPacket.RECURSION_DESIRED) !== 0,
    questions: (p.questions ?? []).map((q) => ({
      name: q.name,
      type: String(q.type),
      class: String(q.class ?? 'IN'),
    })),
    edns: (p.additionals ?? []).some((a) => a.type === 'OPT'),
  };
}

/**
 * Encode the reply to `query`. Returns undefined when the library cannot
 * encode it (e.g. a question name it decoded but cannot write back): the
 * server then drops the query.
 */
export function encodeReply(query: DnsQuery, reply: DnsReply): Buffer | undefined {
  let flags = RCODES[reply.rcode];
  if (query.recursionDesired) flags |= dnsPacket.RECURSION_DESIRED;
  if (reply.authoritative) flags |= dnsPacket.AUTHORITATIVE_ANSWER;
  const packet: dnsPacket.Packet = {
    type: 'response',
    id: query.id,
    flags,
    questions: reply.questions.map((q) => ({
      name: q.name,
      type: q.type as dnsPacket.RecordType,
      class: q.class as dnsPacket.RecordClass,
    })),
    answers: reply.answers.map((a) => ({
      type: 'A',
      class: 'IN',
      name: a.name,
      ttl: a.ttl,
      data: a.address,
    })),
    additionals: query.edns ? [opt(EDNS_UDP_SIZE)] : [],
  };
  try {
    return dnsPacket.encode(packet);
  } catch {
    return undefined;
  }
}

/** A query packet (tests and the bench use it; the daemon never sends queries). */
export function encodeQuery(
  name: string,
  type: string,
  opts: { id?: number; edns?: boolean } = {},
): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: opts.id ?? 1,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as dnsPacket.RecordType, class: 'IN' }],
    additionals: opts.edns ? [opt(4096)] : [],
  });
}

/** What tests read back from a reply. */
export interface DecodedReply {
  id: number;
  rcode: string;
  authoritative: boolean;
  questions: DnsQuestion[];
  answers: { name: string; type: string; ttl: number; data: string }[];
}

export function decodeReply(buf: Buffer): DecodedReply {
  const p = dnsPacket.decode(buf);
  return {
    id: p.id ?? 0,
    rcode: (p as unknown as { rcode: string }).rcode,
    authoritative: ((p.flags ?? 0) & dnsPacket.AUTHORITATIVE_ANSWER) !== 0,
    questions: (p.questions ?? []).map((q) => ({
      name: q.name,
      type: String(q.type),
      class: String(q.class ?? 'IN'),
    })),
    answers: (p.answers ?? []).map((a) => ({
      name: a.name,
      type: String(a.type),
      ttl: 'ttl' in a ? (a.ttl ?? 0) : 0,
      data: String((a as { data?: unknown }).data),
    })),
  };
}
