// Our SSH client against our SSH server over loopback TCP: authentication, host key pinning, API requests in
// both directions, port forwards, limits, re-keying and the algorithm choices.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import net from 'node:net';
import { isPosternError } from '../../src/common/errors.ts';
import { acceptObfuscatedSsh, dialObfuscatedSsh } from '../../src/transport/index.ts';
import {
  acceptSshConnection,
  psiphonPasswordAuthenticator,
  CHANNEL_OPEN_FAILURE,
  ChannelOpenError,
  HYBRID_KEX,
  connectSsh,
  ssh2BindingAvailable,
  type SshPasswordPayload,
  type SshServerConnection,
} from '../../src/ssh/index.ts';
import {
  connectClient,
  dial,
  echoRequests,
  hostKey,
  listen,
  relay,
  passwordPayload,
  PASS,
  roundTrip,
  SESSION_ID,
  sha256,
  startDigestAfterEof,
  startEcho,
  startServer,
  USER,
  waitFor,
} from './harness.ts';

test('ssh2 loaded its native crypto binding (throughput halves without it)', () => {
  assert.equal(ssh2BindingAvailable, true);
});

test('a client with the right password payload is authenticated and the server sees the payload', async (t) => {
  const server = await startServer(t);
  const client = await connectClient(t, server);
  assert.equal(client.isAuthenticated, true);
  await waitFor(() => server.connections[0]?.isAuthenticated === true, 2000, 'server authentication');
  const auth = server.connections[0]!.auth as SshPasswordPayload;
  assert.equal(auth.sessionId, SESSION_ID);
  assert.deepEqual(auth.clientCapabilities, ['server-requests']);
  assert.equal(auth.sponsorId, '0123456789ABCDEF');
  assert.equal(server.connections[0]!.username, USER);
  // Both ends use the tuned ciphers: pooled padding and 256 KiB packets.
  assert.ok(client.tuning.ciphersTuned >= 1 && client.tuning.deciphersTuned >= 1);
  assert.ok(
    server.connections[0]!.tuning.ciphersTuned >= 1 && server.connections[0]!.tuning.deciphersTuned >= 1,
  );
  // Post-quantum key exchange by default between our own ends.
  assert.equal(client.negotiated?.kex, HYBRID_KEX);
  assert.equal(client.negotiated?.cs.cipher, 'aes128-gcm@openssh.com');
});

test('a wrong password is refused with AUTH_FAILED and the server closes', async (t) => {
  const server = await startServer(t);
  await assert.rejects(connectClient(t, server, { password: passwordPayload('not-the-password') }), (e) =>
    isPosternError(e, 'AUTH_FAILED'),
  );
  await waitFor(() => server.connections.length === 1);
  const closeError = await server.connections[0]!.closed;
  assert.notEqual(closeError, null);
  assert.equal(server.connections[0]!.isAuthenticated, false);
});

test('a wrong user name or a password that is not a Psiphon payload is refused', async (t) => {
  const server = await startServer(t);
  await assert.rejects(connectClient(t, server, { username: 'someone-else' }), (e) =>
    isPosternError(e, 'AUTH_FAILED'),
  );
  await assert.rejects(connectClient(t, server, { password: '{"SessionId": 5' }), (e) =>
    isPosternError(e, 'AUTH_FAILED'),
  );
  await assert.rejects(connectClient(t, server, { password: PASS }), (e) => isPosternError(e, 'AUTH_FAILED'));
  const badSession = passwordPayload().replace(SESSION_ID, 'not-hex-not-hex-not-hex-not-hex!');
  await assert.rejects(connectClient(t, server, { password: badSession }), (e) =>
    isPosternError(e, 'AUTH_FAILED'),
  );
});

test('the client refuses a server whose host key differs from the pinned one, before sending the password', async (t) => {
  let authCalls = 0;
  const server = await startServer(t, {
    authenticate: () => {
      authCalls++;
      return { ok: true, value: { sessionId: '', sshPassword: '', clientCapabilities: [], sponsorId: '' } };
    },
  });
  const other = Buffer.from(server.hostKeyBlob);
  other[other.length - 1]! ^= 1;
  await assert.rejects(connectClient(t, server, { expectedHostKeyBlob: other }), (e) =>
    isPosternError(e, 'HOST_KEY_MISMATCH'),
  );
  assert.equal(authCalls, 0);
});

