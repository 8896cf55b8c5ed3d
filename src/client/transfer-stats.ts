// Bytes per domain for the status request's `host_bytes`, as the reference client's transferstats package
// counts them: each port forward is named once, from the Host header or TLS SNI in its first upstream bytes
// (domain-sniffer.ts), mapped through the sponsor's regexes from the handshake; a forward no regex names counts
// under "(OTHER)", and with no regexes nothing is counted at all. Only the mapped names and byte totals are kept:
// never a URL or path, and not even the host name once it has been mapped.

import { Buffer } from 'node:buffer';
import type { Duplex } from 'node:stream';
import vm from 'node:vm';
import type { Logger } from '../common/logger.ts';
import {
  OTHER_HOST_STATS_NAME,
  compileDomainRegexes,
  statsNameForHost,
  type CompiledDomainRegex,
  type DomainRegex,
} from '../protocol/index.ts';
import type { StatusData } from './api-client.ts';
import type { StatusReporter } from './controller.ts';
import type { DialOptions, TunnelDialer } from './dialer.ts';
import { FirstBytesSniffer, normalizeHostName } from './domain-sniffer.ts';

/**
 * Distinct names kept between two status requests, "(OTHER)" included; bytes for further names count under
 * "(OTHER)", so the total stays right. Below the server's per-request cap (1000 entries).
 */
export const MAX_STATS_DOMAINS = 500;
/** A mapped name longer than this (the server drops it) counts under "(OTHER)". */
export const MAX_STATS_NAME_LENGTH = 255;
/** Regexes from the server longer than this are ignored (none a sponsor writes comes near it). */
export const MAX_DOMAIN_REGEX_LENGTH = 1024;
/**
 * JavaScript regexes backtrack (the reference's RE2 does not): a match that runs longer than this is stopped and
 * the host counts under "(OTHER)". Generous, because a busy machine can stall any call for tens of milliseconds.
 */
export const REGEX_MATCH_TIMEOUT_MS = 200;
/** Stopped matches after which the regex set is not used again (until a handshake brings another set). */
export const MAX_REGEX_TIMEOUTS = 3;
/**
 * Open forwards whose live counters are read at each status request; a forward opened beyond this is counted
 * when it closes only.
 */
export const MAX_LIVE_FORWARDS = 16_384;
/** Status requests a forward may stay undecided through (sending nothing) before it counts under "(OTHER)". */
export const MAX_TAKES_WHILE_SNIFFING = 2;

/** Payload bytes a forward has carried so far, each way. */
export interface ByteCounts {
  up: number;
  down: number;
}

/** One port forward's part in the statistics. */
export interface ForwardStats {
  /** True while the forward's first upstream bytes are still wanted by sniff(). */
  readonly sniffing: boolean;
  /** Gives the next chunk the application sent upstream (only the first ones are looked at). */
  sniff(chunk: Uint8Array): void;
  /** The forward ended, having carried these totals; later calls do nothing. */
  close(bytesUp: number, bytesDown: number): void;
}

export interface TransferStatsOptions {
  /** Distinct names kept (default MAX_STATS_DOMAINS, at least 1). */
  maxDomains?: number;
  /**
   * Name a forward whose first bytes hold no host after the host it was dialled to, when that is a domain name.
   * Off by default: the reference counts such a forward under "(OTHER)".
   */
  dialHostFallback?: boolean;
  regexMatchTimeoutMs?: number;
  logger?: Logger;
}

function byteCount(n: number): number {
  return Number.isFinite(n) && n > 0 ? Math.min(Math.floor(n), Number.MAX_SAFE_INTEGER) : 0;
}

function setOwn(target: Record<string, number>, key: string, value: number): void {
  // A sponsor's name may be "__proto__": define it rather than assign it.
  Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
}

/** Maps hosts to stats names through one regex set, with a time limit on each match. */
class HostNamer {
  private disabled = false;
  private timeouts = 0;
  private readonly context = vm.createContext({ match: (): unknown => undefined });
  private static readonly script = new vm.Script('match()');

  constructor(
    private readonly regexes: readonly CompiledDomainRegex[],
    private readonly timeoutMs: number,
    private readonly logger: Logger | undefined,
  ) {}

  // No cache of host -> name: that would keep a list of the hosts a user visited. One match costs tens of
  // microseconds, once per forward.
  nameOf(host: string | undefined): string {
    if (host === undefined || this.disabled) return OTHER_HOST_STATS_NAME;
    let name: unknown;
    // The match runs inside a script so that the vm's watchdog can stop a regex that backtracks forever.
    this.context['match'] = () => statsNameForHost(host, this.regexes);
    try {
      name = HostNamer.script.runInContext(this.context, { timeout: this.timeoutMs });
    } catch {
      if (++this.timeouts >= MAX_REGEX_TIMEOUTS && !this.disabled) {
        this.disabled = true;
        // Not the host: it is user activity.
        this.logger?.warn(
          'the domain regexes from the server are too slow; bytes count under (OTHER) from now on',
        );
      }
      return OTHER_HOST_STATS_NAME;
    } finally {
      this.context['match'] = (): unknown => undefined;
    }
    // The reference turns an empty name into "(OTHER)" (recordStat); one the server would drop goes there too.
    if (typeof name !== 'string' || name === '' || name.length > MAX_STATS_NAME_LENGTH) {
      return OTHER_HOST_STATS_NAME;
    }
    return name;
  }
}

