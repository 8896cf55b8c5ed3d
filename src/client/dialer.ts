// What the local proxies need from the tunnel: a way to open a port forward to host:port. The tunnel implements
// TunnelDialer; DirectDialer (plain TCP) is the baseline that tests and benchmarks put in its place.
// A failed dial is described by a DialFailure so that each proxy can answer its client with the matching reply
// (SOCKS reply code, HTTP status) without knowing where the error came from.

import net from 'node:net';
import type { Duplex } from 'node:stream';
import { PosternError, describeError } from '../common/errors.ts';

export interface DialOptions {
  /** Aborts a dial still in progress (the client went away, the proxy is closing, or a timeout). */
  signal?: AbortSignal;
}

export interface TunnelDialer {
  /**
   * Opens a port forward through the tunnel to host:port (host may be a domain name, IPv4 or IPv6). Rejects with
   * a typed error when the tunnel refuses or is down.
   */
  dial(host: string, port: number, opts?: DialOptions): Promise<Duplex>;
}

/**
 * Why a dial failed, in the terms a proxy can tell its client:
 * - refused: the destination or the tunnel server refused the forward (SOCKS 0x05);
 * - host-unreachable: the name did not resolve or the host did not answer (SOCKS 0x04);
 * - network-unreachable: no route to the destination network (SOCKS 0x03);
 * - not-allowed: a rule forbids this destination (SOCKS 0x02);
 * - timeout: the dial took too long (SOCKS 0x04, HTTP 504);
 * - tunnel-down: there is no tunnel to dial through (SOCKS 0x01);
 * - failed: anything else (SOCKS 0x01).
 */
export type DialFailure =
  | 'refused'
  | 'host-unreachable'
  | 'network-unreachable'
  | 'not-allowed'
  | 'timeout'
  | 'tunnel-down'
  | 'failed';

/** A failed dial; tunnel dialers should throw this, and any other error is classified by dialFailureOf. */
export class DialError extends PosternError {
  readonly failure: DialFailure;
  constructor(failure: DialFailure, message: string, options?: { cause?: unknown }) {
    super('DIAL_FAILED', message, options);
    this.name = 'DialError';
    this.failure = failure;
  }
}

const SYSTEM_ERROR_FAILURES: Readonly<Record<string, DialFailure>> = {
  ECONNREFUSED: 'refused',
  ECONNRESET: 'refused',
  EHOSTUNREACH: 'host-unreachable',
  EHOSTDOWN: 'host-unreachable',
  ENOTFOUND: 'host-unreachable',
  EAI_AGAIN: 'host-unreachable',
  EAI_FAIL: 'host-unreachable',
  EAI_NONAME: 'host-unreachable',
  EAI_NODATA: 'host-unreachable',
  ENETUNREACH: 'network-unreachable',
  ENETDOWN: 'network-unreachable',
  EADDRNOTAVAIL: 'network-unreachable',
  ETIMEDOUT: 'timeout',
  EACCES: 'not-allowed',
  EPERM: 'not-allowed',
};

/** Maps any error a dialer may reject with to a DialFailure. */
export function dialFailureOf(err: unknown): DialFailure {
  if (err instanceof DialError) return err.failure;
  if (err instanceof PosternError) {
    switch (err.code) {
      // The tunnel server refused the channel (the reference client answers SOCKS "connection refused" too).
      case 'REFUSED':
        return 'refused';
      case 'TIMEOUT':
        return 'timeout';
      case 'CLOSED':
        return 'tunnel-down';
      default:
        return 'failed';
    }
  }
  if (err instanceof Error) {
    if (err.name === 'TimeoutError') return 'timeout';
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return SYSTEM_ERROR_FAILURES[code] ?? 'failed';
  }
  return 'failed';
}

/** A few words for a person: what went wrong with the dial (used in HTTP error bodies). */
export function describeDialFailure(failure: DialFailure): string {
  switch (failure) {
    case 'refused':
      return 'connection refused';
    case 'host-unreachable':
      return 'host unreachable or unknown';
    case 'network-unreachable':
      return 'network unreachable';
    case 'not-allowed':
      return 'destination not allowed';
    case 'timeout':
      return 'timed out';
    case 'tunnel-down':
      return 'tunnel is not connected';
    case 'failed':
      return 'connection failed';
  }
}

export interface DirectDialerOptions {
  /** Give up a TCP connect after this long (0: only the OS's own timeout). */
  connectTimeoutMs?: number;
}

/** Default connect timeout of DirectDialer. */
export const DIRECT_CONNECT_TIMEOUT_MS = 30_000;

/** Plain TCP from this machine: the baseline for tests and benchmarks, and what a tunnel replaces. */
export class DirectDialer implements TunnelDialer {
  private readonly connectTimeoutMs: number;
  constructor(opts: DirectDialerOptions = {}) {
    this.connectTimeoutMs = opts.connectTimeoutMs ?? DIRECT_CONNECT_TIMEOUT_MS;
  }

  dial(host: string, port: number, opts: DialOptions = {}): Promise<Duplex> {
    const { signal } = opts;
    return new Promise<Duplex>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new DialError('failed', 'dial aborted', { cause: signal.reason }));
        return;
      }
      // allowHalfOpen: the relay forwards each direction's end separately.
      const socket = net.connect({ host, port, noDelay: true, allowHalfOpen: true });
      let timer: NodeJS.Timeout | undefined;
      const settle = (err: DialError | null): void => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        if (err) {
          socket.destroy();
          reject(err);
        } else {
          resolve(socket);
        }
      };
      const onConnect = (): void => settle(null);
      const onError = (e: Error): void =>
        settle(new DialError(dialFailureOf(e), `connect failed: ${describeError(e)}`, { cause: e }));
      const onAbort = (): void =>
        settle(
          new DialError(dialFailureOf(signal?.reason), `dial aborted: ${describeError(signal?.reason)}`, {
            cause: signal?.reason,
          }),
        );
      socket.once('connect', onConnect);
      socket.once('error', onError);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (this.connectTimeoutMs > 0) {
        timer = setTimeout(
          () => settle(new DialError('timeout', `connect timed out after ${this.connectTimeoutMs} ms`)),
          this.connectTimeoutMs,
        );
      }
    });
  }
}
