// The OSSH stream wrapper over real loopback sockets: a fake SSH stream and a real SSH session (ssh2 on both
// ends) cross it intact, the wire hides the handshake until NEWKEYS and carries later bytes unchanged, and a
// server facing replays, garbage, truncation or the wrong keyword answers nothing and closes at its deadline.
// The last tests replay a session recorded from the reference implementation.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { Duplex } from 'node:stream';
import { after, test } from 'node:test';
import ssh2 from 'ssh2';
import { ManualClock } from '../../src/common/clock.ts';
import { isPosternError } from '../../src/common/errors.ts';
import {
  acceptObfuscatedSsh,
  dialObfuscatedSsh,
  makeClientPreamble,
  makeIdentificationLinePadding,
  SeedHistory,
  type AcceptObfuscatedSshOptions,
  type IrregularTunnelEvent,
  type ObfuscatedSshStream,
} from '../../src/transport/index.ts';

const KEYWORD = 'loopback-test-keyword';
const SHORT_TIMEOUT_MS = 300;

// ---- fake SSH streams ----

function sshPacket(payload: Buffer, padding: number): Buffer {
  const packet = Buffer.alloc(5 + payload.length + padding);
  packet.writeUInt32BE(1 + payload.length + padding, 0);
  packet[4] = padding;
  payload.copy(packet, 5);
  randomBytes(padding).copy(packet, 5 + payload.length);
  return packet;
}

/** RFC 4253 padding: at least 4 bytes, making the packet a multiple of 8 (what SSH implementations send). */
function rfcPadding(payloadLength: number): number {
  const padding = 8 - ((5 + payloadLength) % 8);
  return padding < 4 ? padding + 8 : padding;
}

interface FakeStream {
  line: Buffer;
  payloads: Buffer[];
  raw: Buffer;
  bytes: Buffer;
}

function fakeStream(name: string, rawLength = 5000): FakeStream {
  const line = Buffer.from(`SSH-2.0-${name}\r\n`);
  const payloads = [
    Buffer.concat([
      Buffer.from([20]),
      randomBytes(16),
      Buffer.from('curve25519-sha256,diffie-hellman-group14-sha256'),
    ]),
    Buffer.concat([Buffer.from([30]), randomBytes(32)]),
    Buffer.from([21]),
  ];
  const raw = Buffer.concat([Buffer.from('AFTER-NEWKEYS:'), randomBytes(rawLength)]);
  const packets = payloads.map((p) => sshPacket(p, rfcPadding(p.length)));
  return { line, payloads, raw, bytes: Buffer.concat([line, ...packets, raw]) };
}

/** Parses a received fake stream; null while incomplete. Padding is ignored: OSSH lengthens it. */
function parseFakeStream(
  buf: Buffer,
  rawLength: number,
): { line: Buffer; payloads: Buffer[]; raw: Buffer; end: number } | null {
  const lineEnd = buf.indexOf('\r\n');
  if (lineEnd === -1) return null;
  const line = buf.subarray(0, lineEnd + 2);
  const payloads: Buffer[] = [];
  let offset = lineEnd + 2;
  for (;;) {
    if (buf.length < offset + 5) return null;
    const length = buf.readUInt32BE(offset);
    const padding = buf[offset + 4]!;
    if (buf.length < offset + 4 + length) return null;
    const payload = buf.subarray(offset + 5, offset + 4 + length - padding);
    payloads.push(payload);
    offset += 4 + length;
    if (payload[0] === 21) break;
  }
  if (buf.length < offset + rawLength) return null;
  return { line, payloads, raw: buf.subarray(offset, offset + rawLength), end: offset };
}

function assertSameStream(received: Buffer, sent: FakeStream): void {
  const parsed = parseFakeStream(received, sent.raw.length);
  assert.ok(parsed !== null, 'the whole stream arrived');
  assert.deepEqual(parsed.line, sent.line);
  assert.deepEqual(parsed.payloads, sent.payloads);
  assert.deepEqual(parsed.raw, sent.raw);
}

/** Writes `data` in pieces of random sizes (some of one byte), to cross every framing boundary. */
function writeInPieces(stream: Duplex, data: Buffer): void {
  let offset = 0;
  while (offset < data.length) {
    const size = Math.random() < 0.3 ? 1 : 1 + Math.floor(Math.random() * 200);
    stream.write(data.subarray(offset, offset + size));
    offset += size;
  }
}

