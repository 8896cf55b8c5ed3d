// One tunnel to one server: dialled over TCP with a tunnel protocol (SSH, or OSSH: SSH under the obfuscator),
// authenticated with Psiphon's JSON password payload against the host key pinned in the signed server entry,
// and activated with the `psiphon-handshake` API request. A candidate is only a tunnel once the handshake has
// answered, as in the reference client (a server that accepts SSH but cannot serve the API is no use).
import net from 'node:net';
import { randomInt } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Clock } from '../common/clock.ts';
import { PosternError, describeError } from '../common/errors.ts';
import {
  decodeBase64Strict,
  getServerEntryTag,
  serverEntryDiagnosticId,
  serverEntryDialPort,
  TUNNEL_PROTOCOL_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_SSH,
  type ServerEntryFields,
} from '../protocol/index.ts';
import {
  CLIENT_CAPABILITY_SERVER_REQUESTS,
  connectSsh,
  encodeSshPasswordPayload,
  type SshClientConnection,
} from '../ssh/index.ts';
import { dialObfuscatedSsh, type ObfuscatedSshStream } from '../transport/index.ts';
import {
  handleServerRequest,
  parseHandshakeResult,
  type ApiClient,
  type HandshakeResult,
  type ServerRequestResult,
} from './api-client.ts';

/** The tunnel protocols this client can dial, in the reference's preference order. */
export const IMPLEMENTED_TUNNEL_PROTOCOLS: readonly string[] = [
  TUNNEL_PROTOCOL_SSH,
  TUNNEL_PROTOCOL_OBFUSCATED_SSH,
];

/** Versions the reference client picks from when it names itself (SSH-2.0-OpenSSH_[7-8].[0-9]). */
const OPENSSH_MAJOR_VERSIONS = [7, 8] as const;
const OPENSSH_MINOR_VERSIONS = 10;

/** A plausible OpenSSH identification string, drawn like the reference's default. */
export function randomSshClientVersion(): string {
  const major = OPENSSH_MAJOR_VERSIONS[randomInt(OPENSSH_MAJOR_VERSIONS.length)]!;
  return `SSH-2.0-OpenSSH_${major}.${randomInt(OPENSSH_MINOR_VERSIONS)}`;
}

export interface TunnelDialTimeouts {
  /** For the TCP connection to the server */
  tcpConnectTimeoutMs: number;
  /** From the start of the dial until SSH authentication succeeded (the reference's TunnelConnectTimeout) */
  tunnelConnectTimeoutMs: number;
  /** For the handshake API request's reply */
  apiRequestTimeoutMs: number;
}

export interface DialTunnelParams {
  entry: ServerEntryFields;
  /** One of IMPLEMENTED_TUNNEL_PROTOCOLS */
  protocol: string;
  /** This client run's session ID (32 hex digits) */
  sessionId: string;
  sponsorId: string;
  api: ApiClient;
  /** Which dial of this establishment this is (0-based), and how many tunnels this run had before */
  candidateNumber: number;
  establishedTunnelsCount: number;
  timeouts: TunnelDialTimeouts;
  clock: Clock;
  /** Aborting destroys the connection, whatever stage it is in */
  signal: AbortSignal;
  /** Requests the server sends (alerts); the reply is sent for us */
  onServerRequest?: (request: ServerRequestResult & { name: string }) => void;
}

/** A candidate that did not become a tunnel, and at which stage. */
export class TunnelDialError extends PosternError {
  readonly stage: 'connect' | 'ssh' | 'handshake';
  constructor(stage: 'connect' | 'ssh' | 'handshake', cause: unknown) {
    const code = cause instanceof PosternError ? cause.code : 'IO';
    super(code, `${stage}: ${describeError(cause)}`, { cause });
    this.name = 'TunnelDialError';
    this.stage = stage;
  }
}

/** An established tunnel. `closed` resolves with why it ended (null: closed by us). */
export class Tunnel {
  readonly conn: SshClientConnection;
  readonly entry: ServerEntryFields;
  readonly protocol: string;
  readonly handshake: HandshakeResult;
  /** A name for the server in logs that does not give its address away */
  readonly serverId: string;
  readonly serverRegion: string;
  readonly establishedAt: Date;
  readonly closed: Promise<PosternError | null>;
  private failure: PosternError | null = null;
  private ended = false;

