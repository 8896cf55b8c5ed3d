// The client's public surface: the local SOCKS and HTTP proxies that applications point at, and the dialer
// interface through which they reach the tunnel.
export { startSocksProxy, socks5ReplyFor, MAX_HANDSHAKE_BUFFER } from './socks5.ts';
export type { SocksProxyOptions } from './socks5.ts';
export {
  startHttpProxy,
  httpStatusFor,
  MAX_REQUEST_HEADER_BYTES,
  MAX_REQUEST_HEADERS,
  MAX_RESPONSE_HEADER_BYTES,
  MAX_RESPONSE_HEADERS,
} from './http-proxy.ts';
export type { HttpProxyOptions } from './http-proxy.ts';
export {
  DEFAULT_DIAL_TIMEOUT_MS,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_LISTEN_HOST,
  DEFAULT_MAX_CONNECTIONS,
} from './local-proxy.ts';
export type {
  ForwardClosedInfo,
  ForwardInfo,
  LocalProxy,
  LocalProxyOptions,
  ProxyCredentials,
  ProxyHooks,
} from './local-proxy.ts';
export { DialError, DirectDialer, dialFailureOf, describeDialFailure } from './dialer.ts';
export type { DialFailure, DialOptions, DirectDialerOptions, TunnelDialer } from './dialer.ts';
export * from './api-client.ts';
export {
  TunnelController,
  reconnectDelayMs,
  usableTunnelProtocols,
  DEFAULT_CONTROLLER_TIMING,
  MAX_CONCURRENT_DIALS,
} from './controller.ts';
export type {
  ConnectedTunnelInfo,
  ControllerEvents,
  ControllerOptions,
  ControllerStatus,
  ControllerTiming,
  StatusReporter,
  TransferTotals,
  TunnelState,
} from './controller.ts';
export { ServerStore, SERVER_STORE_FILE, MAX_STORED_SERVER_ENTRIES } from './server-store.ts';
export type { ImportResult, ServerStoreLoadReport, ServerStoreOptions } from './server-store.ts';
export { IMPLEMENTED_TUNNEL_PROTOCOLS, Tunnel, TunnelDialError, dialTunnel } from './tunnel.ts';
export type { DialTunnelParams, TunnelDialTimeouts } from './tunnel.ts';
