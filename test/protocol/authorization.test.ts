import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { PosternError, isPosternError } from '../../src/common/errors.ts';
import {
  MAX_ENCODED_AUTHORIZATION_LENGTH,
  decodeAuthorization,
  deriveAuthorizationId,
  encodeAuthorizationKey,
  formatGoRfc3339Nano,
  generateAuthorizationKeyPair,
  generateAuthorizationSigningKey,
  issueAuthorization,
  parseAuthorizationSigningKey,
  parseAuthorizationVerificationKey,
  parseAuthorizationVerificationKeyRing,
  parseGoRfc3339,
  verifyAuthorization,
  type AuthorizationSigningKey,
  type AuthorizationVerificationKey,
} from '../../src/protocol/authorization.ts';
import { ed25519Sign } from '../../src/protocol/keys.ts';

interface IssuedCase {
  key: number;
  seedBase64: string;
  expires: string;
  encoded: string;
  idBase64?: string;
}

const fixture = JSON.parse(
  readFileSync(new URL('../fixtures/psiphon-formats/authorizations.json', import.meta.url), 'utf8'),
) as {
  keys: { signingKey: AuthorizationSigningKey; verificationKey: AuthorizationVerificationKey }[];
  posternIssued: IssuedCase[];
  referenceIssued: IssuedCase[];
};
const ring = { Keys: fixture.keys.map((k) => k.verificationKey) };
const keyA = fixture.keys[0]!;
/** A fixed "now" before every fixture expiry except the deliberately expired one. */
const NOW = new Date('2050-01-01T00:00:00Z');