test('global requests carry payloads both ways: empty, 64 KiB, refused, answered in order', async (t) => {
  let delay = 40;
  const server = await startServer(t, {
    onGlobalRequest: async (name, payload) => {
      if (name === 'slow') {
        // Later requests finish sooner; replies must still come back in request order.
        const wait = (delay -= 10);
        await new Promise((r) => setTimeout(r, Math.max(0, wait)));
        return payload;
      }
      if (name === 'echo') return payload;
      return null;
    },
  });
  const client = await connectClient(t, server);
  assert.equal((await client.request('echo', Buffer.alloc(0))).length, 0);
  const big = randomBytes(64 * 1024);
  assert.deepEqual(await client.request('echo', big), big);
  const larger = randomBytes(200 * 1024);
  assert.deepEqual(await client.request('echo', larger), larger);
  await assert.rejects(client.request('psiphon-unknown', Buffer.from('x')), (e) =>
    isPosternError(e, 'REFUSED'),
  );
  const replies = await Promise.all([0, 1, 2, 3].map((i) => client.request('slow', Buffer.from([i]))));
  assert.deepEqual(
    replies.map((r) => r[0]),
    [0, 1, 2, 3],
  );
  assert.throws(
    () => client.notify('bad name with spaces'),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
});

test('the server can send requests to the client (psiphon-osl with a reply, psiphon-alert without)', async (t) => {
  const server = await startServer(t);
  const seen: string[] = [];
  await connectClient(t, server, {
    onGlobalRequest: (name, payload) => {
      seen.push(`${name}:${payload.toString()}`);
      return name === 'psiphon-osl' ? Buffer.from('ok') : null;
    },
  });
  await waitFor(() => server.connections[0]?.isAuthenticated === true);
  const conn = server.connections[0]!;
  conn.notify('psiphon-alert', Buffer.from('{"reason":"r"}'));
  assert.deepEqual(await conn.request('psiphon-osl', Buffer.from('{}')), Buffer.from('ok'));
  await assert.rejects(conn.request('psiphon-other'), (e) => isPosternError(e, 'REFUSED'));
  assert.deepEqual(seen, ['psiphon-alert:{"reason":"r"}', 'psiphon-osl:{}', 'psiphon-other:']);
});

test('a 10 MB round trip through direct-tcpip to an echo server is intact', async (t) => {
  const server = await startServer(t);
  const echoPort = await startEcho(t);
  const client = await connectClient(t, server);
  const channel = await client.openDirectTcpip('127.0.0.1', echoPort);
  const data = randomBytes(10 * 1024 * 1024);
  const back = await roundTrip(channel, data);
  assert.equal(back.length, data.length);
  assert.equal(sha256(back), sha256(data));
  const stats = client.getStats();
  assert.equal(stats.channelBytesSent, data.length);
  assert.equal(stats.channelBytesReceived, data.length);
  assert.ok(stats.transportBytesWritten > data.length);
  await waitFor(() => server.connections[0]!.getStats().openChannels === 0, 2000, 'channel cleanup');
  assert.equal(server.connections[0]!.getStats().channelBytesReceived, data.length);
});

test('a channel open and its confirmation reach the socket at once, not at the end of the turn', async (t) => {
  // Both sides are waiting on these packets: corking them until the turn ends would add the rest of the turn
  // (promise callbacks, relay set-up) to every new connection's latency.
  let confirmationFlushed: boolean | null = null;
  const server = await startServer(t, {
    onDirectTcpip: (_info, accept) => {
      const channel = accept();
      confirmationFlushed = server.connections[0]!.transport.writableLength === 0;
      channel.end();
    },
  });
  const client = await connectClient(t, server);
  const opening = client.openDirectTcpip('127.0.0.1', 9);
  assert.equal(client.transport.writableLength, 0, 'CHANNEL_OPEN still corked');
  const channel = await opening;
  channel.destroy();
  assert.equal(confirmationFlushed, true, 'CHANNEL_OPEN_CONFIRMATION still corked');
});

test('over OSSH, the obfuscator is taken out of the path once it passes bytes through, and data still flows', async (t) => {
  const keyword = 'connection-test-keyword';
  const key = hostKey();
  const echoPort = await startEcho(t);
  const serverConns: SshServerConnection<SshPasswordPayload>[] = [];
  const port = await listen(
    t,
    net.createServer((socket) => {
      socket.on('error', () => {});
      void acceptObfuscatedSsh(socket, { obfuscationKeyword: keyword }).then((stream) => {
        serverConns.push(
          acceptSshConnection(stream, {
            hostKeyPem: key.privateKeyPem,
            serverVersion: 'SSH-2.0-PosternTest',
            authenticate: psiphonPasswordAuthenticator(USER, PASS),
            onGlobalRequest: echoRequests,
            onDirectTcpip: (info, accept, reject) => {
              const target = net.connect(info.port, info.host);
              target.once('error', () => reject());
              target.once('connect', () => relay(accept(), target));
            },
          }),
        );
      });
    }),
  );
  const client = await connectSsh(dialObfuscatedSsh(dial(t, port), { obfuscationKeyword: keyword }), {
    username: USER,
    password: passwordPayload(),
    expectedHostKeyBlob: Buffer.from(key.publicKeyBlobB64, 'base64'),
    clientVersion: 'SSH-2.0-OpenSSH_8.1',
    encryptThenMac: false,
  });
  t.after(() => client.close());
  await waitFor(
    () => client.transport instanceof net.Socket && serverConns[0]?.transport instanceof net.Socket,
    2000,
    'both sides on the bare socket',
  );
  const data = randomBytes(300_000);
  const channel = await client.openDirectTcpip('127.0.0.1', echoPort);
  assert.equal(sha256(await roundTrip(channel, data)), sha256(data));
  assert.deepEqual(await client.request('echo', Buffer.from('after detach')), Buffer.from('after detach'));
  // A re-key after the obfuscator is gone runs over the bare socket, as it would have through the obfuscator.
  client.rekey();
  assert.deepEqual(await client.request('echo', Buffer.from('after rekey')), Buffer.from('after rekey'));
});

test('100 channels in parallel each carry their own data', async (t) => {
  const server = await startServer(t);
  const echoPort = await startEcho(t);
  const client = await connectClient(t, server);
  const results = await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      const data = randomBytes(50_000 + i * 997);
      const channel = await client.openDirectTcpip('127.0.0.1', echoPort);
      const back = await roundTrip(channel, data);
      return back.equals(data);
    }),
  );
  assert.equal(results.filter(Boolean).length, 100);
  await waitFor(() => client.getStats().openChannels === 0, 3000, 'all channels closed');
});

