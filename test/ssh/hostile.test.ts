// A hostile or broken peer costs the server one closed connection: garbage, truncated handshakes, oversized
// packets, messages before authentication, too many password attempts, window overruns and request floods.
// The server keeps serving everyone else.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import Protocol, { type MessageHandlers } from 'ssh2/lib/protocol/Protocol.js';
import ssh2Crypto from 'ssh2/lib/protocol/crypto.js';
import { isPosternError } from '../../src/common/errors.ts';
import { clientOffer } from '../../src/ssh/algorithms.ts';
import { CHANNEL_OPEN_FAILURE } from '../../src/ssh/index.ts';
import { encodeDirectTcpipData, sendChannelOpen, sendGlobalRequest } from '../../src/ssh/wire.ts';
import { connectClient, passwordPayload, startServer, USER, waitFor, type TestServer } from './harness.ts';

/** Sends raw bytes; resolves when the server has closed the connection. */
function sendRaw(
  t: { after(fn: () => void): void },
  port: number,
  bytes: Buffer,
  end = false,
): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(bytes);
      if (end) socket.end();
    });
    socket.on('error', () => {});
    socket.resume();
    socket.on('close', () => resolve());
    t.after(() => socket.destroy());
  });
}

async function stillServes(t: { after(fn: () => void): void }, server: TestServer): Promise<void> {
  const client = await connectClient(t, server);
  assert.deepEqual(await client.request('echo', Buffer.from('alive')), Buffer.from('alive'));
  client.close();
}

const IDENT = Buffer.from('SSH-2.0-Hostile_1.0\r\n');

test('random garbage, truncated handshakes and oversized packet lengths close only that connection', async (t) => {
  const server = await startServer(t, { limits: { handshakeTimeoutMs: 1000 } });
  await sendRaw(t, server.port, randomBytes(20_000));
  await sendRaw(t, server.port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  // Identification, then the start of a KEXINIT, then the client goes away.
  await sendRaw(t, server.port, Buffer.concat([IDENT, Buffer.from([0, 0, 1, 12, 10, 20, 1, 2, 3])]), true);
  // A packet length of 2 GiB.
  await sendRaw(t, server.port, Buffer.concat([IDENT, Buffer.from([0x7f, 0xff, 0xff, 0xff, 4, 20])]));
  // Silence after the identification: the handshake timeout.
  await sendRaw(t, server.port, IDENT);
  await waitFor(
    () => server.connections.length === 5 && server.connections.every((c) => c.closeError !== null),
  );
  const codes = server.connections.map((c) => c.closeError?.code);
  assert.deepEqual(codes, ['SSH_PROTOCOL', 'SSH_PROTOCOL', 'CLOSED', 'SSH_PROTOCOL', 'TIMEOUT']);
  await stillServes(t, server);
});

test('fuzz: any bytes after a valid identification end in a closed connection, never a crash', async (t) => {
  const server = await startServer(t, { limits: { handshakeTimeoutMs: 500 } });
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 3000 }), async (junk) => {
      await sendRaw(t, server.port, Buffer.concat([IDENT, Buffer.from(junk)]), true);
    }),
    { numRuns: 25 },
  );
  await waitFor(() => server.connections.every((c) => c.closeError !== null));
  assert.ok(server.connections.every((c) => !c.isAuthenticated));
  await stillServes(t, server);
});

interface RawEvents {
  requestFailures: number;
  openFailures: number[];
  authFailures: number;
  authSuccess: boolean;
  serviceAccepted: boolean;
  confirmed: { sender: number; window: number }[];
  closed: boolean;
}