function expectBad(fn: () => unknown, message: RegExp, code = 'BAD_AUTHORIZATION'): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PosternError, `expected a PosternError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

function encodeJson(obj: unknown): string {
  return Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj), 'utf8').toString('base64');
}

function outerOf(encoded: string): {
  Authorization: Record<string, unknown>;
  SigningKeyID: string;
  Signature: string;
} {
  return JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as {
    Authorization: Record<string, unknown>;
    SigningKeyID: string;
    Signature: string;
  };
}

test('authorizations issued by the reference verify, and we issue the identical string', () => {
  assert.ok(fixture.referenceIssued.length >= 5);
  for (const c of fixture.referenceIssued) {
    const key = fixture.keys[c.key]!;
    const seed = Buffer.from(c.seedBase64, 'base64');
    assert.equal(issueAuthorization(key.signingKey, seed, c.expires), c.encoded, `case ${c.seedBase64}`);
    assert.equal(deriveAuthorizationId(key.signingKey, seed).toString('base64'), c.idBase64);
    if (parseGoRfc3339(c.expires)! < BigInt(NOW.getTime()) * 1_000_000n) {
      expectBad(() => verifyAuthorization(c.encoded, ring, NOW), /expired at 2001-02-03T04:05:06Z/);
      continue;
    }
    const v = verifyAuthorization(c.encoded, ring, NOW);
    assert.equal(v.idBase64, c.idBase64);
    assert.equal(v.accessType, key.signingKey.AccessType);
    assert.equal(v.expiresUnixNanos, parseGoRfc3339(c.expires));
    assert.equal(v.signingKeyId.toString('base64'), key.verificationKey.ID);
  }
});

test('authorizations we issued (and the reference verified) are stable', () => {
  for (const c of fixture.posternIssued) {
    const key = fixture.keys[c.key]!;
    assert.equal(
      issueAuthorization(key.signingKey, Buffer.from(c.seedBase64, 'base64'), c.expires),
      c.encoded,
    );
  }
});

test('the signed JSON is what Go marshals: field order, UTC, nanoseconds, HTML escaping', () => {
  const nanos = fixture.referenceIssued.find((c) => c.expires.includes('.123456789+01:00'))!;
  assert.match(
    decodeAuthorization(nanos.encoded).authorizationJson,
    /^\{"ID":"[A-Za-z0-9+/]{43}=","AccessType":"speed-boost","Expires":"2099-01-02T02:04:05.123456789Z"\}$/,
  );
  const trimmed = fixture.referenceIssued.find((c) => c.expires.endsWith('.12-07:30'))!;
  assert.equal(decodeAuthorization(trimmed.encoded).expiresText, '2099-07-01T07:29:59.12Z');
  const html = fixture.referenceIssued.find((c) => c.key === 1)!;
  assert.match(
    decodeAuthorization(html.encoded).authorizationJson,
    /"AccessType":"test \\u003c\\u0026\\u003e ☃"/,
  );
  assert.match(
    Buffer.from(html.encoded, 'base64').toString('utf8'),
    /^\{"Authorization":\{.*\},"SigningKeyID":".*","Signature":".*"\}$/,
  );
});

test('round trip with a fresh key pair, and expiry against a fixed now', () => {
  const { signingKey, verificationKey } = generateAuthorizationKeyPair('speed-boost');
  const expires = new Date('2030-06-01T12:00:00.250Z');
  const encoded = issueAuthorization(signingKey, Buffer.from('order-42'), expires);
  const v = verifyAuthorization(encoded, [verificationKey], new Date('2030-06-01T12:00:00.250Z'));
  assert.equal(v.accessType, 'speed-boost');
  assert.equal(v.expires.getTime(), expires.getTime());
  assert.equal(v.expiresText, '2030-06-01T12:00:00.25Z');
  assert.deepEqual(v.id, deriveAuthorizationId(signingKey, Buffer.from('order-42')));
  expectBad(
    () => verifyAuthorization(encoded, [verificationKey], new Date('2030-06-01T12:00:00.251Z')),
    /expired at 2030-06-01T12:00:00.25Z/,
  );
  // one nanosecond past the millisecond still counts as not yet expired
  const ns = issueAuthorization(signingKey, Buffer.from('x'), '2030-01-01T00:00:00.000000001Z');
  assert.equal(
    verifyAuthorization(ns, [verificationKey], new Date('2030-01-01T00:00:00.000Z')).expiresText,
    '2030-01-01T00:00:00.000000001Z',
  );
  expectBad(
    () => verifyAuthorization(ns, [verificationKey], new Date('2030-01-01T00:00:00.001Z')),
    /expired/,
  );
});

test('a tampered AccessType fails the signature check', () => {
  const c = fixture.referenceIssued[0]!;
  const outer = outerOf(c.encoded);
  const raw = decodeAuthorization(c.encoded).authorizationJson.replace('"speed-boost"', '"speed-boosx"');
  const tampered = encodeJson(
    `{"Authorization":${raw},"SigningKeyID":"${outer.SigningKeyID}","Signature":"${outer.Signature}"}`,
  );
  expectBad(() => verifyAuthorization(tampered, ring, NOW), /signature does not match/);
});

test('re-formatting the signed JSON (whitespace) breaks the signature; the exact bytes are what count', () => {
  const c = fixture.referenceIssued[0]!;
  const outer = outerOf(c.encoded);
  expectBad(
    () => verifyAuthorization(encodeJson(JSON.stringify(outer, null, 1)), ring, NOW),
    /signature does not match/,
  );
  // whitespace outside the Authorization object is harmless, as in Go
  const spaced = encodeJson(
    `{ "Authorization" : ${decodeAuthorization(c.encoded).authorizationJson} ,\n"SigningKeyID":"${outer.SigningKeyID}","Signature":"${outer.Signature}" }`,
  );
  assert.equal(verifyAuthorization(spaced, ring, NOW).idBase64, c.idBase64);
});

test('an access type other than the key’s is refused even with a valid signature', () => {
  const c = fixture.referenceIssued[0]!;
  const wrongType = { ...keyA.verificationKey, AccessType: 'other-access' };
  expectBad(
    () => verifyAuthorization(c.encoded, [wrongType], NOW),
    /access type "speed-boost" but its key is for "other-access"/,
  );
});

test('unknown keys, bad lengths and missing fields are refused with clear reasons', () => {
  const c = fixture.referenceIssued[0]!;
  const other = generateAuthorizationKeyPair('speed-boost').verificationKey;
  expectBad(() => verifyAuthorization(c.encoded, [other], NOW), /unknown key/);
  expectBad(() => verifyAuthorization(c.encoded, [], NOW), /unknown key/);
  const outer = outerOf(c.encoded);
  const raw = decodeAuthorization(c.encoded).authorizationJson;
  const wrap = (auth: string, keyId = outer.SigningKeyID, sig = outer.Signature) =>
    encodeJson(`{"Authorization":${auth},"SigningKeyID":"${keyId}","Signature":"${sig}"}`);
  expectBad(() => verifyAuthorization(wrap(raw, 'AAAA'), ring, NOW), /key ID must be 32 bytes/);
  expectBad(
    () => verifyAuthorization(wrap(raw, outer.SigningKeyID, 'AAAA'), ring, NOW),
    /signature must be 64 bytes/,
  );
  expectBad(() => verifyAuthorization('not base64!', ring, NOW), /base64/);
  expectBad(() => verifyAuthorization(encodeJson('{"Authorization":'), ring, NOW), /not valid JSON/);
  expectBad(() => verifyAuthorization(encodeJson('[]'), ring, NOW), /not a JSON object/);
  expectBad(
    () => verifyAuthorization(encodeJson({ ...outer, Extra: 1 }), ring, NOW),
    /unexpected field "Extra"/,
  );
  expectBad(
    () =>
      verifyAuthorization(
        encodeJson({ SigningKeyID: outer.SigningKeyID, Signature: outer.Signature }),
        ring,
        NOW,
      ),
    /no "Authorization"/,
  );
  expectBad(
    () =>
      verifyAuthorization(
        wrap(raw.replace('"Expires":"2099-01-02T03:04:05Z"', '"Expires":"2099-02-30T03:04:05Z"')),
        ring,
        NOW,
      ),
    /not an RFC 3339/,
  );
  expectBad(
    () => verifyAuthorization('A'.repeat(MAX_ENCODED_AUTHORIZATION_LENGTH + 4), ring, NOW),
    /longer than/,
  );
  // A second Authorization member could make other parsers check one and use the other.
  expectBad(
    () =>
      verifyAuthorization(
        encodeJson(`{"Authorization":${raw},${Buffer.from(c.encoded, 'base64').toString().slice(1)}`),
        ring,
        NOW,
      ),
    /"Authorization" twice/,
  );
});

test('an empty ID or the zero time are refused even when properly signed', () => {
  const key = keyA.signingKey;
  const signWith = (authJson: string) =>
    encodeJson(
      `{"Authorization":${authJson},"SigningKeyID":"${key.ID}","Signature":"${ed25519Sign(key.PrivateKey, Buffer.from(authJson)).toString('base64')}"}`,
    );
  expectBad(
    () =>
      verifyAuthorization(
        signWith('{"ID":"","AccessType":"speed-boost","Expires":"2099-01-01T00:00:00Z"}'),
        ring,
        NOW,
      ),
    /empty ID/,
  );
  expectBad(
    () =>
      verifyAuthorization(
        signWith('{"ID":"AA==","AccessType":"speed-boost","Expires":"0001-01-01T00:00:00Z"}'),
        ring,
        NOW,
      ),
    /no expiry/,
  );
  expectBad(
    () => verifyAuthorization(signWith('{"ID":"AA==","AccessType":"speed-boost","Expires":null}'), ring, NOW),
    /no string "Expires"/,
  );
});

test('keys: reference JSON shape, the one-line base64 form, and invalid keys', () => {
  const { signingKey, verificationKey } = generateAuthorizationKeyPair('speed-boost');
  assert.deepEqual(Object.keys(signingKey), ['ID', 'AccessType', 'AuthorizationIDKey', 'PrivateKey']);
  assert.deepEqual(Object.keys(verificationKey), ['ID', 'AccessType', 'PublicKey']);
  assert.equal(Buffer.from(signingKey.PrivateKey, 'base64').length, 64);
  assert.deepEqual(parseAuthorizationSigningKey(encodeAuthorizationKey(signingKey)), signingKey);
  assert.deepEqual(
    parseAuthorizationVerificationKey(encodeAuthorizationKey(verificationKey)),
    verificationKey,
  );
  const line = generateAuthorizationSigningKey('speed-boost');
  const sk = parseAuthorizationSigningKey(line.signingKey);
  const vk = parseAuthorizationVerificationKey(line.verificationKey);
  assert.equal(
    verifyAuthorization(issueAuthorization(sk, Buffer.of(1), NOW), [vk], new Date(0)).accessType,
    'speed-boost',
  );
  assert.deepEqual(parseAuthorizationVerificationKeyRing({ Keys: null }), { Keys: [] });
  expectBad(
    () => parseAuthorizationVerificationKey({ ...verificationKey, PublicKey: 'AAAA' }),
    /PublicKey/,
    'BAD_KEY',
  );
  expectBad(() => parseAuthorizationSigningKey({ ...signingKey, AccessType: '' }), /AccessType/, 'BAD_KEY');
  expectBad(() => parseAuthorizationSigningKey({ ...signingKey, ID: 'AAAA' }), /ID/, 'BAD_KEY');
  expectBad(() => parseAuthorizationSigningKey('%%%'), /base64/, 'BAD_KEY');
  expectBad(
    () =>
      verifyAuthorization(fixture.referenceIssued[0]!.encoded, [{ ...verificationKey, ID: 'short' }], NOW),
    /ID/,
    'BAD_KEY',
  );
  expectBad(
    () => issueAuthorization(signingKey, Buffer.of(1), '2099-13-01T00:00:00Z'),
    /RFC 3339/,
    'BAD_ARGUMENT',
  );
  expectBad(
    () => issueAuthorization(signingKey, Buffer.of(1), new Date(Date.UTC(10000, 0, 1))),
    /0\.\.9999/,
    'BAD_ARGUMENT',
  );
});

test('Go RFC 3339 times: format/parse round trip and agreement with toISOString', () => {
  const minNanos = parseGoRfc3339('0000-01-01T00:00:00Z')!;
  const maxNanos = parseGoRfc3339('9999-12-31T23:59:59.999999999Z')!;
  fc.assert(
    fc.property(fc.bigInt({ min: minNanos, max: maxNanos }), (n) => {
      assert.equal(parseGoRfc3339(formatGoRfc3339Nano(n)), n);
    }),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(
      fc.date({
        min: new Date('1970-01-01T00:00:00Z'),
        max: new Date('9999-12-31T00:00:00Z'),
        noInvalidDate: true,
      }),
      (d) => {
        const iso = d
          .toISOString()
          .replace(/\.000Z$/, 'Z')
          .replace(/(\.\d*?)0+Z$/, '$1Z');
        assert.equal(formatGoRfc3339Nano(BigInt(d.getTime()) * 1_000_000n), iso);
      },
    ),
    { numRuns: 200 },
  );
  assert.equal(parseGoRfc3339('2024-02-29T00:00:00Z') !== undefined, true);
  assert.equal(parseGoRfc3339('2023-02-29T00:00:00Z'), undefined);
  assert.equal(parseGoRfc3339('2024-01-01T24:00:00Z'), undefined);
  assert.equal(parseGoRfc3339('2024-01-01t00:00:00Z'), undefined);
  assert.equal(
    parseGoRfc3339('2024-01-01T00:00:00.1234567891Z'),
    parseGoRfc3339('2024-01-01T00:00:00.123456789Z'),
  );
  assert.equal(parseGoRfc3339('2024-01-01T01:30:00+01:30'), parseGoRfc3339('2024-01-01T00:00:00Z'));
});

function onlyPosternErrors(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (e) {
    if (!isPosternError(e)) throw e;
    return undefined;
  }
}

test('fuzz: hostile strings and JSON only ever raise PosternError', () => {
  const jsonValue = fc.jsonValue({ maxDepth: 3 });
  fc.assert(
    fc.property(fc.string({ maxLength: 300 }), jsonValue, (s, j) => {
      assert.throws(
        () => verifyAuthorization(s, ring, NOW),
        (e: unknown) => isPosternError(e),
      );
      assert.throws(
        () => verifyAuthorization(encodeJson(JSON.stringify(j) ?? 'null'), ring, NOW),
        (e: unknown) => isPosternError(e),
      );
      assert.throws(
        () =>
          verifyAuthorization(
            encodeJson({
              Authorization: j,
              SigningKeyID: keyA.verificationKey.ID,
              Signature: 'A'.repeat(86) + '==',
            }),
            ring,
            NOW,
          ),
        (e: unknown) => isPosternError(e),
      );
    }),
    { numRuns: 300 },
  );
});

test('fuzz: a mutated valid authorization never verifies as something else', () => {
  const c = fixture.referenceIssued[0]!;
  const original = verifyAuthorization(c.encoded, ring, NOW);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=';
  fc.assert(
    fc.property(fc.nat({ max: c.encoded.length - 1 }), fc.nat({ max: alphabet.length - 1 }), (i, k) => {
      const mutated = c.encoded.slice(0, i) + alphabet[k] + c.encoded.slice(i + 1);
      const v = onlyPosternErrors(() => verifyAuthorization(mutated, ring, NOW));
      if (v !== undefined) {
        // only a change to base64 padding bits can leave the decoded bytes, and so the result, the same
        assert.deepEqual(v, original);
      }
    }),
    { numRuns: 300 },
  );
});
