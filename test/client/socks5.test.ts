import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { PosternError } from '../../src/common/errors.ts';
import {
  DialError,
  DirectDialer,
  startSocksProxy,
  type ForwardClosedInfo,
  type ForwardInfo,
  type LocalProxy,
} from '../../src/client/index.ts';
import {
  BLOB_SIZE,
  FailingDialer,
  HangingDialer,
  PlainDuplexDialer,
  curl,
  eventually,
  makeBlob,
  rawExchange,
  sha256,
  startTestOrigin,
  type TestOrigin,
} from './proxy-fixtures.ts';
import { freePort } from '../../src/common/free-port.ts';

const blob = makeBlob();
const blobSha = sha256(blob);
const HANDSHAKE_TIMEOUT_MS = 300;

const greeting = Buffer.from([0x05, 0x01, 0x00]);
function connectRequest(atyp: number, addr: Buffer, port: number, cmd = 0x01): Buffer {
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  return Buffer.concat([Buffer.from([0x05, cmd, 0x00, atyp]), addr, p]);
}
function domainRequest(name: string | Buffer, port: number, cmd = 0x01): Buffer {
  const bytes = typeof name === 'string' ? Buffer.from(name) : name;
  return connectRequest(0x03, Buffer.concat([Buffer.from([bytes.length]), bytes]), port, cmd);
}

