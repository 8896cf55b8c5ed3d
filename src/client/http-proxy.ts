// The local HTTP proxy: CONNECT host:port (a raw forward, for HTTPS and anything else), and absolute-URI
// requests (`GET http://host/path`) forwarded to the origin through the TunnelDialer with the request line in
// origin form and hop-by-hop headers removed, keep-alive on both sides (upstream connections are pooled per
// destination), WebSocket upgrades as raw forwards.
// node:http parses the client side (with header size, count and time limits); the upstream side is
// http.request over an Agent whose connections are forwards from the dialer. Nothing here logs or reports a
// URL or path: the hooks see host and port only.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { describeDialFailure, dialFailureOf, type TunnelDialer } from './dialer.ts';
import {
  HttpProxyError,
  encodeRequestHead,
  filterHeaders,
  headerValue,
  parseAbsoluteTarget,
  parseAuthority,
  proxyAuthorizationOk,
  type AbsoluteTarget,
  type Authority,
} from './http-target.ts';
import {
  callHook,
  closeServer,
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

/** Most bytes of request line and headers a client may send (node's default is 16 KiB; cookies can be big). */
export const MAX_REQUEST_HEADER_BYTES = 32 * 1024;
/** Most header fields in one request. */
export const MAX_REQUEST_HEADERS = 256;
/** Most bytes of status line and headers an origin may send. */
export const MAX_RESPONSE_HEADER_BYTES = 64 * 1024;
/** Most header fields in one response. */
export const MAX_RESPONSE_HEADERS = 512;
/** An idle keep-alive client connection is closed after this long. */
export const CLIENT_KEEP_ALIVE_TIMEOUT_MS = 30_000;
/** An idle pooled upstream connection is closed after this long. */
export const UPSTREAM_IDLE_TIMEOUT_MS = 30_000;
/** Most idle pooled upstream connections per destination. */
export const MAX_IDLE_UPSTREAMS_PER_HOST = 16;
/** How often node checks for clients past their header deadline (and never less often than this). */
export const MAX_TIMEOUT_CHECK_INTERVAL_MS = 1000;

const PROXY_AUTHENTICATE = 'Basic realm="Postern", charset="UTF-8"';

export type HttpProxyOptions = LocalProxyOptions;

interface ProxyContext {
  opts: HttpProxyOptions;
  dialTimeoutMs: number;
  closing: AbortSignal;
  agent: TunnelAgent;
  /** Responses in progress per client socket: a parse error then cannot be answered in the middle of one. */
  busy: WeakMap<Duplex, number>;
}

/** The HTTP status for a failed dial. */
export function httpStatusFor(err: unknown): number {
  return dialFailureOf(err) === 'timeout' ? 504 : 502;
}

function dialErrorMessage(err: unknown, target: Authority): string {
  const where = net.isIPv6(target.host) ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
  return `could not connect to ${where}: ${describeDialFailure(dialFailureOf(err))}`;
}

// ---- upstream connections -------------------------------------------------------------------------------

/** The methods node's HTTP client and Agent call on a socket; a tunnel forward is a plain Duplex. */
const SOCKET_ONLY_METHODS = ['ref', 'unref', 'setKeepAlive', 'setNoDelay', 'setTimeout'] as const;

function returnThis(this: unknown): unknown {
  return this;
}

/** Gives a Duplex no-op versions of the socket methods it lacks, so node's Agent can pool it. */
function asAgentSocket(stream: Duplex): Duplex {
  const target = stream as unknown as Record<string, unknown>;
  for (const m of SOCKET_ONLY_METHODS) if (typeof target[m] !== 'function') target[m] = returnThis;
  return stream;
}

interface IdleState {
  timer: NodeJS.Timeout;
  onEnd: () => void;
}

/** An http.Agent whose connections are forwards from the dialer, pooled per host:port while idle. */
class TunnelAgent extends http.Agent {
  private readonly idle = new WeakMap<Duplex, IdleState>();

  constructor(
    private readonly dialer: TunnelDialer,
    private readonly dialTimeoutMs: number,
    private readonly closing: AbortSignal,
  ) {
    super({ keepAlive: true, maxFreeSockets: MAX_IDLE_UPSTREAMS_PER_HOST, scheduling: 'lifo' });
  }

  override createConnection(
    options: http.ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const host = typeof options.host === 'string' ? options.host : '';
    const port = Number(options.port);
    openForward(this.dialer, host, port, { timeoutMs: this.dialTimeoutMs, closing: this.closing }).then(
      (stream) => callback?.(null, asAgentSocket(stream)),
      (err: unknown) =>
        callback?.(err instanceof Error ? err : new Error(String(err)), undefined as unknown as Duplex),
    );
    return undefined;
  }

  override keepSocketAlive(socket: Duplex): boolean {
    super.keepSocketAlive(socket);
    // An idle forward whose far end closed is dead: drop it now rather than fail the next request on it.
    const onEnd = (): void => {
      socket.destroy();
    };
    socket.once('end', onEnd);
    const timer = setTimeout(() => socket.destroy(), UPSTREAM_IDLE_TIMEOUT_MS);
    timer.unref();
    this.idle.set(socket, { timer, onEnd });
    // A paused idle socket would never see its end: let it flow (nothing should arrive, and nothing is read).
    socket.resume();
    return true;
  }

  override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    const state = this.idle.get(socket);
    if (state) {
      clearTimeout(state.timer);
      socket.off('end', state.onEnd);
      this.idle.delete(socket);
    }
    super.reuseSocket(socket, request);
  }
}

