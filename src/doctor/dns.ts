import type { Check } from '../api/schemas/daemon.js';
import { ROUTING_DOC } from '../network/dns/resolved.js';
import type { DnsStatus } from '../network/dns/service.js';
import type { CheckDef } from './checks.js';

type Result = Omit<Check, 'id' | 'title'>;

/** Doctor checks over the daemon's live DNS state (listener, `.vm` routing). */
export function dnsChecks(status: () => Promise<DnsStatus>): CheckDef[] {
  return [
    {
      id: 'dns:listener',
      title: 'DNS for <name>.vm',
      run: async (): Promise<Result> => {
        const { listener: l } = await status();
        if (l.state === 'listening')
          return {
            status: 'pass',
            detail: `listening on ${l.address} (udp, tcp), ${l.names} name(s)`,
          };
        return {
          status: 'warn',
          detail: l.error ?? `not listening on ${l.configured}`,
          hint: 'set dns_listen in config.toml to a free address:port (e.g. 127.0.0.1:42070); it is retried on its own',
        };
      },
    },
    {
      id: 'dns:routing',
      title: '.vm names on this host',
      run: async (): Promise<Result> => {
        const { routing: r } = await status();
        switch (r.state) {
          case 'applied':
          case 'pending':
            return { status: 'pass', detail: r.detail };
          case 'off':
            return {
              status: 'pass',
              detail: `banger does not route .vm names (${r.detail}); see ${ROUTING_DOC}`,
            };
          case 'failed':
            return {
              status: 'warn',
              detail: `.vm names are not routed: ${r.detail}`,
              hint: `see ${ROUTING_DOC}, or set dns_routing = "off"`,
            };
          case 'not-routed':
            return {
              status: 'warn',
              detail: `.vm names are not routed to banger's DNS (${r.detail})`,
              hint: `see ${ROUTING_DOC} for dnsmasq, NetworkManager and /etc/resolv.conf recipes`,
            };
        }
      },
    },
  ];
}
