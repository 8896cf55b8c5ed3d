// A small tunnel server built straight from the parts (OSSH accept, SSH server with Psiphon password checks, the
// API handlers, direct-tcpip by dialling the target), for client tests: it signs its own server entry, can be
// killed (every socket destroyed, listeners closed) and started again on the same ports. Plus the two kinds of
// dead candidate a client meets: a port that accepts and never answers, and a closed port.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { RealClock } from '../../src/common/clock.ts';
import {
  encodeServerEntry,
  generateEd25519KeyPair,
  generateSshHostKey,
  PsinetSchema,
  serverEntryTag,
  signServerEntry,
  type Ed25519KeyPair,
  type ServerEntryFields,
} from '../../src/protocol/index.ts';
import {
  createApiHandler,
  createApiSession,
  type ApiSession,
  type ConnectedEvent,
  type HandshakeEvent,
  type StatusReport,
} from '../../src/server/api-handlers.ts';
import {
  acceptSshConnection,
  psiphonPasswordAuthenticator,
  type SshPasswordPayload,
  type SshServerConnection,
} from '../../src/ssh/index.ts';
import { acceptObfuscatedSsh } from '../../src/transport/index.ts';

export type HostKey = { privateKeyPem: string; publicKeyBlobB64: string };

// RSA key generation is the slow part of setting a server up: one or two per test process.
const hostKeys: HostKey[] = [];
/** Host key number `n` of this test process (made once, 1024 bits: enough for tests). */
export function testHostKey(n = 0): HostKey {
  while (hostKeys.length <= n) hostKeys.push(generateSshHostKey(1024));
  return hostKeys[n]!;
}

let signingKey: Ed25519KeyPair | null = null;
/** The network's server entry signing key for this test process. */
export function testSigningKey(): Ed25519KeyPair {
  signingKey ??= generateEd25519KeyPair();
  return signingKey;
}

export const TEST_SPONSOR_ID = '0123456789ABCDEF';
export const TEST_PROPAGATION_CHANNEL_ID = 'FEDCBA9876543210';

export interface EntryInput {
  ip: string;
  ports: { SSH?: number; OSSH?: number };
  region?: string;
  hostKeyBlobB64?: string;
  username?: string;
  password?: string;
  obfuscatedKey?: string;
  configurationVersion?: number;
  signing?: Ed25519KeyPair;
}

/** A signed, encoded server entry like `postern server generate` makes. */
export function makeTestEntry(input: EntryInput): { encoded: string; fields: ServerEntryFields } {
  const secret = `secret-${input.ip}-${input.ports.SSH ?? 0}-${input.ports.OSSH ?? 0}`;
  const protocols = Object.keys(input.ports);
  const fields: ServerEntryFields = {
    ipAddress: input.ip,
    webServerPort: '0',
    webServerSecret: '0',
    webServerCertificate: '0',
    sshPort: input.ports.SSH ?? 0,
    sshUsername: input.username ?? 'psiphon_test',
    sshPassword: input.password ?? 'test-password-0123456789abcdef',
    sshHostKey: input.hostKeyBlobB64 ?? testHostKey().publicKeyBlobB64,
    sshObfuscatedPort: input.ports.OSSH ?? 0,
    sshObfuscatedKey: input.obfuscatedKey ?? 'test-obfuscation-keyword-0123456789',
    capabilities: ['handshake', 'ssh-api-requests', ...protocols],
    region: input.region ?? 'CA',
    configurationVersion: input.configurationVersion ?? 0,
    tag: serverEntryTag(secret, input.ip),
  };
  const key = input.signing ?? testSigningKey();
  const signed = signServerEntry(fields, key.publicKey, key.privateKey);
  return { encoded: encodeServerEntry(signed), fields: signed };
}

export interface MiniServerOptions {
  ip?: string;
  protocols?: ('SSH' | 'OSSH')[];
  /** The region in the server's entry */
  region?: string;
  /** The region the server tells clients they are in */
  clientRegion?: string;
  /** The host key the server really uses (default: testHostKey(0)) */
  hostKey?: HostKey;
  /** The host key its entry claims (default: the real one) */
  entryHostKeyBlobB64?: string;
  /** The sponsor's regexes for bytes-per-domain */
  domainRegexes?: { regex: string; replace: string }[];
  /** Never answer the handshake request (a server that authenticates but cannot serve the API) */
  ignoreHandshake?: boolean;
}

export interface MiniServerCounters {
  accepted: number;
  authenticated: number;
  handshakes: HandshakeEvent[];
  connected: ConnectedEvent[];
  statuses: StatusReport[];
  forwards: number;
  keepAlives: number;
}

export interface MiniServer {
  ip: string;
  ports: { SSH?: number; OSSH?: number };
  encodedEntry: string;
  entry: ServerEntryFields;
  counters: MiniServerCounters;
  /** The sessions the server has seen (session ID and sponsor from the password payload) */
  sessions: ApiSession[];
  /** Whether it is listening */
  readonly running: boolean;
  /** Destroys every connection (tunnels and forwards) and stops listening, as if the server died. */
  kill(): Promise<void>;
  /** Listens again on the same ports. */
  start(): Promise<void>;
  /** Stops reading from every open connection (the server hangs; the network still looks up). */
  freeze(): void;
}

const USERNAME = 'psiphon_test';
const PASSWORD = 'test-password-0123456789abcdef';
const KEYWORD = 'test-obfuscation-keyword-0123456789';