// ---- responses the proxy makes itself --------------------------------------------------------------------

function errorBody(message: string): string {
  return `Postern proxy: ${message}\n`;
}

function sendError(res: ServerResponse, status: number, message: string, closeAfter: boolean): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(message);
  const headers: http.OutgoingHttpHeaders = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  };
  if (status === 407) headers['Proxy-Authenticate'] = PROXY_AUTHENTICATE;
  if (closeAfter) headers['Connection'] = 'close';
  res.writeHead(status, headers);
  res.end(body);
}

/** An error response on a raw socket (CONNECT, upgrades, parse errors), then close. */
function sendRawError(socket: Duplex, status: number, message: string): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = errorBody(message);
  const extra = status === 407 ? `Proxy-Authenticate: ${PROXY_AUTHENTICATE}\r\n` : '';
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\n` +
      `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Connection: close\r\n${extra}\r\n${body}`,
    () => socket.destroy(),
  );
}

/** Checks that hold for every kind of request: authentication, header count. */
function admit(req: IncomingMessage, ctx: ProxyContext): void {
  if (req.rawHeaders.length / 2 > MAX_REQUEST_HEADERS) {
    throw new HttpProxyError(431, `more than ${MAX_REQUEST_HEADERS} header fields`);
  }
  const creds = ctx.opts.credentials;
  if (creds && !proxyAuthorizationOk(headerValue(req.rawHeaders, 'proxy-authorization'), creds)) {
    throw new HttpProxyError(407, 'proxy authentication required');
  }
}

function statusOf(err: unknown): { status: number; message: string } {
  if (err instanceof HttpProxyError) return { status: err.status, message: err.message };
  return { status: 400, message: 'bad request' };
}

// ---- CONNECT and upgrades: raw forwards ------------------------------------------------------------------

function rawForward(
  ctx: ProxyContext,
  socket: net.Socket,
  target: Authority,
  first: { reply?: string; upstreamHead?: string },
  head: Buffer,
): void {
  socket.setNoDelay(true);
  openForward(ctx.opts.dialer, target.host, target.port, {
    timeoutMs: ctx.dialTimeoutMs,
    closing: ctx.closing,
    client: socket,
  }).then(
    (upstream) => {
      if (socket.destroyed) {
        upstream.destroy();
        return;
      }
      callHook(ctx.opts.onConnection, { host: target.host, port: target.port });
      if (first.reply) socket.write(first.reply);
      if (first.upstreamHead) upstream.write(first.upstreamHead);
      relay(socket, upstream, {
        head,
        onDone: (r) => callHook(ctx.opts.onForwardClosed, { host: target.host, port: target.port, ...r }),
      });
    },
    (err: unknown) => sendRawError(socket, httpStatusFor(err), dialErrorMessage(err, target)),
  );
}

function onConnect(ctx: ProxyContext, req: IncomingMessage, duplex: Duplex, head: Buffer): void {
  duplex.on('error', () => duplex.destroy());
  if (!(duplex instanceof net.Socket)) {
    duplex.destroy();
    return;
  }
  let target: Authority;
  try {
    admit(req, ctx);
    target = parseAuthority(req.url ?? '');
  } catch (err) {
    const { status, message } = statusOf(err);
    sendRawError(duplex, status, message);
    return;
  }
  rawForward(ctx, duplex, target, { reply: 'HTTP/1.1 200 Connection established\r\n\r\n' }, head);
}

function onUpgrade(ctx: ProxyContext, req: IncomingMessage, duplex: Duplex, head: Buffer): void {
  duplex.on('error', () => duplex.destroy());
  if (!(duplex instanceof net.Socket)) {
    duplex.destroy();
    return;
  }
  const method = req.method ?? 'GET';
  let target: AbsoluteTarget;
  try {
    admit(req, ctx);
    target = parseAbsoluteTarget(req.url ?? '', method);
  } catch (err) {
    const { status, message } = statusOf(err);
    sendRawError(duplex, status, message);
    return;
  }
  const websocket = /(?:^|,)\s*websocket\s*(?:,|$)/i.test(headerValue(req.rawHeaders, 'upgrade') ?? '');
  // A WebSocket handshake goes through with its Upgrade; any other upgrade (h2c) is dropped and the exchange
  // becomes a plain one-request forward that closes afterwards.
  const headers = websocket
    ? ['Host', target.hostHeader, ...filterHeaders(req.rawHeaders, { drop: ['host'], keepUpgrade: true })]
    : [
        'Host',
        target.hostHeader,
        ...filterHeaders(req.rawHeaders, { drop: ['host'] }),
        'Connection',
        'close',
      ];
  rawForward(ctx, duplex, target, { upstreamHead: encodeRequestHead(method, target.path, headers) }, head);
}

// ---- absolute-URI requests -------------------------------------------------------------------------------

const RETRYABLE_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

function hasRequestBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function onRequest(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  ctx.busy.set(socket, (ctx.busy.get(socket) ?? 0) + 1);
  res.once('close', () => ctx.busy.set(socket, (ctx.busy.get(socket) ?? 1) - 1));
  res.sendDate = false;

  const method = req.method ?? 'GET';
  const withBody = hasRequestBody(req);
  let target: AbsoluteTarget;
  try {
    admit(req, ctx);
    // TRACE would echo the request (cookies included) back to whatever script sent it.
    if (method === 'TRACE') throw new HttpProxyError(405, 'TRACE is not forwarded');
    target = parseAbsoluteTarget(req.url ?? '', method);
  } catch (err) {
    const { status, message } = statusOf(err);
    // Only a client asked for credentials is expected to try again on the same connection.
    sendError(res, status, message, withBody || status !== 407);
    return;
  }
  const headers = [
    'Host',
    target.hostHeader,
    // Expect: node's server has already answered 100 Continue; the body follows regardless.
    ...filterHeaders(req.rawHeaders, { drop: ['host', 'expect'] }),
  ];

  let bytesUp = 0;
  let bytesDown = 0;
  let forwarded = false;
  if (withBody) req.on('data', (chunk: Buffer) => (bytesUp += chunk.length));
  res.once('close', () => {
    if (forwarded) {
      callHook(ctx.opts.onForwardClosed, { host: target.host, port: target.port, bytesUp, bytesDown });
    }
  });

  const send = (attempt: number): void => {
    let upstream: http.ClientRequest;
    try {
      upstream = http.request({
        agent: ctx.agent,
        host: target.host,
        port: target.port,
        method,
        path: target.path,
        headers,
        setHost: false,
        maxHeaderSize: MAX_RESPONSE_HEADER_BYTES,
      });
    } catch {
      // node refuses some paths and header values that its parser let through (e.g. unescaped characters).
      sendError(res, 400, 'request target or header not valid', withBody);
      return;
    }
    upstream.maxHeadersCount = MAX_RESPONSE_HEADERS + 1;
    let responded = false;

    upstream.once('socket', () => {
      if (!forwarded) {
        forwarded = true;
        callHook(ctx.opts.onConnection, { host: target.host, port: target.port });
      }
    });

    upstream.on('response', (upres: IncomingMessage) => {
      responded = true;
      if (upres.rawHeaders.length / 2 > MAX_RESPONSE_HEADERS) {
        upres.destroy();
        sendError(res, 502, `the server sent more than ${MAX_RESPONSE_HEADERS} header fields`, true);
        return;
      }
      upres.on('error', () => res.destroy());
      upres.on('aborted', () => res.destroy());
      upres.on('data', (chunk: Buffer) => (bytesDown += chunk.length));
      res.writeHead(upres.statusCode ?? 502, upres.statusMessage, filterHeaders(upres.rawHeaders));
      upres.pipe(res);
    });

    upstream.on('error', (err: Error) => {
      if (res.writableEnded) return;
      const code = (err as NodeJS.ErrnoException).code ?? '';
      // A pooled connection that the origin closed as we reused it: send once more on a fresh one.
      if (
        !responded &&
        !withBody &&
        attempt === 0 &&
        upstream.reusedSocket &&
        RETRYABLE_CODES.has(code) &&
        !res.headersSent
      ) {
        send(attempt + 1);
        return;
      }
      if (responded) res.destroy();
      else sendError(res, httpStatusFor(err), dialErrorMessage(err, target), withBody);
    });

    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });

    if (withBody) req.pipe(upstream);
    else upstream.end();
  };
  send(0);
}

function onClientError(ctx: ProxyContext, err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable || (ctx.busy.get(socket) ?? 0) > 0) {
    socket.destroy();
    return;
  }
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      sendRawError(socket, 431, 'request headers too large');
      return;
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      sendRawError(socket, 408, 'request headers took too long');
      return;
    default:
      sendRawError(socket, 400, 'malformed HTTP request');
  }
}

/** Starts an HTTP proxy (CONNECT and absolute-URI requests) on 127.0.0.1 unless told otherwise. */
export async function startHttpProxy(opts: HttpProxyOptions): Promise<LocalProxy> {
  const closing = new AbortController();
  const dialTimeoutMs = opts.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const ctx: ProxyContext = {
    opts,
    dialTimeoutMs,
    closing: closing.signal,
    agent: new TunnelAgent(opts.dialer, dialTimeoutMs, closing.signal),
    busy: new WeakMap(),
  };
  const server = http.createServer({
    maxHeaderSize: MAX_REQUEST_HEADER_BYTES,
    headersTimeout: handshakeTimeoutMs,
    // Uploads through the proxy may take as long as they take.
    requestTimeout: 0,
    keepAliveTimeout: CLIENT_KEEP_ALIVE_TIMEOUT_MS,
    connectionsCheckingInterval: Math.max(
      10,
      Math.min(MAX_TIMEOUT_CHECK_INTERVAL_MS, Math.floor(handshakeTimeoutMs / 4)),
    ),
    noDelay: true,
  });
  // One more than the limit, so that a request over it is seen (node silently drops fields past the count).
  server.maxHeadersCount = MAX_REQUEST_HEADERS + 1;
  server.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const sockets = trackConnections(server);
  server.on('request', (req: IncomingMessage, res: ServerResponse) => onRequest(ctx, req, res));
  server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    onConnect(ctx, req, socket, head),
  );
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    onUpgrade(ctx, req, socket, head),
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => onClientError(ctx, err, socket));
  server.on('error', () => {});
  const address = await listen(server, opts.host ?? DEFAULT_LISTEN_HOST, opts.port ?? 0);
  return {
    address,
    close: () => {
      closing.abort(new Error('proxy closed'));
      ctx.agent.destroy();
      return closeServer(server, sockets);
    },
  };
}
