/**
 * DNS for `<name>.vm`: the zone (records.ts, pure), the wire format behind the
 * vendor boundary (packet.ts), the UDP/TCP server (server.ts), the
 * systemd-resolved routing (resolved.ts) and the daemon service tying them
 * together (service.ts). See docs/networking.md and docs/dns-routing.md.
 */
export {
  answerQuery,
  buildRecords,
  DNS_ZONE,
  lookupLabel,
  RECORD_TTL,
  zoneLabel,
  type VmAddress,
  type ZoneRecords,
} from './records.js';
export {
  decodeQuery,
  decodeReply,
  encodeQuery,
  encodeReply,
  MAX_QUERY_BYTES,
  type DnsQuery,
  type DnsReply,
} from './packet.js';
export { DnsServer, type DnsServerOptions } from './server.js';
export {
  planRouting,
  probeResolved,
  resolvedCommands,
  ResolvedRouting,
  ROUTING_DOC,
  type ResolvedFacts,
  type RoutingPlan,
  type RoutingState,
} from './resolved.js';
export { DnsService, type DnsServiceDeps, type DnsStatus } from './service.js';