  constructor(init: {
    conn: SshClientConnection;
    entry: ServerEntryFields;
    protocol: string;
    handshake: HandshakeResult;
    establishedAt: Date;
  }) {
    this.conn = init.conn;
    this.entry = init.entry;
    this.protocol = init.protocol;
    this.handshake = init.handshake;
    this.establishedAt = init.establishedAt;
    this.serverId = serverEntryDiagnosticId(getServerEntryTag(init.entry));
    const region = init.entry.region;
    this.serverRegion = typeof region === 'string' && region !== '' ? region : 'None';
    this.closed = init.conn.closed.then((err) => {
      this.ended = true;
      return this.failure ?? err;
    });
    init.conn.once('close', () => (this.ended = true));
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** Closes the tunnel, recording `reason` as why it ended (null: a normal close). */
  close(reason: PosternError | null = null): void {
    if (reason !== null && this.failure === null) this.failure = reason;
    this.conn.close();
  }
}

/** Opens a TCP connection; rejects on error, timeout or abort (destroying the socket). */
export function connectTcp(
  host: string,
  port: number,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new PosternError('CLOSED', 'dial aborted'));
      return;
    }
    const socket = net.connect({ host, port, noDelay: true });
    const settle = (err: PosternError | null): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('connect', onConnect);
      socket.off('error', onError);
      if (err === null) {
        resolve(socket);
        return;
      }
      socket.destroy();
      reject(err);
    };
    const onConnect = (): void => settle(null);
    const onError = (e: Error): void =>
      settle(new PosternError('IO', `TCP connect failed: ${describeError(e)}`));
    const onAbort = (): void => settle(new PosternError('CLOSED', 'dial aborted'));
    const timer = setTimeout(
      () => settle(new PosternError('TIMEOUT', `TCP connect not finished within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.once('connect', onConnect);
    socket.once('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function entryString(entry: ServerEntryFields, field: string): string {
  const v = entry[field];
  if (typeof v !== 'string' || v === '') {
    throw new PosternError('BAD_SERVER_ENTRY', `server entry has no ${field}`);
  }
  return v;
}

/**
 * Dials one candidate and runs the SSH handshake and the API handshake. Rejects with a TunnelDialError saying
 * at which stage it failed; whatever was opened is closed.
 */
export async function dialTunnel(p: DialTunnelParams): Promise<Tunnel> {
  const started = p.clock.now().getTime();
  const { entry, protocol } = p;
  if (!IMPLEMENTED_TUNNEL_PROTOCOLS.includes(protocol)) {
    throw new TunnelDialError('connect', new PosternError('BAD_ARGUMENT', `cannot dial ${protocol}`));
  }
  const port = serverEntryDialPort(entry, protocol);
  let username: string, password: string, hostKey: Buffer, keyword: string | null;
  try {
    if (port === undefined || port === 0) {
      throw new PosternError('BAD_SERVER_ENTRY', `server entry has no port for ${protocol}`);
    }
    username = entryString(entry, 'sshUsername');
    password = encodeSshPasswordPayload({
      sessionId: p.sessionId,
      sshPassword: entryString(entry, 'sshPassword'),
      clientCapabilities: [CLIENT_CAPABILITY_SERVER_REQUESTS],
      sponsorId: p.sponsorId,
    });
    hostKey = decodeBase64Strict(entryString(entry, 'sshHostKey'), 'server entry sshHostKey');
    keyword = protocol === TUNNEL_PROTOCOL_OBFUSCATED_SSH ? entryString(entry, 'sshObfuscatedKey') : null;
  } catch (e) {
    throw new TunnelDialError('connect', e);
  }

  let socket: net.Socket;
  try {
    socket = await connectTcp(entry.ipAddress!, port, p.timeouts.tcpConnectTimeoutMs, p.signal);
  } catch (e) {
    throw new TunnelDialError('connect', e);
  }
  // From here on, an abort destroys the socket, which fails whichever stage is running.
  const onAbort = (): void => {
    socket.destroy();
  };
  p.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const transport: Duplex =
      keyword === null ? socket : dialObfuscatedSsh(socket, { obfuscationKeyword: keyword });
    const sshClientVersion = randomSshClientVersion();
    const remaining = p.timeouts.tunnelConnectTimeoutMs - (p.clock.now().getTime() - started);
    let conn: SshClientConnection;
    try {
      if (remaining <= 0) throw new PosternError('TIMEOUT', 'no time left for the SSH handshake');
      conn = await connectSsh(transport, {
        username,
        password,
        expectedHostKeyBlob: hostKey,
        clientVersion: sshClientVersion,
        // Like the reference: Encrypt-then-MAC only for plain SSH, not under the obfuscator.
        encryptThenMac: keyword === null,
        handshakeTimeoutMs: remaining,
        onGlobalRequest: (name, payload) => {
          const result = handleServerRequest(name, payload);
          try {
            p.onServerRequest?.({ ...result, name });
          } catch {
            // an observer's failure is not the server's business
          }
          return result.ok ? Buffer.alloc(0) : null;
        },
      });
    } catch (e) {
      transport.destroy();
      throw new TunnelDialError('ssh', e);
    }
    try {
      const osshPadding = keyword === null ? undefined : (transport as ObfuscatedSshStream).paddingLength;
      const localTimestamp = entry.localTimestamp;
      const request = p.api.handshakeRequest({
        tunnelProtocol: protocol,
        dialDurationMs: p.clock.now().getTime() - started,
        candidateNumber: p.candidateNumber,
        establishedTunnelsCount: p.establishedTunnelsCount,
        serverEntryRegion: typeof entry.region === 'string' ? entry.region : undefined,
        serverEntrySource: typeof entry.localSource === 'string' ? entry.localSource : undefined,
        serverEntryTimestamp: typeof localTimestamp === 'string' ? localTimestamp : undefined,
        dialPortNumber: port,
        sshClientVersion,
        upstreamOsshPadding: osshPadding ?? undefined,
      });
      const reply = await conn.request(request.name, request.payload, {
        timeoutMs: p.timeouts.apiRequestTimeoutMs,
      });
      const handshake = parseHandshakeResult(reply, request.responseEncoding);
      if (p.signal.aborted) throw new PosternError('CLOSED', 'dial aborted');
      return new Tunnel({ conn, entry, protocol, handshake, establishedAt: p.clock.now() });
    } catch (e) {
      conn.close();
      throw new TunnelDialError('handshake', e);
    }
  } finally {
    p.signal.removeEventListener('abort', onAbort);
  }
}
