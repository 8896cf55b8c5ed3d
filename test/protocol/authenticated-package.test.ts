import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { deflateSync, inflateSync } from 'node:zlib';
import { sign as cryptoSign } from 'node:crypto';
import fc from 'fast-check';
import { PosternError, isPosternError } from '../../src/common/errors.ts';
import {
  DEFAULT_MAX_PACKAGE_BYTES,
  readAuthenticatedDataPackage,
  signingPublicKeyDigest,
  writeAuthenticatedDataPackage,
} from '../../src/protocol/authenticated-package.ts';
import { generateRsaKeyPair, rsaPrivateKeyObject } from '../../src/protocol/keys.ts';

const VECTORS = new URL('../fixtures/psiphon-formats/shared/', import.meta.url);
const FIXTURES = new URL('../fixtures/psiphon-formats/', import.meta.url);

const vectorEntries = JSON.parse(readFileSync(new URL('server-entries.json', VECTORS), 'utf8')) as {
  listSigningPublicKey: string;
  serverEntries: { encodedServerEntry: string }[];
};
const LIST_KEY = vectorEntries.listSigningPublicKey;
const vectorZlib = readFileSync(new URL('server-list.zlib', VECTORS));
const vectorJson = readFileSync(new URL('server-list.json', VECTORS));
const expectedListData = vectorEntries.serverEntries.map((e) => e.encodedServerEntry).join('\n');

const keys = JSON.parse(readFileSync(new URL('package-keys.json', FIXTURES), 'utf8')) as {
  signingPublicKey: string;
  signingPrivateKey: string;
};
/** The data of reference-made-package.zlib: every character class Go's JSON encoder treats specially. */
const REFERENCE_PACKAGE_DATA =
  'line1\nquote " backslash \\ <tag> & amp\t tab \r cr \b bs \f ff \u0001 \u001f \u007f é ☃ 😀 \u2028 \u2029 end';

function expectCode(fn: () => unknown, codes: string[], message?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PosternError, `expected a PosternError, got ${String(e)}`);
    assert.ok(codes.includes(e.code), `unexpected code ${e.code}: ${e.message}`);
    if (message) assert.match(e.message, message);
    return true;
  });
}

function packageJson(fields: Record<string, unknown>): Buffer {
  return Buffer.from(JSON.stringify(fields), 'utf8');
}

test('the shared vector package verifies, compressed and plain, and yields the five entries', () => {
  const fromZlib = readAuthenticatedDataPackage(vectorZlib, LIST_KEY);
  const fromJson = readAuthenticatedDataPackage(vectorJson, LIST_KEY, { compressed: false });
  assert.equal(fromZlib, expectedListData);
  assert.equal(fromJson, expectedListData);
  assert.equal(fromZlib.split('\n').length, 5);
});

test('one flipped byte anywhere in the compressed vector package is refused with a typed error', () => {
  for (let i = 0; i < vectorZlib.length; i++) {
    const bad = Buffer.from(vectorZlib);
    bad[i] = (bad[i] as number) ^ 0xff;
    expectCode(
      () => readAuthenticatedDataPackage(bad, LIST_KEY),
      ['BAD_PACKAGE', 'BAD_SIGNATURE', 'TOO_LARGE'],
    );
  }
});

test('altered data in a well-formed package fails the signature check', () => {
  const json = JSON.parse(vectorJson.toString('utf8')) as Record<string, string>;
  const data = json['data'] as string;
  const altered = { ...json, data: (data[0] === '3' ? '4' : '3') + data.slice(1) };
  expectCode(
    () => readAuthenticatedDataPackage(packageJson(altered), LIST_KEY, { compressed: false }),
    ['BAD_SIGNATURE'],
    /does not match/,
  );
});

test('a package checked against another key says it was signed by another key', () => {
  expectCode(
    () => readAuthenticatedDataPackage(vectorZlib, keys.signingPublicKey),
    ['BAD_SIGNATURE'],
    /another key/,
  );
});

