// The server side of an SSH connection as psiphond runs it: RSA host key, password authentication only (the
// password is Psiphon's JSON payload, judged by the caller's `authenticate`), global requests as the tunnel
// API, and direct-tcpip channels (also Psiphon's no-split-tunnel variant) as port forwards. Nothing is served
// before authentication; the handshake, auth attempts and channel count are limited per connection.

import type { Duplex } from 'node:stream';
import keyParser, { type ParsedKey } from 'ssh2/lib/protocol/keyParser.js';
import type { MessageHandlers } from 'ssh2/lib/protocol/Protocol.js';
import { PosternError } from '../common/errors.ts';
import { serverOffer, RSA_HOST_KEY_ALGORITHMS, type AlgorithmPreferences } from './algorithms.ts';
import type { ChannelStream } from './channel-stream.ts';
import { DEFAULT_CHANNEL_WINDOW } from './channel-stream.ts';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_MAX_CHANNELS, SshConnection } from './connection.ts';
import { parseVersionString } from './version.ts';
import {
  CHANNEL_OPEN_FAILURE,
  DISCONNECT_REASON,
  parseDirectTcpipData,
  type ChannelOpenMessage,
  type DirectTcpipTarget,
} from './wire.ts';

/** Go's crypto/ssh default (MaxAuthTries), which psiphond uses. */
export const DEFAULT_MAX_AUTH_ATTEMPTS = 6;
/** Authentication requests of any method (including "none" probes) before the client is cut off. */
export const MAX_AUTH_REQUESTS = 20;
/** Longest user name or password we pass to `authenticate` (a Psiphon payload is a few hundred bytes). */
export const MAX_CREDENTIAL_LENGTH = 4096;
/** psiphon-tunnel-core's protocol.TCP_PORT_FORWARD_NO_SPLIT_TUNNEL_TYPE: direct-tcpip that must not split. */
export const NO_SPLIT_TUNNEL_CHANNEL_TYPE = 'direct-tcpip-no-split-tunnel@psiphon.ca';
const HOST_KEY_CACHE_SIZE = 8;

export type AuthResult<A> = { ok: true; value: A } | { ok: false; reason: string };

export interface DirectTcpipRequest extends DirectTcpipTarget {
  /** The client asked for Psiphon's no-split-tunnel variant: the server must not refuse it as split-tunnel. */
  noSplitTunnel: boolean;
}

export interface SshServerLimits {
  maxChannels: number;
  /** Until authentication succeeds; psiphond uses 30 s. */
  handshakeTimeoutMs: number;
  /** Failed password attempts before the connection is closed. */
  maxAuthAttempts: number;
  /** Receive window per channel. */
  channelWindow: number;
}

export interface SshServerOptions<A> {
  /** The RSA host key, PEM (PKCS#1 as in the reference's SSHPrivateKey, or PKCS#8). */
  hostKeyPem: string;
  /** Our identification string, "SSH-2.0-...". */
  serverVersion: string;
  /** Judges a password attempt; a thrown error counts as a failure. */
  authenticate(username: string, password: string): Promise<AuthResult<A>> | AuthResult<A>;
  /** Serves an API request after authentication: a reply payload, or null to refuse. Requests are served one at a
   * time, in order. */
  onGlobalRequest(name: string, payload: Buffer): Promise<Buffer | null> | Buffer | null;
  /** A port forward request; call exactly one of accept() or reject(). The channel number stays reserved (and
   * counts against maxChannels) until then. */
  onDirectTcpip(
    request: DirectTcpipRequest,
    accept: () => ChannelStream,
    reject: (reason?: number, description?: string) => void,
  ): void;
  /** Any other channel type (Psiphon has tun@psiphon.ca, random@psiphon.ca); refused when absent. */
  onChannelOpen?(
    type: string,
    extraData: Buffer,
    accept: () => ChannelStream,
    reject: (reason?: number, description?: string) => void,
  ): void;
  /** Offer Encrypt-then-MAC MACs (plain SSH); false under the OSSH obfuscator, like psiphond. Default true. */
  encryptThenMac?: boolean;
  /** Offer only these algorithms (each list a subset of the defaults in algorithms.ts). */
  algorithms?: AlgorithmPreferences;
  limits?: Partial<SshServerLimits>;
}

const hostKeyCache = new Map<string, ParsedKey>();

