import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import {
  DialError,
  DirectDialer,
  startHttpProxy,
  type ForwardClosedInfo,
  type ForwardInfo,
  type LocalProxy,
} from '../../src/client/index.ts';
import {
  BLOB_SIZE,
  FailingDialer,
  PlainDuplexDialer,
  curl,
  eventually,
  makeBlob,
  rawExchange,
  sha256,
  startTestOrigin,
  startTlsOrigin,
  type TestOrigin,
} from './proxy-fixtures.ts';

const blob = makeBlob();
const blobSha = sha256(blob);

interface Echo {
  method: string;
  url: string;
  rawHeaders: string[];
}
const headerNames = (e: Echo): string[] =>
  e.rawHeaders.filter((_, i) => i % 2 === 0).map((h) => h.toLowerCase());
const header = (e: Echo, name: string): string | undefined => {
  const i = e.rawHeaders.findIndex((h, j) => j % 2 === 0 && h.toLowerCase() === name);
  return i < 0 ? undefined : e.rawHeaders[i + 1];
};

/** Sends requests one after another on one keep-alive connection through the proxy (node's own client). */
async function sequential(
  proxyPort: number,
  requests: Array<{ method: string; url: string }>,
): Promise<Array<{ status: number; body: Buffer; headers: http.IncomingHttpHeaders; reused: boolean }>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const out = [];
  try {
    for (const r of requests) {
      out.push(
        await new Promise<{
          status: number;
          body: Buffer;
          headers: http.IncomingHttpHeaders;
          reused: boolean;
        }>((resolve, reject) => {
          const req = http.request(
            { host: '127.0.0.1', port: proxyPort, method: r.method, path: r.url, agent },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (d: Buffer) => chunks.push(d));
              res.on('end', () =>
                resolve({
                  status: res.statusCode ?? 0,
                  body: Buffer.concat(chunks),
                  headers: res.headers,
                  reused: req.reusedSocket,
                }),
              );
            },
          );
          req.on('error', reject);
          req.setTimeout(5000, () => req.destroy(new Error('timeout')));
          req.end();
        }),
      );
    }
  } finally {
    agent.destroy();
  }
  return out;
}

