import assert from 'node:assert/strict';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DirectDialer } from '../../src/client/dialer.ts';
import {
  MAX_REGEX_TIMEOUTS,
  MAX_STATS_DOMAINS,
  MAX_TAKES_WHILE_SNIFFING,
  TransferStats,
  countForwardStream,
  countingDialer,
  type ByteCounts,
} from '../../src/client/transfer-stats.ts';
import { makeStatusData } from '../../src/client/api-client.ts';
import type { DomainRegex } from '../../src/protocol/index.ts';

// The reference's own transferstats test regexes (Test_Regex).
const PSIPHON_REGEXES: DomainRegex[] = [
  { regex: String.raw`^[w0-9\.]*\.(psiphon\.ca)$`, replace: '$1' },
  { regex: String.raw`^psiphon\.ca$`, replace: 'replacement' },
];

function httpRequest(host: string, path = '/index.html'): Buffer {
  return Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAccept: */*\r\n\r\n`);
}

function tlsHello(name: string): Buffer {
  const sni = Buffer.from(name);
  const list = Buffer.concat([Buffer.of(0), u16(sni.length), sni]);
  const ext = Buffer.concat([u16(0), u16(list.length + 2), u16(list.length), list]);
  const body = Buffer.concat([
    Buffer.of(3, 3),
    Buffer.alloc(32),
    Buffer.of(0),
    u16(2),
    Buffer.of(0x13, 0x01),
    Buffer.of(1, 0),
    u16(ext.length),
    ext,
  ]);
  const message = Buffer.concat([Buffer.of(1, 0, (body.length >> 8) & 0xff, body.length & 0xff), body]);
  return Buffer.concat([Buffer.of(22, 3, 1), u16(message.length), message]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

/** One finished forward: its first bytes, then its totals. */
function forward(
  stats: TransferStats,
  first: Buffer,
  up: number,
  down: number,
  dialHost = '192.0.2.1',
): void {
  const f = stats.openForward(dialHost);
  f.sniff(first);
  f.close(up, down);
}

describe('TransferStats: naming through the sponsor regexes', () => {
  for (const [scheme, first] of [
    ['http', httpRequest],
    ['https', tlsHello],
  ] as const) {
    it(`names ${scheme} forwards as the reference does, with up+down bytes`, () => {
      const stats = new TransferStats();
      stats.setRegexes(PSIPHON_REGEXES);
      forward(stats, first('blog.psiphon.ca'), 100, 1000);
      forward(stats, first('www.psiphon.ca'), 10, 20);
      forward(stats, first('WWW.Psiphon.CA'), 1, 2);
      forward(stats, first('psiphon.ca'), 5, 5);
      assert.deepEqual(stats.take(), {
        hostBytes: { '(OTHER)': 1100, 'psiphon.ca': 33, replacement: 10 },
      });
      assert.equal(stats.take(), undefined, 'reported bytes are not reported twice');
    });
  }

  it('records nothing, not even (OTHER), without regexes', () => {
    const stats = new TransferStats();
    const f = stats.openForward('psiphon.ca');
    assert.equal(f.sniffing, false);
    f.sniff(httpRequest('psiphon.ca'));
    f.close(100, 100);
    assert.equal(stats.take(), undefined);
    stats.setRegexes([]);
    forward(stats, httpRequest('psiphon.ca'), 100, 100);
    assert.equal(stats.take(), undefined);
  });

  it('skips empty and broken regexes like the reference (MakeRegexps), and records nothing with none left', () => {
    const stats = new TransferStats();
    stats.setRegexes([
      { regex: '', replace: '$1' },
      { regex: String.raw`^[a-z0-9\.]*\.(example\.com)$`, replace: '' },
      { regex: String.raw`^[a-z0-9\.]*\.(example\.com$`, replace: '$1' },
    ]);
    assert.equal(stats.recording, false);
    forward(stats, httpRequest('www.example.com'), 1, 1);
    assert.equal(stats.take(), undefined);
    stats.setRegexes([
      { regex: String.raw`^[a-z0-9\.]*\.(example\.com$`, replace: '$1' },
      { regex: String.raw`^.*example\.org$`, replace: 'replacement' },
    ]);
    forward(stats, httpRequest('a.example.org'), 1, 1);
    assert.deepEqual(stats.take(), { hostBytes: { replacement: 2 } });
  });

  it('counts forwards whose first bytes name no host under (OTHER), whatever the dial host', () => {
    const stats = new TransferStats();
    stats.setRegexes(PSIPHON_REGEXES);
    forward(stats, Buffer.from('SSH-2.0-OpenSSH_9.6\r\n'), 10, 10, 'psiphon.ca');
    forward(stats, httpRequest('192.0.2.5'), 1, 1, 'psiphon.ca');
    const silent = stats.openForward('psiphon.ca');
    silent.close(7, 0);
    assert.deepEqual(stats.take(), { hostBytes: { '(OTHER)': 29 } });
  });

  it('with dialHostFallback, names such forwards after their dial host, never an IP address', () => {
    const stats = new TransferStats({ dialHostFallback: true });
    stats.setRegexes(PSIPHON_REGEXES);
    forward(stats, Buffer.from('SSH-2.0-OpenSSH_9.6\r\n'), 10, 10, 'PSIPHON.CA');
    forward(stats, Buffer.from('SSH-2.0-OpenSSH_9.6\r\n'), 1, 0, '192.0.2.1');
    forward(stats, Buffer.from('SSH-2.0-OpenSSH_9.6\r\n'), 1, 0, '2001:db8::1');
    // The sniffed name wins over the dial host.
    forward(stats, tlsHello('www.psiphon.ca'), 3, 0, 'psiphon.ca');
    assert.deepEqual(stats.take(), { hostBytes: { replacement: 20, '(OTHER)': 2, 'psiphon.ca': 3 } });
  });

  it('never reports the path of a request', () => {
    const stats = new TransferStats();
    stats.setRegexes([{ regex: '^(.*)$', replace: '$1' }]);
    forward(stats, httpRequest('secret-free.example', '/very/secret/path?q=1'), 1, 1);
    forward(stats, Buffer.from('GET http://abs.example/secret/path HTTP/1.1\r\nHost: x\r\n\r\n'), 1, 1);
    const data = stats.take();
    assert.deepEqual(data, { hostBytes: { 'secret-free.example': 2, 'abs.example': 2 } });
    assert.doesNotMatch(JSON.stringify(makeStatusData(data!)), /secret\//);
  });

  it('turns names that are empty or too long for the server into (OTHER)', () => {
    const stats = new TransferStats();
    stats.setRegexes([
      { regex: String.raw`^empty\.example$`, replace: '$5' },
      { regex: String.raw`^long\.example$`, replace: 'x'.repeat(300) },
    ]);
    forward(stats, httpRequest('empty.example'), 1, 0);
    forward(stats, httpRequest('long.example'), 1, 0);
    assert.deepEqual(stats.take(), { hostBytes: { '(OTHER)': 2 } });
  });

  it('stops a backtracking regex, counts under (OTHER), and gives up the set after MAX_REGEX_TIMEOUTS', () => {
    const stats = new TransferStats({ regexMatchTimeoutMs: 20 });
    stats.setRegexes([
      { regex: '^(a+)+$', replace: 'a' },
      { regex: String.raw`^(.*\.)?psiphon\.ca$`, replace: 'psiphon.ca' },
    ]);
    const started = Date.now();
    forward(stats, httpRequest(`${'a'.repeat(40)}.example`), 1, 0);
    forward(stats, httpRequest('psiphon.ca'), 10, 0);
    assert.deepEqual(stats.take(), { hostBytes: { '(OTHER)': 1, 'psiphon.ca': 10 } });
    for (let i = 1; i < MAX_REGEX_TIMEOUTS; i++)
      forward(stats, httpRequest(`${'a'.repeat(40)}.example`), 1, 0);
    forward(stats, httpRequest('psiphon.ca'), 10, 0);
    assert.ok(Date.now() - started < 5000, 'the matches were stopped');
    assert.deepEqual(stats.take(), { hostBytes: { '(OTHER)': MAX_REGEX_TIMEOUTS - 1 + 10 } });
  });

  it(`keeps at most maxDomains names, the rest under (OTHER)`, () => {
    const stats = new TransferStats({ maxDomains: 3 });
    stats.setRegexes([{ regex: '^(.*)$', replace: '$1' }]);
    for (const h of ['a.example', 'b.example', 'c.example', 'd.example', 'a.example']) {
      forward(stats, httpRequest(h), 1, 0);
    }
    forward(stats, Buffer.from('junk\r\n'), 10, 0);
    assert.deepEqual(stats.take(), { hostBytes: { 'a.example': 2, 'b.example': 1, '(OTHER)': 12 } });
  });

  it('never reports more than MAX_STATS_DOMAINS names however many hosts are seen', () => {
    const stats = new TransferStats();
    stats.setRegexes([{ regex: '^(.*)$', replace: '$1' }]);
    const n = MAX_STATS_DOMAINS + 50;
    for (let i = 0; i < n; i++) forward(stats, tlsHello(`h${i}.example`), 1, 1);
    const data = stats.take()!;
    const entries = Object.entries(data.hostBytes);
    assert.equal(entries.length, MAX_STATS_DOMAINS);
    assert.equal(
      entries.reduce((sum, [, b]) => sum + b, 0),
      2 * n,
    );
  });
});

describe('TransferStats: take and putBack', () => {
  it('puts back a failed take, to be reported with the next one (reference Test_PutBackStatsForServer)', () => {
    const stats = new TransferStats();
    stats.setRegexes(PSIPHON_REGEXES);
    forward(stats, tlsHello('psiphon.ca'), 10, 10);
    const first = stats.take()!;
    assert.equal(stats.take(), undefined);
    stats.putBack(first);
    assert.deepEqual(stats.take(), first);
    stats.putBack(first);
    forward(stats, tlsHello('psiphon.ca'), 1, 1);
    forward(stats, tlsHello('www.psiphon.ca'), 1, 1);
    assert.deepEqual(stats.take(), { hostBytes: { replacement: 22, 'psiphon.ca': 2 } });
  });

  it('reports the bytes of open forwards as they go, only the deltas each time', () => {
    const stats = new TransferStats();
    stats.setRegexes(PSIPHON_REGEXES);
    const counts: ByteCounts = { up: 0, down: 0 };
    const f = stats.openForward('psiphon.ca', () => ({ ...counts }));
    f.sniff(tlsHello('psiphon.ca'));
    counts.up = 300;
    counts.down = 5000;
    assert.deepEqual(stats.take(), { hostBytes: { replacement: 5300 } });
    assert.equal(stats.take(), undefined, 'nothing new');
    counts.down = 9000;
    assert.deepEqual(stats.take(), { hostBytes: { replacement: 4000 } });
    f.close(400, 9000);
    assert.deepEqual(stats.take(), { hostBytes: { replacement: 100 } });
    f.close(1_000_000, 1_000_000);
    assert.equal(stats.take(), undefined, 'a second close counts nothing');
  });

  it('waits for a forward to be named, then gives up after MAX_TAKES_WHILE_SNIFFING status requests', () => {
    const stats = new TransferStats();
    stats.setRegexes(PSIPHON_REGEXES);
    const f = stats.openForward('psiphon.ca', () => ({ up: 0, down: 700 }));
    for (let i = 1; i < MAX_TAKES_WHILE_SNIFFING; i++) assert.equal(stats.take(), undefined);
    assert.deepEqual(stats.take(), { hostBytes: { '(OTHER)': 700 } });
    assert.equal(f.sniffing, false);
  });

  it('ignores counters that are not byte counts or that throw', () => {
    const stats = new TransferStats();
    stats.setRegexes(PSIPHON_REGEXES);
    const bad = [
      () => ({ up: Number.NaN, down: -5 }),
      () => ({ up: Infinity, down: 0 }),
      (): ByteCounts => {
        throw new Error('gone');
      },
    ];
    for (const counters of bad) stats.openForward('x', counters).sniff(httpRequest('psiphon.ca'));
    assert.equal(stats.take(), undefined);
    forward(stats, httpRequest('psiphon.ca'), -1, Number.NaN);
    assert.equal(stats.take(), undefined);
  });

  it('keeps counts when the same regexes come again, drops them when they change', () => {
    const stats = new TransferStats();
    stats.setRegexes(PSIPHON_REGEXES);
    forward(stats, httpRequest('psiphon.ca'), 1, 1);
    stats.setRegexes(PSIPHON_REGEXES.map((r) => ({ ...r })));
    forward(stats, httpRequest('psiphon.ca'), 1, 1);
    const taken = stats.take()!;
    assert.deepEqual(taken, { hostBytes: { replacement: 4 } });

    const open = stats.openForward('psiphon.ca', () => ({ up: 50, down: 50 }));
    open.sniff(httpRequest('psiphon.ca'));
    forward(stats, httpRequest('psiphon.ca'), 1, 1);
    stats.setRegexes([{ regex: '^(.*)$', replace: '$1' }]);
    stats.putBack(taken);
    assert.equal(stats.take(), undefined, 'counts under the old set are gone, put back or open');
    open.close(100, 100);
    assert.equal(stats.take(), undefined);
    forward(stats, httpRequest('psiphon.ca'), 1, 1);
    assert.deepEqual(stats.take(), { hostBytes: { 'psiphon.ca': 2 } });
  });

  it('adds up whatever order forwards, takes and put-backs come in', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({
              op: fc.constant('forward' as const),
              host: fc.constantFrom('psiphon.ca', 'www.psiphon.ca', 'x.example'),
              bytes: fc.nat(1000),
            }),
            fc.record({ op: fc.constant('take' as const), fail: fc.boolean() }),
          ),
          { maxLength: 30 },
        ),
        (ops) => {
          const stats = new TransferStats();
          stats.setRegexes(PSIPHON_REGEXES);
          let sent = 0;
          let counted = 0;
          for (const o of ops) {
            if (o.op === 'forward') {
              forward(stats, httpRequest(o.host), o.bytes, 0);
              counted += o.bytes;
            } else {
              const data = stats.take();
              if (data === undefined) continue;
              assert.ok(Object.values(data.hostBytes).every((b) => b > 0));
              if (o.fail) stats.putBack(data);
              else sent += Object.values(data.hostBytes).reduce((a, b) => a + b, 0);
            }
          }
          const rest = stats.take();
          if (rest !== undefined) sent += Object.values(rest.hostBytes).reduce((a, b) => a + b, 0);
          assert.equal(sent, counted);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('countingDialer', () => {
  it('counts real forwards by the name in their first bytes, up and down, while open and at close', async () => {
    const reply = Buffer.alloc(3000, 1);
    const server = net.createServer((socket) => {
      socket.once('data', () => socket.write(reply));
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const stats = new TransferStats();
      stats.setRegexes(PSIPHON_REGEXES);
      const dialer = countingDialer(new DirectDialer(), stats);

      const request = httpRequest('www.psiphon.ca');
      const stream = await dialer.dial('127.0.0.1', port);
      const received = new Promise<void>((resolve) => {
        let n = 0;
        stream.on('data', (d: Buffer) => {
          n += d.length;
          if (n >= reply.length) resolve();
        });
      });
      stream.write(request);
      await received;
      assert.deepEqual(stats.take(), { hostBytes: { 'psiphon.ca': request.length + reply.length } });
      stream.destroy();

      // A TLS forward: named by its SNI; destroyed while open, its bytes are counted when it closes.
      const secure = await dialer.dial('127.0.0.1', port);
      const hello = tlsHello('psiphon.ca');
      secure.write(hello.subarray(0, 20));
      secure.write(hello.subarray(20));
      await new Promise<void>((resolve) => secure.once('data', () => resolve()));
      secure.destroy();
      await new Promise<void>((resolve) => secure.once('close', () => resolve()));
      const data = stats.take();
      assert.ok(data !== undefined);
      assert.deepEqual(Object.keys(data.hostBytes), ['replacement']);
      assert.ok(data.hostBytes['replacement']! >= hello.length + 1);

      const closed = await dialer.dial('127.0.0.1', port);
      closed.resume();
      closed.end(httpRequest('blog.psiphon.ca'));
      await new Promise<void>((resolve) => closed.once('close', () => resolve()));
      assert.deepEqual(stats.take(), {
        hostBytes: { '(OTHER)': httpRequest('blog.psiphon.ca').length + reply.length },
      });
    } finally {
      server.close();
    }
  });

  it('counts a stream that implements _write and push itself (the shape of an SSH channel)', async () => {
    const stats = new TransferStats();
    stats.setRegexes(PSIPHON_REGEXES);
    // Writes come straight back as pushes: every byte counts once up and once down.
    const echo = new PassThrough();
    countForwardStream(echo, stats, 'psiphon.ca');
    const hello = tlsHello('www.psiphon.ca');
    echo.cork();
    echo.write(hello.subarray(0, 10));
    echo.write(hello.subarray(10));
    echo.end(Buffer.alloc(100));
    echo.uncork();
    echo.resume();
    await new Promise<void>((resolve) => echo.once('close', () => resolve()));
    assert.deepEqual(stats.take(), { hostBytes: { 'psiphon.ca': 2 * (hello.length + 100) } });
  });

  it('leaves streams alone when nothing is recorded', () => {
    const stats = new TransferStats();
    const echo = new PassThrough();
    const write = echo._write;
    countForwardStream(echo, stats, 'psiphon.ca');
    assert.equal(echo._write, write);
  });
});