/** Parses (and caches) an RSA host key; throws BAD_KEY for anything else. */
export function loadRsaHostKey(pem: string): ParsedKey {
  const cached = hostKeyCache.get(pem);
  if (cached) return cached;
  const parsed = keyParser.parseKey(pem);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key instanceof Error) {
    throw new PosternError(
      'BAD_KEY',
      `cannot parse the SSH host key: ${key ? key.message : 'empty key file'}`,
    );
  }
  if (key.type !== 'ssh-rsa' || key.getPrivatePEM() === null) {
    throw new PosternError('BAD_KEY', `the SSH host key must be an RSA private key, not ${key.type}`);
  }
  if (hostKeyCache.size >= HOST_KEY_CACHE_SIZE) hostKeyCache.clear();
  hostKeyCache.set(pem, key);
  return key;
}

interface AuthAttempt {
  username: string;
  /** null for any method but "password" (and for oversized credentials, which are not kept). */
  password: string | null;
  /** Counts as a failed password attempt without asking `authenticate`. */
  tooLong: boolean;
}

export class SshServerConnection<A> extends SshConnection {
  /** What `authenticate` returned for the accepted attempt; null until then. */
  auth: A | null = null;
  /** The user name of the accepted attempt. */
  username: string | null = null;

  private readonly opts: SshServerOptions<A>;
  private readonly maxAuthAttempts: number;
  private serviceAccepted = false;
  private authFailures = 0;
  private authRequests = 0;
  private readonly authQueue: AuthAttempt[] = [];
  private authBusy = false;

  constructor(transport: Duplex, opts: SshServerOptions<A>) {
    const limits: SshServerLimits = {
      maxChannels: DEFAULT_MAX_CHANNELS,
      handshakeTimeoutMs: DEFAULT_HANDSHAKE_TIMEOUT_MS,
      maxAuthAttempts: DEFAULT_MAX_AUTH_ATTEMPTS,
      channelWindow: DEFAULT_CHANNEL_WINDOW,
      ...opts.limits,
    };
    const hostKey = loadRsaHostKey(opts.hostKeyPem);
    const hostKeys = Object.fromEntries(RSA_HOST_KEY_ALGORITHMS.map((alg) => [alg, hostKey]));
    super(
      transport,
      {
        role: 'server',
        maxChannels: limits.maxChannels,
        handshakeTimeoutMs: limits.handshakeTimeoutMs,
        channelWindow: limits.channelWindow,
      },
      {
        server: true,
        hostKeys,
        ident: parseVersionString(opts.serverVersion),
        offer: serverOffer({ encryptThenMac: opts.encryptThenMac ?? true, preferences: opts.algorithms }),
      },
    );
    this.opts = opts;
    this.maxAuthAttempts = limits.maxAuthAttempts;
    this.begin();
  }

  protected roleHandlers(): MessageHandlers {
    return {
      SERVICE_REQUEST: (_p, name) => this.onServiceRequest(name),
      USERAUTH_REQUEST: (_p, username, service, method, methodData) =>
        this.onAuthRequest(username, service, method, methodData),
    };
  }

  protected serveGlobalRequest(name: string, payload: Buffer): Promise<Buffer | null> {
    return Promise.resolve(this.opts.onGlobalRequest(name, payload));
  }

  protected onChannelOpen(msg: ChannelOpenMessage): void {
    if (!this.authenticated) {
      this.rejectOpen(msg.senderId, CHANNEL_OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED);
      return;
    }
    const isDirect = msg.type === 'direct-tcpip' || msg.type === NO_SPLIT_TUNNEL_CHANNEL_TYPE;
    let target: DirectTcpipTarget | null = null;
    if (isDirect) {
      try {
        target = parseDirectTcpipData(msg.extra);
      } catch (err) {
        this.rejectOpen(msg.senderId, CHANNEL_OPEN_FAILURE.CONNECT_FAILED, 'malformed direct-tcpip request');
        return;
      }
    } else if (!this.opts.onChannelOpen) {
      this.rejectOpen(
        msg.senderId,
        CHANNEL_OPEN_FAILURE.UNKNOWN_CHANNEL_TYPE,
        `unknown channel type ${msg.type}`,
      );
      return;
    }
    const localId = this.reserveChannel();
    if (localId === null) {
      this.rejectOpen(msg.senderId, CHANNEL_OPEN_FAILURE.RESOURCE_SHORTAGE, 'too many channels');
      return;
    }
    let decided = false;
    const accept = (): ChannelStream => {
      if (decided) throw new PosternError('BAD_ARGUMENT', 'channel open already answered');
      if (this.isClosed)
        throw new PosternError('CLOSED', 'SSH connection closed before the channel was accepted');
      decided = true;
      return this.acceptReserved(localId, msg);
    };
    const reject = (reason: number = CHANNEL_OPEN_FAILURE.CONNECT_FAILED, description = ''): void => {
      if (decided) return;
      decided = true;
      this.releaseReservation(localId);
      this.rejectOpen(msg.senderId, reason, description);
    };
    if (target) {
      this.opts.onDirectTcpip(
        { ...target, noSplitTunnel: msg.type === NO_SPLIT_TUNNEL_CHANNEL_TYPE },
        accept,
        reject,
      );
    } else {
      this.opts.onChannelOpen!(msg.type, msg.extra, accept, reject);
    }
  }

