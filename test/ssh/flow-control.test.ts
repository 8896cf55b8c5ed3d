// Backpressure end to end: a consumer that stops reading bounds what the peer may send, and a transport that
// stops draining bounds what the sender buffers, across many channels.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import { CONNECTION_SEND_BUFFER_LIMIT } from '../../src/ssh/connection.ts';
import {
  CHANNEL_MAX_PACKET,
  connectSsh,
  DEFAULT_CHANNEL_WINDOW,
  type ChannelStream,
} from '../../src/ssh/index.ts';
import {
  connectClient,
  passwordPayload,
  sha256,
  startFirehose,
  startServer,
  USER,
  waitFor,
} from './harness.ts';

test('a channel whose reader stops holds at most one window, and the data survives the pause', async (t) => {
  let held: ChannelStream | null = null;
  const server = await startServer(t, {
    onDirectTcpip: (_info, accept) => {
      held = accept();
      held.pause();
    },
  });
  const client = await connectClient(t, server);
  const channel = await client.openDirectTcpip('127.0.0.1', 1);
  const data = randomBytes(5 * 1024 * 1024);
  channel.end(data);
  await waitFor(
    () => held !== null && held.readableLength === DEFAULT_CHANNEL_WINDOW,
    3000,
    'one full window',
  );
  await new Promise((r) => setTimeout(r, 200));
  const serverSide = held as unknown as ChannelStream;
  assert.equal(serverSide.readableLength, DEFAULT_CHANNEL_WINDOW);
  assert.equal(channel.bytesSent, DEFAULT_CHANNEL_WINDOW, 'the client sent nothing beyond the window');

  const chunks: Buffer[] = [];
  serverSide.on('data', (d: Buffer) => chunks.push(d));
  serverSide.resume();
  await new Promise((r) => serverSide.on('end', r));
  assert.equal(sha256(Buffer.concat(chunks)), sha256(data));
});

test('when the transport stops draining, channel data waits instead of piling up in memory', async (t) => {
  const channels = 40;
  const perChannel = 2 * 1024 * 1024;
  const firehose = { written: 0 };
  const port = await startFirehose(t, channels * perChannel, firehose);
  const server = await startServer(t);
  // Our own socket, so we can stop reading it.
  const socket = net.connect(server.port, '127.0.0.1');
  t.after(() => socket.destroy());
  const conn = await connectSsh(socket, {
    username: USER,
    password: passwordPayload(),
    expectedHostKeyBlob: server.hostKeyBlob,
    clientVersion: 'SSH-2.0-x',
    // 40 MiB of window in all: far more than the kernel's socket buffers can absorb.
    channelWindow: 1024 * 1024,
  });
  t.after(() => conn.close());
  const serverConn = server.connections[0]!;

  let received = 0;
  const opened = await Promise.all(
    Array.from({ length: channels }, () => conn.openDirectTcpip('127.0.0.1', port)),
  );
  for (const ch of opened) ch.on('data', (d: Buffer) => (received += d.length));
  await waitFor(() => received > 0, 3000, 'data flowing');
  socket.pause();

  // With 40 windows of 1 MiB open, the server could queue tens of MiB in the transport if it did not wait for
  // the transport to drain.
  let maxQueued = 0;
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 10));
    maxQueued = Math.max(maxQueued, serverConn.transport.writableLength);
  }
  assert.ok(
    maxQueued <= CONNECTION_SEND_BUFFER_LIMIT + 2 * CHANNEL_MAX_PACKET,
    `transport queue reached ${maxQueued} bytes`,
  );

  socket.resume();
  await waitFor(() => received === channels * perChannel, 20_000, 'all data after resuming');
  assert.equal(serverConn.getStats().channelBytesSent, channels * perChannel);
});