class Forward implements ForwardStats {
  private sniffer: FirstBytesSniffer | undefined = new FirstBytesSniffer();
  /** Set once the forward is named; until then its bytes wait. */
  private name: string | undefined;
  private reported = 0;
  private closed = false;
  private takesWhileSniffing = 0;

  constructor(
    private readonly stats: TransferStats,
    readonly generation: number,
    private readonly namer: HostNamer,
    private readonly dialHost: string | undefined,
    private readonly counters: (() => ByteCounts) | undefined,
  ) {}

  get sniffing(): boolean {
    return this.sniffer !== undefined && !this.closed && this.stats.isCurrent(this.generation);
  }

  get live(): boolean {
    return this.counters !== undefined;
  }

  sniff(chunk: Uint8Array): void {
    if (!this.sniffing) return;
    const result = this.sniffer!.push(chunk);
    if (result.kind === 'found') this.nameAs(result.domain);
    else if (result.kind === 'none') this.nameAs(this.dialHost);
  }

  close(bytesUp: number, bytesDown: number): void {
    if (this.closed) return;
    this.closed = true;
    this.stats.forget(this);
    if (!this.stats.isCurrent(this.generation)) return;
    if (this.name === undefined) this.nameAs(this.dialHost);
    this.accrue(byteCount(bytesUp) + byteCount(bytesDown));
  }

  /** At a status request: counts what the forward carried since the last one. */
  onTake(): void {
    if (this.closed || this.counters === undefined) return;
    if (this.name === undefined) {
      if (++this.takesWhileSniffing < MAX_TAKES_WHILE_SNIFFING) return;
      this.nameAs(this.dialHost);
    }
    let counts: ByteCounts;
    try {
      counts = this.counters();
    } catch {
      return;
    }
    this.accrue(byteCount(counts.up) + byteCount(counts.down));
  }

  private nameAs(host: string | undefined): void {
    this.sniffer = undefined;
    this.name = this.namer.nameOf(host);
  }

  private accrue(total: number): void {
    const delta = total - this.reported;
    if (delta <= 0) return;
    this.reported = total;
    this.stats.add(this.name!, delta);
  }
}

/** A forward that counts nothing: no regexes, so nothing is recorded (as the reference does). */
const INERT_FORWARD: ForwardStats = {
  sniffing: false,
  sniff: () => undefined,
  close: () => undefined,
};

/**
 * The client's bytes per domain, handed to the status request. Give it the regexes of every handshake, open a
 * ForwardStats for every port forward, and pass it to the controller as its StatusReporter.
 */
export class TransferStats implements StatusReporter {
  private readonly maxDomains: number;
  private readonly dialHostFallback: boolean;
  private readonly timeoutMs: number;
  private readonly logger: Logger | undefined;
  private namer: HostNamer | undefined;
  private regexesKey = JSON.stringify([]);
  private generation = 0;
  private counts = new Map<string, number>();
  private readonly live = new Set<Forward>();
  private readonly takenIn = new WeakMap<StatusData, number>();

  constructor(opts: TransferStatsOptions = {}) {
    this.maxDomains = Math.max(1, Math.floor(opts.maxDomains ?? MAX_STATS_DOMAINS));
    this.dialHostFallback = opts.dialHostFallback ?? false;
    this.timeoutMs = opts.regexMatchTimeoutMs ?? REGEX_MATCH_TIMEOUT_MS;
    this.logger = opts.logger;
  }

  /** Whether bytes are being counted (the last handshake gave at least one usable regex). */
  get recording(): boolean {
    return this.namer !== undefined;
  }

  /**
   * The regexes of a handshake (HandshakeResult.domainRegexes). The same set again keeps what was counted; a
   * different set drops it, and forwards opened under the old set count no more, since a server accepts only
   * names made with its sponsor's current regexes.
   */
  setRegexes(regexes: readonly DomainRegex[]): void {
    const key = JSON.stringify(regexes.map((r) => [r.regex, r.replace]));
    if (key === this.regexesKey) return;
    this.regexesKey = key;
    this.generation++;
    this.counts = new Map();
    this.live.clear();
    const usable = regexes.filter((r) => r.regex.length <= MAX_DOMAIN_REGEX_LENGTH);
    const compiled = compileDomainRegexes(usable);
    this.namer = compiled.length > 0 ? new HostNamer(compiled, this.timeoutMs, this.logger) : undefined;
  }

  /**
   * Starts counting a port forward to `dialHost`. `counters`, when given, reads the forward's byte totals so far,
   * so that a long-lived forward is reported at each status request and not only when it closes.
   */
  openForward(dialHost: string, counters?: () => ByteCounts): ForwardStats {
    if (this.namer === undefined) return INERT_FORWARD;
    const fallback = this.dialHostFallback ? normalizeHostName(dialHost) : undefined;
    const liveCounters = counters !== undefined && this.live.size < MAX_LIVE_FORWARDS ? counters : undefined;
    const forward = new Forward(this, this.generation, this.namer, fallback, liveCounters);
    if (forward.live) this.live.add(forward);
    return forward;
  }

