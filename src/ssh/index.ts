// The SSH layer: Psiphon-compatible SSH connections (server and client) over any byte-stream transport.
export {
  acceptSshConnection,
  loadRsaHostKey,
  NO_SPLIT_TUNNEL_CHANNEL_TYPE,
  SshServerConnection,
} from './server-connection.ts';
export type {
  AuthResult,
  DirectTcpipRequest,
  SshServerLimits,
  SshServerOptions,
} from './server-connection.ts';
export { connectSsh, DEFAULT_CLIENT_CHANNEL_WINDOW, SshClientConnection } from './client-connection.ts';
export type { DirectTcpipOptions, SshClientOptions } from './client-connection.ts';
export { ChannelOpenError, SshConnection } from './connection.ts';
export type { ConnectionStats, RequestOptions, SshConnectionEvents } from './connection.ts';
export { ChannelStream, CHANNEL_MAX_PACKET, DEFAULT_CHANNEL_WINDOW } from './channel-stream.ts';
export {
  CLIENT_CAPABILITY_SERVER_REQUESTS,
  constantTimeEquals,
  encodeSshPasswordPayload,
  parseSshPasswordPayload,
  psiphonPasswordAuthenticator,
} from './password-payload.ts';
export type { SshPasswordPayload } from './password-payload.ts';
export { CHANNEL_OPEN_FAILURE, MAX_GLOBAL_REQUEST_PAYLOAD, SSH_MAX_PACKET_LENGTH } from './wire.ts';
export { ssh2BindingAvailable } from './ssh2-tuning.ts';
export { HYBRID_KEX } from './hybrid-kex.ts';
export type { AlgorithmPreferences } from './algorithms.ts';