function readUntil(stream: Duplex, done: (buf: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      const buf = Buffer.concat(chunks);
      if (done(buf)) {
        stream.off('data', onData);
        resolve(buf);
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
    stream.once('close', () => reject(new Error('closed before the expected data')));
  });
}

// ---- loopback plumbing ----

const servers: net.Server[] = [];
after(() => {
  for (const server of servers) server.close();
});

async function listen(onSocket: (socket: net.Socket) => void): Promise<number> {
  const server = net.createServer(onSocket);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

function connect(port: number): net.Socket {
  return net.connect(port, '127.0.0.1');
}

/** Records raw bytes arriving on a socket; attached first, it copies chunks before the wrapper deciphers them. */
function tap(socket: net.Socket): Buffer[] {
  const seen: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => seen.push(Buffer.from(chunk)));
  return seen;
}

interface ServerSide {
  port: number;
  accepted: Promise<ObfuscatedSshStream>;
  wire: Buffer[];
  rawSocket: Promise<net.Socket>;
}

function serveOnce(options: Partial<AcceptObfuscatedSshOptions> = {}): Promise<ServerSide> {
  let resolveStream: (s: Promise<ObfuscatedSshStream>) => void = () => {};
  let resolveSocket: (s: net.Socket) => void = () => {};
  const accepted = new Promise<Promise<ObfuscatedSshStream>>((r) => (resolveStream = r)).then((p) => p);
  const rawSocket = new Promise<net.Socket>((r) => (resolveSocket = r));
  const wire: Buffer[] = [];
  return listen((socket) => {
    socket.on('data', (chunk: Buffer) => wire.push(Buffer.from(chunk)));
    resolveSocket(socket);
    resolveStream(acceptObfuscatedSsh(socket, { obfuscationKeyword: KEYWORD, ...options }));
  }).then((port) => ({ port, accepted, wire, rawSocket }));
}

function closedWithin(socket: net.Socket): Promise<{ elapsedMs: number; received: number }> {
  const start = Date.now();
  let received = 0;
  socket.on('data', (chunk: Buffer) => (received += chunk.length));
  return new Promise((resolve) => {
    socket.once('close', () => resolve({ elapsedMs: Date.now() - start, received }));
  });
}

// ---- tests ----

test(
  'a fake SSH stream crosses in both directions; the wire hides it until NEWKEYS, then carries it unchanged',
  { timeout: 10_000 },
  async () => {
    const server = await serveOnce();
    const socket = connect(server.port);
    const clientWire = tap(socket);
    const client = dialObfuscatedSsh(socket, { obfuscationKeyword: KEYWORD });
    const up = fakeStream('PosternTestClient');
    const down = fakeStream('PosternTestServer');
    const passthrough = new Promise<void>((resolve) => client.once('passthrough', resolve));

    writeInPieces(client, up.bytes);
    const stream = await server.accepted;
    const receivedUp = await readUntil(stream, (b) => parseFakeStream(b, up.raw.length) !== null);
    assertSameStream(receivedUp, up);

    writeInPieces(stream, down.bytes);
    const receivedDown = await readUntil(client, (b) => parseFakeStream(b, down.raw.length) !== null);
    assertSameStream(receivedDown, down);
    await passthrough;
    assert.equal(client.obfuscationFinished, true);
    assert.equal(stream.obfuscationFinished, true);

    for (const [wire, sent, what] of [
      [Buffer.concat(server.wire), up, 'client to server'],
      [Buffer.concat(clientWire), down, 'server to client'],
    ] as const) {
      assert.equal(wire.indexOf('SSH-2.0-'), -1, `${what}: no plain identification line on the wire`);
      const obfuscated = wire.subarray(0, wire.length - sent.raw.length);
      assert.equal(obfuscated.indexOf(sent.payloads[0]!.subarray(17)), -1, `${what}: KEXINIT text is hidden`);
      assert.deepEqual(
        wire.subarray(wire.length - sent.raw.length),
        sent.raw,
        `${what}: bytes after NEWKEYS unchanged`,
      );
    }
    const clientPadding = client.paddingLength!;
    assert.ok(clientPadding >= 32 && clientPadding <= 8192);
    assert.ok(stream.paddingLength! >= 2 && stream.paddingLength! <= 8192);
    // Preamble + padded handshake: the wire is longer than the stream by at least the preamble.
    assert.ok(Buffer.concat(server.wire).length >= up.bytes.length + 24 + clientPadding);

    client.destroy();
    stream.destroy();
  },
);

