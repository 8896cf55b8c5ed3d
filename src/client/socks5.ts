// The local SOCKS proxy: SOCKS5 (RFC 1928) with no authentication or username/password (RFC 1929), and
// SOCKS4/4a CONNECT for clients such as `curl --socks4a`. CONNECT requests become forwards through the
// TunnelDialer; BIND is refused, and UDP ASSOCIATE is refused until the tunnel carries UDP (see
// `handleRequest`, where it will plug in).
// Each client is a small state machine over a bounded buffer: a client that sends garbage, too much, or too
// slowly costs one closed connection.

import net from 'node:net';
import type { Duplex } from 'node:stream';
import { dialFailureOf, type DialFailure } from './dialer.ts';
import {
  callHook,
  closeServer,
  credentialsMatch,
  DEFAULT_DIAL_TIMEOUT_MS,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_LISTEN_HOST,
  DEFAULT_MAX_CONNECTIONS,
  listen,
  openForward,
  trackConnections,
  type LocalProxy,
  type LocalProxyOptions,
} from './local-proxy.ts';
import { relay } from './relay.ts';
import {
  encodeMethodSelection,
  encodeSocks4Reply,
  encodeSocks5Reply,
  encodeUserPassStatus,
  METHOD_NO_AUTH,
  METHOD_NONE_ACCEPTABLE,
  METHOD_USERPASS,
  parseSocks4Request,
  parseSocks5Greeting,
  parseSocks5Request,
  parseUserPass,
  REPLY,
  SOCKS4_GRANTED,
  SOCKS4_REJECTED,
  SocksProtocolError,
  socksVersionOf,
  type Parsed,
  type SocksRequest,
} from './socks-protocol.ts';

/**
 * Most bytes we hold for a handshake still in progress. The largest legal sequence (greeting 257 + auth 513 +
 * request 262, all sent at once) fits; anything bigger is not a SOCKS client.
 */
export const MAX_HANDSHAKE_BUFFER = 2048;

export type SocksProxyOptions = LocalProxyOptions;

/** The SOCKS5 reply for a failed dial (the reference answers "connection refused" when the server refuses). */
export function socks5ReplyFor(failure: DialFailure): number {
  switch (failure) {
    case 'refused':
      return REPLY.CONNECTION_REFUSED;
    case 'host-unreachable':
    case 'timeout':
      return REPLY.HOST_UNREACHABLE;
    case 'network-unreachable':
      return REPLY.NETWORK_UNREACHABLE;
    case 'not-allowed':
      return REPLY.NOT_ALLOWED;
    case 'tunnel-down':
    case 'failed':
      return REPLY.GENERAL_FAILURE;
  }
}

type Stage = 'version' | 'greeting' | 'auth' | 'request' | 'socks4' | 'done';

interface ServerContext {
  opts: SocksProxyOptions;
  handshakeTimeoutMs: number;
  dialTimeoutMs: number;
  /** Aborted by close(): dials in progress give up. */
  closing: AbortSignal;
}

/** One client connection, from its first byte to the start of the relay. */
class SocksConnection {
  private stage: Stage = 'version';
  private buffer: Buffer = Buffer.alloc(0);
  private readonly timer: NodeJS.Timeout;
  // Assigned in the constructor rather than as a named arrow field: the development runner (tsx) pays an
  // Object.defineProperty per named closure, once per connection here (see common/stream-pump.ts).
  private readonly onData: (chunk: Buffer) => void;

  constructor(
    private readonly socket: net.Socket,
    private readonly ctx: ServerContext,
  ) {
    this.onData = (chunk) => this.receive(chunk);
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    socket.on('data', this.onData);
    // A client that ends before its request is complete gets nothing more.
    socket.once('end', () => {
      if (this.stage !== 'done') socket.destroy();
    });
    this.timer = setTimeout(() => socket.destroy(), ctx.handshakeTimeoutMs);
    // Unreferenced: the listening proxy keeps the process alive anyway, and Node keeps the timer list of an
    // unreferenced timer when it empties instead of dropping and rebuilding it for every connection.
    this.timer.unref();
    socket.once('close', () => clearTimeout(this.timer));
  }

  private receive(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    try {
      this.advance();
    } catch (err) {
      this.refuse(err);
      return;
    }
    if (this.stage !== 'done' && this.buffer.length > MAX_HANDSHAKE_BUFFER) this.socket.destroy();
  }

  /** Parses as many handshake messages as the buffer holds. */
  private advance(): void {
    for (;;) {
      switch (this.stage) {
        case 'version':
          if (this.buffer.length === 0) return;
          this.stage = socksVersionOf(this.buffer[0] as number) === 5 ? 'greeting' : 'socks4';
          break;
        case 'greeting': {
          const greeting = this.take(parseSocks5Greeting(this.buffer));
          if (!greeting) return;
          const method = this.chooseMethod(greeting.methods);
          this.socket.write(encodeMethodSelection(method));
          if (method === METHOD_NONE_ACCEPTABLE) {
            this.finishWith(null);
            return;
          }
          this.stage = method === METHOD_USERPASS ? 'auth' : 'request';
          break;
        }
        case 'auth': {
          const creds = this.take(parseUserPass(this.buffer));
          if (!creds) return;
          const expected = this.ctx.opts.credentials;
          const ok = !expected || credentialsMatch(expected, creds.username, creds.password);
          this.socket.write(encodeUserPassStatus(ok));
          if (!ok) {
            this.finishWith(null);
            return;
          }
          this.stage = 'request';
          break;
        }
        case 'request': {
          const request = this.take(parseSocks5Request(this.buffer));
          if (!request) return;
          this.startRequest(request);
          return;
        }
        case 'socks4': {
          const request = this.take(parseSocks4Request(this.buffer));
          if (!request) return;
          this.startRequest(request);
          return;
        }
        case 'done':
          return;
      }
    }
  }

