import dgram from 'node:dgram';
import net from 'node:net';
import { BangerError } from '../../errors.js';
import {
  decodeQuery,
  encodeReply,
  MAX_QUERY_BYTES,
  type DnsQuery,
  type DnsReply,
} from './packet.js';

/**
 * A small authoritative DNS server on one address, UDP and TCP (RFC 1035
 * §4.2; TCP messages carry a two-byte length prefix). It never forwards and
 * never sends anything but replies. Whatever arrives that is not a well-formed
 * query — garbage, truncated, oversized, responses — is dropped; a TCP peer
 * that sends an impossible length is disconnected. Connections are bounded in
 * number, idle time and lifetime.
 */

export interface DnsServerOptions {
  /** The decision: a reply for each well-formed query. */
  answer(q: DnsQuery): DnsReply;
  /** Simultaneous TCP connections (more are refused). Default 64. */
  maxTcpConnections?: number;
  /** A TCP connection with no complete query for this long is closed. Default 10 s. */
  tcpIdleMs?: number;
  /** A TCP connection is closed after this long whatever it does. Default 120 s. */
  tcpLifetimeMs?: number;
  /** Called for a failure inside the server that did not stop it (for the log). */
  onError?(e: Error): void;
}

export interface DnsServerCounters {
  answered: number;
  dropped: number;
  tcpConnections: number;
}

/** A reply is never queued beyond this on one TCP connection (a peer that does not read). */
const MAX_TCP_BACKLOG = 64 * 1024;
/** Tries to find one port free on both UDP and TCP when asked for port 0. */
const EPHEMERAL_TRIES = 5;

export class DnsServer {
  private udp?: dgram.Socket;
  private tcp?: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private bound?: { host: string; port: number };
  readonly counters: DnsServerCounters = { answered: 0, dropped: 0, tcpConnections: 0 };

  constructor(private readonly opts: DnsServerOptions) {}

  /** Where it listens, once listening. */
  get address(): { host: string; port: number } | undefined {
    return this.bound;
  }

  /**
   * Bind UDP and TCP on host:port (port 0: a free port, the same for both).
   * Throws a one-line BangerError (e.g. the port is in use); on failure
   * nothing stays bound.
   */
  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    if (this.bound) throw new Error('DNS server already listening');
    let lastError: unknown;
    for (let i = 0; i < (port === 0 ? EPHEMERAL_TRIES : 1); i++) {
      try {
        const udp = await bindUdp(host, port);
        const udpPort = udp.address().port;
        let tcp: net.Server;
        try {
          tcp = await bindTcp(host, udpPort, this.opts.maxTcpConnections ?? 64);
        } catch (e) {
          udp.close();
          throw e;
        }
        this.udp = udp;
        this.tcp = tcp;
        this.bound = { host, port: udpPort };
        udp.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
        udp.on('error', (e) => this.opts.onError?.(e));
        tcp.on('connection', (s) => this.onConnection(s));
        tcp.on('error', (e) => this.opts.onError?.(e));
        return this.bound;
      } catch (e) {
        lastError = e;
        // With port 0 the UDP port may be taken on TCP: try another one.
        if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') break;
      }
    }
    throw bindError(host, port, lastError);
  }

  /** Stop listening and drop every connection. */
  async close(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    this.bound = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await Promise.all([
      udp ? new Promise<void>((r) => udp.close(() => r())) : undefined,
      tcp ? new Promise<void>((r) => tcp.close(() => r())) : undefined,
    ]);
  }

  /** The wire reply for one message, or undefined to drop it. Never throws. */
  private reply(msg: Buffer): Buffer | undefined {
    try {
      const q = decodeQuery(msg);
      const out = q ? encodeReply(q, this.opts.answer(q)) : undefined;
      if (out) this.counters.answered++;
      else this.counters.dropped++;
      return out;
    } catch (e) {
      this.counters.dropped++;
      this.opts.onError?.(e as Error);
      return undefined;
    }
  }

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const out = this.reply(msg);
    if (!out || !this.udp) return;
    this.udp.send(out, rinfo.port, rinfo.address, () => undefined);
  }

  private onConnection(s: net.Socket): void {
    this.counters.tcpConnections++;
    this.sockets.add(s);
    let buf: Buffer = Buffer.alloc(0);
    const lifetime = setTimeout(() => s.destroy(), this.opts.tcpLifetimeMs ?? 120_000);
    lifetime.unref();
    s.setTimeout(this.opts.tcpIdleMs ?? 10_000, () => s.destroy());
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(lifetime);
      this.sockets.delete(s);
    });
    s.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (len < 12 || len > MAX_QUERY_BYTES) {
          // An impossible length: the stream cannot be trusted any more.
          this.counters.dropped++;
          s.destroy();
          return;
        }
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        const out = this.reply(msg);
        if (!out) continue;
        if (s.writableLength > MAX_TCP_BACKLOG) {
          s.destroy();
          return;
        }
        const frame = Buffer.alloc(2 + out.length);
        frame.writeUInt16BE(out.length, 0);
        out.copy(frame, 2);
        s.write(frame);
      }
    });
  }
}

function bindUdp(host: string, port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' });
    s.once('error', (e) => {
      s.close();
      reject(e);
    });
    s.bind({ address: host, port, exclusive: true }, () => {
      s.removeAllListeners('error');
      resolve(s);
    });
  });
}

function bindTcp(host: string, port: number, maxConnections: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.maxConnections = maxConnections;
    srv.once('error', reject);
    srv.listen({ host, port, exclusive: true }, () => {
      srv.removeListener('error', reject);
      resolve(srv);
    });
  });
}

function bindError(host: string, port: number, e: unknown): BangerError {
  const err = e as NodeJS.ErrnoException;
  const where = `${host}:${port}`;
  const reasons: Record<string, string> = {
    EADDRINUSE: 'the port is already in use',
    EACCES: 'permission denied (ports below 1024 need privileges)',
    EADDRNOTAVAIL: 'the address is not on this host',
  };
  const reason = (err.code && reasons[err.code]) ?? err.message ?? String(e);
  const proto = err.syscall === 'listen' ? 'tcp' : err.syscall === 'bind' ? 'udp' : undefined;
  return new BangerError(
    'network',
    `DNS listener on ${where}${proto ? `/${proto}` : ''} failed: ${reason}`,
    {
      hint: 'set dns_listen in config.toml to a free address:port (e.g. 127.0.0.1:42070)',
      details: { code: err.code },
    },
  );
}