test(
  'after NEWKEYS chunks pass through, and detach() hands back the raw socket with nothing lost',
  { timeout: 10_000 },
  async () => {
    const server = await serveOnce();
    const client = dialObfuscatedSsh(connect(server.port), { obfuscationKeyword: KEYWORD });
    const up = fakeStream('a', 10);
    const down = fakeStream('b', 10);
    client.write(up.bytes);
    const stream = await server.accepted;
    await readUntil(stream, (b) => parseFakeStream(b, up.raw.length) !== null);
    stream.write(down.bytes);
    await readUntil(client, (b) => parseFakeStream(b, down.raw.length) !== null);
    assert.equal(stream.obfuscationFinished, true);

    const payload = randomBytes(2 * 1024 * 1024);
    const echoed = readUntil(client, (b) => b.length >= payload.length);
    stream.pause();
    const rawServerSocket = stream.detach();
    rawServerSocket.pipe(rawServerSocket);
    client.write(payload);
    assert.deepEqual((await echoed).subarray(0, payload.length), payload);
    client.destroy();
  },
);

test('a real SSH session (ssh2 client and server) runs over the wrappers', { timeout: 10_000 }, async () => {
  const hostKey = ssh2.utils.generateKeyPairSync('ed25519').private;
  const sshServer = new ssh2.Server({ hostKeys: [hostKey] }, (conn) => {
    conn.on('authentication', (ctx) => {
      if (ctx.method === 'password' && ctx.password === 'pw') ctx.accept();
      else ctx.reject(['password']);
    });
    conn.on('tcpip', (accept) => {
      const channel = accept();
      channel.pipe(channel);
    });
    conn.on('error', () => {});
  });
  let serverStream: ObfuscatedSshStream | null = null;
  const port = await listen((socket) => {
    void acceptObfuscatedSsh(socket, { obfuscationKeyword: KEYWORD }).then((stream) => {
      serverStream = stream;
      sshServer.injectSocket(stream as unknown as net.Socket);
    });
  });
  const clientStream = dialObfuscatedSsh(connect(port), { obfuscationKeyword: KEYWORD });
  const client = new ssh2.Client();
  const payload = randomBytes(512 * 1024);
  const echoed = await new Promise<Buffer>((resolve, reject) => {
    client.on('error', reject);
    client.on('ready', () => {
      client.forwardOut('127.0.0.1', 1, '198.51.100.1', 7, (err, channel) => {
        if (err) return reject(err);
        const chunks: Buffer[] = [];
        channel.on('data', (c: Buffer) => chunks.push(c));
        channel.on('close', () => resolve(Buffer.concat(chunks)));
        channel.on('end', () => resolve(Buffer.concat(chunks)));
        channel.end(payload);
      });
    });
    client.connect({
      sock: clientStream,
      username: 'user',
      password: 'pw',
      hostVerifier: () => true,
      readyTimeout: 5000,
    });
  });
  assert.deepEqual(echoed, payload);
  assert.equal(clientStream.obfuscationFinished, true);
  assert.equal(serverStream!.obfuscationFinished, true);
  client.end();
});

test(
  'a replayed preamble gets no answer; the server closes at its deadline and reports it',
  { timeout: 10_000 },
  async () => {
    const history = new SeedHistory({ clock: new ManualClock() });
    const events: IrregularTunnelEvent[] = [];
    const options = {
      history,
      timeoutMs: SHORT_TIMEOUT_MS,
      onIrregular: (e: IrregularTunnelEvent) => events.push(e),
    };

    const first = await serveOnce(options);
    const client = dialObfuscatedSsh(connect(first.port), { obfuscationKeyword: KEYWORD });
    client.write(fakeStream('original').bytes);
    await first.accepted;
    const recorded = Buffer.concat(first.wire);
    client.destroy();

    const second = await serveOnce(options);
    const replay = connect(second.port);
    const outcome = closedWithin(replay);
    replay.write(recorded);
    await assert.rejects(second.accepted, (e) => isPosternError(e, 'REPLAYED_SEED'));
    const { elapsedMs, received } = await outcome;
    assert.equal(received, 0, 'the server sent nothing');
    assert.ok(elapsedMs >= SHORT_TIMEOUT_MS - 50, `closed after ${elapsedMs} ms, not at once`);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.reason, 'replayed-seed');
    assert.equal(events[0]!.duplicate?.peer, 'equal');
    assert.doesNotMatch(JSON.stringify(events[0]), /127\.0\.0\.1/, 'the event carries no address');
  },
);

