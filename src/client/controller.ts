// The client controller: turns a client config into a working tunnel and keeps one up while the local proxies
// run. It follows psiphon-tunnel-core's controller and tunnel:
// - establishment races up to MAX_CONCURRENT_DIALS candidates, each over a protocol picked at random among
//   those its entry offers, LimitTunnelProtocols allows and this client implements; the last good server goes
//   first, alone for a short grace period; the first candidate to pass SSH authentication and answer
//   `psiphon-handshake` wins and every other dial is aborted;
// - once up: `psiphon-connected`, periodic `psiphon-status`, and SSH keep-alives (periodic when the tunnel has
//   been quiet, and as a probe when a port forward times out) to find a tunnel that died without a word;
// - when the tunnel ends it re-establishes, pausing between failed rounds with capped exponential backoff and
//   jitter, while the proxies stay up: their dials wait a bounded time for a tunnel, then fail as tunnel-down.
// It is the proxies' TunnelDialer. Timer periods are options (tests shorten them); durations and timestamps
// come from the Clock.
//
// Privacy: nothing here logs a destination; servers appear in logs by diagnostic ID (a tag prefix), not address.
import { EventEmitter } from 'node:events';
import { randomBytes, randomInt } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { RealClock, type Clock } from '../common/clock.ts';
import { PosternError, describeError, isPosternError } from '../common/errors.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import {
  SSH_KEEP_ALIVE_REQUEST_NAME,
  SERVER_ENTRY_SOURCE_DISCOVERY,
  getServerEntryTag,
  serverEntryDiagnosticId,
  supportedTunnelProtocols,
  type AlertRequest,
  type ClientConfig,
  type ServerEntryFields,
} from '../protocol/index.ts';
import {
  ApiClient,
  makeSessionId,
  parseConnectedResult,
  parseStatusResult,
  type HandshakeResult,
  type StatusData,
} from './api-client.ts';
import { DialError, dialFailureOf, type DialOptions, type TunnelDialer } from './dialer.ts';
import { ServerStore } from './server-store.ts';
import { dialTunnel, IMPLEMENTED_TUNNEL_PROTOCOLS, Tunnel, TunnelDialError } from './tunnel.ts';

/** Candidates dialled at once (the reference's ConnectionWorkerPoolSize). */
export const MAX_CONCURRENT_DIALS = 10;
/**
 * A dial with no result after this long (a blackholed server that took the TCP connection and never speaks)
 * stops holding one of the MAX_CONCURRENT_DIALS places: the next candidate starts while it runs on to its own
 * timeout. Without this, ten silent servers hold the whole pool for the full connect timeout.
 */