function listenOn(server: net.Server, ip: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

export async function startMiniTunnelServer(opts: MiniServerOptions = {}): Promise<MiniServer> {
  const ip = opts.ip ?? '127.0.0.1';
  const protocols = opts.protocols ?? ['OSSH', 'SSH'];
  const hostKey = opts.hostKey ?? testHostKey();
  const clock = new RealClock();
  const psinet = PsinetSchema.parse({
    sponsors: {
      [TEST_SPONSOR_ID]: {
        id: TEST_SPONSOR_ID,
        home_pages: { None: [{ region: 'None', url: 'https://example.org/welcome' }] },
        https_request_regexes: opts.domainRegexes ?? [
          { regex: '^(?:.*\\.)?(example\\.org)$', replace: '$1' },
        ],
      },
    },
  });
  const counters: MiniServerCounters = {
    accepted: 0,
    authenticated: 0,
    handshakes: [],
    connected: [],
    statuses: [],
    forwards: 0,
    keepAlives: 0,
  };
  const sessions: ApiSession[] = [];
  const api = createApiHandler({
    psinet: () => psinet,
    clock,
    onHandshake: (_s, e) => counters.handshakes.push(e),
    onConnected: (_s, e) => counters.connected.push(e),
    onStatus: (_s, r) => counters.statuses.push(r),
  });
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };

  const serveSsh = (stream: Duplex, protocol: string): void => {
    let session: ApiSession | null = null;
    const conn: SshServerConnection<SshPasswordPayload> = acceptSshConnection(stream, {
      hostKeyPem: hostKey.privateKeyPem,
      serverVersion: 'SSH-2.0-PosternMini',
      encryptThenMac: protocol === 'SSH',
      authenticate: psiphonPasswordAuthenticator(USERNAME, PASSWORD),
      onGlobalRequest: (name, payload) => {
        if (session === null) {
          const auth = conn.auth!;
          session = createApiSession({
            sessionId: auth.sessionId,
            sponsorId: auth.sponsorId,
            geo: { region: opts.clientRegion ?? 'None', city: 'None', isp: 'None', asn: 'None' },
            tunnelProtocol: protocol,
          });
          sessions.push(session);
        }
        if (name === 'keepalive@openssh.com') counters.keepAlives++;
        if (name === 'psiphon-handshake' && opts.ignoreHandshake === true) return new Promise<null>(() => {});
        const reply = api.handle(session, name, payload);
        if (session.mustDisconnect) setImmediate(() => conn.close());
        return reply;
      },
      onDirectTcpip: (request, accept, reject) => {
        counters.forwards++;
        const target = net.connect({ host: request.host, port: request.port, allowHalfOpen: true });
        track(target);
        target.setNoDelay(true);
        target.once('error', () => reject());
        target.once('connect', () => {
          target.removeAllListeners('error');
          let channel;
          try {
            channel = accept();
          } catch {
            target.destroy();
            return;
          }
          channel.pipe(target);
          target.pipe(channel);
          target.on('error', () => channel.destroy());
          channel.on('error', () => target.destroy());
          channel.on('close', () => target.destroy());
          target.on('close', () => {
            if (!channel.writableEnded) channel.destroy();
          });
        });
      },
    });
    conn.once('authenticated', () => counters.authenticated++);
  };

  const listeners = new Map<string, net.Server>();
  const ports: { SSH?: number; OSSH?: number } = {};
  const makeListener = (protocol: 'SSH' | 'OSSH'): net.Server =>
    net.createServer((socket) => {
      track(socket);
      counters.accepted++;
      socket.on('error', () => {});
      if (protocol === 'OSSH') {
        acceptObfuscatedSsh(socket, { obfuscationKeyword: KEYWORD, timeoutMs: 5_000 }).then(
          (stream) => serveSsh(stream, 'OSSH'),
          () => socket.destroy(),
        );
      } else {
        serveSsh(socket, 'SSH');
      }
    });

  let running = false;
  const start = async (): Promise<void> => {
    for (const protocol of protocols) {
      const server = makeListener(protocol);
      ports[protocol] = await listenOn(server, ip, ports[protocol] ?? 0);
      listeners.set(protocol, server);
    }
    running = true;
  };
  await start();

  const { encoded, fields } = makeTestEntry({
    ip,
    ports,
    region: opts.region ?? 'CA',
    hostKeyBlobB64: opts.entryHostKeyBlobB64 ?? hostKey.publicKeyBlobB64,
  });

  return {
    ip,
    ports,
    encodedEntry: encoded,
    entry: fields,
    counters,
    sessions,
    get running() {
      return running;
    },
    async kill() {
      running = false;
      const closing = [...listeners.values()].map((s) => new Promise<void>((r) => s.close(() => r())));
      listeners.clear();
      for (const s of sockets) s.destroy();
      sockets.clear();
      await Promise.all(closing);
    },
    start,
    freeze() {
      for (const s of sockets) s.pause();
    },
  };
}

/** A candidate that accepts the TCP connection and then says nothing, ever (a filtered or tarpitted server). */
export async function startSilentListener(ip: string): Promise<{ port: number; close(): Promise<void> }> {
  const held = new Set<net.Socket>();
  const server = net.createServer((s) => {
    held.add(s);
    s.on('error', () => {});
    s.once('close', () => held.delete(s));
  });
  const port = await listenOn(server, ip, 0);
  return {
    port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of held) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A port on `ip` with nothing listening (found by listening and closing again). */
export async function closedPort(ip: string): Promise<number> {
  const server = net.createServer();
  const port = await listenOn(server, ip, 0);
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}
