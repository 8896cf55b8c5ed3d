// The OSSH preamble: key derivation, the client's message, the server's incremental parser on hostile input,
// prefixes, the seed-replay history, and byte-exact agreement with a session recorded from the reference.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../src/common/clock.ts';
import { isPosternError } from '../../src/common/errors.ts';
import {
  deriveObfuscationKey,
  makeClientPreamble,
  OSSH_CLIENT_TO_SERVER_IV,
  OSSH_MAGIC,
  OSSH_MAX_PADDING,
  OSSH_PREFIX_SEARCH_WINDOW,
  OSSH_SERVER_TO_CLIENT_IV,
  PreambleRejectedError,
  Rc4,
  SeedHistory,
  ServerPreambleParser,
  type IrregularReason,
  type ServerPreamble,
} from '../../src/transport/index.ts';

const KEYWORD = 'test-obfuscation-keyword';

function slowKey(seed: Buffer, keyword: string, iv: string): Buffer {
  let digest = createHash('sha1')
    .update(Buffer.concat([seed, Buffer.from(keyword), Buffer.from(iv)]))
    .digest();
  for (let i = 0; i < 6000; i++) digest = createHash('sha1').update(digest).digest();
  return digest.subarray(0, 16);
}

/** Feeds `bytes` to a fresh parser in chunks of the given sizes (the last chunk takes the rest). */
function parse(
  bytes: Buffer,
  sizes: number[] = [bytes.length],
  options: Partial<ConstructorParameters<typeof ServerPreambleParser>[0]> = {},
): ServerPreamble | null {
  const parser = new ServerPreambleParser({ keyword: KEYWORD, ...options });
  let offset = 0;
  let result: ServerPreamble | null = null;
  for (let i = 0; offset < bytes.length; i++) {
    const size = i < sizes.length ? Math.max(1, sizes[i]!) : bytes.length - offset;
    const chunk = bytes.subarray(offset, offset + size);
    offset += chunk.length;
    result = parser.push(chunk);
    if (result !== null) {
      // What the parser leaves is the rest of the chunk it finished in, plus later chunks.
      return { ...result, rest: Buffer.concat([result.rest, bytes.subarray(offset)]) };
    }
  }
  return result;
}

function rejectedWith(reason: IrregularReason): (e: unknown) => boolean {
  return (e: unknown) => e instanceof PreambleRejectedError && e.reason === reason;
}

/** A hand-made preamble with chosen magic and padding length (for values a real client never sends). */
function craftedPreamble(magic: number, paddingLength: number, padding = Buffer.alloc(0)): Buffer {
  const seed = randomBytes(16);
  const fixed = Buffer.alloc(8);
  fixed.writeUInt32BE(magic, 0);
  fixed.writeUInt32BE(paddingLength >>> 0, 4);
  const body = Buffer.concat([fixed, padding]);
  new Rc4(deriveObfuscationKey(seed, KEYWORD, OSSH_CLIENT_TO_SERVER_IV)).xorInPlace(body);
  return Buffer.concat([seed, body]);
}