export const DIAL_STALL_RELEASE_MS = 250;
/** Dials in flight at once, stalled ones included. */
export const MAX_OUTSTANDING_DIALS = 64;
/** TCP connect to a candidate. */
export const TCP_CONNECT_TIMEOUT_MS = 10_000;
/** Dial start to SSH authenticated (the reference's TunnelConnectTimeout). */
export const TUNNEL_CONNECT_TIMEOUT_MS = 20_000;
/** Reply to an API request (the reference's PsiphonAPIRequestTimeout). */
export const API_REQUEST_TIMEOUT_MS = 10_000;
/** The last good server is dialled alone for this long before the others join (EstablishTunnelServerAffinityGracePeriod). */
export const SERVER_AFFINITY_GRACE_MS = 1_000;
/** Pause after the first failed round of establishment; doubles with each further one, up to the cap. */
export const RECONNECT_BACKOFF_BASE_MS = 1_000;
export const RECONNECT_BACKOFF_MAX_MS = 60_000;
/** Each pause is shortened by a random fraction up to this, so clients cut off together do not return together. */
export const RECONNECT_BACKOFF_JITTER = 0.5;
/** Keep-alives are considered at random intervals in this range (SSHKeepAlivePeriodMin/Max). */
export const KEEPALIVE_PERIOD_MIN_MS = 60_000;
export const KEEPALIVE_PERIOD_MAX_MS = 120_000;
/** A periodic keep-alive is sent only when nothing has been read from the server for this long. */
export const KEEPALIVE_INACTIVE_MS = 10_000;
/** A periodic keep-alive unanswered this long means the tunnel is dead (SSHKeepAlivePeriodicTimeout). */
export const KEEPALIVE_TIMEOUT_MS = 30_000;
/** A probe keep-alive, after a port forward timed out, unanswered this long (SSHKeepAliveProbeTimeout). */
export const PROBE_TIMEOUT_MS = 5_000;
/** Random padding of a keep-alive request (SSHKeepAlivePaddingMaxBytes). */
export const KEEPALIVE_PADDING_MAX_BYTES = 256;
/** Status requests at random intervals in this range (PsiphonAPIStatusRequestPeriodMin/Max). */
export const STATUS_PERIOD_MIN_MS = 5 * 60_000;
export const STATUS_PERIOD_MAX_MS = 10 * 60_000;
/** The last status request, sent while stopping, may take this long. */
export const FINAL_STATUS_TIMEOUT_MS = 1_000;
/** A port forward the server has not confirmed after this long fails (TunnelPortForwardDialTimeout). */
export const PORT_FORWARD_DIAL_TIMEOUT_MS = 10_000;
/** A dial while there is no tunnel waits this long for one before failing as tunnel-down. */
export const DIAL_WAIT_FOR_TUNNEL_MS = 10_000;
/** A failed connected request is retried after this long, this many times in all. */
export const CONNECTED_RETRY_MS = 5_000;
export const CONNECTED_REQUEST_MAX_ATTEMPTS = 3;
/** How often the tunnel's read counter is sampled to tell a quiet tunnel from a busy one. */
export const ACTIVITY_SAMPLE_MS = 1_000;

export interface ControllerTiming {
  tcpConnectTimeoutMs: number;
  /** See DIAL_STALL_RELEASE_MS. */
  dialStallReleaseMs: number;
  tunnelConnectTimeoutMs: number;
  apiRequestTimeoutMs: number;
  serverAffinityGraceMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  backoffJitter: number;
  keepAlivePeriodMinMs: number;
  keepAlivePeriodMaxMs: number;
  keepAliveInactiveMs: number;
  keepAliveTimeoutMs: number;
  probeTimeoutMs: number;
  statusPeriodMinMs: number;
  statusPeriodMaxMs: number;
  finalStatusTimeoutMs: number;
  portForwardDialTimeoutMs: number;
  dialWaitForTunnelMs: number;
  connectedRetryMs: number;
}

export const DEFAULT_CONTROLLER_TIMING: Readonly<ControllerTiming> = {
  tcpConnectTimeoutMs: TCP_CONNECT_TIMEOUT_MS,
  tunnelConnectTimeoutMs: TUNNEL_CONNECT_TIMEOUT_MS,
  apiRequestTimeoutMs: API_REQUEST_TIMEOUT_MS,
  serverAffinityGraceMs: SERVER_AFFINITY_GRACE_MS,
  backoffBaseMs: RECONNECT_BACKOFF_BASE_MS,
  backoffMaxMs: RECONNECT_BACKOFF_MAX_MS,
  backoffJitter: RECONNECT_BACKOFF_JITTER,
  keepAlivePeriodMinMs: KEEPALIVE_PERIOD_MIN_MS,
  keepAlivePeriodMaxMs: KEEPALIVE_PERIOD_MAX_MS,
  keepAliveInactiveMs: KEEPALIVE_INACTIVE_MS,
  keepAliveTimeoutMs: KEEPALIVE_TIMEOUT_MS,
  probeTimeoutMs: PROBE_TIMEOUT_MS,
  statusPeriodMinMs: STATUS_PERIOD_MIN_MS,
  statusPeriodMaxMs: STATUS_PERIOD_MAX_MS,
  finalStatusTimeoutMs: FINAL_STATUS_TIMEOUT_MS,
  portForwardDialTimeoutMs: PORT_FORWARD_DIAL_TIMEOUT_MS,
  dialWaitForTunnelMs: DIAL_WAIT_FOR_TUNNEL_MS,
  connectedRetryMs: CONNECTED_RETRY_MS,
  dialStallReleaseMs: DIAL_STALL_RELEASE_MS,
};