  /** Takes a parsed message's bytes off the buffer. */
  private take<T>(parsed: Parsed<T> | null): T | null {
    if (!parsed) return null;
    this.buffer = this.buffer.subarray(parsed.length);
    return parsed.value;
  }

  private chooseMethod(methods: readonly number[]): number {
    // With credentials configured they are required: other users of a shared machine can reach loopback too.
    if (this.ctx.opts.credentials) {
      return methods.includes(METHOD_USERPASS) ? METHOD_USERPASS : METHOD_NONE_ACCEPTABLE;
    }
    if (methods.includes(METHOD_NO_AUTH)) return METHOD_NO_AUTH;
    // A client that only offers username/password gets it, and any credentials pass.
    if (methods.includes(METHOD_USERPASS)) return METHOD_USERPASS;
    return METHOD_NONE_ACCEPTABLE;
  }

  /** The request is complete: stop reading (the rest stays in the socket until the relay) and act on it. */
  private startRequest(request: SocksRequest): void {
    this.stage = 'done';
    clearTimeout(this.timer);
    this.socket.off('data', this.onData);
    this.socket.pause();
    void this.handleRequest(request);
  }

  private async handleRequest(request: SocksRequest): Promise<void> {
    if (request.version === 4 && this.ctx.opts.credentials) {
      // SOCKS4 has no password: it cannot satisfy a proxy that requires one.
      this.finishWith(encodeSocks4Reply(SOCKS4_REJECTED));
      return;
    }
    switch (request.command) {
      case 'connect':
        await this.connect(request);
        return;
      case 'bind':
      case 'udp-associate':
        // UDP ASSOCIATE: answer here once the tunnel has a datagram channel (udpgw).
        this.finishWith(
          request.version === 5
            ? encodeSocks5Reply(REPLY.COMMAND_NOT_SUPPORTED)
            : encodeSocks4Reply(SOCKS4_REJECTED),
        );
        return;
    }
  }

  private async connect(request: SocksRequest): Promise<void> {
    const { socket, ctx } = this;
    const { host, port } = request;
    let upstream: Duplex;
    try {
      upstream = await openForward(ctx.opts.dialer, host, port, {
        timeoutMs: ctx.dialTimeoutMs,
        closing: ctx.closing,
        client: socket,
      });
    } catch (err) {
      const failure = dialFailureOf(err);
      this.finishWith(
        request.version === 5
          ? encodeSocks5Reply(socks5ReplyFor(failure))
          : encodeSocks4Reply(SOCKS4_REJECTED),
      );
      return;
    }
    if (socket.destroyed) {
      upstream.destroy();
      return;
    }
    callHook(ctx.opts.onConnection, { host, port });
    socket.write(
      request.version === 5 ? encodeSocks5Reply(REPLY.SUCCEEDED) : encodeSocks4Reply(SOCKS4_GRANTED),
    );
    const head = this.buffer;
    this.buffer = Buffer.alloc(0);
    relay(socket, upstream, {
      head,
      onDone: (r) => callHook(ctx.opts.onForwardClosed, { host, port, ...r }),
    });
  }

  private refuse(err: unknown): void {
    const reply = err instanceof SocksProtocolError ? err.reply : null;
    if (reply === null) {
      this.finishWith(null);
      return;
    }
    // The reply's format follows the stage: a SOCKS5 greeting gets a method selection, requests a reply.
    const bytes =
      this.stage === 'greeting'
        ? encodeMethodSelection(reply)
        : this.stage === 'socks4'
          ? encodeSocks4Reply(SOCKS4_REJECTED)
          : encodeSocks5Reply(reply);
    this.finishWith(bytes);
  }

  /** Sends a last message (if any) and closes. */
  private finishWith(last: Buffer | null): void {
    this.stage = 'done';
    clearTimeout(this.timer);
    this.socket.off('data', this.onData);
    if (this.socket.destroyed) return;
    // Destroy once the last bytes are out: with half-open sockets the client could otherwise keep it forever.
    const destroy = (): void => {
      this.socket.destroy();
    };
    if (last) this.socket.end(last, destroy);
    else this.socket.end(destroy);
  }
}

/** Starts a SOCKS proxy (SOCKS5, and SOCKS4/4a CONNECT) on 127.0.0.1 unless told otherwise. */
export async function startSocksProxy(opts: SocksProxyOptions): Promise<LocalProxy> {
  const closing = new AbortController();
  const ctx: ServerContext = {
    opts,
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    dialTimeoutMs: opts.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS,
    closing: closing.signal,
  };
  const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false });
  server.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const sockets = trackConnections(server);
  server.on('connection', (socket: net.Socket) => new SocksConnection(socket, ctx));
  // Accept errors (e.g. EMFILE) cost the connection being accepted, not the proxy.
  server.on('error', () => {});
  const address = await listen(server, opts.host ?? DEFAULT_LISTEN_HOST, opts.port ?? 0);
  return {
    address,
    close: () => {
      closing.abort(new Error('proxy closed'));
      return closeServer(server, sockets);
    },
  };
}
