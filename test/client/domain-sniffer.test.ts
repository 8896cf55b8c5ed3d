import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import {
  FirstBytesSniffer,
  MAX_SNIFF_BYTES,
  MAX_SNIFF_CHUNKS,
  normalizeHostName,
  sniffDomain,
  type SniffResult,
} from '../../src/client/domain-sniffer.ts';

// ---- ClientHellos ---------------------------------------------------------------------------------------

/** Listens on loopback and hands back the first bytes of the next connection (up to `want` or its end). */
async function captureFirstBytes(connect: (port: number) => void, want = 512): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no ClientHello')), 5000);
      server.once('connection', (socket) => {
        const chunks: Buffer[] = [];
        let length = 0;
        const done = (): void => {
          clearTimeout(timer);
          socket.destroy();
          resolve(Buffer.concat(chunks));
        };
        socket.on('data', (d: Buffer) => {
          chunks.push(d);
          length += d.length;
          // A whole first record has arrived: that is the hello.
          if (length >= 5 && length >= 5 + Buffer.concat(chunks).readUInt16BE(3)) done();
          else if (length >= want) done();
        });
        socket.on('error', () => undefined);
        socket.on('end', done);
      });
      connect(port);
    });
  } finally {
    server.close();
  }
}

function nodeClientHello(servername: string | undefined): Promise<Buffer> {
  return captureFirstBytes((port) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ...(servername !== undefined ? { servername } : {}),
      rejectUnauthorized: false,
    });
    socket.on('error', () => undefined);
  });
}

function opensslClientHello(servername: string): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    let child: ReturnType<typeof spawn> | undefined;
    captureFirstBytes((port) => {
      child = spawn('openssl', ['s_client', '-servername', servername, '-connect', `127.0.0.1:${port}`], {
        stdio: ['pipe', 'ignore', 'ignore'],
      });
      child.on('error', () => resolve(undefined));
    }).then(
      (bytes) => {
        child?.kill();
        resolve(bytes);
      },
      () => {
        child?.kill();
        resolve(undefined);
      },
    );
  });
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function extension(type: number, data: Buffer): Buffer {
  return Buffer.concat([u16(type), u16(data.length), data]);
}

function sniExtension(names: { type: number; name: string }[]): Buffer {
  const list = Buffer.concat(
    names.map((n) => Buffer.concat([Buffer.of(n.type), u16(Buffer.byteLength(n.name)), Buffer.from(n.name)])),
  );
  return extension(0, Buffer.concat([u16(list.length), list]));
}

/** A TLS 1.2-style ClientHello body wrapped in a handshake header. */
function clientHelloMessage(extensions: Buffer[] | undefined): Buffer {
  const body = Buffer.concat([
    Buffer.of(3, 3),
    Buffer.alloc(32, 7),
    Buffer.of(32),
    Buffer.alloc(32, 9),
    u16(4),
    Buffer.of(0x13, 0x01, 0xc0, 0x2f),
    Buffer.of(1, 0),
    ...(extensions === undefined ? [] : [u16(extensions.reduce((n, e) => n + e.length, 0)), ...extensions]),
  ]);
  const header = Buffer.of(1, (body.length >> 16) & 0xff, (body.length >> 8) & 0xff, body.length & 0xff);
  return Buffer.concat([header, body]);
}

/** Handshake bytes in TLS records of at most `recordSize` bytes each. */
function records(message: Buffer, recordSize = 16384): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < message.length; i += recordSize) {
    const part = message.subarray(i, i + recordSize);
    out.push(Buffer.of(22, 3, 1), u16(part.length), part);
  }
  return Buffer.concat(out);
}

function helloWithSni(name: string, extra: Buffer[] = []): Buffer {
  return records(
    clientHelloMessage([
      extension(0x000a, Buffer.of(0, 2, 0, 0x1d)),
      ...extra,
      sniExtension([{ type: 0, name }]),
    ]),
  );
}

const found = (domain: string): SniffResult => ({ kind: 'found', domain });
const NONE: SniffResult = { kind: 'none' };
const NEED_MORE: SniffResult = { kind: 'need-more' };

function assertWellFormed(result: SniffResult): void {
  assert.ok(['found', 'none', 'need-more'].includes(result.kind));
  if (result.kind === 'found') {
    assert.match(result.domain, /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/);
    assert.ok(result.domain.length <= 253);
  }
}