export type TunnelState = 'establishing' | 'connected' | 'reconnecting' | 'stopped';

export interface ControllerStatus {
  state: TunnelState;
  /** connected: the tunnel protocol */
  protocol?: string;
  /** connected: the server's region, from its entry ("None" when unknown) */
  serverRegion?: string;
  /** connected: the region the server placed us in, from the handshake ("None" when unknown) */
  clientRegion?: string;
  /** connected: the server's diagnostic ID */
  serverId?: string;
  /** reconnecting: why the last tunnel ended */
  reason?: string;
}

export interface TransferTotals {
  /** Payload bytes sent through tunnels in this run (all port forwards) */
  bytesUp: number;
  /** Payload bytes received through tunnels in this run */
  bytesDown: number;
}

/**
 * Where the status request's contents come from (bytes per domain and persistent stats). `take` hands over what
 * has accumulated; `putBack` returns it when the request failed, to go out with the next one.
 */
export interface StatusReporter {
  take(): StatusData | undefined;
  putBack(data: StatusData): void;
}

export interface ConnectedTunnelInfo {
  protocol: string;
  serverId: string;
  serverRegion: string;
}

export interface ControllerEvents {
  /** Every state change */
  state: [status: ControllerStatus];
  /** A tunnel's handshake result (home pages, upgrade, the sponsor's domain regexes for the stats) */
  handshake: [result: HandshakeResult, tunnel: ConnectedTunnelInfo];
  /** The server sent an alert */
  alert: [alert: AlertRequest];
}

export interface ControllerOptions {
  config: ClientConfig;
  /** Candidate servers; by default opened from the config, in memory only unless `dataDir` is given */
  store?: ServerStore;
  /** Folder of the server store when `store` is not given */
  dataDir?: string;
  logger?: Logger;
  clock?: Clock;
  timing?: Partial<ControllerTiming>;
  statusReporter?: StatusReporter;
  /** A number in [0, 1) for jitter and random periods */
  random?: () => number;
}

/**
 * The pause before establishment round `failedRounds + 1`: base × 2^failedRounds, capped, shortened by a random
 * fraction up to `jitter`.
 */
export function reconnectDelayMs(
  failedRounds: number,
  timing: Pick<ControllerTiming, 'backoffBaseMs' | 'backoffMaxMs' | 'backoffJitter'>,
  random: () => number = Math.random,
): number {
  const exponent = Math.max(0, Math.min(failedRounds, 52));
  const full = Math.min(timing.backoffMaxMs, timing.backoffBaseMs * 2 ** exponent);
  const jitter = Math.max(0, Math.min(1, timing.backoffJitter));
  return Math.max(0, Math.round(full * (1 - jitter * random())));
}

/** The protocols this client may use for an entry: offered ∩ limit (when not empty) ∩ implemented. */
export function usableTunnelProtocols(entry: ServerEntryFields, limit: readonly string[]): string[] {
  const offered = supportedTunnelProtocols(entry, limit.length > 0 ? { limitProtocols: limit } : {});
  return offered.filter((p) => IMPLEMENTED_TUNNEL_PROTOCOLS.includes(p));
}

function periodBetween(min: number, max: number, random: () => number): number {
  return Math.round(min + (Math.max(min, max) - min) * random());
}

function describeEnd(reason: PosternError | null): string {
  if (reason === null) return 'the server closed the tunnel';
  return reason.message;
}

/** A few words for a round's summary: what went wrong with one candidate. */
export function describeDialFailureKind(e: unknown): string {
  const stage = e instanceof TunnelDialError ? e.stage : 'connect';
  const code = isPosternError(e) ? e.code : 'IO';
  switch (code) {
    case 'HOST_KEY_MISMATCH':
      return 'wrong host key';
    case 'AUTH_FAILED':
      return 'password refused';
    case 'TIMEOUT':
      return `timed out (${stage === 'connect' ? 'TCP' : stage === 'ssh' ? 'SSH' : 'API handshake'})`;
    case 'BAD_SERVER_ENTRY':
      return 'unusable entry';
    default:
      if (stage === 'connect') return 'TCP connect failed';
      if (stage === 'ssh') return 'SSH failed';
      return 'API handshake failed';
  }
}

