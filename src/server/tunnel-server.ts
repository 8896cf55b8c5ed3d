// The tunnel server (`postern server run`): one listener per configured protocol; each connection goes through
// its transport (plain TCP for SSH, the obfuscator for OSSH) into an SSH connection that authenticates with
// Psiphon's password payload, answers the API, and serves direct-tcpip port forwards under the destination
// policy and per-tunnel limits. GeoIP is looked up once per connection and the client's address is then
// dropped: it is never logged, stored or put in an event.
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { PosternError, describeError } from '../common/errors.ts';
import { readJsonFile, parseWithSchema } from '../common/config.ts';
import type { ServerConfig } from '../protocol/server-config.ts';
import { PsinetSchema, type Psinet } from '../protocol/psinet.ts';
import { parseAuthorizationVerificationKeyRing } from '../protocol/authorization.ts';
import { acceptObfuscatedSsh, SeedHistory, type IrregularTunnelEvent } from '../transport/index.ts';
import {
  acceptSshConnection,
  psiphonPasswordAuthenticator,
  CHANNEL_OPEN_FAILURE,
  type SshPasswordPayload,
  type SshServerConnection,
  type DirectTcpipRequest,
} from '../ssh/index.ts';
import { createApiHandler, createApiSession, type ApiHandler, type ApiSession } from './api-handlers.ts';
import type { GeoIpLookup, GeoInfo } from './geoip.ts';
import { geoLogFields } from './geoip.ts';
import { DestinationPolicy, type Resolver } from './destination-policy.ts';
import { pump } from '../common/stream-pump.ts';
import { DomainBytesAggregator, DEFAULT_DOMAIN_BYTES_PERIOD_MS } from './domain-bytes.ts';
import { normalizeClientPlatform, type ApiLogFields } from '../protocol/api-params.ts';
import {
  EVENT_SCHEMA_VERSION,
  CLIENT_PLATFORMS,
  parseEvent,
  tunnelErrorCode,
  hourOf,
  type StatsEvent,
  type StatsEventOf,
} from '../stats/events.ts';

type TunnelBase = Omit<StatsEventOf<'unique_user'>, 'event_name'>;

/** GeoIP fields as events carry them (spaces as underscores, as the reference logs them). */
function geoFields(
  g: GeoInfo,
): Pick<TunnelBase, 'client_region' | 'client_city' | 'client_isp' | 'client_asn' | 'client_aso'> {
  const f = geoLogFields(g);
  return {
    client_region: f['client_region']!,
    client_city: f['client_city']!,
    client_isp: f['client_isp']!,
    client_asn: f['client_asn']!,
    client_aso: f['client_aso']!,
  };
}

/** Protocols this server can listen for. */
export const SERVED_PROTOCOLS = ['SSH', 'OSSH'] as const;
/** Concurrent client connections before new ones are refused (protects memory and file descriptors). */
export const DEFAULT_MAX_CLIENTS = 10_000;
/** Open port forwards per tunnel, as psiphond's default traffic rules (MaxTCPPortForwardCount). */
export const DEFAULT_MAX_PORT_FORWARDS = 512;
/** Dialling a port forward's destination (psiphond: DialTCPPortForwardTimeoutMilliseconds). */
export const DEFAULT_PORT_FORWARD_DIAL_TIMEOUT_MS = 10_000;
/** A port forward with no bytes either way is closed after this long (psiphond: 300 s). */
export const DEFAULT_PORT_FORWARD_IDLE_TIMEOUT_MS = 300_000;
/** How often the psinet file's modification time is checked for a reload. */
export const PSINET_RELOAD_CHECK_MS = 10_000;
/** udpgw's magic address (psiphond's UDPInterceptUdpgwServerAddress default): UDP is not served yet. */
export const UDPGW_ADDRESS = '127.0.0.1:7300';
/** How often a server_load event is written (psiphond's load monitor logs every few minutes too). */
export const DEFAULT_LOAD_PERIOD_MS = 5 * 60_000;
/** Events refused by the schema are logged at most this often, with a count (never their contents). */
const REFUSED_EVENT_LOG_INTERVAL_MS = 60_000;