test('a signature by another key under the right key digest is refused', () => {
  const data = 'hello';
  const forged = packageJson({
    data,
    signingPublicKeyDigest: signingPublicKeyDigest(LIST_KEY).toString('base64'),
    signature: cryptoSign('sha256', Buffer.from(data), rsaPrivateKeyObject(keys.signingPrivateKey)).toString(
      'base64',
    ),
  });
  expectCode(
    () => readAuthenticatedDataPackage(forged, LIST_KEY, { compressed: false }),
    ['BAD_SIGNATURE'],
    /does not match/,
  );
});

test('write then read round-trips, compressed and plain', () => {
  for (const data of ['', expectedListData, REFERENCE_PACKAGE_DATA, 'x'.repeat(100_000)]) {
    const z = writeAuthenticatedDataPackage(data, keys.signingPublicKey, keys.signingPrivateKey);
    assert.equal(z[0], 0x78, 'zlib header');
    assert.equal(readAuthenticatedDataPackage(z, keys.signingPublicKey), data);
    const plain = writeAuthenticatedDataPackage(data, keys.signingPublicKey, keys.signingPrivateKey, {
      compress: false,
    });
    assert.equal(readAuthenticatedDataPackage(plain, keys.signingPublicKey, { compressed: false }), data);
    assert.deepEqual(inflateSync(z), plain);
  }
});

test("the written JSON is byte-identical to the reference's, in Go's field order and escaping", () => {
  const referenceJson = inflateSync(readFileSync(new URL('reference-made-package.zlib', FIXTURES)));
  const ours = writeAuthenticatedDataPackage(
    REFERENCE_PACKAGE_DATA,
    keys.signingPublicKey,
    keys.signingPrivateKey,
    {
      compress: false,
    },
  );
  assert.equal(ours.toString('utf8'), referenceJson.toString('utf8'));
  assert.match(
    ours.toString('utf8'),
    /^\{"data":".*\\u003ctag\\u003e \\u0026 .*","signingPublicKeyDigest":"[^"]+","signature":"[^"]+"\}$/,
  );
});

test('a package written by the reference reads back', () => {
  const pkg = readFileSync(new URL('reference-made-package.zlib', FIXTURES));
  assert.equal(readAuthenticatedDataPackage(pkg, keys.signingPublicKey), REFERENCE_PACKAGE_DATA);
  expectCode(() => readAuthenticatedDataPackage(pkg, LIST_KEY), ['BAD_SIGNATURE'], /another key/);
});

test('the Postern-made fixture package (checked by the reference) still reads', () => {
  const pkg = readFileSync(new URL('postern-made-package.zlib', FIXTURES));
  assert.equal(readAuthenticatedDataPackage(pkg, keys.signingPublicKey), expectedListData);
});

test('a decompression bomb is refused with TOO_LARGE at the default cap and at a chosen cap', () => {
  const bomb = deflateSync(Buffer.alloc(DEFAULT_MAX_PACKAGE_BYTES + 1, 0x20));
  assert.ok(bomb.length < 100_000);
  expectCode(() => readAuthenticatedDataPackage(bomb, keys.signingPublicKey), ['TOO_LARGE']);
  const pkg = writeAuthenticatedDataPackage('x'.repeat(5000), keys.signingPublicKey, keys.signingPrivateKey);
  expectCode(
    () => readAuthenticatedDataPackage(pkg, keys.signingPublicKey, { maxDecompressedBytes: 4096 }),
    ['TOO_LARGE'],
  );
  const plain = inflateSync(pkg);
  expectCode(
    () =>
      readAuthenticatedDataPackage(plain, keys.signingPublicKey, {
        compressed: false,
        maxDecompressedBytes: 4096,
      }),
    ['TOO_LARGE'],
  );
});