interface Candidate {
  entry: ServerEntryFields;
  protocols: string[];
}

export class TunnelController extends EventEmitter<ControllerEvents> implements TunnelDialer {
  /** Sent in every SSH password of this run: one session per client run, as the reference does. */
  readonly sessionId: string;
  readonly store: ServerStore;
  private readonly config: ClientConfig;
  private readonly api: ApiClient;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly timing: ControllerTiming;
  private readonly random: () => number;
  private readonly statusReporter: StatusReporter | undefined;

  private current: ControllerStatus = { state: 'stopped' };
  private tunnel: Tunnel | null = null;
  private running: Promise<void> | null = null;
  private stopping: Promise<void> | null = null;
  private readonly stopAbort = new AbortController();
  private readonly waiters = new Set<() => void>();
  private readonly totals: TransferTotals = { bytesUp: 0, bytesDown: 0 };
  private establishedTunnels = 0;
  private dialsThisEstablishment = 0;
  private probing = false;

  constructor(opts: ControllerOptions) {
    super();
    this.config = opts.config;
    this.log = opts.logger ?? silentLogger();
    this.clock = opts.clock ?? new RealClock();
    this.timing = { ...DEFAULT_CONTROLLER_TIMING, ...opts.timing };
    this.random = opts.random ?? Math.random;
    this.statusReporter = opts.statusReporter;
    this.sessionId = makeSessionId();
    this.store =
      opts.store ??
      ServerStore.open({
        embeddedEntries: opts.config.EmbeddedServerEntries,
        signaturePublicKey: opts.config.ServerEntrySignaturePublicKey,
        clock: this.clock,
        logger: this.log,
        ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}),
      });
    this.api = new ApiClient({
      propagationChannelId: opts.config.PropagationChannelId,
      sponsorId: opts.config.SponsorId,
      clientVersion: opts.config.ClientVersion,
      clientPlatform: opts.config.ClientPlatform,
    });
  }

  /** The current state. */
  get status(): ControllerStatus {
    return { ...this.current };
  }

  /** Payload bytes through tunnels so far in this run, including the current one. */
  totalBytes(): TransferTotals {
    const stats = this.tunnel?.conn.getStats();
    return {
      bytesUp: this.totals.bytesUp + (stats?.channelBytesSent ?? 0),
      bytesDown: this.totals.bytesDown + (stats?.channelBytesReceived ?? 0),
    };
  }

  /** Starts establishing; the state goes to 'establishing' at once. */
  start(): void {
    if (this.running !== null) return;
    this.setState({ state: 'establishing' });
    this.running = this.run().catch((e: unknown) => {
      // A bug, not a network condition: stop rather than spin.
      this.log.error(`controller failed: ${describeError(e)}`);
    });
  }

  /**
   * Stops: sends a last status request (briefly), closes the tunnel, aborts any establishment, and resolves
   * once everything has ended. The state ends as 'stopped'.
   */
  stop(): Promise<void> {
    if (this.stopping === null) {
      this.stopping = this.doStop();
      // Dials waiting for a tunnel give up now rather than at their deadline.
      for (const wake of [...this.waiters]) wake();
    }
    return this.stopping;
  }

  /** Resolves once connected; rejects with DialError tunnel-down after `timeoutMs` or when stopped. */
  async whenConnected(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.current.state === 'connected') return;
      if (this.stopping !== null || this.running === null) {
        throw new DialError('tunnel-down', 'the client is not running');
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new DialError('tunnel-down', 'no tunnel is up yet');
      await this.waitForChange(left, signal);
      if (signal?.aborted) throw new DialError('failed', 'dial aborted', { cause: signal.reason });
    }
  }

  /**
   * TunnelDialer: a port forward through the current tunnel. While there is none, waits up to
   * `dialWaitForTunnelMs` for one, then fails as tunnel-down.
   */
  async dial(host: string, port: number, opts: DialOptions = {}): Promise<Duplex> {
    const { signal } = opts;
    const deadline = Date.now() + this.timing.dialWaitForTunnelMs;
    for (;;) {
      if (signal?.aborted) throw new DialError('failed', 'dial aborted', { cause: signal.reason });
      if (this.stopping !== null || this.running === null) {
        throw new DialError('tunnel-down', 'the client is not running');
      }
      const tunnel = this.tunnel;
      if (tunnel !== null && !tunnel.isClosed) {
        try {
          return await this.openForward(tunnel, host, port, signal);
        } catch (e) {
          if (e instanceof DialError) throw e;
          // The tunnel went away under this dial: wait for the next one like any other dial.
          if (!(isPosternError(e, 'CLOSED') && tunnel.isClosed)) {
            if (isPosternError(e, 'TIMEOUT')) this.probe(tunnel);
            throw new DialError(dialFailureOf(e), `port forward failed: ${describeError(e)}`, { cause: e });
          }
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        const why = this.current.reason ? ` (${this.current.reason})` : '';
        throw new DialError(
          'tunnel-down',
          `no tunnel after waiting ${this.timing.dialWaitForTunnelMs} ms${why}`,
        );
      }
      await this.waitForChange(left, signal);
    }
  }

  // ---- the loop ---------------------------------------------------------------------------------------------

  private get isStopping(): boolean {
    return this.stopAbort.signal.aborted || this.stopping !== null;
  }

  private async run(): Promise<void> {
    let failedRounds = 0;
    let establishingSince = this.clock.now().getTime();
    while (!this.isStopping) {
      if (failedRounds > 0) {
        const delay = reconnectDelayMs(failedRounds - 1, this.timing, this.random);
        this.log.info(`no tunnel yet; trying again in ${(delay / 1000).toFixed(1)} s`);
        await this.sleep(delay, this.stopAbort.signal);
        if (this.isStopping) break;
      }
      const tunnel = await this.establishRound();
      if (tunnel === null) {
        failedRounds++;
        continue;
      }
      failedRounds = 0;
      const reason = await this.operate(tunnel, this.clock.now().getTime() - establishingSince);
      if (this.isStopping) break;
      establishingSince = this.clock.now().getTime();
      this.dialsThisEstablishment = 0;
      this.setState({ state: 'reconnecting', reason: describeEnd(reason) });
    }
  }

  private candidates(): Candidate[] {
    const limit = this.config.LimitTunnelProtocols;
    const out: Candidate[] = [];
    for (const entry of this.store.candidates((n) => randomInt(n))) {
      const protocols = usableTunnelProtocols(entry, limit);
      if (protocols.length > 0) out.push({ entry, protocols });
    }
    if (out.length === 0) {
      const limited = limit.length > 0 ? ` allowed by LimitTunnelProtocols (${limit.join(', ')}) and` : '';
      this.log.warn(
        this.store.size === 0
          ? 'there are no server entries to try'
          : `none of the ${this.store.size} server entries offers a protocol${limited} spoken by this client (${IMPLEMENTED_TUNNEL_PROTOCOLS.join(', ')})`,
      );
    }
    return out;
  }

  /** One round over the candidates; resolves with the winning tunnel, or null when every dial failed. */
  private establishRound(): Promise<Tunnel | null> {
    const candidates = this.candidates();
    if (candidates.length === 0) return Promise.resolve(null);
    const round = new AbortController();
    const failures = new Map<string, number>();
    const lastGood = this.store.lastGoodServer();
    const affinity = lastGood !== null && getServerEntryTag(candidates[0]!.entry) === lastGood;

    return new Promise<Tunnel | null>((resolve) => {
      let settled = false;
      let next = 0;
      let graceTimer: NodeJS.Timeout | undefined;
      const finish = (tunnel: Tunnel | null): void => {
        if (settled) {
          tunnel?.close();
          return;
        }
        settled = true;
        clearTimeout(graceTimer);
        this.stopAbort.signal.removeEventListener('abort', onStop);
        round.abort();
        if (tunnel === null && !this.isStopping) {
          const summary = [...failures].map(([why, n]) => `${n} ${why}`).join(', ');
          this.log.info(`no tunnel from ${candidates.length} candidate(s): ${summary || 'none dialled'}`);
        }
        resolve(tunnel);
      };
      const onStop = (): void => finish(null);
      this.stopAbort.signal.addEventListener('abort', onStop, { once: true });

      let firstDone: () => void = () => {};
      const firstSettled = new Promise<void>((r) => (firstDone = r));
      const attempts: Promise<void>[] = [];
      let outstanding = 0;
      const attempt = async (index: number): Promise<void> => {
        const candidate = candidates[index]!;
        const protocol = candidate.protocols[randomInt(candidate.protocols.length)]!;
        const serverId = serverEntryDiagnosticId(getServerEntryTag(candidate.entry));
        try {
          const tunnel = await dialTunnel({
            entry: candidate.entry,
            protocol,
            sessionId: this.sessionId,
            sponsorId: this.config.SponsorId,
            api: this.api,
            candidateNumber: this.dialsThisEstablishment++,
            establishedTunnelsCount: this.establishedTunnels,
            timeouts: this.timing,
            clock: this.clock,
            signal: round.signal,
            onServerRequest: (r) => {
              if (r.alert !== undefined) {
                this.log.info(`server alert: ${r.alert.reason} ${r.alert.subject}`.trim());
                this.notify('alert', r.alert);
              }
            },
          });
          finish(tunnel);
        } catch (e) {
          if (round.signal.aborted) return;
          const kind = describeDialFailureKind(e);
          failures.set(kind, (failures.get(kind) ?? 0) + 1);
          this.log.debug(`candidate ${serverId} via ${protocol} failed: ${describeError(e)}`);
        } finally {
          if (index === 0) firstDone();
        }
      };
      const worker = async (): Promise<void> => {
        while (!round.signal.aborted && next < candidates.length) {
          const done = attempt(next++);
          outstanding++;
          attempts.push(done.finally(() => outstanding--));
          // Wait for this dial, or only until it looks stalled while there is room for more in flight.
          let stallTimer: NodeJS.Timeout | undefined;
          const stalled = new Promise<void>((r) => {
            if (outstanding < MAX_OUTSTANDING_DIALS)
              stallTimer = setTimeout(r, this.timing.dialStallReleaseMs);
          });
          await Promise.race([done, stalled]);
          clearTimeout(stallTimer);
        }
      };

      const workers: Promise<void>[] = [worker()];
      let launched = false;
      const launchRest = (): void => {
        if (launched || round.signal.aborted) return;
        launched = true;
        const count = Math.min(MAX_CONCURRENT_DIALS, candidates.length) - 1;
        for (let i = 0; i < count; i++) workers.push(worker());
        void Promise.all(workers)
          .then(() => Promise.all(attempts))
          .then(() => finish(null));
      };
      if (affinity && this.timing.serverAffinityGraceMs > 0) {
        // The server that worked last time gets a head start, as in the reference.
        graceTimer = setTimeout(launchRest, this.timing.serverAffinityGraceMs);
        void firstSettled.then(() => {
          clearTimeout(graceTimer);
          launchRest();
        });
      } else {
        launchRest();
      }
    });
  }

  /** Runs a connected tunnel until it ends; resolves with why it ended. */
  private async operate(tunnel: Tunnel, establishmentDurationMs: number): Promise<PosternError | null> {
    if (this.isStopping) {
      tunnel.close();
      return null;
    }
    this.tunnel = tunnel;
    this.establishedTunnels++;
    this.store.markSucceeded(tunnel.entry);
    const handshake = tunnel.handshake;
    if (handshake.encodedServerList.length > 0) {
      const imported = this.store.importEntries(handshake.encodedServerList, SERVER_ENTRY_SOURCE_DISCOVERY);
      this.log.debug(`discovery: ${imported.added} new server entries, ${imported.rejected} rejected`);
    }
    this.setState({
      state: 'connected',
      protocol: tunnel.protocol,
      serverRegion: tunnel.serverRegion,
      clientRegion: handshake.clientRegion || 'None',
      serverId: tunnel.serverId,
    });
    this.notify('handshake', handshake, {
      protocol: tunnel.protocol,
      serverId: tunnel.serverId,
      serverRegion: tunnel.serverRegion,
    });

    const ops = new AbortController();
    const timers = new Set<NodeJS.Timeout>();
    const schedule = (ms: number, fn: () => void): void => {
      const t = setTimeout(() => {
        timers.delete(t);
        if (!ops.signal.aborted) fn();
      }, ms);
      timers.add(t);
    };

    // Activity: when did we last read anything from the server?
    let lastRead = tunnel.conn.getStats().transportBytesRead;
    let lastReadAt = this.clock.now().getTime();
    const sample = (): void => {
      const read = tunnel.conn.getStats().transportBytesRead;
      if (read !== lastRead) {
        lastRead = read;
        lastReadAt = this.clock.now().getTime();
      }
      schedule(ACTIVITY_SAMPLE_MS, sample);
    };
    schedule(ACTIVITY_SAMPLE_MS, sample);

    const keepAlive = (): void => {
      const quietFor = this.clock.now().getTime() - lastReadAt;
      if (quietFor >= this.timing.keepAliveInactiveMs) {
        void this.sendKeepAlive(tunnel, this.timing.keepAliveTimeoutMs);
      }
      schedule(
        periodBetween(this.timing.keepAlivePeriodMinMs, this.timing.keepAlivePeriodMaxMs, this.random),
        keepAlive,
      );
    };
    schedule(
      periodBetween(this.timing.keepAlivePeriodMinMs, this.timing.keepAlivePeriodMaxMs, this.random),
      keepAlive,
    );

    const status = (): void => {
      void this.sendStatus(tunnel, this.timing.apiRequestTimeoutMs).finally(() =>
        schedule(
          periodBetween(this.timing.statusPeriodMinMs, this.timing.statusPeriodMaxMs, this.random),
          status,
        ),
      );
    };
    schedule(
      periodBetween(this.timing.statusPeriodMinMs, this.timing.statusPeriodMaxMs, this.random),
      status,
    );

    void this.sendConnected(tunnel, establishmentDurationMs, ops.signal);

    const reason = await tunnel.closed;
    ops.abort();
    for (const t of timers) clearTimeout(t);
    timers.clear();
    const stats = tunnel.conn.getStats();
    this.totals.bytesUp += stats.channelBytesSent;
    this.totals.bytesDown += stats.channelBytesReceived;
    this.tunnel = null;
    return reason;
  }

  private async sendConnected(
    tunnel: Tunnel,
    establishmentDurationMs: number,
    signal: AbortSignal,
  ): Promise<void> {
    for (let attempt = 1; attempt <= CONNECTED_REQUEST_MAX_ATTEMPTS; attempt++) {
      if (signal.aborted) return;
      try {
        const request = this.api.connectedRequest(this.store.lastConnected(), establishmentDurationMs);
        const reply = await tunnel.conn.request(request.name, request.payload, {
          timeoutMs: this.timing.apiRequestTimeoutMs,
        });
        const { connectedTimestamp } = parseConnectedResult(reply);
        this.store.setLastConnected(connectedTimestamp);
        return;
      } catch (e) {
        if (signal.aborted) return;
        this.log.debug(`connected request failed (attempt ${attempt}): ${describeError(e)}`);
        await this.sleep(this.timing.connectedRetryMs, signal);
      }
    }
  }

  private async sendStatus(tunnel: Tunnel, timeoutMs: number): Promise<void> {
    const data = this.statusReporter?.take();
    if (data === undefined) return;
    let reply: Buffer;
    try {
      const request = this.api.statusRequest(data);
      if (request === undefined) return;
      reply = await tunnel.conn.request(request.name, request.payload, { timeoutMs });
    } catch (e) {
      this.statusReporter?.putBack(data);
      this.log.debug(`status request failed: ${describeError(e)}`);
      return;
    }
    try {
      const { invalidServerEntryTags } = parseStatusResult(reply);
      if (invalidServerEntryTags.length > 0) {
        const removed = this.store.removeByTags(invalidServerEntryTags);
        this.log.debug(`the server says ${removed} stored server entries are gone`);
      }
    } catch (e) {
      this.log.debug(`status response not understood: ${describeError(e)}`);
    }
  }

  /** Sends a keep-alive; no answer within `timeoutMs` closes the tunnel as dead. */
  private async sendKeepAlive(tunnel: Tunnel, timeoutMs: number): Promise<void> {
    const padding = randomBytes(randomInt(KEEPALIVE_PADDING_MAX_BYTES + 1));
    try {
      await tunnel.conn.request(SSH_KEEP_ALIVE_REQUEST_NAME, padding, { timeoutMs });
    } catch (e) {
      // A refusal is an answer: the server is there.
      if (isPosternError(e, 'REFUSED') || tunnel.isClosed) return;
      tunnel.close(
        isPosternError(e, 'TIMEOUT')
          ? new PosternError('TIMEOUT', `the server did not answer a keep-alive within ${timeoutMs} ms`)
          : new PosternError('CLOSED', `keep-alive failed: ${describeError(e)}`),
      );
    }
  }

  /** A port forward timed out: check at once whether the tunnel is still alive (one probe at a time). */
  private probe(tunnel: Tunnel): void {
    if (this.probing || tunnel.isClosed) return;
    this.probing = true;
    void this.sendKeepAlive(tunnel, this.timing.probeTimeoutMs).finally(() => (this.probing = false));
  }

  private openForward(tunnel: Tunnel, host: string, port: number, signal?: AbortSignal): Promise<Duplex> {
    return new Promise<Duplex>((resolve, reject) => {
      let done = false;
      const onAbort = (): void => {
        if (done) return;
        done = true;
        reject(new DialError('failed', 'dial aborted', { cause: signal?.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      tunnel.conn.openDirectTcpip(host, port, { timeoutMs: this.timing.portForwardDialTimeoutMs }).then(
        (channel) => {
          signal?.removeEventListener('abort', onAbort);
          if (done) {
            channel.destroy();
            return;
          }
          done = true;
          resolve(channel);
        },
        (err: unknown) => {
          signal?.removeEventListener('abort', onAbort);
          if (done) return;
          done = true;
          reject(err);
        },
      );
    });
  }

  private async doStop(): Promise<void> {
    const tunnel = this.tunnel;
    if (tunnel !== null && !tunnel.isClosed) {
      // Report what has accumulated before the tunnel goes, as the reference does on shutdown.
      await this.sendStatus(tunnel, this.timing.finalStatusTimeoutMs);
    }
    this.stopAbort.abort();
    this.tunnel?.close();
    await this.running;
    this.tunnel = null;
    this.setState({ state: 'stopped' });
  }

  // ---- helpers ----------------------------------------------------------------------------------------------

  private setState(status: ControllerStatus): void {
    this.current = status;
    this.log.debug({ state: status.state }, `tunnel ${status.state}`);
    this.notify('state', { ...status });
    for (const wake of [...this.waiters]) wake();
  }

  /** Emits to listeners; a listener that throws must not stop the tunnel. */
  private notify<K extends keyof ControllerEvents>(event: K, ...args: ControllerEvents[K]): void {
    try {
      // The generic emit cannot relate K's arguments to K; the signature above does.
      (super.emit as (name: string, ...a: unknown[]) => boolean).call(this, event, ...args);
    } catch (e) {
      this.log.error(`a ${event} listener failed: ${describeError(e)}`);
    }
  }

  /** Resolves on the next state change, after `ms`, or on abort. */
  private waitForChange(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve();
        return;
      }
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