/** Where events go (the event spool in production; an array in some tests). Every event matches the schema. */
export interface EventSink {
  record(event: StatsEvent): void;
}

export interface TunnelServerOptions {
  config: ServerConfig;
  /** Folder of the config file; relative paths in it are resolved against this. */
  configDir: string;
  geoip: GeoIpLookup;
  events: EventSink;
  clock: Clock;
  log: Logger;
  /** CIDRs forwards may reach although loopback/private (added to the config's AllowDestinations). */
  allowDestinations?: string[];
  resolver?: Resolver;
  maxClients?: number;
  maxPortForwards?: number;
  portForwardDialTimeoutMs?: number;
  portForwardIdleTimeoutMs?: number;
  /** How often bytes-per-domain buckets are written (default DEFAULT_DOMAIN_BYTES_PERIOD_MS) */
  domainBytesPeriodMs?: number;
  /** How often a server_load event is written (default DEFAULT_LOAD_PERIOD_MS; 0: never) */
  loadPeriodMs?: number;
}

export { hourOf };

function platformOf(raw: unknown): TunnelBase['client_platform'] {
  if (typeof raw !== 'string' || raw === '') return null;
  const p = normalizeClientPlatform(raw);
  return (CLIENT_PLATFORMS as readonly string[]).includes(p)
    ? (p as (typeof CLIENT_PLATFORMS)[number])
    : 'Other';
}

function stringField(fields: ApiLogFields, name: string): string | null {
  const v = fields[name];
  if (typeof v === 'string' && v !== '') return v;
  if (typeof v === 'number') return String(v);
  return null;
}