test('key derivation matches 6001 rounds of node:crypto SHA-1 over seed ‖ keyword ‖ IV', () => {
  for (const keyword of [KEYWORD, 'ключ', 'k']) {
    const seed = randomBytes(16);
    for (const iv of [OSSH_CLIENT_TO_SERVER_IV, OSSH_SERVER_TO_CLIENT_IV]) {
      assert.deepEqual(deriveObfuscationKey(seed, keyword, iv), slowKey(seed, keyword, iv));
    }
  }
  assert.throws(
    () => deriveObfuscationKey(randomBytes(15), KEYWORD, OSSH_CLIENT_TO_SERVER_IV),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
});

test('a client preamble parses, whole or byte by byte, and leaves the following bytes untouched', () => {
  const padding = randomBytes(100);
  const preamble = makeClientPreamble({ keyword: KEYWORD, padding });
  assert.equal(preamble.bytes.length, 16 + 8 + 100);
  assert.deepEqual(preamble.bytes.subarray(0, 16), preamble.seed, 'the seed is sent in the clear');
  const tail = Buffer.from('SSH-2.0-next bytes');
  const wire = Buffer.concat([preamble.bytes, tail]);
  for (const sizes of [[wire.length], Array<number>(wire.length).fill(1), [3, 21, 50, 7]]) {
    const result = parse(wire, sizes)!;
    assert.ok(result !== null);
    assert.deepEqual(result.seed, preamble.seed);
    assert.equal(result.paddingLength, 100);
    assert.deepEqual(result.paddingSeed, padding.subarray(0, 32));
    assert.equal(result.prefixSpecName, null);
    assert.deepEqual(result.rest, tail);
  }
});

test('both sides continue the same two keystreams after the preamble', () => {
  const preamble = makeClientPreamble({ keyword: KEYWORD });
  const server = parse(preamble.bytes)!;
  const up = Buffer.from('client to server');
  preamble.clientToServer.xorInPlace(up);
  server.clientToServer.xorInPlace(up);
  assert.equal(up.toString(), 'client to server');
  const down = Buffer.from('server to client');
  server.serverToClient.xorInPlace(down);
  assert.notEqual(down.toString(), 'server to client');
  preamble.serverToClient.xorInPlace(down);
  assert.equal(down.toString(), 'server to client');
});

test('random padding stays within the reference bounds (32-8192 by default)', () => {
  const lengths = Array.from({ length: 30 }, () => makeClientPreamble({ keyword: KEYWORD }).paddingLength);
  assert.ok(lengths.every((n) => n >= 32 && n <= OSSH_MAX_PADDING));
  assert.ok(new Set(lengths).size > 1, 'the padding length varies');
  const narrow = makeClientPreamble({ keyword: KEYWORD, minPadding: 40, maxPadding: 41 });
  assert.ok(narrow.paddingLength === 40 || narrow.paddingLength === 41);
  for (const bad of [{ minPadding: 31 }, { maxPadding: 8193 }, { minPadding: 100, maxPadding: 50 }]) {
    assert.throws(
      () => makeClientPreamble({ keyword: KEYWORD, ...bad }),
      (e) => isPosternError(e, 'BAD_ARGUMENT'),
    );
  }
  assert.throws(
    () => makeClientPreamble({ keyword: '' }),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
});

test('wrong keyword is bad magic; without prefixes it is refused at once', () => {
  const preamble = makeClientPreamble({ keyword: 'another keyword' });
  assert.throws(() => parse(preamble.bytes, undefined, { acceptPrefixes: false }), rejectedWith('bad-magic'));
  // With prefixes allowed, the server looks for a terminator instead, and finds none in these bytes.
  assert.equal(parse(preamble.bytes), null);
});

test('padding length above 8192 or negative is refused after the magic checks out', () => {
  assert.throws(
    () => parse(craftedPreamble(OSSH_MAGIC, OSSH_MAX_PADDING + 1)),
    (e) => {
      assert.ok(rejectedWith('bad-padding-length')(e));
      assert.ok(isPosternError(e, 'BAD_PREAMBLE'));
      return true;
    },
  );
  assert.throws(() => parse(craftedPreamble(OSSH_MAGIC, -1)), rejectedWith('bad-padding-length'));
  assert.throws(() => parse(craftedPreamble(OSSH_MAGIC, 0x7fffffff)), rejectedWith('bad-padding-length'));
  const exact = parse(craftedPreamble(OSSH_MAGIC, 8192, Buffer.alloc(8192)));
  assert.equal(exact?.paddingLength, 8192);
  const none = parse(craftedPreamble(OSSH_MAGIC, 0));
  assert.equal(none?.paddingLength, 0);
  assert.equal(none?.paddingSeed, null, 'fewer than 32 padding bytes give no padding seed');
});

test('a parser that refused stays refused', () => {
  const parser = new ServerPreambleParser({ keyword: KEYWORD, acceptPrefixes: false });
  assert.throws(() => parser.push(randomBytes(24)), rejectedWith('bad-magic'));
  assert.throws(
    () => parser.push(Buffer.alloc(1)),
    (e) => isPosternError(e, 'BAD_PREAMBLE'),
  );
});

test('a replayed seed is refused with REPLAYED_SEED; a garbage seed is not remembered', () => {
  const clock = new ManualClock();
  const history = new SeedHistory({ clock });
  const preamble = makeClientPreamble({ keyword: KEYWORD });
  assert.ok(parse(preamble.bytes, undefined, { history, peerAddress: '192.0.2.1' }));
  clock.advance(5000);
  assert.throws(
    () => parse(preamble.bytes, undefined, { history, peerAddress: '192.0.2.1' }),
    (e) => {
      assert.ok(isPosternError(e, 'REPLAYED_SEED'));
      assert.ok(e instanceof PreambleRejectedError);
      assert.deepEqual(e.duplicate, { seedType: 'obfuscator-seed', elapsedMs: 5000, peer: 'equal' });
      return true;
    },
  );
  assert.throws(
    () => parse(preamble.bytes, undefined, { history, peerAddress: '198.51.100.7' }),
    (e) => e instanceof PreambleRejectedError && e.duplicate?.peer === 'unequal',
  );
  const before = history.size;
  assert.throws(() => parse(randomBytes(64), undefined, { history, acceptPrefixes: false }));
  assert.equal(history.size, before);
});

test('a prefixed preamble parses and reports its spec name; a bad prefix header is refused', () => {
  const prefix = {
    bytes: Buffer.from('GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n'),
    specName: 'http-get',
  };
  const preamble = makeClientPreamble({ keyword: KEYWORD, prefix });
  assert.deepEqual(preamble.bytes.subarray(0, prefix.bytes.length), prefix.bytes);
  const tail = Buffer.from('SSH-2.0-x\r\n');
  for (const sizes of [[1_000_000], Array<number>(200).fill(1), [30, 5, 17]]) {
    const result = parse(Buffer.concat([preamble.bytes, tail]), sizes)!;
    assert.equal(result.prefixSpecName, 'http-get');
    assert.deepEqual(result.seed, preamble.seed);
    assert.deepEqual(result.rest, tail);
  }
  const short = makeClientPreamble({ keyword: KEYWORD, prefix: { bytes: Buffer.from('hi'), specName: '' } });
  assert.equal(parse(short.bytes)?.prefixSpecName, '', 'prefixes shorter than 24 bytes are padded');

  // Corrupt the prefix header version (first encrypted byte after the padding).
  const bad = Buffer.from(preamble.bytes);
  const versionAt = bad.length - 4 - 'http-get'.length;
  bad[versionAt] = bad[versionAt]! ^ 0x01;
  assert.throws(() => parse(bad), rejectedWith('bad-prefix-header'));
});

test('no terminator within the search window is refused', () => {
  assert.throws(
    () => parse(randomBytes(24 + OSSH_PREFIX_SEARCH_WINDOW + 10)),
    rejectedWith('no-prefix-terminator'),
  );
  assert.throws(
    () => parse(randomBytes(24 + OSSH_PREFIX_SEARCH_WINDOW + 10), Array<number>(100).fill(997)),
    rejectedWith('no-prefix-terminator'),
  );
});

test('fuzz: any bytes in any chunking parse, wait, or fail with a PosternError; never a crash', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 400, size: 'max' }),
      fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 20, size: 'max' }),
      fc.boolean(),
      (bytes, sizes, acceptPrefixes) => {
        try {
          parse(Buffer.from(bytes), sizes, { acceptPrefixes });
        } catch (e) {
          assert.ok(isPosternError(e), `unexpected ${String(e)}`);
        }
      },
    ),
    { numRuns: 80 },
  );
});