  private onServiceRequest(name: string): void {
    if (this.negotiated === null || this.serviceAccepted || this.authenticated || name !== 'ssh-userauth') {
      this.disconnect(
        DISCONNECT_REASON.SERVICE_NOT_AVAILABLE,
        new PosternError('SSH_PROTOCOL', `unexpected service request ${JSON.stringify(name)}`),
      );
      return;
    }
    this.serviceAccepted = true;
    this.proto.serviceAccept(name);
  }

  private onAuthRequest(username: string, service: string, method: string, methodData: unknown): void {
    if (this.authenticated) return; // RFC 4252 section 5.1: requests after success are ignored
    if (!this.serviceAccepted || service !== 'ssh-connection') {
      this.disconnect(
        DISCONNECT_REASON.SERVICE_NOT_AVAILABLE,
        new PosternError('SSH_PROTOCOL', `authentication request for service ${JSON.stringify(service)}`),
      );
      return;
    }
    // A client may send requests without waiting for answers (RFC 4252 section 5); the total is what we bound.
    if (++this.authRequests > MAX_AUTH_REQUESTS) {
      this.disconnect(
        DISCONNECT_REASON.NO_MORE_AUTH_METHODS_AVAILABLE,
        new PosternError('AUTH_FAILED', 'too many authentication requests'),
      );
      return;
    }
    // ssh2 hands a password change request as an object: we never change passwords, so it fails like any other
    // method but "password".
    const password = method === 'password' && typeof methodData === 'string' ? methodData : null;
    const tooLong =
      username.length > MAX_CREDENTIAL_LENGTH || (password?.length ?? 0) > MAX_CREDENTIAL_LENGTH;
    this.authQueue.push(
      tooLong ? { username: '', password: null, tooLong } : { username, password, tooLong },
    );
    if (!this.authBusy) void this.processAuth();
  }

  /** Answers authentication requests in order (ssh2 matches replies to requests by order). */
  private async processAuth(): Promise<void> {
    this.authBusy = true;
    try {
      for (
        let attempt = this.authQueue.shift();
        attempt && !this.isClosed;
        attempt = this.authQueue.shift()
      ) {
        if (this.authenticated) return;
        if (attempt.password === null && !attempt.tooLong) {
          // "none" probes and other methods: tell the client what we take, without counting a failure.
          this.proto.authFailure(['password'], false);
          continue;
        }
        let result: AuthResult<A>;
        if (attempt.password === null) {
          result = { ok: false, reason: 'credentials too long' };
        } else {
          try {
            result = await this.opts.authenticate(attempt.username, attempt.password);
          } catch {
            result = { ok: false, reason: 'authentication error' };
          }
        }
        if (this.isClosed) return;
        if (result.ok) {
          this.auth = result.value;
          this.username = attempt.username;
          this.proto.authSuccess();
          this.markAuthenticated();
          return;
        }
        this.proto.authFailure(['password'], false);
        if (++this.authFailures >= this.maxAuthAttempts) {
          this.disconnect(
            DISCONNECT_REASON.NO_MORE_AUTH_METHODS_AVAILABLE,
            new PosternError(
              'AUTH_FAILED',
              `${this.authFailures} failed password attempts (last: ${result.reason})`,
            ),
          );
          return;
        }
      }
    } finally {
      this.authBusy = false;
    }
  }
}

/**
 * Runs the server side of SSH over `stream` (a TCP socket, or the OSSH layer's stream). The returned connection
 * emits 'authenticated' and 'close'; it closes itself on any protocol violation, after the handshake timeout,
 * or after too many failed attempts.
 */
export function acceptSshConnection<A>(stream: Duplex, opts: SshServerOptions<A>): SshServerConnection<A> {
  return new SshServerConnection(stream, opts);
}