interface Tunnel {
  protocol: string;
  geo: GeoInfo;
  startedAt: Date;
  ssh: SshServerConnection<SshPasswordPayload> | null;
  session: ApiSession | null;
  /** Open forwards, each with what ends it and counts its bytes. */
  portForwards: Map<Socket, () => void>;
  portForwardsTotal: number;
  portForwardsRefused: number;
  peakPortForwards: number;
  bytesUp: number;
  bytesDown: number;
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export class TunnelServer {
  private readonly opts: TunnelServerOptions;
  private readonly listeners = new Map<string, Server>();
  private readonly sockets = new Set<Socket>();
  private readonly tunnels = new Set<Tunnel>();
  private readonly sessionTunnels = new WeakMap<ApiSession, Tunnel>();
  private readonly seedHistory: SeedHistory;
  private readonly policy: DestinationPolicy;
  private readonly api: ApiHandler;
  private psinet: Psinet;
  private psinetMtimeMs = 0;
  private psinetCheckedAt = 0;
  private stopping = false;
  private readonly domainBytes: DomainBytesAggregator;
  private loadTimer: NodeJS.Timeout | undefined;
  /** Port-forward bytes of forwards that ended since the last server_load event */
  private bytesSinceLoad = 0;
  private refusedEvents = 0;
  private refusedEventsLoggedAt = 0;

  constructor(opts: TunnelServerOptions) {
    this.opts = opts;
    const cfg = opts.config;
    for (const p of Object.keys(cfg.TunnelProtocolPorts)) {
      if (!(SERVED_PROTOCOLS as readonly string[]).includes(p)) {
        throw new PosternError(
          'BAD_CONFIG',
          `TunnelProtocolPorts names ${p}, which this server does not serve (it serves ${SERVED_PROTOCOLS.join(', ')})`,
        );
      }
    }
    this.seedHistory = new SeedHistory({ clock: opts.clock });
    this.policy = new DestinationPolicy({
      allowDestinations: [...cfg.AllowDestinations, ...(opts.allowDestinations ?? [])],
      ...(opts.resolver ? { resolver: opts.resolver } : {}),
    });
    this.psinet = this.loadPsinet();
    this.domainBytes = new DomainBytesAggregator({
      hostId: cfg.HostID,
      clock: opts.clock,
      emit: (ev) => this.record(ev),
      periodMs: opts.domainBytesPeriodMs ?? DEFAULT_DOMAIN_BYTES_PERIOD_MS,
    });
    const keyRing = parseAuthorizationVerificationKeyRing(cfg.AccessControlVerificationKeyRing);
    const own = new Map(Object.entries(cfg.OwnEncodedServerEntries));
    this.api = createApiHandler({
      psinet: () => this.currentPsinet(),
      clock: opts.clock,
      ownEncodedServerEntries: () => own,
      authorizationKeys: () => keyRing,
      onConnected: (session, ev) => {
        const tunnel = this.tunnelOf(session);
        // Only the base fields: they are all a daily user count needs, and each is in the data inventory.
        if (ev.uniqueUser && tunnel) this.emit(tunnel, { event_name: 'unique_user' });
      },
      onStatus: (session, report) => {
        const tunnel = this.tunnelOf(session);
        if (!tunnel) return;
        const hs = session.handshake;
        if (Object.keys(report.hostBytes).length > 0) {
          this.domainBytes.add(
            {
              sponsorId: hs?.sponsorId ?? session.sponsorId,
              platform: platformOf(hs?.normalizedClientPlatform),
              region: tunnel.geo.region,
              asn: tunnel.geo.asn,
            },
            report.hostBytes,
          );
        }
        for (const f of report.remoteServerListStats) this.emitPersistent(tunnel, 'remote_server_list', f);
        for (const f of report.failedTunnelStats) this.emitPersistent(tunnel, 'failed_tunnel', f);
      },
      onRequestFailed: (_session, name, err) => {
        opts.log.debug({ request: name, code: err.code }, 'API request refused');
      },
    });
  }

  private psinetPath(): string {
    const f = this.opts.config.PsinetDatabaseFilename;
    return isAbsolute(f) ? f : join(this.opts.configDir, f);
  }

  private loadPsinet(): Psinet {
    const path = this.psinetPath();
    try {
      this.psinetMtimeMs = statSync(path).mtimeMs;
    } catch {
      throw new PosternError(
        'BAD_CONFIG',
        `psinet file ${path} does not exist; \`postern server generate\` writes it`,
      );
    }
    return parseWithSchema(PsinetSchema, readJsonFile(path), path);
  }

  /** The psinet database, reloaded when its file changed (a broken new file keeps the old one). */
  private currentPsinet(): Psinet {
    const now = Date.now();
    if (now - this.psinetCheckedAt < PSINET_RELOAD_CHECK_MS) return this.psinet;
    this.psinetCheckedAt = now;
    try {
      if (statSync(this.psinetPath()).mtimeMs !== this.psinetMtimeMs) {
        this.psinet = this.loadPsinet();
        this.opts.log.info('psinet reloaded');
      }
    } catch (e) {
      this.opts.log.warn({ err: describeError(e) }, 'psinet reload failed; keeping the previous one');
    }
    return this.psinet;
  }

  /** Starts every listener; resolves with the bound port per protocol. */
  async start(): Promise<Record<string, number>> {
    const cfg = this.opts.config;
    const bound: Record<string, number> = {};
    for (const [protocol, port] of Object.entries(cfg.TunnelProtocolPorts)) {
      const server = createServer({ noDelay: true, allowHalfOpen: false }, (socket) =>
        this.onSocket(protocol, socket),
      );
      server.maxConnections = this.opts.maxClients ?? DEFAULT_MAX_CLIENTS;
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) =>
          reject(
            new PosternError(
              'IO',
              `cannot listen for ${protocol} on ${hostPort(cfg.ListenAddress, port)}: ${describeError(e)}`,
            ),
          ),
        );
        server.listen(port, cfg.ListenAddress, () => resolve());
      });
      server.on('error', (e) => this.opts.log.error({ protocol, err: describeError(e) }, 'listener error'));
      this.listeners.set(protocol, server);
      const a = server.address();
      bound[protocol] = typeof a === 'object' && a ? a.port : port;
    }
    this.domainBytes.start();
    const loadPeriod = this.opts.loadPeriodMs ?? DEFAULT_LOAD_PERIOD_MS;
    if (loadPeriod > 0) {
      this.loadTimer = setInterval(() => this.recordLoad(), loadPeriod);
      this.loadTimer.unref();
    }
    return bound;
  }

  /** Stops listening, closes every tunnel (each writes its server_tunnel event) and waits for them. */
  async stop(): Promise<void> {
    this.stopping = true;
    const closed = [...this.listeners.values()].map((s) => new Promise<void>((r) => s.close(() => r())));
    for (const t of this.tunnels) t.ssh?.close();
    for (const s of this.sockets) s.destroy();
    await Promise.all(closed);
    this.listeners.clear();
    if (this.loadTimer) clearInterval(this.loadTimer);
    this.loadTimer = undefined;
    this.domainBytes.stop();
  }

  get activeTunnels(): number {
    return this.tunnels.size;
  }

  private onSocket(protocol: string, socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    // The one use of the client's address: GeoIP, then it goes out of scope (the obfuscator keeps a keyed hash
    // of it in memory to tell a retry from a replay).
    const geo = this.opts.geoip.lookup(socket.remoteAddress ?? '');
    const tunnel: Tunnel = {
      protocol,
      geo,
      startedAt: this.opts.clock.now(),
      ssh: null,
      session: null,
      portForwards: new Map(),
      portForwardsTotal: 0,
      portForwardsRefused: 0,
      peakPortForwards: 0,
      bytesUp: 0,
      bytesDown: 0,
    };
    void this.handle(protocol, socket, tunnel).catch((e: unknown) => {
      this.opts.log.debug({ protocol, err: describeError(e) }, 'connection ended before SSH');
      socket.destroy();
    });
  }

  private async handle(protocol: string, socket: Socket, tunnel: Tunnel): Promise<void> {
    const cfg = this.opts.config;
    let stream: Duplex = socket;
    if (protocol === 'OSSH') {
      stream = await acceptObfuscatedSsh(socket, {
        obfuscationKeyword: cfg.ObfuscatedSSHKey,
        history: this.seedHistory,
        clock: this.opts.clock,
        onIrregular: (ev) => this.irregular(tunnel, ev),
      });
    }
    const ssh = acceptSshConnection<SshPasswordPayload>(stream, {
      hostKeyPem: cfg.SSHPrivateKey,
      serverVersion: cfg.SSHServerVersion,
      authenticate: psiphonPasswordAuthenticator(cfg.SSHUserName, cfg.SSHPassword),
      encryptThenMac: protocol === 'SSH',
      onGlobalRequest: (name, payload) => {
        const session = tunnel.session;
        if (!session) return null;
        const reply = this.api.handle(session, name, payload);
        if (session.mustDisconnect) setImmediate(() => ssh.close());
        return reply;
      },
      onDirectTcpip: (req, accept, reject) => this.portForward(tunnel, req, accept, reject),
    });
    tunnel.ssh = ssh;
    this.tunnels.add(tunnel);
    ssh.on('authenticated', () => {
      const auth = ssh.auth;
      if (!auth) return;
      tunnel.session = createApiSession({
        sessionId: auth.sessionId,
        sponsorId: auth.sponsorId,
        geo: tunnel.geo,
        tunnelProtocol: protocol,
      });
      this.sessionTunnels.set(tunnel.session, tunnel);
    });
    ssh.once('close', () => {
      this.tunnels.delete(tunnel);
      for (const finish of [...tunnel.portForwards.values()]) finish();
      if (tunnel.session) this.tunnelClosed(tunnel);
    });
  }

  private portForward(
    tunnel: Tunnel,
    req: DirectTcpipRequest,
    accept: () => Duplex,
    reject: (reason?: number, description?: string) => void,
  ): void {
    const session = tunnel.session;
    if (!session?.handshake) {
      tunnel.portForwardsRefused++;
      reject(CHANNEL_OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, 'no handshake');
      return;
    }
    if (hostPort(req.host, req.port) === UDPGW_ADDRESS) {
      tunnel.portForwardsRefused++;
      reject(CHANNEL_OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, 'UDP is not served');
      return;
    }
    const max = this.opts.maxPortForwards ?? DEFAULT_MAX_PORT_FORWARDS;
    if (tunnel.portForwards.size >= max) {
      tunnel.portForwardsRefused++;
      reject(CHANNEL_OPEN_FAILURE.RESOURCE_SHORTAGE, 'too many port forwards');
      return;
    }
    void this.policy.check(req.host, req.port, 'tcp').then((decision) => {
      if (!decision.allowed) {
        tunnel.portForwardsRefused++;
        reject(CHANNEL_OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, decision.message);
        return;
      }
      // Dial before accepting, as psiphond does: a refused destination is a refused channel.
      const upstream = netConnect({
        host: decision.address,
        port: decision.port,
        noDelay: true,
        allowHalfOpen: true,
      });
      const dialTimer = setTimeout(
        () => upstream.destroy(new PosternError('TIMEOUT', 'dial timed out')),
        this.opts.portForwardDialTimeoutMs ?? DEFAULT_PORT_FORWARD_DIAL_TIMEOUT_MS,
      );
      upstream.once('error', () => {
        clearTimeout(dialTimer);
        if (!upstream.readyState || upstream.connecting) {
          tunnel.portForwardsRefused++;
          reject(CHANNEL_OPEN_FAILURE.CONNECT_FAILED, 'connect failed');
        }
      });
      upstream.once('connect', () => {
        clearTimeout(dialTimer);
        if (tunnel.ssh === null || !this.tunnels.has(tunnel)) {
          upstream.destroy();
          return;
        }
        let channel: Duplex;
        try {
          channel = accept();
        } catch {
          upstream.destroy();
          return;
        }
        tunnel.portForwardsTotal++;
        upstream.setTimeout(this.opts.portForwardIdleTimeoutMs ?? DEFAULT_PORT_FORWARD_IDLE_TIMEOUT_MS, () =>
          upstream.destroy(),
        );
        this.relay(tunnel, channel, upstream);
        tunnel.peakPortForwards = Math.max(tunnel.peakPortForwards, tunnel.portForwards.size);
      });
    });
  }

  private relay(tunnel: Tunnel, channel: Duplex, upstream: Socket): void {
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      tunnel.portForwards.delete(upstream);
      tunnel.bytesUp += upstream.bytesWritten;
      tunnel.bytesDown += upstream.bytesRead;
      this.bytesSinceLoad += upstream.bytesWritten + upstream.bytesRead;
      channel.destroy();
      upstream.destroy();
    };
    tunnel.portForwards.set(upstream, done);
    // Pumps rather than pipe(): the same backpressure and end passing, at less cost per new forward.
    pump(channel, upstream);
    pump(upstream, channel);
    let ended = 0;
    const halfClosed = () => {
      if (++ended === 2) done();
    };
    channel.once('end', halfClosed);
    upstream.once('end', halfClosed);
    channel.once('error', done);
    upstream.once('error', done);
    channel.once('close', () => {
      if (ended < 2) setImmediate(done);
    });
    upstream.once('close', done);
  }

  private tunnelOf(session: ApiSession): Tunnel | undefined {
    return this.sessionTunnels.get(session);
  }

  /** Writes an event after checking it against the schema: one that does not match is counted, never written. */
  private record(event: StatsEvent): void {
    try {
      parseEvent(event);
    } catch (e) {
      this.refusedEvents++;
      const now = Date.now();
      if (now - this.refusedEventsLoggedAt >= REFUSED_EVENT_LOG_INTERVAL_MS) {
        this.refusedEventsLoggedAt = now;
        this.opts.log.warn(
          { refused: this.refusedEvents, err: describeError(e) },
          'events refused by the event schema (not written)',
        );
      }
      return;
    }
    this.opts.events.record(event);
  }

  /** Events not written because they did not match the schema (a bug, or a client sending odd values). */
  get refusedEventCount(): number {
    return this.refusedEvents;
  }

  /** The fields every event about a client's tunnel carries. */
  private tunnelBase(tunnel: Tunnel): TunnelBase | undefined {
    const session = tunnel.session;
    if (!session) return undefined;
    const hs = session.handshake;
    return {
      schema_version: EVENT_SCHEMA_VERSION,
      timestamp: hourOf(this.opts.clock.now()),
      host_id: this.opts.config.HostID,
      sponsor_id: hs?.sponsorId ?? session.sponsorId,
      propagation_channel_id: hs?.propagationChannelId ?? null,
      client_version: hs?.clientVersion ?? null,
      client_platform: platformOf(hs?.normalizedClientPlatform),
      relay_protocol: session.tunnelProtocol,
      ...geoFields(tunnel.geo),
    };
  }

  private emit(tunnel: Tunnel, fields: { event_name: 'unique_user' }): void;
  private emit(tunnel: Tunnel, fields: Omit<StatsEventOf<'server_tunnel'>, keyof TunnelBase>): void;
  private emit(tunnel: Tunnel, fields: { event_name: string }): void {
    const base = this.tunnelBase(tunnel);
    if (!base) return;
    this.record({ ...base, ...fields } as StatsEvent);
  }

  /**
   * A record a client kept from another tunnel (a list download, a failed tunnel) and reports through this one.
   * Its own sponsor, channel, version, platform and protocol are used; only coarse outcomes are kept: no URL,
   * no ETag, no error text (reduced to a code), no dial or resolver details.
   */
  private emitPersistent(
    tunnel: Tunnel,
    name: 'remote_server_list' | 'failed_tunnel',
    f: ApiLogFields,
  ): void {
    const base = this.tunnelBase(tunnel);
    if (!base) return;
    const own = {
      ...base,
      sponsor_id: stringField(f, 'sponsor_id') ?? base.sponsor_id,
      propagation_channel_id: stringField(f, 'propagation_channel_id') ?? base.propagation_channel_id,
      client_version: stringField(f, 'client_version') ?? base.client_version,
      client_platform: platformOf(f['client_platform']) ?? base.client_platform,
    };
    if (name === 'failed_tunnel') {
      this.record({
        ...own,
        event_name: 'failed_tunnel',
        relay_protocol: stringField(f, 'relay_protocol') ?? base.relay_protocol,
        tunnel_error: tunnelErrorCode(stringField(f, 'tunnel_error') ?? ''),
      });
      return;
    }
    const int = (v: unknown): number | null =>
      typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null;
    this.record({
      ...own,
      event_name: 'remote_server_list',
      tunneled: typeof f['tunneled'] === 'boolean' ? f['tunneled'] : null,
      authenticated: typeof f['authenticated'] === 'boolean' ? f['authenticated'] : null,
      bytes: int(f['bytes']),
      duration_ms: int(f['duration']),
    });
  }

  private recordLoad(): void {
    let forwards = 0;
    for (const t of this.tunnels) forwards += t.portForwards.size;
    this.record({
      event_name: 'server_load',
      schema_version: EVENT_SCHEMA_VERSION,
      timestamp: hourOf(this.opts.clock.now()),
      host_id: this.opts.config.HostID,
      established_tunnels: this.tunnels.size,
      open_port_forwards: forwards,
      bytes_since_last: this.bytesSinceLoad,
      rss_bytes: process.memoryUsage.rss(),
    });
    this.bytesSinceLoad = 0;
  }

  private tunnelClosed(tunnel: Tunnel): void {
    const session = tunnel.session;
    if (!session) return;
    const now = this.opts.clock.now();
    this.emit(tunnel, {
      event_name: 'server_tunnel',
      session_id: session.sessionId,
      handshake_completed: session.handshake !== undefined,
      start_time: hourOf(tunnel.startedAt),
      duration_ms: Math.max(0, now.getTime() - tunnel.startedAt.getTime()),
      bytes_up_tcp: tunnel.bytesUp,
      bytes_down_tcp: tunnel.bytesDown,
      bytes: tunnel.bytesUp + tunnel.bytesDown,
      port_forwards: tunnel.portForwardsTotal,
      port_forwards_refused: tunnel.portForwardsRefused,
      peak_concurrent_port_forwards: tunnel.peakPortForwards,
    });
  }

  private irregular(tunnel: Tunnel, ev: IrregularTunnelEvent): void {
    this.record({
      event_name: 'irregular_tunnel',
      schema_version: EVENT_SCHEMA_VERSION,
      timestamp: hourOf(ev.at),
      host_id: this.opts.config.HostID,
      listener_protocol: tunnel.protocol,
      tunnel_error: ev.reason,
      duplicate_seed: ev.duplicate !== null,
      ...geoFields(tunnel.geo),
    });
    this.opts.log.info({ protocol: tunnel.protocol, reason: ev.reason }, 'irregular tunnel');
  }
}