describe('SOCKS proxy through curl', () => {
  let origin: TestOrigin;
  let origin6: TestOrigin;
  let proxy: LocalProxy;
  let authProxy: LocalProxy;
  const opened: ForwardInfo[] = [];
  const closed: ForwardClosedInfo[] = [];
  let dir: string;

  before(async () => {
    origin = await startTestOrigin(blob);
    origin6 = await startTestOrigin(blob, '::1');
    proxy = await startSocksProxy({
      dialer: new DirectDialer(),
      onConnection: (i) => opened.push(i),
      onForwardClosed: (i) => closed.push(i),
    });
    authProxy = await startSocksProxy({
      dialer: new DirectDialer(),
      credentials: { username: 'alice', password: 'correct horse' },
    });
    dir = mkdtempSync(join(tmpdir(), 'postern-socks-'));
  });
  after(async () => {
    await Promise.all([proxy.close(), authProxy.close(), origin.close(), origin6.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  const socks = (): string => `127.0.0.1:${proxy.address.port}`;

  it('listens on loopback by default', () => {
    assert.equal(proxy.address.address, '127.0.0.1');
  });

  it('--socks5-hostname: the proxy resolves the name and reports host and port only', async () => {
    const r = await curl(['--socks5-hostname', socks(), `http://localhost:${origin.port}/echo/a?b=c`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout.toString()).url, '/echo/a?b=c');
    await eventually(() => closed.some((c) => c.host === 'localhost'));
    assert.deepEqual(opened.at(-1), { host: 'localhost', port: origin.port });
    const c = closed.find((x) => x.host === 'localhost');
    assert.ok(c && c.bytesUp > 0 && c.bytesDown > 0);
    assert.deepEqual(Object.keys(c).sort(), ['bytesDown', 'bytesUp', 'host', 'port']);
  });

  it('--socks5 with an IPv4 literal', async () => {
    const r = await curl(['--socks5', socks(), `${origin.base}/echo/v4`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout.toString()).url, '/echo/v4');
    assert.ok(opened.some((o) => o.host === '127.0.0.1' && o.port === origin.port));
  });

  it('IPv6 destination [::1], as an address and as a name', async () => {
    for (const flag of ['--socks5', '--socks5-hostname']) {
      const r = await curl([flag, socks(), `${origin6.base}/echo/v6`]);
      assert.equal(r.code, 0, `${flag}: ${r.stderr}`);
      assert.equal(JSON.parse(r.stdout.toString()).url, '/echo/v6');
    }
    assert.ok(opened.some((o) => o.host === '::1' && o.port === origin6.port));
  });

  it('SOCKS4 and SOCKS4a CONNECT', async () => {
    const a = await curl(['--socks4a', socks(), `http://localhost:${origin.port}/echo/4a`]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(JSON.parse(a.stdout.toString()).url, '/echo/4a');
    const b = await curl(['--socks4', socks(), `${origin.base}/echo/4`]);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(JSON.parse(b.stdout.toString()).url, '/echo/4');
  });

  it('10 MB download and upload arrive intact', async () => {
    const down = await curl(['--socks5-hostname', socks(), `${origin.base}/blob`]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(down.stdout.length, BLOB_SIZE);
    assert.equal(sha256(down.stdout), blobSha);
    await eventually(() => closed.some((c) => c.bytesDown > BLOB_SIZE));

    const file = join(dir, 'up.bin');
    writeFileSync(file, blob);
    const up = await curl([
      '--socks5-hostname',
      socks(),
      '--data-binary',
      `@${file}`,
      '-H',
      'Content-Type: application/octet-stream',
      `${origin.base}/sha256`,
    ]);
    assert.equal(up.code, 0, up.stderr);
    const seen = JSON.parse(up.stdout.toString()) as { sha256: string; bytes: number };
    assert.equal(seen.bytes, BLOB_SIZE);
    assert.equal(seen.sha256, blobSha);
    await eventually(() => closed.some((c) => c.bytesUp > BLOB_SIZE));
  });

  it('username/password: right credentials pass, wrong ones and no-auth clients are refused', async () => {
    const proxyAddr = `127.0.0.1:${authProxy.address.port}`;
    const ok = await curl([
      '--socks5-hostname',
      proxyAddr,
      '--proxy-user',
      'alice:correct horse',
      `${origin.base}/echo/auth`,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout.toString()).url, '/echo/auth');

    const wrong = await curl([
      '--socks5-hostname',
      proxyAddr,
      '--proxy-user',
      'alice:wrong',
      `${origin.base}/echo/auth`,
    ]);
    assert.notEqual(wrong.code, 0);
    assert.equal(wrong.stdout.length, 0);

    const none = await curl(['--socks5-hostname', proxyAddr, `${origin.base}/echo/auth`]);
    assert.notEqual(none.code, 0);

    // On the wire: no acceptable method, and a failed sub-negotiation status.
    const noAuth = await rawExchange(authProxy.address.port, [greeting]);
    assert.deepEqual([...noAuth.data], [0x05, 0xff]);
    assert.ok(noAuth.closed);
    const creds = Buffer.concat([
      Buffer.from([0x05, 0x01, 0x02]),
      Buffer.from([0x01, 5]),
      Buffer.from('alice'),
      Buffer.from([5]),
      Buffer.from('wrong'),
    ]);
    const bad = await rawExchange(authProxy.address.port, [creds]);
    assert.deepEqual([...bad.data], [0x05, 0x02, 0x01, 0x01]);
    assert.ok(bad.closed);

    // SOCKS4 carries no password, so a proxy that needs one rejects it.
    const s4 = await curl(['--socks4a', proxyAddr, `${origin.base}/echo/auth`]);
    assert.notEqual(s4.code, 0);
  });

  it('a refused destination gets "connection refused" (curl reports reply 5)', async () => {
    const closedPort = await freePort();
    const r = await curl(['--socks5', socks(), `http://127.0.0.1:${closedPort}/`]);
    assert.equal(r.code, 97, r.stderr);
    assert.match(r.stderr, /\(5\)/);
  });

  it('carries data sent along with the request (optimistic data) and answers in order', async () => {
    const req = domainRequest('localhost', origin.port);
    const httpReq = Buffer.from('GET /echo/early HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const r = await rawExchange(proxy.address.port, [Buffer.concat([greeting, req, httpReq])]);
    assert.deepEqual([...r.data.subarray(0, 2)], [0x05, 0x00]);
    assert.deepEqual([...r.data.subarray(2, 4)], [0x05, 0x00]);
    assert.match(r.data.subarray(12).toString(), /^HTTP\/1\.1 200 OK[\s\S]*"url":"\/echo\/early"/);
  });

  it('passes a half-close through: the destination sees end of input and still answers', async () => {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      let n = 0;
      s.on('data', (d: Buffer) => (n += d.length));
      s.on('end', () => s.end(`got ${n} bytes`));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const payload = Buffer.alloc(100_000, 7);
    const r = await rawExchange(
      proxy.address.port,
      [greeting, connectRequest(0x01, Buffer.from([127, 0, 0, 1]), port), payload],
      { end: true, gapMs: 20 },
    );
    server.close();
    assert.equal(r.data.subarray(12).toString(), 'got 100000 bytes');
  });
});

describe('SOCKS proxy against hostile clients', () => {
  let origin: TestOrigin;
  let proxy: LocalProxy;

  before(async () => {
    origin = await startTestOrigin(blob);
    proxy = await startSocksProxy({ dialer: new DirectDialer(), handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS });
  });
  after(async () => {
    await Promise.all([proxy.close(), origin.close()]);
  });

  const stillServes = async (): Promise<void> => {
    const r = await curl(['--socks5-hostname', `127.0.0.1:${proxy.address.port}`, `${origin.base}/echo/ok`]);
    assert.equal(r.code, 0, r.stderr);
  };

  it('random bytes cost one closed connection each', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 600 }), async (bytes) => {
        const r = await rawExchange(proxy.address.port, [Buffer.from(bytes)], { timeoutMs: 1500 });
        // Whatever was sent, the proxy answers at most a short reply and then closes.
        assert.ok(r.closed, 'connection should be closed');
        assert.ok(r.data.length <= 12);
      }),
      { numRuns: 25 },
    );
    await stillServes();
  });

  it('a truncated greeting is closed at end of input, or at the handshake timeout', async () => {
    const ended = await rawExchange(proxy.address.port, [Buffer.from([0x05, 0x03, 0x00])], { end: true });
    assert.ok(ended.closed);
    assert.equal(ended.data.length, 0);
    const stalled = await rawExchange(proxy.address.port, [Buffer.from([0x05, 0x03, 0x00])]);
    assert.ok(stalled.closed);
    assert.ok(stalled.ms >= HANDSHAKE_TIMEOUT_MS - 50 && stalled.ms < 1500, `${stalled.ms} ms`);
    await stillServes();
  });

  it('a slow client that trickles its handshake is closed at the timeout', async () => {
    const bytes = Buffer.concat([greeting, domainRequest('localhost', origin.port)]);
    const chunks = [...bytes].map((b) => Buffer.from([b]));
    const r = await rawExchange(proxy.address.port, chunks, { gapMs: 60, timeoutMs: 3000 });
    assert.ok(r.closed);
    // Sending it all would take 19 bytes x 60 ms; the proxy cuts in at the timeout.
    assert.ok(r.ms < 900, `${r.ms} ms`);
    assert.deepEqual([...r.data], [0x05, 0x00]);
    await stillServes();
  });

  it('oversize and malformed destination names get "general failure"', async () => {
    for (const name of [
      Buffer.alloc(255, 0x61),
      Buffer.from('local\u0000host'),
      Buffer.from('has space'),
      Buffer.alloc(0),
    ]) {
      const r = await rawExchange(proxy.address.port, [greeting, domainRequest(name, 80)]);
      assert.deepEqual([...r.data.subarray(0, 4)], [0x05, 0x00, 0x05, 0x01], `name ${name.toString('hex')}`);
      assert.ok(r.closed);
    }
    // A name that promises 255 bytes and sends 3 waits for the rest, then times out.
    const partial = Buffer.concat([Buffer.from([0x05, 0x01, 0x00, 0x03, 255]), Buffer.from('abc')]);
    const r = await rawExchange(proxy.address.port, [greeting, partial]);
    assert.ok(r.closed);
    assert.deepEqual([...r.data], [0x05, 0x00]);
    await stillServes();
  });

  it('BIND and UDP ASSOCIATE get "command not supported", unknown address types their own reply', async () => {
    for (const cmd of [0x02, 0x03, 0x09]) {
      const r = await rawExchange(proxy.address.port, [greeting, domainRequest('localhost', 80, cmd)]);
      assert.deepEqual([...r.data.subarray(0, 4)], [0x05, 0x00, 0x05, 0x07], `command ${cmd}`);
      assert.ok(r.closed);
    }
    const r = await rawExchange(proxy.address.port, [greeting, Buffer.from([0x05, 0x01, 0x00, 0x09, 1, 2])]);
    assert.deepEqual([...r.data.subarray(0, 4)], [0x05, 0x00, 0x05, 0x08]);
    const s4bind = Buffer.from([0x04, 0x02, 0, 80, 127, 0, 0, 1, 0]);
    const r4 = await rawExchange(proxy.address.port, [s4bind]);
    assert.equal(r4.data[1], 0x5b);
  });

  it('an endless SOCKS4 user id or flood of bytes is cut off, not buffered', async () => {
    const r = await rawExchange(proxy.address.port, [
      Buffer.from([0x04, 0x01, 0, 80, 127, 0, 0, 1]),
      Buffer.alloc(10_000, 0x41),
    ]);
    assert.ok(r.closed);
    assert.equal(r.data[1], 0x5b);
    const flood = await rawExchange(proxy.address.port, [greeting, Buffer.alloc(64 * 1024, 0x05)]);
    assert.ok(flood.closed);
    await stillServes();
  });
});

describe('SOCKS replies for dial failures', () => {
  const cases: Array<[string, unknown, number]> = [
    ['refused', new DialError('refused', 'x'), 0x05],
    ['host unreachable', new DialError('host-unreachable', 'x'), 0x04],
    ['network unreachable', new DialError('network-unreachable', 'x'), 0x03],
    ['not allowed', new DialError('not-allowed', 'x'), 0x02],
    ['tunnel down', new DialError('tunnel-down', 'x'), 0x01],
    ['SSH channel refused', new PosternError('REFUSED', 'channel open refused'), 0x05],
    ['tunnel closed', new PosternError('CLOSED', 'closed'), 0x01],
    ['a plain error', new Error('boom'), 0x01],
    ['ENOTFOUND', Object.assign(new Error('nope'), { code: 'ENOTFOUND' }), 0x04],
  ];
  for (const [name, error, reply] of cases) {
    it(`${name} -> reply ${reply}`, async () => {
      const proxy = await startSocksProxy({ dialer: new FailingDialer(error) });
      try {
        const r = await rawExchange(proxy.address.port, [greeting, domainRequest('example.com', 443)]);
        assert.deepEqual([...r.data.subarray(0, 4)], [0x05, 0x00, 0x05, reply]);
        assert.equal(r.data.length, 12);
        assert.ok(r.closed);
        const s4 = await rawExchange(proxy.address.port, [
          Buffer.concat([Buffer.from([0x04, 0x01, 1, 187, 0, 0, 0, 1, 0]), Buffer.from('example.com\0')]),
        ]);
        assert.equal(s4.data[1], 0x5b);
      } finally {
        await proxy.close();
      }
    });
  }

  it('a dial past the deadline gets "host unreachable", even from a dialer that ignores abort', async () => {
    for (const dialer of [new FailingDialer(null), new HangingDialer()]) {
      const proxy = await startSocksProxy({ dialer, dialTimeoutMs: 150 });
      try {
        const r = await rawExchange(proxy.address.port, [greeting, domainRequest('example.com', 80)]);
        assert.deepEqual([...r.data.subarray(0, 4)], [0x05, 0x00, 0x05, 0x04]);
        assert.ok(r.ms < 1000, `${r.ms} ms`);
      } finally {
        await proxy.close();
      }
    }
  });
});

describe('SOCKS relay over a tunnel-like stream', () => {
  it('a plain Duplex forward carries 10 MB intact, with backpressure', async () => {
    const origin = await startTestOrigin(blob);
    const dialer = new PlainDuplexDialer();
    const proxy = await startSocksProxy({ dialer });
    try {
      const r = await curl(['--socks5-hostname', `127.0.0.1:${proxy.address.port}`, `${origin.base}/blob`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(r.stdout), blobSha);
      assert.equal(dialer.dials, 1);
    } finally {
      await Promise.all([proxy.close(), origin.close()]);
    }
  });

  it('a client that stops reading holds the destination back instead of filling memory', async () => {
    let written = 0;
    let blocked = false;
    const server = http.createServer((_req, res) => {
      const chunk = Buffer.alloc(64 * 1024);
      const pump = (): void => {
        while (written < 200 * 1024 * 1024) {
          written += chunk.length;
          if (!res.write(chunk)) {
            blocked = true;
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const proxy = await startSocksProxy({ dialer: new DirectDialer() });
    const client = net.connect({ host: '127.0.0.1', port: proxy.address.port });
    try {
      await new Promise<void>((r) => client.once('connect', () => r()));
      client.write(Buffer.concat([greeting, connectRequest(0x01, Buffer.from([127, 0, 0, 1]), port)]));
      client.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      client.pause();
      await eventually(() => blocked);
      await new Promise((r) => setTimeout(r, 300));
      // Kernel socket buffers on three connections, and no more: a relay that buffered would take it all.
      assert.ok(written < 48 * 1024 * 1024, `${written} bytes left the origin`);
    } finally {
      client.destroy();
      server.closeAllConnections();
      server.close();
      await proxy.close();
    }
  });

  it('close() stops listening and destroys open connections', async () => {
    const origin = await startTestOrigin(blob);
    const proxy = await startSocksProxy({ dialer: new DirectDialer() });
    const client = net.connect({ host: '127.0.0.1', port: proxy.address.port });
    await new Promise<void>((r) => client.once('connect', () => r()));
    client.write(Buffer.concat([greeting, domainRequest('localhost', origin.port)]));
    await new Promise<void>((r) => client.once('data', () => r()));
    const gone = new Promise<void>((r) => client.once('close', () => r()));
    client.on('error', () => {});
    await proxy.close();
    await gone;
    const refused = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port: proxy.address.port });
      s.on('connect', () => {
        s.destroy();
        r(false);
      });
      s.on('error', () => r(true));
    });
    assert.ok(refused);
    await origin.close();
  });
});
