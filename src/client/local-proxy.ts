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

/** Dials in progress per proxy (keyed by its closing signal): one 'abort' listener per proxy, not one per dial. */
const dialsByClosing = new WeakMap<AbortSignal, Set<ForwardDial>>();

function trackDial(closing: AbortSignal, dial: ForwardDial): void {
  let dials = dialsByClosing.get(closing);
  if (!dials) {
    const set = new Set<ForwardDial>();
    dialsByClosing.set(closing, set);
    closing.addEventListener(
      'abort',
      () => {
        for (const d of [...set]) d.giveUp(new DialError('failed', 'the proxy is closing'));
      },
      { once: true },
    );
    dials = set;
  }
  dials.add(dial);
}

/**
 * One dial of openForward. A class with its listeners assigned once, because this runs for every new connection:
 * AbortSignal listeners and named closures are costly until the code is optimised (see common/stream-pump.ts).
 */
class ForwardDial {
  readonly promise: Promise<Duplex>;
  private resolve!: (stream: Duplex) => void;
  private reject!: (err: unknown) => void;
  private settled = false;
  private readonly ac = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly onClientClose: () => void;

  constructor(
    private readonly opts: OpenForwardOptions,
    dialer: TunnelDialer,
    host: string,
    port: number,
  ) {
    this.promise = new Promise<Duplex>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.onClientClose = () => this.giveUp(new DialError('failed', 'the client went away'));
    this.timer = setTimeout(
      () => this.giveUp(new DialError('timeout', `no forward after ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    // The proxy's listener keeps the process alive; an unreferenced timer spares Node a timer list per dial.
    this.timer.unref();
    trackDial(opts.closing, this);
    opts.client?.once('close', this.onClientClose);
    if (opts.closing.aborted) this.giveUp(new DialError('failed', 'the proxy is closing'));
    else if (opts.client?.destroyed) this.onClientClose();
    if (this.settled) return;
    let dialing: Promise<Duplex>;
    try {
      dialing = dialer.dial(host, port, { signal: this.ac.signal });
    } catch (err) {
      dialing = Promise.reject(err);
    }
    dialing.then(
      (stream) => {
        if (this.settled) {
          stream.destroy();
          return;
        }
        this.cleanup();
        this.resolve(stream);
      },
      (err: unknown) => {
        if (this.settled) return;
        this.cleanup();
        this.reject(err);
      },
    );
  }

  giveUp(err: DialError): void {
    if (this.settled) return;
    this.cleanup();
    this.ac.abort(err);
    this.reject(err);
  }

  private cleanup(): void {
    this.settled = true;
    clearTimeout(this.timer);
    dialsByClosing.get(this.opts.closing)?.delete(this);
    this.opts.client?.off('close', this.onClientClose);
  }
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
  return new ForwardDial(opts, dialer, host, port).promise;
}
