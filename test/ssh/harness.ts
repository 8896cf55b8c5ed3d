// Loopback fixtures for the SSH tests: a Postern SSH server with Psiphon-style password checks, a client
// connected to it, and small TCP targets (echo, request/response after EOF, firehose).

import net from 'node:net';
import { createHash } from 'node:crypto';
import { generateSshHostKey } from '../../src/protocol/keys.ts';
import {
  acceptSshConnection,
  connectSsh,
  encodeSshPasswordPayload,
  psiphonPasswordAuthenticator,
  type ChannelStream,
  type SshClientConnection,
  type SshClientOptions,
  type SshPasswordPayload,
  type SshServerConnection,
  type SshServerOptions,
} from '../../src/ssh/index.ts';

export const USER = 'psiphon-user';
export const PASS = 'c2b5fd8f0f6b5d11a0e8f8d0c1d5b4a39d4a2b1f7e6c5d4b3a29180f7e6d5c4b';
export const SESSION_ID = '0123456789abcdef0123456789abcdef';

interface Hooks {
  after(fn: () => unknown): void;
}

let cachedHostKey: { privateKeyPem: string; publicKeyBlobB64: string } | null = null;
/** One RSA host key per test process: generating one takes a while. */
export function hostKey(): { privateKeyPem: string; publicKeyBlobB64: string } {
  cachedHostKey ??= generateSshHostKey();
  return cachedHostKey;
}

export function passwordPayload(sshPassword = PASS): string {
  return encodeSshPasswordPayload({
    sessionId: SESSION_ID,
    sshPassword,
    clientCapabilities: ['server-requests'],
    sponsorId: '0123456789ABCDEF',
  });
}

export async function listen(t: Hooks, server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as net.AddressInfo).port;
}

/** Echoes everything and ends when the peer ends. */
export function startEcho(t: Hooks): Promise<number> {
  return listen(
    t,
    net.createServer((s) => {
      s.setNoDelay(true);
      s.on('error', () => {});
      s.pipe(s);
    }),
  );
}

/** Reads until EOF, then answers with the SHA-256 of what it read and ends (a half-close user). */
export function startDigestAfterEof(t: Hooks): Promise<number> {
  return listen(
    t,
    net.createServer((s) => {
      s.on('error', () => {});
      const hash = createHash('sha256');
      s.on('data', (d: Buffer) => hash.update(d));
      s.on('end', () => s.end(hash.digest('hex')));
    }),
  );
}

/** Writes `total` bytes as fast as the connection takes them; counts what it managed to hand to the kernel. */
export function startFirehose(t: Hooks, total: number, stats: { written: number }): Promise<number> {
  return listen(
    t,
    net.createServer((s) => {
      s.on('error', () => {});
      const chunk = Buffer.alloc(64 * 1024, 0x5a);
      const pump = (): void => {
        while (stats.written < total) {
          const n = Math.min(chunk.length, total - stats.written);
          stats.written += n;
          if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    }),
  );
}

/** Relays a channel to a TCP target with half-close both ways, as the tunnel server does. */
export function relay(channel: ChannelStream, target: net.Socket): void {
  channel.pipe(target);
  target.pipe(channel);
  target.on('error', () => channel.destroy());
  channel.on('close', () => target.destroy());
  target.on('close', () => {
    if (!channel.writableEnded) channel.destroy();
  });
}

export interface TestServer {
  port: number;
  hostKeyBlob: Buffer;
  connections: SshServerConnection<SshPasswordPayload>[];
}

/** Answers psiphon-handshake and echo with the payload itself, everything else with a refusal. */
export async function echoRequests(name: string, payload: Buffer): Promise<Buffer | null> {
  if (name === 'echo' || name === 'psiphon-handshake') return payload;
  return null;
}

export async function startServer(
  t: Hooks,
  overrides: Partial<SshServerOptions<SshPasswordPayload>> = {},
): Promise<TestServer> {
  const key = hostKey();
  const connections: SshServerConnection<SshPasswordPayload>[] = [];
  const server = net.createServer((socket) => {
    const conn = acceptSshConnection(socket, {
      hostKeyPem: key.privateKeyPem,
      serverVersion: 'SSH-2.0-PosternTest',
      authenticate: psiphonPasswordAuthenticator(USER, PASS),
      onGlobalRequest: echoRequests,
      onDirectTcpip: (info, accept, reject) => {
        const target = net.connect(info.port, info.host);
        target.setNoDelay(true);
        target.once('error', () => reject());
        target.once('connect', () => relay(accept(), target));
      },
      ...overrides,
    });
    connections.push(conn);
  });
  t.after(() => {
    for (const c of connections) c.close();
  });
  const port = await listen(t, server);
  return { port, hostKeyBlob: Buffer.from(key.publicKeyBlobB64, 'base64'), connections };
}

export function dial(t: Hooks, port: number): net.Socket {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  t.after(() => socket.destroy());
  return socket;
}

export async function connectClient(
  t: Hooks,
  server: TestServer,
  overrides: Partial<SshClientOptions> = {},
): Promise<SshClientConnection> {
  const conn = await connectSsh(dial(t, server.port), {
    username: USER,
    password: passwordPayload(),
    expectedHostKeyBlob: server.hostKeyBlob,
    clientVersion: 'SSH-2.0-OpenSSH_8.1',
    ...overrides,
  });
  t.after(() => conn.close());
  return conn;
}

/** Sends `data` through a channel and collects what comes back until the channel's readable side ends. */
export async function roundTrip(channel: ChannelStream, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    channel.on('data', (d: Buffer) => chunks.push(d));
    channel.on('end', () => resolve());
    channel.on('close', () => resolve());
    channel.on('error', reject);
  });
  channel.end(data);
  await done;
  return Buffer.concat(chunks);
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export async function waitFor(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