test('half-close: the client ends its side and still receives the answer sent after EOF', async (t) => {
  const server = await startServer(t);
  const port = await startDigestAfterEof(t);
  const client = await connectClient(t, server);
  const channel = await client.openDirectTcpip('127.0.0.1', port);
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const answer = await roundTrip(channel, data);
  assert.equal(answer.toString(), sha256(data));
});

test('forwards the server refuses reject with the reason code; the no-split-tunnel type is reported', async (t) => {
  const seen: {
    host: string;
    port: number;
    originHost: string;
    originPort: number;
    noSplitTunnel: boolean;
  }[] = [];
  const server = await startServer(t, {
    onDirectTcpip: (info, _accept, reject) => {
      seen.push(info);
      reject(
        info.noSplitTunnel
          ? CHANNEL_OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED
          : CHANNEL_OPEN_FAILURE.SPLIT_TUNNEL,
        'no',
      );
    },
  });
  const client = await connectClient(t, server);
  await assert.rejects(
    client.openDirectTcpip('example.com', 443),
    (e) => e instanceof ChannelOpenError && e.reason === CHANNEL_OPEN_FAILURE.SPLIT_TUNNEL,
  );
  await assert.rejects(
    client.openDirectTcpip('example.com', 80, { noSplitTunnel: true }),
    (e) => e instanceof ChannelOpenError && e.reason === CHANNEL_OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED,
  );
  // Like Go's ssh.Client.Dial, the originator gives nothing away.
  assert.deepEqual(seen, [
    { host: 'example.com', port: 443, originHost: '0.0.0.0', originPort: 0, noSplitTunnel: false },
    { host: 'example.com', port: 80, originHost: '0.0.0.0', originPort: 0, noSplitTunnel: true },
  ]);
  await assert.rejects(client.openDirectTcpip('h', 70000), (e) => isPosternError(e, 'BAD_ARGUMENT'));
});