test(
  'random bytes, a wrong keyword or a truncated preamble get no answer and no crash',
  { timeout: 10_000 },
  async () => {
    const cases: Array<{
      name: string;
      send: (socket: net.Socket) => void;
      options?: Partial<AcceptObfuscatedSshOptions>;
      code: string;
      reason: string | null;
    }> = [
      {
        name: 'random bytes',
        send: (s) => s.write(randomBytes(600)),
        code: 'TIMEOUT',
        reason: 'no-prefix-terminator',
      },
      {
        name: 'random bytes, prefixes off',
        send: (s) => s.write(randomBytes(600)),
        options: { acceptPrefixes: false },
        code: 'BAD_PREAMBLE',
        reason: 'bad-magic',
      },
      {
        name: 'wrong keyword',
        send: (s) => dialObfuscatedSsh(s, { obfuscationKeyword: 'not the keyword' }).write('SSH-2.0-x\r\n'),
        options: { acceptPrefixes: false },
        code: 'BAD_PREAMBLE',
        reason: 'bad-magic',
      },
      {
        name: 'more than a prefix window of garbage',
        send: (s) => s.write(randomBytes(70_000)),
        code: 'BAD_PREAMBLE',
        reason: 'no-prefix-terminator',
      },
      {
        name: 'truncated, then silent',
        send: (s) => s.write(randomBytes(10)),
        code: 'TIMEOUT',
        reason: null,
      },
      {
        name: 'truncated, then closed',
        send: (s) => s.end(makeClientPreamble({ keyword: KEYWORD }).bytes.subarray(0, 30)),
        code: 'IO',
        reason: null,
      },
    ];
    // The cases run side by side: each waits for its own deadline.
    await Promise.all(
      cases.map(async (c) => {
        const events: IrregularTunnelEvent[] = [];
        const server = await serveOnce({
          timeoutMs: SHORT_TIMEOUT_MS,
          onIrregular: (e) => events.push(e),
          ...c.options,
        });
        const socket = connect(server.port);
        const outcome = closedWithin(socket);
        c.send(socket);
        await assert.rejects(server.accepted, (e) => isPosternError(e) && e.code === c.code, c.name);
        const { received } = await outcome;
        assert.equal(received, 0, `${c.name}: the server sent nothing`);
        assert.deepEqual(
          events.map((e) => e.reason),
          c.reason === null ? [] : [c.reason],
          c.name,
        );
      }),
    );
  },
);

test(
  'the server keeps reading and dropping after refusing, until the deadline',
  { timeout: 10_000 },
  async () => {
    const server = await serveOnce({ timeoutMs: SHORT_TIMEOUT_MS, acceptPrefixes: false });
    const socket = connect(server.port);
    const outcome = closedWithin(socket);
    socket.write(randomBytes(100));
    const rejected = assert.rejects(server.accepted, (e) => isPosternError(e, 'BAD_PREAMBLE'));
    // The connection is still open and swallowing bytes well after the refusal.
    await new Promise((r) => setTimeout(r, SHORT_TIMEOUT_MS / 2));
    assert.equal(socket.destroyed, false);
    socket.write(randomBytes(1 << 20));
    const { elapsedMs, received } = await outcome;
    await rejected;
    assert.equal(received, 0);
    assert.ok(elapsedMs >= SHORT_TIMEOUT_MS - 50);
    const rawSocket = await server.rawSocket;
    assert.ok(rawSocket.bytesRead > 1 << 20, 'the server read what was sent');
  },
);

test(
  'a client prefix is accepted and answered with a server prefix the client skips',
  { timeout: 10_000 },
  async () => {
    const server = await serveOnce();
    const socket = connect(server.port);
    const clientWire = tap(socket);
    const prefix = {
      bytes: Buffer.from('POST /upload HTTP/1.1\r\nHost: cdn.example\r\n\r\n'),
      specName: 'http-post',
    };
    const client = dialObfuscatedSsh(socket, { obfuscationKeyword: KEYWORD, prefix });
    const up = fakeStream('PrefixClient', 100);
    const down = fakeStream('PrefixServer', 100);
    writeInPieces(client, up.bytes);
    const stream = await server.accepted;
    assert.equal(stream.prefixSpecName, 'http-post');
    assert.deepEqual(Buffer.concat(server.wire).subarray(0, prefix.bytes.length), prefix.bytes);
    assertSameStream(await readUntil(stream, (b) => parseFakeStream(b, up.raw.length) !== null), up);
    stream.write(down.bytes);
    assertSameStream(await readUntil(client, (b) => parseFakeStream(b, down.raw.length) !== null), down);
    assert.ok(
      Buffer.concat(clientWire).length >= 24 + 16 + down.bytes.length,
      'the answer started with a prefix',
    );
    client.destroy();
  },
);