describe('HTTP proxy through curl', () => {
  let origin: TestOrigin;
  let proxy: LocalProxy;
  let tls: { port: number; close(): Promise<void> };
  const opened: ForwardInfo[] = [];
  const closed: ForwardClosedInfo[] = [];
  let dir: string;

  before(async () => {
    origin = await startTestOrigin(blob);
    tls = await startTlsOrigin();
    proxy = await startHttpProxy({
      dialer: new DirectDialer(),
      onConnection: (i) => opened.push(i),
      onForwardClosed: (i) => closed.push(i),
    });
    dir = mkdtempSync(join(tmpdir(), 'postern-http-'));
  });
  after(async () => {
    await Promise.all([proxy.close(), origin.close(), tls.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  const px = (): string => `http://127.0.0.1:${proxy.address.port}`;

  it('forwards an absolute-URI request in origin form with the right Host', async () => {
    const r = await curl(['-x', px(), `http://localhost:${origin.port}/echo/a?b=c`]);
    assert.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout.toString()) as Echo;
    assert.equal(e.method, 'GET');
    assert.equal(e.url, '/echo/a?b=c');
    assert.equal(header(e, 'host'), `localhost:${origin.port}`);
    assert.deepEqual(opened.at(-1), { host: 'localhost', port: origin.port });
  });

  it('removes hop-by-hop request headers and keeps end-to-end ones', async () => {
    const r = await curl([
      '-x',
      px(),
      '-H',
      'Proxy-Connection: keep-alive',
      '-H',
      'Keep-Alive: timeout=300',
      '-H',
      'TE: trailers',
      '-H',
      'Trailer: X-Checksum',
      '-H',
      'Connection: X-Foo',
      '-H',
      'X-Foo: listed in Connection',
      '-H',
      'Proxy-Authorization: Basic Zm9vOmJhcg==',
      '-H',
      'X-Keep: yes',
      `${origin.base}/echo/hop`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout.toString()) as Echo;
    const names = headerNames(e);
    for (const gone of ['proxy-connection', 'keep-alive', 'te', 'trailer', 'x-foo', 'proxy-authorization']) {
      assert.ok(!names.includes(gone), `${gone} reached the origin`);
    }
    assert.ok(!/x-foo/i.test(header(e, 'connection') ?? ''));
    assert.equal(header(e, 'x-keep'), 'yes');
  });

  it('removes hop-by-hop response headers', async () => {
    const r = await curl(['-i', '-x', px(), `${origin.base}/hop`]);
    assert.equal(r.code, 0, r.stderr);
    const head = r.stdout.toString().split('\r\n\r\n')[0] ?? '';
    assert.match(head, /^X-End-To-End: kept$/im);
    assert.doesNotMatch(head, /^X-Bar:/im);
    assert.doesNotMatch(head, /^Proxy-Authenticate:/im);
    assert.doesNotMatch(head, /timeout=5/);
  });

  it('keeps the client connection alive across requests to different hosts', async () => {
    const urls = [`http://localhost:${origin.port}/echo/1`, `${origin.base}/echo/2`];
    const bodies = await curl(['-x', px(), ...urls]);
    assert.equal(bodies.code, 0, bodies.stderr);
    const text = bodies.stdout.toString();
    assert.match(text, /"url":"\/echo\/1"[\s\S]*"url":"\/echo\/2"/);
    const w = await curl([
      '-x',
      px(),
      '-o',
      '/dev/null',
      '-o',
      '/dev/null',
      '-w',
      '%{num_connects} ',
      ...urls,
    ]);
    assert.equal(w.code, 0, w.stderr);
    // The second transfer made no new connection to the proxy.
    assert.equal(w.stdout.toString().trim(), '1 0');
  });

  it('HEAD, 204 and 304 answers carry no body and the connection stays usable', async () => {
    const rs = await sequential(proxy.address.port, [
      { method: 'HEAD', url: `${origin.base}/blob` },
      { method: 'GET', url: `${origin.base}/status/204` },
      { method: 'GET', url: `${origin.base}/status/304` },
      { method: 'GET', url: `${origin.base}/echo/after` },
    ]);
    assert.deepEqual(
      rs.map((r) => r.status),
      [200, 204, 304, 200],
    );
    assert.equal(rs[0]?.headers['content-length'], String(BLOB_SIZE));
    assert.equal(rs[0]?.body.length, 0);
    assert.equal(rs[1]?.body.length, 0);
    assert.equal(rs[2]?.headers['etag'], '"x"');
    assert.equal((JSON.parse(rs[3]?.body.toString() ?? '') as Echo).url, '/echo/after');
    assert.ok(rs.slice(1).every((r) => r.reused));
  });

  it('10 MB bodies arrive intact: content-length and chunked, down and up', async () => {
    for (const path of ['/blob', '/chunked']) {
      const r = await curl(['-x', px(), `${origin.base}${path}`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.length, BLOB_SIZE, path);
      assert.equal(sha256(r.stdout), blobSha, path);
    }
    const file = join(dir, 'up.bin');
    writeFileSync(file, blob);
    for (const chunked of [false, true]) {
      const r = await curl([
        '-x',
        px(),
        '--data-binary',
        `@${file}`,
        '-H',
        'Content-Type: application/octet-stream',
        ...(chunked ? ['-H', 'Transfer-Encoding: chunked'] : []),
        `${origin.base}/sha256`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const seen = JSON.parse(r.stdout.toString()) as {
        sha256: string;
        bytes: number;
        transferEncoding: string | null;
        contentLength: string | null;
      };
      assert.equal(seen.bytes, BLOB_SIZE);
      assert.equal(seen.sha256, blobSha);
      if (chunked) assert.equal(seen.transferEncoding, 'chunked');
      else assert.equal(seen.contentLength, String(BLOB_SIZE));
    }
    await eventually(() => closed.some((c) => c.bytesUp === BLOB_SIZE));
    assert.ok(closed.some((c) => c.bytesDown === BLOB_SIZE));
  });

  it('CONNECT: a raw tunnel for plain HTTP (-p) and for HTTPS', async () => {
    const plain = await curl(['-p', '-x', px(), `http://localhost:${origin.port}/echo/tunnel`]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal((JSON.parse(plain.stdout.toString()) as Echo).url, '/echo/tunnel');

    const secure = await curl(['-k', '-x', px(), `https://localhost:${tls.port}/secure`]);
    assert.equal(secure.code, 0, secure.stderr);
    assert.equal(secure.stdout.toString(), 'secure hello /secure');
    assert.ok(opened.some((o) => o.host === 'localhost' && o.port === tls.port));

    const big = await curl(['-p', '-x', px(), `${origin.base}/blob`]);
    assert.equal(sha256(big.stdout), blobSha);
  });

  it('WebSocket upgrades go through with their Upgrade header, then relay both ways', async () => {
    const req =
      `GET ${origin.base}/ws HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n` +
      'Connection: Upgrade\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\n\r\n';
    const r = await rawExchange(proxy.address.port, [Buffer.from(req), Buffer.from('ping')], {
      gapMs: 50,
      timeoutMs: 500,
    });
    const text = r.data.toString();
    assert.match(text, /^HTTP\/1\.1 101 /);
    assert.match(text, /X-Seen-Url: \/ws\r\n/);
    assert.match(text, /X-Seen-Upgrade: websocket\r\n/);
    assert.ok(text.endsWith('ping'));
  });

  it('answers errors with a status and a short plain-text reason', async () => {
    const refused = await curl(['-i', '-x', px(), 'http://127.0.0.1:1/private/path']);
    assert.match(refused.stdout.toString(), /^HTTP\/1\.1 502 /);
    assert.match(refused.stdout.toString(), /could not connect to 127\.0\.0\.1:1: connection refused/);
    assert.doesNotMatch(refused.stdout.toString(), /private/);

    const raw = async (text: string): Promise<string> =>
      (await rawExchange(proxy.address.port, [Buffer.from(text)], { timeoutMs: 1000 })).data.toString();
    assert.match(
      await raw('GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n'),
      /^HTTP\/1\.1 501 /,
    );
    assert.match(
      await raw('GET ftp://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n'),
      /^HTTP\/1\.1 501 /,
    );
    assert.match(await raw('GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw(`TRACE ${origin.base}/ HTTP/1.1\r\nHost: x\r\n\r\n`), /^HTTP\/1\.1 405 /);
    assert.match(await raw('CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw('CONNECT [::1 HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(
      await raw('GET http://user:pw@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n'),
      /^HTTP\/1\.1 400 /,
    );
    const cRefused = await raw('CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n');
    assert.match(cRefused, /^HTTP\/1\.1 502 [\s\S]*connection refused/);
  });
});

describe('HTTP proxy authentication', () => {
  let origin: TestOrigin;
  let proxy: LocalProxy;
  before(async () => {
    origin = await startTestOrigin(blob);
    proxy = await startHttpProxy({
      dialer: new DirectDialer(),
      credentials: { username: 'alice', password: 'correct horse' },
    });
  });
  after(async () => {
    await Promise.all([proxy.close(), origin.close()]);
  });

  it('requires Proxy-Authorization for requests and CONNECT', async () => {
    const px = `http://127.0.0.1:${proxy.address.port}`;
    const none = await curl(['-i', '-x', px, `${origin.base}/echo/x`]);
    assert.match(none.stdout.toString(), /^HTTP\/1\.1 407 [\s\S]*Proxy-Authenticate: Basic realm="Postern"/);
    const wrong = await curl(['-i', '-x', px, '--proxy-user', 'alice:nope', `${origin.base}/echo/x`]);
    assert.match(wrong.stdout.toString(), /^HTTP\/1\.1 407 /);
    const ok = await curl(['-x', px, '--proxy-user', 'alice:correct horse', `${origin.base}/echo/x`]);
    assert.equal(ok.code, 0, ok.stderr);
    const e = JSON.parse(ok.stdout.toString()) as Echo;
    assert.equal(e.url, '/echo/x');
    assert.equal(header(e, 'proxy-authorization'), undefined);
    const tunnelNone = await curl(['-p', '-x', px, `${origin.base}/echo/x`]);
    assert.notEqual(tunnelNone.code, 0);
    assert.match(tunnelNone.stderr, /407/);
    const tunnelOk = await curl([
      '-p',
      '-x',
      px,
      '--proxy-user',
      'alice:correct horse',
      `${origin.base}/echo/t`,
    ]);
    assert.equal(tunnelOk.code, 0, tunnelOk.stderr);
  });
});

describe('HTTP proxy against hostile clients', () => {
  const TIMEOUT_MS = 300;
  let origin: TestOrigin;
  let proxy: LocalProxy;
  before(async () => {
    origin = await startTestOrigin(blob);
    proxy = await startHttpProxy({ dialer: new DirectDialer(), handshakeTimeoutMs: TIMEOUT_MS });
  });
  after(async () => {
    await Promise.all([proxy.close(), origin.close()]);
  });

  const stillServes = async (): Promise<void> => {
    const r = await curl(['-x', `http://127.0.0.1:${proxy.address.port}`, `${origin.base}/echo/ok`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout.toString()) as Echo).url, '/echo/ok');
  };

  it('a request with 10,000 headers gets 431 and the next client is served', async () => {
    let req = `GET ${origin.base}/echo/many HTTP/1.1\r\nHost: x\r\n`;
    for (let i = 0; i < 10_000; i++) req += `X-H${i}: v\r\n`;
    const r = await rawExchange(proxy.address.port, [Buffer.from(`${req}\r\n`)]);
    assert.match(r.data.toString(), /^HTTP\/1\.1 431 /);
    assert.ok(r.closed);
    await stillServes();
  });

  it('too many small headers (under the size limit) also get 431', async () => {
    let req = `GET ${origin.base}/echo/many HTTP/1.1\r\nHost: x\r\n`;
    for (let i = 0; i < 300; i++) req += `a${i}:\r\n`;
    const r = await rawExchange(proxy.address.port, [Buffer.from(`${req}\r\n`)]);
    assert.match(r.data.toString(), /^HTTP\/1\.1 431 /);
    await stillServes();
  });

  it('garbage gets 400, random bytes never take the proxy down', async () => {
    const r = await rawExchange(proxy.address.port, [Buffer.from('\x16\x03\x01garbage\r\n\r\n')]);
    assert.match(r.data.toString(), /^HTTP\/1\.1 400 /);
    assert.ok(r.closed);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 400 }), async (bytes) => {
        const x = await rawExchange(proxy.address.port, [Buffer.from(bytes), Buffer.from('\r\n\r\n')], {
          timeoutMs: 1500,
        });
        assert.ok(x.closed || x.data.length === 0 || /^HTTP\/1\.1 \d{3} /.test(x.data.toString()));
      }),
      { numRuns: 20 },
    );
    await stillServes();
  });

  it('a client too slow to send its headers is cut off', async () => {
    const text = `GET ${origin.base}/echo/slow HTTP/1.1\r\nHost: x\r\nUser-Agent: ${'s'.repeat(60)}\r\n`;
    const parts = [...text].map((c) => Buffer.from(c));
    // Sending it all would take over 4 s; the proxy cuts in at the header timeout.
    const r = await rawExchange(proxy.address.port, parts, { gapMs: 40, timeoutMs: 6000 });
    assert.ok(r.closed);
    assert.ok(r.ms < 2000, `${r.ms} ms`);
    assert.match(r.data.toString(), /^(HTTP\/1\.1 408 |)/);
    await stillServes();
  });
});

describe('HTTP proxy: dialer failures and tunnel-like forwards', () => {
  it('maps dial failures to 502, and timeouts to 504', async () => {
    for (const [error, status] of [
      [new DialError('refused', 'x'), 502],
      [new DialError('tunnel-down', 'x'), 502],
      [new DialError('timeout', 'x'), 504],
    ] as const) {
      const proxy = await startHttpProxy({ dialer: new FailingDialer(error) });
      try {
        const rs = await sequential(proxy.address.port, [
          { method: 'GET', url: 'http://example.com/a' },
          { method: 'GET', url: 'http://example.com/b' },
        ]);
        assert.deepEqual(
          rs.map((r) => r.status),
          [status, status],
        );
        assert.match(rs[0]?.body.toString() ?? '', /could not connect to example\.com:80/);
        const c = await rawExchange(proxy.address.port, [
          Buffer.from('CONNECT example.com:443 HTTP/1.1\r\n\r\n'),
        ]);
        assert.match(c.data.toString(), new RegExp(`^HTTP/1\\.1 ${status} `));
      } finally {
        await proxy.close();
      }
    }
  });

  it('pools forwards per destination and replaces one the origin closed', async () => {
    const origin = await startTestOrigin(blob);
    const dialer = new PlainDuplexDialer();
    const proxy = await startHttpProxy({ dialer });
    try {
      const first = await sequential(proxy.address.port, [
        { method: 'GET', url: `${origin.base}/echo/1` },
        { method: 'GET', url: `${origin.base}/echo/2` },
        { method: 'GET', url: `${origin.base}/blob` },
        { method: 'GET', url: `${origin.base}/drop` },
      ]);
      assert.deepEqual(
        first.map((r) => r.status),
        [200, 200, 200, 200],
      );
      assert.equal(sha256(first[2]?.body ?? Buffer.alloc(0)), blobSha);
      assert.equal(dialer.dials, 1);
      // The origin drops the idle connection; the next request must not fail on it.
      await new Promise((r) => setTimeout(r, 200));
      const second = await sequential(proxy.address.port, [{ method: 'GET', url: `${origin.base}/echo/3` }]);
      assert.equal(second[0]?.status, 200);
      assert.equal(dialer.dials, 2);
    } finally {
      await Promise.all([proxy.close(), origin.close()]);
    }
  });

  it('the proxy modules neither log nor print (no URL or path can leak that way)', () => {
    for (const file of [
      'http-proxy.ts',
      'http-target.ts',
      'socks5.ts',
      'socks-protocol.ts',
      'relay.ts',
      'local-proxy.ts',
    ]) {
      const src = readFileSync(new URL(`../../src/client/${file}`, import.meta.url), 'utf8');
      assert.doesNotMatch(src, /console\.|process\.(stdout|stderr)|logger|pino/i, file);
    }
  });
});