test('fuzz: a valid prefixed preamble followed by anything parses or fails cleanly', () => {
  const prefix = { bytes: Buffer.from('GET / HTTP/1.1\r\nHost: a.example\r\n\r\n'), specName: 'get' };
  const preamble = makeClientPreamble({ keyword: KEYWORD, prefix, minPadding: 32, maxPadding: 64 });
  fc.assert(
    fc.property(
      fc.nat(preamble.bytes.length),
      fc.uint8Array({ maxLength: 200, size: 'max' }),
      fc.array(fc.integer({ min: 1, max: 50 }), { maxLength: 10, size: 'max' }),
      (keep, garbage, sizes) => {
        const bytes = Buffer.concat([preamble.bytes.subarray(0, keep), garbage]);
        try {
          const result = parse(bytes, sizes);
          // RC4 has no integrity: garbage may complete a cut spec name, but never with another seed or padding.
          if (result !== null) {
            assert.deepEqual(result.seed, preamble.seed);
            assert.equal(result.paddingLength, preamble.paddingLength);
          }
        } catch (e) {
          assert.ok(isPosternError(e, 'BAD_PREAMBLE'), `unexpected ${String(e)}`);
        }
      },
    ),
    { numRuns: 60 },
  );
});

test('fuzz: flipping bytes of a valid preamble never yields a half-parsed result', () => {
  const padding = randomBytes(40);
  const preamble = makeClientPreamble({ keyword: KEYWORD, padding });
  fc.assert(
    fc.property(
      fc.array(fc.record({ at: fc.nat(preamble.bytes.length - 1), xor: fc.integer({ min: 1, max: 255 }) }), {
        minLength: 1,
        maxLength: 4,
      }),
      fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 8, size: 'max' }),
      (flips, sizes) => {
        const bytes = Buffer.from(preamble.bytes);
        for (const { at, xor } of flips) bytes[at] = bytes[at]! ^ xor;
        try {
          const result = parse(bytes, sizes, { acceptPrefixes: false });
          if (result !== null) {
            // A flipped length field moves the end of the padding; the seed and the byte count still agree.
            assert.deepEqual(result.seed, preamble.seed);
            assert.equal(result.paddingLength + result.rest.length, 40);
          }
        } catch (e) {
          assert.ok(isPosternError(e, 'BAD_PREAMBLE'), `unexpected ${String(e)}`);
        }
      },
    ),
    { numRuns: 80 },
  );
});