/** ssh2's Protocol as a client with no manners: it sends whatever the test asks, whenever. */
async function rawClient(
  t: { after(fn: () => void): void },
  port: number,
): Promise<{ proto: Protocol; events: RawEvents; socket: net.Socket }> {
  await ssh2Crypto.init;
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  t.after(() => socket.destroy());
  const events: RawEvents = {
    requestFailures: 0,
    openFailures: [],
    authFailures: 0,
    authSuccess: false,
    serviceAccepted: false,
    confirmed: [],
    closed: false,
  };
  socket.on('close', () => (events.closed = true));
  let ready!: () => void;
  const handshake = new Promise<void>((r) => (ready = r));
  const handlers: MessageHandlers = {
    REQUEST_FAILURE: () => events.requestFailures++,
    CHANNEL_OPEN_FAILURE: (_p, _recipient, reason) => events.openFailures.push(reason),
    CHANNEL_OPEN_CONFIRMATION: (_p, info) =>
      events.confirmed.push({ sender: info.sender, window: info.window }),
    SERVICE_ACCEPT: () => (events.serviceAccepted = true),
    USERAUTH_FAILURE: () => events.authFailures++,
    USERAUTH_SUCCESS: () => (events.authSuccess = true),
  };
  const proto = new Protocol({
    ident: 'Raw_1.0',
    offer: clientOffer({ encryptThenMac: true, preferences: { kex: ['curve25519-sha256@libssh.org'] } }),
    onWrite: (d) => {
      if (!socket.destroyed) socket.write(d);
    },
    onError: () => socket.destroy(),
    onHandshakeComplete: () => ready(),
    messageHandlers: handlers,
  });
  socket.on('data', (d: Buffer) => {
    try {
      proto.parse(d, 0, d.length);
    } catch {
      socket.destroy();
    }
  });
  await new Promise<void>((r) => socket.once('connect', () => r()));
  proto.start?.();
  await handshake;
  return { proto, events, socket };
}

test('nothing is served before authentication', async (t) => {
  let requests = 0;
  const server = await startServer(t, {
    onGlobalRequest: (_name, payload) => {
      requests++;
      return payload;
    },
  });
  const { proto, events } = await rawClient(t, server.port);
  sendGlobalRequest(proto, 'psiphon-handshake', true, Buffer.from('{}'));
  sendChannelOpen(
    proto,
    'direct-tcpip',
    0,
    65536,
    32768,
    encodeDirectTcpipData('127.0.0.1', 22, '0.0.0.0', 0),
  );
  await waitFor(() => events.requestFailures === 1 && events.openFailures.length === 1);
  assert.deepEqual(events.openFailures, [CHANNEL_OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED]);
  assert.equal(requests, 0);
  // Authentication without asking for the service first is a protocol error.
  proto.authPassword(USER, passwordPayload());
  await waitFor(() => events.closed);
  assert.equal(events.authSuccess, false);
  await stillServes(t, server);
});

test('six wrong passwords end the connection', async (t) => {
  const server = await startServer(t);
  const { proto, events } = await rawClient(t, server.port);
  proto.service('ssh-userauth');
  await waitFor(() => events.serviceAccepted);
  for (let i = 0; i < 10; i++) proto.authPassword(USER, passwordPayload(`wrong-${i}`));
  await waitFor(() => events.closed);
  assert.equal(events.authFailures, 6);
  const err = await server.connections[0]!.closed;
  assert.ok(isPosternError(err, 'AUTH_FAILED'));
  await stillServes(t, server);
});

async function authenticatedRaw(t: { after(fn: () => void): void }, server: TestServer) {
  const raw = await rawClient(t, server.port);
  raw.proto.service('ssh-userauth');
  await waitFor(() => raw.events.serviceAccepted);
  raw.proto.authPassword(USER, passwordPayload());
  await waitFor(() => raw.events.authSuccess);
  return raw;
}

test('a peer that sends beyond its channel window is cut off', async (t) => {
  const server = await startServer(t, { onDirectTcpip: (_info, accept) => void accept().pause() });
  const { proto, events } = await authenticatedRaw(t, server);
  sendChannelOpen(
    proto,
    'direct-tcpip',
    0,
    65536,
    32768,
    encodeDirectTcpipData('127.0.0.1', 9, '0.0.0.0', 0),
  );
  await waitFor(() => events.confirmed.length === 1);
  const { sender, window } = events.confirmed[0]!;
  const packet = Buffer.alloc(32 * 1024);
  for (let sent = 0; sent <= window; sent += packet.length) proto.channelData(sender, packet);
  await waitFor(() => events.closed);
  assert.ok(isPosternError(await server.connections[0]!.closed, 'SSH_PROTOCOL'));
  await stillServes(t, server);
});

test('a flood of unanswered global requests is cut off', async (t) => {
  const server = await startServer(t, {
    onGlobalRequest: (name, payload) => (name === 'echo' ? payload : new Promise<null>(() => {})),
  });
  const { proto, events } = await authenticatedRaw(t, server);
  for (let i = 0; i < 100; i++) sendGlobalRequest(proto, 'psiphon-status', true, Buffer.alloc(10));
  await waitFor(() => events.closed);
  assert.ok(isPosternError(await server.connections[0]!.closed, 'SSH_PROTOCOL'));
  await stillServes(t, server);
});