test('malformed packages are refused with BAD_PACKAGE', () => {
  const good = JSON.parse(vectorJson.toString('utf8')) as Record<string, unknown>;
  const plainCases: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['array', packageJson([] as unknown as Record<string, unknown>)],
    ['null', Buffer.from('null')],
    ['extra field', packageJson({ ...good, extra: 'x' })],
    ['missing data', packageJson({ ...good, data: undefined })],
    ['data not a string', packageJson({ ...good, data: 5 })],
    ['missing signature', packageJson({ ...good, signature: undefined })],
    ['signature not base64', packageJson({ ...good, signature: 'not base64!' })],
    ['digest wrong length', packageJson({ ...good, signingPublicKeyDigest: 'AAAA' })],
    ['invalid UTF-8', Buffer.concat([Buffer.from('{"data":"'), Buffer.of(0xff), Buffer.from('"}')])],
    ['BOM', Buffer.concat([Buffer.of(0xef, 0xbb, 0xbf), vectorJson])],
    ['truncated', vectorJson.subarray(0, vectorJson.length - 1)],
  ];
  for (const [name, bytes] of plainCases) {
    expectCode(() => readAuthenticatedDataPackage(bytes, LIST_KEY, { compressed: false }), ['BAD_PACKAGE']);
    void name;
  }
  expectCode(() => readAuthenticatedDataPackage(Buffer.alloc(0), LIST_KEY), ['BAD_PACKAGE'], /zlib/);
  expectCode(() => readAuthenticatedDataPackage(vectorJson, LIST_KEY), ['BAD_PACKAGE'], /zlib/);
  expectCode(
    () => readAuthenticatedDataPackage(Buffer.concat([vectorZlib, Buffer.of(0)]), LIST_KEY),
    ['BAD_PACKAGE'],
    /after the end/,
  );
  expectCode(() => readAuthenticatedDataPackage(vectorZlib.subarray(0, -1), LIST_KEY), ['BAD_PACKAGE']);
});

test('bad keys and arguments are reported as such', () => {
  expectCode(() => readAuthenticatedDataPackage(vectorZlib, 'not a key'), ['BAD_KEY']);
  const other = generateRsaKeyPair(1024);
  expectCode(
    () => writeAuthenticatedDataPackage('x', keys.signingPublicKey, other.privateKey),
    ['BAD_KEY'],
    /match/,
  );
  expectCode(
    () => writeAuthenticatedDataPackage('\ud800', keys.signingPublicKey, keys.signingPrivateKey),
    ['BAD_ARGUMENT'],
  );
  expectCode(
    () => readAuthenticatedDataPackage(vectorZlib, LIST_KEY, { maxDecompressedBytes: 0 }),
    ['BAD_ARGUMENT'],
  );
});

function onlyPosternErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!isPosternError(e)) throw e;
  }
}

test('fuzz: arbitrary bytes, compressed or not, only ever raise PosternError', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), fc.boolean(), (bytes, compressed) => {
      onlyPosternErrors(() => readAuthenticatedDataPackage(bytes, LIST_KEY, { compressed }));
      onlyPosternErrors(() => readAuthenticatedDataPackage(deflateSync(bytes), LIST_KEY));
    }),
    { numRuns: 300 },
  );
});

test('fuzz: package-shaped JSON with hostile values only ever raises PosternError', () => {
  const value = fc.oneof(
    fc.string(),
    fc.base64String(),
    fc.integer(),
    fc.constant(null),
    fc.array(fc.string()),
  );
  fc.assert(
    fc.property(
      fc.record(
        { data: value, signingPublicKeyDigest: value, signature: value, extra: value },
        { requiredKeys: [] },
      ),
      (obj) => {
        assert.throws(
          () => readAuthenticatedDataPackage(deflateSync(packageJson(obj)), LIST_KEY),
          (e: unknown) => isPosternError(e),
        );
      },
    ),
    { numRuns: 300 },
  );
});

test('fuzz: a mutated vector package never yields other data', () => {
  fc.assert(
    fc.property(fc.nat({ max: vectorZlib.length - 1 }), fc.integer({ min: 1, max: 255 }), (index, xor) => {
      const bad = Buffer.from(vectorZlib);
      bad[index] = (bad[index] as number) ^ xor;
      try {
        // Deflate ignores the padding bits of its last byte, so a flip there may leave the data intact.
        assert.equal(readAuthenticatedDataPackage(bad, LIST_KEY), expectedListData);
      } catch (e) {
        if (!isPosternError(e)) throw e;
      }
    }),
    { numRuns: 300 },
  );
});