  /** StatusReporter: the bytes per name counted since the last take, or undefined when there are none. */
  take(): StatusData | undefined {
    for (const forward of this.live) forward.onTake();
    if (this.counts.size === 0) return undefined;
    const hostBytes: Record<string, number> = {};
    for (const [name, bytes] of this.counts) setOwn(hostBytes, name, bytes);
    this.counts = new Map();
    const data: StatusData = { hostBytes };
    this.takenIn.set(data, this.generation);
    return data;
  }

  /** StatusReporter: a take whose request failed; merged back unless the regex set has changed since. */
  putBack(data: StatusData): void {
    const generation = this.takenIn.get(data);
    this.takenIn.delete(data);
    if (this.namer === undefined || (generation !== undefined && generation !== this.generation)) return;
    for (const [name, bytes] of Object.entries(data.hostBytes)) {
      if (typeof bytes !== 'number') continue;
      const valid = name !== '' && name.length <= MAX_STATS_NAME_LENGTH;
      this.add(valid ? name : OTHER_HOST_STATS_NAME, byteCount(bytes));
    }
  }

  /** @internal */
  isCurrent(generation: number): boolean {
    return generation === this.generation && this.namer !== undefined;
  }

  /** @internal */
  forget(forward: Forward): void {
    this.live.delete(forward);
  }

  /** @internal Adds bytes under a name, or under "(OTHER)" once MAX_STATS_DOMAINS names are kept. */
  add(name: string, bytes: number): void {
    if (bytes <= 0) return;
    let key = name;
    if (!this.counts.has(key) && key !== OTHER_HOST_STATS_NAME) {
      // One place is kept for "(OTHER)", where the overflow goes.
      const room = this.maxDomains - (this.counts.has(OTHER_HOST_STATS_NAME) ? 0 : 1);
      if (this.counts.size >= room) key = OTHER_HOST_STATS_NAME;
    }
    this.counts.set(key, Math.min(Number.MAX_SAFE_INTEGER, (this.counts.get(key) ?? 0) + bytes));
  }
}

// ---- counting at the dialer ---------------------------------------------------------------------------------

type WriteCallback = (error?: Error | null) => void;
interface WritevChunk {
  chunk: unknown;
  encoding: BufferEncoding;
}

function chunkBytes(chunk: unknown, encoding: BufferEncoding): Buffer | undefined {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (typeof chunk === 'string') return Buffer.from(chunk, encoding);
  return undefined;
}

/**
 * Counts a forward's bytes where the reference does (transferstats.Conn wraps the tunnel's port-forward
 * conn): what goes into the stream's `_write`/`_writev` is upstream and is sniffed until named, what its
 * implementation `push`es is downstream. The stream's own methods are wrapped in place rather than put behind
 * another stream, so the relay path gains one function call per chunk and no copies. Closes the ForwardStats
 * when the stream closes.
 */
export function countForwardStream(stream: Duplex, stats: TransferStats, dialHost: string): void {
  if (!stats.recording) return;
  let up = 0;
  let down = 0;
  const forward = stats.openForward(dialHost, () => ({ up, down }));
  const sawUp = (bytes: Buffer | undefined): void => {
    if (bytes === undefined) return;
    up += bytes.length;
    if (forward.sniffing) forward.sniff(bytes);
  };

  const write = stream._write.bind(stream);
  stream._write = (chunk: unknown, encoding: BufferEncoding, callback: WriteCallback): void => {
    sawUp(chunkBytes(chunk, encoding));
    write(chunk, encoding, callback);
  };
  const writevOf: unknown = stream._writev;
  if (typeof writevOf === 'function') {
    const writev = (writevOf as (chunks: WritevChunk[], callback: WriteCallback) => void).bind(stream);
    stream._writev = (chunks: WritevChunk[], callback: WriteCallback): void => {
      for (const c of chunks) sawUp(chunkBytes(c.chunk, c.encoding));
      writev(chunks, callback);
    };
  }
  const push = stream.push.bind(stream);
  stream.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk !== null && chunk !== undefined) down += chunkBytes(chunk, encoding ?? 'utf8')?.length ?? 0;
    return push(chunk, encoding);
  };
  if (stream.closed) forward.close(up, down);
  else stream.once('close', () => forward.close(up, down));
}

/**
 * A TunnelDialer whose forwards are counted in `stats`: give it to the local proxies in place of the
 * controller, and every SOCKS, CONNECT and plain-HTTP forward is counted, however it is relayed.
 */
export function countingDialer(inner: TunnelDialer, stats: TransferStats): TunnelDialer {
  return {
    async dial(host: string, port: number, opts?: DialOptions): Promise<Duplex> {
      const stream = await inner.dial(host, port, opts);
      countForwardStream(stream, stats, host);
      return stream;
    },
  };
}