/** A valid preamble, and a cipher to continue the client's stream with hostile framing. */
function hostileClient(): { preamble: Buffer; encrypt: (plain: Buffer) => Buffer } {
  const preamble = makeClientPreamble({ keyword: KEYWORD });
  return {
    preamble: preamble.bytes,
    encrypt: (plain) => {
      const body = Buffer.from(plain);
      preamble.clientToServer.xorInPlace(body);
      return body;
    },
  };
}

test(
  'bad SSH framing after a good preamble fails with BAD_FRAMING, nothing worse',
  { timeout: 10_000 },
  async () => {
    const badFraming: Array<[string, Buffer]> = [
      ['padding >= length', Buffer.from('SSH-2.0-x\r\n\x00\x00\x00\x04\x09', 'latin1')],
      ['zero length', Buffer.from('SSH-2.0-x\r\n\x00\x00\x00\x00\x00', 'latin1')],
      ['over 256 KiB', Buffer.from('SSH-2.0-x\r\n\x00\x04\x00\x01\x04', 'latin1')],
      ['no CRLF within 1024 bytes', Buffer.alloc(1100, 0x41)],
      ['too many lines before SSH-', Buffer.from('x\r\n'.repeat(6000), 'latin1')],
    ];
    for (const [name, plain] of badFraming) {
      // Framing that arrives after the preamble was accepted fails the stream.
      const server = await serveOnce();
      const socket = connect(server.port);
      const hostile = hostileClient();
      socket.write(hostile.preamble);
      const stream = await server.accepted;
      const failed = new Promise<unknown>((resolve) => stream.once('error', resolve));
      socket.write(hostile.encrypt(plain));
      assert.ok(isPosternError(await failed, 'BAD_FRAMING'), name);
      socket.destroy();

      // Framing that arrives with the preamble makes the accept fail.
      const again = await serveOnce();
      const socket2 = connect(again.port);
      const hostile2 = hostileClient();
      socket2.write(Buffer.concat([hostile2.preamble, hostile2.encrypt(plain)]));
      const outcome = await again.accepted.then(
        (s) => new Promise<unknown>((resolve) => s.once('error', resolve)),
        (e: unknown) => e,
      );
      assert.ok(isPosternError(outcome, 'BAD_FRAMING'), `${name}, in the first chunk`);
      socket2.destroy();
    }

    // Our own side refuses to frame an impossible packet rather than send it.
    const other = await serveOnce();
    const client = dialObfuscatedSsh(connect(other.port), { obfuscationKeyword: KEYWORD });
    const writeError = new Promise<unknown>((resolve) => client.once('error', resolve));
    client.write('SSH-2.0-x\r\n');
    client.write(Buffer.from([0, 4, 0, 1, 4]));
    assert.ok(isPosternError(await writeError, 'BAD_FRAMING'));
  },
);

test('identification padding: 2-8192 bytes of NUL lines of at most 512 bytes, each ending CRLF', () => {
  for (const length of [2, 3, 4, 511, 512, 513, 514, 1024, 1025, 8191, 8192]) {
    const padding = makeIdentificationLinePadding(length);
    assert.equal(padding.length, length);
    const text = padding.toString('latin1');
    assert.ok(text.endsWith('\r\n'));
    const lines = text.split('\r\n').slice(0, -1);
    assert.equal(
      lines.reduce((n, l) => n + l.length + 2, 0),
      length,
    );
    assert.ok(lines.every((l) => l.length + 2 <= 512 && /^\0*$/.test(l)));
  }
  assert.throws(
    () => makeIdentificationLinePadding(1),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
});

// ---- the reference's recorded session ----

interface ReferenceSession {
  keyword: string;
  seed: string;
  padding: string;
  preamble: string;
  clientStream: string;
  clientToServerWire: string;
  clientToServerPlain: string;
  serverStream: string;
  serverToClientWire: string;
  serverToClientPlain: string;
}

function loadSession(): ReferenceSession {
  return JSON.parse(
    readFileSync(new URL('../fixtures/ossh/reference-session.json', import.meta.url), 'utf8'),
  ) as ReferenceSession;
}

/** An in-memory Duplex: `feed` is what it reads; what is written to it is collected. */
function memoryDuplex(): { duplex: Duplex; feed: (b: Buffer) => void; written: Buffer[] } {
  const written: Buffer[] = [];
  const duplex = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(chunk);
      callback();
    },
  });
  return { duplex, feed: (b) => duplex.push(b), written };
}