test('a connection holds at most maxChannels channels', async (t) => {
  const held: unknown[] = [];
  const server = await startServer(t, {
    limits: { maxChannels: 3 },
    onDirectTcpip: (_info, accept) => held.push(accept()),
  });
  const client = await connectClient(t, server);
  for (let i = 0; i < 3; i++) await client.openDirectTcpip('127.0.0.1', 9);
  await assert.rejects(
    client.openDirectTcpip('127.0.0.1', 9),
    (e) => e instanceof ChannelOpenError && e.reason === CHANNEL_OPEN_FAILURE.RESOURCE_SHORTAGE,
  );
  assert.equal(held.length, 3);
});

test('re-keying in the middle of a transfer keeps the data intact, with the hybrid key exchange', async (t) => {
  const server = await startServer(t);
  const echoPort = await startEcho(t);
  const client = await connectClient(t, server);
  let handshakes = 0;
  client.on('handshake', (n) => {
    handshakes++;
    assert.equal(n.kex, HYBRID_KEX);
  });
  const channel = await client.openDirectTcpip('127.0.0.1', echoPort);
  const data = randomBytes(8 * 1024 * 1024);
  const done = roundTrip(channel, data);
  setTimeout(() => client.rekey(), 5);
  setTimeout(() => server.connections[0]!.rekey(), 30);
  const back = await done;
  assert.equal(sha256(back), sha256(data));
  assert.ok(handshakes >= 1, 'a re-key happened');
  assert.ok(client.hybridKex.used >= 2);
});

test('each cipher, MAC and key exchange family works, including 200 KiB requests', async (t) => {
  const server = await startServer(t);
  const echoPort = await startEcho(t);
  const cases = [
    { kex: ['curve25519-sha256'], cipher: ['chacha20-poly1305@openssh.com'] },
    { kex: ['ecdh-sha2-nistp256'], cipher: ['aes256-gcm@openssh.com'] },
    { kex: ['curve25519-sha256@libssh.org'], cipher: ['aes128-ctr'], mac: ['hmac-sha2-256'] },
    {
      kex: ['diffie-hellman-group14-sha256'],
      cipher: ['aes256-ctr'],
      mac: ['hmac-sha2-512-etm@openssh.com'],
    },
    { kex: [HYBRID_KEX], cipher: ['aes192-ctr'], mac: ['hmac-sha1'], serverHostKey: ['ssh-rsa'] },
  ];
  for (const algorithms of cases) {
    const client = await connectClient(t, server, { algorithms });
    assert.equal(client.negotiated?.kex, algorithms.kex[0]);
    assert.equal(client.negotiated?.cs.cipher, algorithms.cipher[0]);
    if (algorithms.mac) assert.equal(client.negotiated?.cs.mac, algorithms.mac[0]);
    const payload = randomBytes(200 * 1024);
    assert.deepEqual(await client.request('echo', payload), payload);
    const data = randomBytes(300_000);
    assert.deepEqual(await roundTrip(await client.openDirectTcpip('127.0.0.1', echoPort), data), data);
    client.close();
  }
  await assert.rejects(
    connectSsh(dial(t, server.port), {
      username: USER,
      password: passwordPayload(),
      expectedHostKeyBlob: server.hostKeyBlob,
      clientVersion: 'SSH-2.0-x',
      algorithms: { cipher: ['arcfour'] },
    }),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
});

test('closing the server side ends the client normally and closes its channels', async (t) => {
  const server = await startServer(t);
  const echoPort = await startEcho(t);
  const client = await connectClient(t, server);
  const channel = await client.openDirectTcpip('127.0.0.1', echoPort);
  const channelClosed = new Promise<void>((resolve) => channel.on('close', () => resolve()));
  server.connections[0]!.close();
  assert.equal(await client.closed, null);
  await channelClosed;
  await assert.rejects(client.request('echo'), (e) => isPosternError(e, 'CLOSED'));
});

test('a server that never finishes the handshake times the client out', async (t) => {
  const net = await import('node:net');
  const silent = net.createServer(() => {});
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.after(() => silent.close());
  const port = (silent.address() as { port: number }).port;
  const started = Date.now();
  await assert.rejects(
    connectSsh(dial(t, port), {
      username: USER,
      password: passwordPayload(),
      expectedHostKeyBlob: Buffer.alloc(10),
      clientVersion: 'SSH-2.0-x',
      handshakeTimeoutMs: 200,
    }),
    (e) => isPosternError(e, 'TIMEOUT'),
  );
  assert.ok(Date.now() - started < 2000);
});
