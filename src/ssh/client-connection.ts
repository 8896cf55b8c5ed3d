// The client side of an SSH connection as the reference client runs it against psiphond: the server's host key
// is pinned (the SSH public key blob from the signed server entry must match byte for byte), authentication is
// one password attempt carrying Psiphon's JSON payload, the API is global requests with a reply payload, and
// port forwards are direct-tcpip channels whose originator is 0.0.0.0:0 (Go's ssh.Client.Dial sends that, so
// no local address leaves the client).

import type { Duplex } from 'node:stream';
import type { MessageHandlers } from 'ssh2/lib/protocol/Protocol.js';
import { PosternError } from '../common/errors.ts';
import { clientOffer, type AlgorithmPreferences } from './algorithms.ts';
import type { ChannelStream } from './channel-stream.ts';
import {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_CHANNELS,
  SshConnection,
  type OpenChannelOptions,
} from './connection.ts';
import { NO_SPLIT_TUNNEL_CHANNEL_TYPE } from './server-connection.ts';
import { parseVersionString } from './version.ts';
import {
  encodeDirectTcpipData,
  type ChannelOpenMessage,
  CHANNEL_OPEN_FAILURE,
  MAX_HOST_LENGTH,
} from './wire.ts';

/**
 * A client's receive window per channel. Larger than the server's: downloads dominate, the client's memory is not
 * the scarce one, and fewer WINDOW_ADJUST round trips cost the server less per byte. (The reference client uses
 * 4 x 32 KiB; window sizes are each side's own choice.)
 */
export const DEFAULT_CLIENT_CHANNEL_WINDOW = 1024 * 1024;

/** The originator Go's ssh.Client.Dial puts in direct-tcpip opens. */
const ORIGINATOR_HOST = '0.0.0.0';
const ORIGINATOR_PORT = 0;

export interface SshClientOptions {
  username: string;
  /** For Psiphon, the JSON payload from encodeSshPasswordPayload. */
  password: string;
  /** The server's SSH public key blob (base64-decoded sshHostKey of the server entry). */
  expectedHostKeyBlob: Buffer;
  /** Our identification string, "SSH-2.0-...". */
  clientVersion: string;
  /** Until authentication succeeds. */
  handshakeTimeoutMs?: number;
  /** Offer Encrypt-then-MAC MACs (plain SSH); false under the OSSH obfuscator, like the reference. Default true. */
  encryptThenMac?: boolean;
  /** Offer only these algorithms (each list a subset of the defaults in algorithms.ts). */
  algorithms?: AlgorithmPreferences;
  /** Serves requests from the server (psiphon-osl, psiphon-alert): a reply payload, or null to refuse. Requests
   * are refused when absent. */
  onGlobalRequest?: (name: string, payload: Buffer) => Promise<Buffer | null> | Buffer | null;
  maxChannels?: number;
  /** Receive window per channel. */
  channelWindow?: number;
}

export interface DirectTcpipOptions extends OpenChannelOptions {
  /** Use Psiphon's no-split-tunnel channel type, which the server may not refuse as split-tunnel. */
  noSplitTunnel?: boolean;
}

export class SshClientConnection extends SshConnection {
  private readonly opts: SshClientOptions;
  private hostKeyRefused = false;
  private settle: ((err: PosternError | null) => void) | null = null;

  constructor(transport: Duplex, opts: SshClientOptions) {
    super(
      transport,
      {
        role: 'client',
        maxChannels: opts.maxChannels ?? DEFAULT_MAX_CHANNELS,
        handshakeTimeoutMs: opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
        channelWindow: opts.channelWindow ?? DEFAULT_CLIENT_CHANNEL_WINDOW,
      },
      {
        server: false,
        ident: parseVersionString(opts.clientVersion),
        offer: clientOffer({ encryptThenMac: opts.encryptThenMac ?? true, preferences: opts.algorithms }),
      },
    );
    this.opts = opts;
  }

  /** Starts the handshake; resolves once authenticated. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.settle = (err) => {
        this.settle = null;
        if (err) reject(err);
        else resolve();
      };
      this.once('close', (err) =>
        this.settle?.(err ?? new PosternError('CLOSED', 'SSH connection closed during the handshake')),
      );
      this.begin();
    });
  }

  /**
   * Opens a port forward to host:port through the server. Rejects with a ChannelOpenError (code REFUSED, with
   * the server's reason code) when the server refuses it.
   */
  openDirectTcpip(host: string, port: number, opts: DirectTcpipOptions = {}): Promise<ChannelStream> {
    if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
      return Promise.reject(new PosternError('BAD_ARGUMENT', `invalid port ${port}`));
    }
    if (host.length === 0 || Buffer.byteLength(host) > MAX_HOST_LENGTH) {
      return Promise.reject(new PosternError('BAD_ARGUMENT', 'invalid destination host'));
    }
    const type = opts.noSplitTunnel ? NO_SPLIT_TUNNEL_CHANNEL_TYPE : 'direct-tcpip';
    return this.openChannel(type, encodeDirectTcpipData(host, port, ORIGINATOR_HOST, ORIGINATOR_PORT), opts);
  }

  protected override verifyHostKey(key: Buffer): boolean {
    const ok = key.equals(this.opts.expectedHostKeyBlob);
    if (!ok) this.hostKeyRefused = true;
    return ok;
  }

  protected override describeProtocolError(err: Error): PosternError {
    if (this.hostKeyRefused)
      return new PosternError('HOST_KEY_MISMATCH', 'the server presented an unexpected SSH host key');
    return super.describeProtocolError(err);
  }

  protected override onKeyExchangeDone(): void {
    if (!this.authenticated && this.settle) this.proto.service('ssh-userauth');
  }

  protected roleHandlers(): MessageHandlers {
    return {
      SERVICE_ACCEPT: (_p, name) => {
        if (name === 'ssh-userauth' && !this.authenticated)
          this.proto.authPassword(this.opts.username, this.opts.password);
      },
      USERAUTH_SUCCESS: () => {
        if (this.authenticated) return;
        this.markAuthenticated();
        this.settle?.(null);
      },
      USERAUTH_FAILURE: () =>
        this.fail(new PosternError('AUTH_FAILED', 'the server refused our SSH password')),
      USERAUTH_PASSWD_CHANGEREQ: () =>
        this.fail(new PosternError('AUTH_FAILED', 'the server asked for a password change')),
      USERAUTH_BANNER: () => {},
    };
  }

  protected serveGlobalRequest(name: string, payload: Buffer): Promise<Buffer | null> {
    const handler = this.opts.onGlobalRequest;
    return Promise.resolve(handler ? handler(name, payload) : null);
  }

  protected onChannelOpen(msg: ChannelOpenMessage): void {
    // Servers open nothing towards Psiphon clients.
    this.rejectOpen(msg.senderId, CHANNEL_OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED);
  }
}

/**
 * Runs the client side of SSH over `stream` and resolves once the server's host key matched and our password
 * was accepted. Rejects with HOST_KEY_MISMATCH, AUTH_FAILED, TIMEOUT, SSH_PROTOCOL or CLOSED (the stream is
 * destroyed then).
 */
export async function connectSsh(stream: Duplex, opts: SshClientOptions): Promise<SshClientConnection> {
  const conn = new SshClientConnection(stream, opts);
  await conn.start();
  return conn;
}