/** Same identification line, packet payloads and post-NEWKEYS bytes (padding aside). */
function assertSamePackets(got: Buffer, sent: Buffer): void {
  const a = parseFakeStream(got, 0);
  const b = parseFakeStream(sent, 0);
  assert.ok(a !== null && b !== null);
  assert.deepEqual(a.line, b.line);
  assert.deepEqual(a.payloads, b.payloads);
  assert.deepEqual(got.subarray(a.end), sent.subarray(b.end));
}

/**
 * What our reader hands up for a stream the reference reader hands up as `plain`: the same bytes, except that
 * padding the peer added beyond a multiple of 8 is trimmed from each handshake packet (RFC 4253 framing).
 */
function trimmedLikeOurReader(plain: Buffer): Buffer {
  const lineEnd = plain.indexOf('\r\n') + 2;
  const out: Buffer[] = [plain.subarray(0, lineEnd)];
  let offset = lineEnd;
  for (;;) {
    const length = plain.readUInt32BE(offset);
    const padding = plain[offset + 4]!;
    const excess = (4 + length) % 8;
    const trim = excess !== 0 && padding - excess >= 4 ? excess : 0;
    const header = Buffer.alloc(5);
    header.writeUInt32BE(length - trim, 0);
    header[4] = padding - trim;
    out.push(header, plain.subarray(offset + 5, offset + 4 + length - trim));
    const isNewKeys = length - padding - 1 > 0 && plain[offset + 5] === 21;
    offset += 4 + length;
    if (isNewKeys) break;
  }
  out.push(plain.subarray(offset));
  return Buffer.concat(out);
}

test('reference session: our server deciphers the reference client', { timeout: 10_000 }, async () => {
  const session = loadSession();
  const { duplex, feed } = memoryDuplex();
  const accepted = acceptObfuscatedSsh(duplex, { obfuscationKeyword: session.keyword });
  const wire = Buffer.concat([
    Buffer.from(session.preamble, 'hex'),
    Buffer.from(session.clientToServerWire, 'hex'),
  ]);
  for (let offset = 0; offset < wire.length; offset += 97)
    feed(Buffer.from(wire.subarray(offset, offset + 97)));
  const stream = await accepted;
  const referencePlain = Buffer.from(session.clientToServerPlain, 'hex');
  const expected = trimmedLikeOurReader(referencePlain);
  const got = await readUntil(stream, (b) => b.length >= expected.length);
  assert.equal(got.toString('hex'), expected.toString('hex'));
  assertSamePackets(got, Buffer.from(session.clientStream, 'hex'));
  assert.equal(stream.obfuscationFinished, false, 'our side has not sent NEWKEYS');
  stream.destroy();
});

test(
  'reference session: our client with the same seed and padding sends the reference preamble and deciphers the reference server',
  { timeout: 10_000 },
  async () => {
    const session = loadSession();
    const { duplex, feed, written } = memoryDuplex();
    const client = dialObfuscatedSsh(duplex, {
      obfuscationKeyword: session.keyword,
      seed: Buffer.from(session.seed, 'hex'),
      padding: Buffer.from(session.padding, 'hex'),
    });
    client.write(Buffer.from(session.clientStream, 'hex'));
    await new Promise((r) => setImmediate(r));
    const sent = Buffer.concat(written);
    assert.equal(sent.subarray(0, session.preamble.length / 2).toString('hex'), session.preamble);
    const wire = Buffer.from(session.serverToClientWire, 'hex');
    for (let offset = 0; offset < wire.length; offset += 1000)
      feed(Buffer.from(wire.subarray(offset, offset + 1000)));
    const expected = trimmedLikeOurReader(Buffer.from(session.serverToClientPlain, 'hex'));
    const got = await readUntil(client, (b) => b.length >= expected.length);
    assert.equal(got.toString('hex'), expected.toString('hex'));
    assertSamePackets(got, Buffer.from(session.serverStream, 'hex'));
    assert.equal(client.obfuscationFinished, true);
    client.destroy();
  },
);
