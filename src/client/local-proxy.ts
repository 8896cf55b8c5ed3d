// What the SOCKS and HTTP proxies share: their options, the hooks through which the caller sees each forward
// (host and port only: the project never records URLs or paths), credential checks, and listening/closing with
// every open connection tracked so that close() leaves nothing behind.

import { createHash, timingSafeEqual } from 'node:crypto';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { DialError, type TunnelDialer } from './dialer.ts';

/** Where a forward goes. Deliberately no more than this: no URL, no path. */
export interface ForwardInfo {
  host: string;
  port: number;
}

export interface ForwardClosedInfo extends ForwardInfo {
  /** Payload bytes from the local application towards the destination. */
  bytesUp: number;
  /** Payload bytes from the destination to the local application. */
  bytesDown: number;
}

export interface ProxyHooks {
  /** A forward to host:port was opened through the dialer. */
  onConnection?: (info: ForwardInfo) => void;
  /** That forward ended. */
  onForwardClosed?: (info: ForwardClosedInfo) => void;
}

export interface ProxyCredentials {
  username: string;
  password: string;
}

/** Listen on loopback unless told otherwise: a proxy open to the network would be an open relay. */
export const DEFAULT_LISTEN_HOST = '127.0.0.1';
/** A client has this long to finish its SOCKS handshake or send its HTTP request headers. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 15_000;
/** A forward that the dialer has not opened after this long is given up (SOCKS host unreachable, HTTP 504). */
export const DEFAULT_DIAL_TIMEOUT_MS = 30_000;
/** Client connections open at once; more are refused by closing them. */
export const DEFAULT_MAX_CONNECTIONS = 2048;

export interface LocalProxyOptions extends ProxyHooks {
  dialer: TunnelDialer;
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Port to listen on (default 0: any free port). */
  port?: number;
  /** When set, clients must authenticate with these (SOCKS5 username/password, HTTP Proxy-Authorization Basic). */
  credentials?: ProxyCredentials;
  handshakeTimeoutMs?: number;
  dialTimeoutMs?: number;
  maxConnections?: number;
}

/** A running proxy. */
export interface LocalProxy {
  readonly address: AddressInfo;
  /** Stops listening, destroys every open client connection and forward, and resolves once the server closed. */
  close(): Promise<void>;
}

/** Calls a caller-supplied hook; a throwing hook must not take a connection (or the proxy) down with it. */
export function callHook<T>(hook: ((info: T) => void) | undefined, info: T): void {
  if (!hook) return;
  try {
    hook(info);
  } catch {
    // The hook's failure is the caller's business; the forward goes on.
  }
}

const digest = (b: Buffer | string): Buffer => createHash('sha256').update(b).digest();

/** Compares credentials in constant time (over digests, so lengths do not leak either). */
export function credentialsMatch(
  expected: ProxyCredentials,
  username: Buffer | string,
  password: Buffer | string,
): boolean {
  const userOk = timingSafeEqual(digest(expected.username), digest(username));
  const passOk = timingSafeEqual(digest(expected.password), digest(password));
  return userOk && passOk;
}

/** Starts `server` listening and resolves with its address. */
export function listen(server: net.Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const address = server.address();
      if (address === null || typeof address === 'string') {
        reject(new Error('server has no TCP address'));
        return;
      }
      resolve(address);
    });
  });
}

/** Keeps a set of the server's open client sockets, so close() can destroy them. */
export function trackConnections(server: net.Server): Set<net.Socket> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return sockets;
}

/** Stops listening, destroys the tracked sockets, resolves when the server has closed. */
export function closeServer(server: net.Server, sockets: Set<net.Socket>): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    for (const s of sockets) s.destroy();
    sockets.clear();
  });
}

export interface OpenForwardOptions {
  timeoutMs: number;
  /** Aborted when the proxy closes. */
  closing: AbortSignal;
  /** The client the forward is for: if it goes away, the dial is abandoned. */
  client?: net.Socket;
}

/**
 * Dials host:port with a deadline, giving up when the proxy closes or the client leaves. Settles even if the
 * dialer ignores its abort signal; a forward that opens after that is destroyed.
 */
export function openForward(
  dialer: TunnelDialer,
  host: string,
  port: number,
  opts: OpenForwardOptions,
): Promise<Duplex> {
  return new Promise<Duplex>((resolve, reject) => {
    const ac = new AbortController();
    let settled = false;
    const cleanup = (): void => {
      settled = true;
      clearTimeout(timer);
      opts.closing.removeEventListener('abort', onClosing);
      opts.client?.off('close', onClientClose);
    };
    const giveUp = (err: DialError): void => {
      if (settled) return;
      cleanup();
      ac.abort(err);
      reject(err);
    };
    const onClosing = (): void => giveUp(new DialError('failed', 'the proxy is closing'));
    const onClientClose = (): void => giveUp(new DialError('failed', 'the client went away'));
    const timer = setTimeout(
      () => giveUp(new DialError('timeout', `no forward after ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    opts.closing.addEventListener('abort', onClosing, { once: true });
    opts.client?.once('close', onClientClose);
    if (opts.closing.aborted) onClosing();
    else if (opts.client?.destroyed) onClientClose();
    if (settled) return;
    let dialing: Promise<Duplex>;
    try {
      dialing = dialer.dial(host, port, { signal: ac.signal });
    } catch (err) {
      dialing = Promise.reject(err);
    }
    dialing.then(
      (stream) => {
        if (settled) {
          stream.destroy();
          return;
        }
        cleanup();
        resolve(stream);
      },
      (err: unknown) => {
        if (settled) return;
        cleanup();
        reject(err);
      },
    );
  });
}