test('fuzz: a valid preamble gives the same result however it is split', () => {
  const preamble = makeClientPreamble({ keyword: KEYWORD, minPadding: 32, maxPadding: 300 });
  const tail = randomBytes(50);
  const wire = Buffer.concat([preamble.bytes, tail]);
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 80 }), { maxLength: 30, size: 'max' }), (sizes) => {
      const result = parse(wire, sizes)!;
      assert.deepEqual(result.seed, preamble.seed);
      assert.equal(result.paddingLength, preamble.paddingLength);
      assert.deepEqual(result.rest, tail);
    }),
    { numRuns: 40 },
  );
});

test('seed history: entries expire after the TTL and the oldest go first when full', () => {
  const clock = new ManualClock();
  const history = new SeedHistory({ clock, seedTtlMs: 1000, maxSeeds: 3, peerTtlMs: 100 });
  const seeds = [1, 2, 3, 4].map((n) => Buffer.alloc(16, n));
  assert.equal(history.addNew('t', seeds[0]!, 'p').accepted, true);
  assert.equal(history.addNew('t', seeds[0]!, 'p').accepted, false);
  clock.advance(50);
  assert.equal(history.addNew('t', seeds[0]!, 'p').duplicate?.peer, 'equal');
  clock.advance(100);
  assert.equal(history.addNew('t', seeds[0]!, 'p').duplicate?.peer, 'unknown', 'the peer is forgotten first');
  clock.advance(851);
  assert.equal(history.addNew('t', seeds[0]!, 'p').accepted, true, 'the seed is forgotten after its TTL');
  for (const seed of seeds.slice(1)) history.addNew('t', seed, undefined);
  assert.equal(history.size, 3);
  assert.equal(history.addNew('t', seeds[0]!, undefined).accepted, true, 'the oldest seed was evicted');
  assert.equal(history.addNew('t', seeds[3]!, undefined).accepted, false);
});

test('seed history: outside strict mode a retry from the same peer passes, others do not', () => {
  const history = new SeedHistory({ clock: new ManualClock() });
  const seed = randomBytes(16);
  history.addNew('meek-cookie', seed, '203.0.113.5');
  assert.equal(history.addNew('meek-cookie', seed, '203.0.113.5', false).accepted, true);
  assert.equal(history.addNew('meek-cookie', seed, '203.0.113.6', false).accepted, false);
  assert.equal(history.addNew('meek-cookie', seed, '203.0.113.5', true).accepted, false);
  assert.throws(
    () => new SeedHistory({ clock: new ManualClock(), maxSeeds: 0 }),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
});

interface ReferenceSession {
  keyword: string;
  seed: string;
  padding: string;
  preamble: string;
  clientToServerWire: string;
  clientToServerPlain: string;
}

test('reference vector: same seed and padding give the reference preamble byte for byte', () => {
  const vector = JSON.parse(
    readFileSync(new URL('../fixtures/ossh/reference-session.json', import.meta.url), 'utf8'),
  ) as ReferenceSession;
  const preamble = makeClientPreamble({
    keyword: vector.keyword,
    seed: Buffer.from(vector.seed, 'hex'),
    padding: Buffer.from(vector.padding, 'hex'),
  });
  assert.equal(preamble.bytes.toString('hex'), vector.preamble);
  const server = new ServerPreambleParser({ keyword: vector.keyword }).push(
    Buffer.from(vector.preamble, 'hex'),
  );
  assert.equal(server?.paddingLength, vector.padding.length / 2);
  assert.equal(server?.paddingSeed?.toString('hex'), vector.padding.slice(0, 64));
});