describe('sniffDomain: TLS ClientHello', () => {
  let nodeHello: Buffer;
  let nodeHelloNoSni: Buffer;

  before(async () => {
    nodeHello = await nodeClientHello('Video.Example.COM');
    nodeHelloNoSni = await nodeClientHello(undefined);
  });

  it("finds the SNI of node's own ClientHello, lowercased", () => {
    assert.equal(nodeHello[0], 22);
    assert.deepEqual(sniffDomain(nodeHello), found('video.example.com'));
  });

  it('finds the SNI of an openssl s_client ClientHello', async (t) => {
    const hello = await opensslClientHello('cdn.x.example');
    if (hello === undefined || hello.length === 0) {
      t.skip('openssl is not available');
      return;
    }
    assert.deepEqual(sniffDomain(hello), found('cdn.x.example'));
  });

  it('says none for a ClientHello without SNI (a dial by IP address)', () => {
    assert.equal(nodeHelloNoSni[0], 22);
    assert.deepEqual(sniffDomain(nodeHelloNoSni), NONE);
  });

  it('asks for more on every proper prefix of a real ClientHello', () => {
    for (let n = 1; n < nodeHello.length; n++) {
      assert.deepEqual(sniffDomain(nodeHello.subarray(0, n)), NEED_MORE, `prefix of ${n} bytes`);
    }
  });

  it('finds the SNI however the hello is split into chunks', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: nodeHello.length - 1 }), { maxLength: 6 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const sniffer = new FirstBytesSniffer();
        let last = 0;
        let result: SniffResult = NEED_MORE;
        for (const p of [...points, nodeHello.length]) {
          result = sniffer.push(nodeHello.subarray(last, p));
          last = p;
        }
        assert.deepEqual(result, found('video.example.com'));
      }),
      { numRuns: 100 },
    );
  });

  it('finds the SNI of a ClientHello split across several records', () => {
    const message = clientHelloMessage([
      extension(0x0015, Buffer.alloc(600)),
      sniExtension([{ type: 0, name: 'big.example' }]),
    ]);
    const split = records(message, 200);
    assert.ok(split.length > message.length + 5 * 3);
    assert.deepEqual(sniffDomain(split), found('big.example'));
    assert.deepEqual(sniffDomain(split.subarray(0, 300)), NEED_MORE);
  });

  it('takes the host_name entry of the server_name list, skipping other name types', () => {
    const hello = records(
      clientHelloMessage([
        sniExtension([
          { type: 7, name: 'not-a-host-name' },
          { type: 0, name: 'real.example.' },
        ]),
      ]),
    );
    assert.deepEqual(sniffDomain(hello), found('real.example'));
  });

  it('never returns an IP literal or a name with characters no DNS name has', () => {
    for (const name of [
      '192.0.2.1',
      '::1',
      '[::1]',
      'a/b.example',
      'a b.example',
      'ex%61mple.com',
      '',
      'a..b',
    ]) {
      assert.deepEqual(sniffDomain(helloWithSni(name)), NONE, name);
    }
  });

  it('says none for hellos without extensions or without SNI', () => {
    assert.deepEqual(sniffDomain(records(clientHelloMessage(undefined))), NONE);
    assert.deepEqual(
      sniffDomain(records(clientHelloMessage([extension(0x000a, Buffer.of(0, 2, 0, 0x1d))]))),
      NONE,
    );
  });

  it('says none for other TLS content and handshake types', () => {
    const hello = helloWithSni('a.example');
    const alert = Buffer.from(hello);
    alert[0] = 21;
    assert.deepEqual(sniffDomain(alert), NONE);
    const serverHello = Buffer.from(hello);
    serverHello[5] = 2;
    assert.deepEqual(sniffDomain(serverHello), NONE);
    const sslv2 = Buffer.from(hello);
    sslv2[1] = 2;
    assert.deepEqual(sniffDomain(sslv2), NONE);
    const emptyRecord = Buffer.of(22, 3, 1, 0, 0, 1, 0, 0, 10);
    assert.deepEqual(sniffDomain(emptyRecord), NONE);
  });

  it('says none when lengths inside the hello point past its end', () => {
    const hello = helloWithSni('a.example');
    // The SNI name length (last extension, its last 2+9 bytes) claims more than there is.
    const badName = Buffer.from(hello);
    badName.writeUInt16BE(200, badName.length - 'a.example'.length - 2);
    assert.deepEqual(sniffDomain(badName), NONE);
    // The session id length claims 255 bytes.
    const badSession = Buffer.from(hello);
    badSession[5 + 4 + 2 + 32] = 255;
    assert.deepEqual(sniffDomain(badSession), NONE);
  });

  it('gives up on a hello larger than MAX_SNIFF_BYTES', () => {
    const huge = records(
      clientHelloMessage([
        extension(0x0015, Buffer.alloc(MAX_SNIFF_BYTES)),
        sniExtension([{ type: 0, name: 'a.example' }]),
      ]),
    );
    assert.deepEqual(sniffDomain(huge.subarray(0, 100)), NONE);
    assert.deepEqual(sniffDomain(huge), NONE);
  });

  it('never throws and never returns a malformed name, whatever is done to a real hello', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.nat(),
        (flips, cut) => {
          const bytes = Buffer.from(nodeHello);
          for (const [at, value] of flips) bytes[at % bytes.length] = value;
          const result = sniffDomain(bytes.subarray(0, (cut % bytes.length) + 1));
          assertWellFormed(result);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('sniffDomain: HTTP/1.x requests', () => {
  it('returns the Host header host, lowercased, without port, never the path', () => {
    const result = sniffDomain(
      Buffer.from(
        'GET /secret/path?token=abc HTTP/1.1\r\nUser-Agent: t\r\nHost: WWW.Example.COM:8080\r\n\r\n',
      ),
    );
    assert.deepEqual(result, found('www.example.com'));
  });

  it("prefers an absolute-form target's host and drops its user info", () => {
    const request = 'GET http://user:pw@Foo.Example:81/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n';
    assert.deepEqual(sniffDomain(Buffer.from(request)), found('foo.example'));
    const noAuthority = 'GET http:///p HTTP/1.1\r\nHost: other.example\r\n\r\n';
    assert.deepEqual(sniffDomain(Buffer.from(noAuthority)), found('other.example'));
  });

  it("takes CONNECT's authority, or the Host header when its target is a path (as Go does)", () => {
    assert.deepEqual(sniffDomain(Buffer.from('CONNECT a.example:443 HTTP/1.1\r\n\r\n')), found('a.example'));
    const rpc = 'CONNECT /_goRPC_ HTTP/1.0\r\nHost: h.example\r\n\r\n';
    assert.deepEqual(sniffDomain(Buffer.from(rpc)), found('h.example'));
  });

  it('accepts what Go http.ReadRequest accepts and refuses what it refuses', () => {
    const ok = 'GET / HTTP/2.0\r\nHost: v.example\r\n\r\n';
    assert.deepEqual(sniffDomain(Buffer.from(ok)), found('v.example'));
    const twoHosts = 'GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n';
    assert.deepEqual(sniffDomain(Buffer.from(twoHosts)), NONE);
    const notATarget = 'GET t.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n';
    assert.deepEqual(sniffDomain(Buffer.from(notATarget)), NONE);
    const folded = 'GET / HTTP/1.1\r\n Host: a.example\r\n\r\n';
    assert.deepEqual(sniffDomain(Buffer.from(folded)), NONE);
  });

  it('asks for more while the request line or headers are incomplete', () => {
    for (const prefix of [
      'G',
      'GET',
      'GET /',
      'GET / HTTP/1.1\r',
      'GET / HTTP/1.1\r\nAccept: */*\r\n',
      'GET / HTTP/1.1\r\nHo',
      'GET / HTTP/1.1\r\nHost: a.example\r\n',
    ]) {
      assert.deepEqual(sniffDomain(Buffer.from(prefix)), NEED_MORE, JSON.stringify(prefix));
    }
  });

  it('says none for requests without Host, IP hosts, and other protocols', () => {
    const cases = [
      'GET / HTTP/1.1\r\nAccept: */*\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: 192.0.2.7:80\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a.example/evil\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a.example:80x\r\n\r\n',
      'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
      'SSH-2.0-OpenSSH_9.6\r\n',
      'EHLO mail.example\r\n',
      'GET / HTTP/1.1\r\nno colon here\r\n\r\n',
      ' GET / HTTP/1.1\r\n',
      '\x00\x01\x02garbage',
    ];
    for (const c of cases) assert.deepEqual(sniffDomain(Buffer.from(c, 'latin1')), NONE, JSON.stringify(c));
  });

  it('gives up on headers longer than MAX_SNIFF_BYTES without a Host', () => {
    const request = Buffer.from(
      `GET / HTTP/1.1\r\nCookie: ${'a'.repeat(MAX_SNIFF_BYTES)}\r\nHost: a.example\r\n\r\n`,
    );
    assert.deepEqual(sniffDomain(request), NONE);
    assert.deepEqual(sniffDomain(request.subarray(0, MAX_SNIFF_BYTES)), NONE);
    assert.deepEqual(sniffDomain(request.subarray(0, MAX_SNIFF_BYTES - 1)), NEED_MORE);
  });

  it('finds the host of any well-formed request and nothing of its path', () => {
    const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/);
    const host = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => [...ls, 'example'].join('.'));
    const path = fc.stringMatching(/^\/[A-Za-z0-9/?=&%._-]{0,40}$/);
    fc.assert(
      fc.property(
        host,
        path,
        fc.boolean(),
        fc.constantFrom('GET', 'POST', 'HEAD', 'OPTIONS'),
        (h, p, absolute, m) => {
          const target = absolute ? `http://${h}${p}` : p;
          const result = sniffDomain(
            Buffer.from(`${m} ${target} HTTP/1.1\r\nHost: ${h.toUpperCase()}\r\n\r\n`),
          );
          assert.deepEqual(result, found(h));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('never throws and never returns a malformed name for arbitrary bytes', () => {
    const httpish = fc
      .array(
        fc.constantFrom(
          'GET ',
          '/',
          'http://',
          'Host:',
          ' ',
          '\r\n',
          ':',
          'a.example',
          '@',
          '[',
          '1.2.3.4',
          'HTTP/1.1',
        ),
        {
          maxLength: 20,
        },
      )
      .map((parts) => Buffer.from(parts.join('')));
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), httpish), (bytes) => {
        assertWellFormed(sniffDomain(bytes));
      }),
      { numRuns: 500 },
    );
  });
});

describe('FirstBytesSniffer', () => {
  it('keeps its answer once decided', () => {
    const sniffer = new FirstBytesSniffer();
    assert.deepEqual(sniffer.push(Buffer.from('GET / HTTP/1.1\r\nHost: a.exam')), NEED_MORE);
    assert.deepEqual(sniffer.push(Buffer.from('ple\r\n')), NEED_MORE, 'the header block is not whole yet');
    assert.deepEqual(sniffer.push(Buffer.from('\r\n')), found('a.example'));
    assert.deepEqual(sniffer.push(Buffer.from('garbage')), found('a.example'));
    assert.deepEqual(sniffer.result, found('a.example'));
  });

  it('gives up after MAX_SNIFF_CHUNKS chunks', () => {
    const sniffer = new FirstBytesSniffer();
    const request = Buffer.from(
      `GET / HTTP/1.1\r\nAccept: ${'x'.repeat(MAX_SNIFF_CHUNKS)}\r\nHost: a.example\r\n\r\n`,
    );
    let result: SniffResult = NEED_MORE;
    for (let i = 0; i < request.length && result.kind === 'need-more'; i++)
      result = sniffer.push(request.subarray(i, i + 1));
    assert.deepEqual(result, NONE);
  });

  it('gives up when told to', () => {
    const sniffer = new FirstBytesSniffer();
    sniffer.push(Buffer.from('GET / HTTP/1.1\r\n'));
    assert.deepEqual(sniffer.giveUp(), NONE);
  });
});

describe('normalizeHostName', () => {
  it('lowercases and drops a trailing dot', () => {
    assert.equal(normalizeHostName('WWW.Example.Org.'), 'www.example.org');
    assert.equal(normalizeHostName('xn--bcher-kva.example'), 'xn--bcher-kva.example');
  });

  it('refuses addresses and non-names', () => {
    for (const s of [
      '1.2.3.4',
      '0x7f.1',
      '2130706433',
      '::1',
      '',
      '.',
      'a..b',
      `${'a'.repeat(64)}.example`,
      'é.example',
      `${'a.'.repeat(127)}com`,
    ]) {
      assert.equal(normalizeHostName(s), undefined, s);
    }
  });
});

describe('sniffDomain against the reference (test/fixtures/transferstats)', () => {
  const { vectors } = JSON.parse(
    readFileSync(new URL('../fixtures/transferstats/reference-hostnames.json', import.meta.url), 'utf8'),
  ) as { vectors: { input: string; reference: string | null }[] };

  /** The reference's name as Postern reports it: lowercased, no port, and only if it is a domain name. */
  function asDomain(reference: string): string | undefined {
    if (reference.startsWith('[')) return undefined;
    return normalizeHostName(reference.replace(/:[0-9]*$/, ''));
  }

  it('names the host the reference names, and nothing it does not', () => {
    assert.ok(vectors.length > 100);
    let named = 0;
    for (const v of vectors) {
      const result = sniffDomain(Buffer.from(v.input, 'base64'));
      const expected = v.reference === null ? undefined : asDomain(v.reference);
      if (expected !== undefined) named++;
      assert.deepEqual(
        result.kind === 'found' ? result.domain : undefined,
        expected,
        `${JSON.stringify(v.reference)} for ${Buffer.from(v.input, 'base64').subarray(0, 60).toString('latin1')}`,
      );
    }
    assert.ok(named >= 30, 'the vectors hold names Postern reports');
  });
});
