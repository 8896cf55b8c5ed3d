// Access authorizations (e.g. speed boost bought with PsiCash), in psiphon-tunnel-core's accesscontrol format:
// base64 of the JSON {"Authorization":{"ID","AccessType","Expires"},"SigningKeyID","Signature"}, where
// Signature is Ed25519 over the exact bytes of the Authorization object, ID is derived from a purchase's seed
// with HKDF-SHA256 under the signing key's AuthorizationIDKey (so the ID reveals nothing of the purchase),
// Expires is Go's RFC 3339 time with nanoseconds, and byte fields are base64. An issuer signs, tunnel servers
// verify with the matching verification key, selected by SigningKeyID.
import { isValidDateTimeMatch } from './calendar.ts';
import { createHmac, randomBytes } from 'node:crypto';
import { PosternError, describeError } from '../common/errors.ts';
import { goJsonQuote } from './go-json.ts';
import { ed25519PrivateKeyObject, ed25519Sign, ed25519Verify, generateEd25519KeyPair } from './keys.ts';

/** Length of a signing/verification key ID. */
export const AUTHORIZATION_KEY_ID_LENGTH = 32;
/** Length of the HKDF key that turns a purchase's seed into an authorization ID. */
export const AUTHORIZATION_ID_KEY_LENGTH = 32;
/** Length of an authorization ID. */
export const AUTHORIZATION_ID_LENGTH = 32;
/** Ed25519 signature length. */
export const AUTHORIZATION_SIGNATURE_LENGTH = 64;
/**
 * Longest encoded authorization a verifier looks at. A real one is about 400 characters; clients send several
 * in each handshake, so the cap bounds the work a hostile client can cause.
 */
export const MAX_ENCODED_AUTHORIZATION_LENGTH = 4096;

const ED25519_PUBLIC_KEY_LENGTH = 32;
const ED25519_PRIVATE_KEY_LENGTH = 64;
const STD_BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
// In a `u` regex a surrogate pair is one code point, so this matches only unpaired halves.
const LONE_SURROGATE = /\p{Cs}/u;

/** The issuer's key, in the reference's JSON shape (byte fields base64). Keep it off tunnel servers. */
export interface AuthorizationSigningKey {
  ID: string;
  AccessType: string;
  AuthorizationIDKey: string;
  /** Go's 64-byte Ed25519 private key (seed ‖ public key) */
  PrivateKey: string;
}

/** What a tunnel server holds to check authorizations of one access type (reference JSON shape). */
export interface AuthorizationVerificationKey {
  ID: string;
  AccessType: string;
  /** raw 32-byte Ed25519 public key */
  PublicKey: string;
}

/** psiphond's `AccessControlVerificationKeyRing` config value. */
export interface AuthorizationVerificationKeyRing {
  Keys: AuthorizationVerificationKey[];
}

export interface Authorization {
  id: Buffer;
  accessType: string;
  /** Millisecond precision; `expiresText` has the exact signed value. */
  expires: Date;
}

export interface DecodedAuthorization extends Authorization {
  /** base64 of `id`, the form psiphond logs and returns to clients */
  idBase64: string;
  /** `Expires` exactly as signed (Go RFC 3339, up to nanoseconds) */
  expiresText: string;
  /** `expires` in nanoseconds since the Unix epoch, for exact comparisons */
  expiresUnixNanos: bigint;
  signingKeyId: Buffer;
  signature: Buffer;
  /** the exact JSON text the signature covers */
  authorizationJson: string;
}

/** An authorization whose signature, key, access type and expiry were checked. */
export type VerifiedAuthorization = DecodedAuthorization;

function fail(message: string): never {
  throw new PosternError('BAD_AUTHORIZATION', message);
}

function isStdBase64(s: string): boolean {
  return s.length % 4 === 0 && STD_BASE64.test(s);
}

// ---------------------------------------------------------------------------------------------------------
// Go time.Time <-> RFC 3339, as MarshalJSON / UnmarshalJSON do it.

const NANOS_PER_SECOND = 1_000_000_000n;
const NANOS_PER_MILLISECOND = 1_000_000n;
/** Go's zero time.Time, 0001-01-01T00:00:00Z, in Unix nanoseconds: the reference treats it as "no expiry set". */
const GO_ZERO_TIME_UNIX_NANOS = -62_135_596_800n * NANOS_PER_SECOND;
const MAX_GO_YEAR = 9999;
/** Digits Go reads of a fraction of a second; it ignores the rest. */
const MAX_FRACTION_DIGITS = 9;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:Z|([+-])(\d{2}):(\d{2}))$/;

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/**
 * Formats a UTC instant as Go's json.Marshal writes a time.Time in UTC: "2006-01-02T15:04:05.999999999Z"
 * (fraction without trailing zeros, none when whole). Go refuses years outside 0..9999, so do we.
 */
export function formatGoRfc3339Nano(unixNanos: bigint): string {
  const ms = Number(floorDiv(unixNanos, NANOS_PER_MILLISECOND));
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  if (!Number.isFinite(ms) || Number.isNaN(year) || year < 0 || year > MAX_GO_YEAR) {
    throw new PosternError('BAD_ARGUMENT', 'time is outside the years 0..9999 that RFC 3339 can write');
  }
  const nanosOfSecond = unixNanos - floorDiv(unixNanos, NANOS_PER_SECOND) * NANOS_PER_SECOND;
  const fraction =
    nanosOfSecond === 0n
      ? ''
      : '.' + nanosOfSecond.toString().padStart(MAX_FRACTION_DIGITS, '0').replace(/0+$/, '');
  return (
    `${pad(year, 4)}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)}` +
    `T${pad(d.getUTCHours(), 2)}:${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}${fraction}Z`
  );
}

/**
 * Parses an RFC 3339 timestamp the way Go's time.Time.UnmarshalJSON does on its strict path (4-digit year,
 * ranges checked, any fraction length with digits past the ninth ignored, `Z` or ±hh:mm), returning Unix
 * nanoseconds, or undefined when it is not such a timestamp.
 */
export function parseGoRfc3339(text: string): bigint | undefined {
  const m = RFC3339.exec(text);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (!isValidDateTimeMatch(m)) return undefined;
  let offsetSeconds = 0;
  if (m[8] !== undefined) {
    const oh = Number(m[9]);
    const om = Number(m[10]);
    if (oh > 23 || om > 59) return undefined;
    offsetSeconds = (oh * 60 + om) * 60 * (m[8] === '-' ? -1 : 1);
  }
  const fraction = (m[7] ?? '').slice(0, MAX_FRACTION_DIGITS).padEnd(MAX_FRACTION_DIGITS, '0');
  // setUTCFullYear, unlike Date.UTC, does not map years 0..99 to 1900..1999.
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, 0);
  return (
    BigInt(d.getTime()) * NANOS_PER_MILLISECOND + BigInt(fraction) - BigInt(offsetSeconds) * NANOS_PER_SECOND
  );
}

function toUnixNanos(t: Date | string): bigint {
  if (t instanceof Date) {
    const ms = t.getTime();
    if (Number.isNaN(ms)) throw new PosternError('BAD_ARGUMENT', 'expiry is an invalid Date');
    return BigInt(ms) * NANOS_PER_MILLISECOND;
  }
  const nanos = parseGoRfc3339(t);
  if (nanos === undefined)
    throw new PosternError('BAD_ARGUMENT', `expiry "${t}" is not an RFC 3339 timestamp`);
  return nanos;
}

// ---------------------------------------------------------------------------------------------------------
// Keys

/** A new key pair for one access type, as the reference's accesscontrol.NewKeyPair makes it. */
export function generateAuthorizationKeyPair(accessType: string): {
  signingKey: AuthorizationSigningKey;
  verificationKey: AuthorizationVerificationKey;
} {
  if (typeof accessType !== 'string' || accessType.length === 0) {
    throw new PosternError('BAD_ARGUMENT', 'access type must be a non-empty string');
  }
  const id = randomBytes(AUTHORIZATION_KEY_ID_LENGTH).toString('base64');
  const ed = generateEd25519KeyPair();
  return {
    signingKey: {
      ID: id,
      AccessType: accessType,
      AuthorizationIDKey: randomBytes(AUTHORIZATION_ID_KEY_LENGTH).toString('base64'),
      PrivateKey: ed.privateKey,
    },
    verificationKey: { ID: id, AccessType: accessType, PublicKey: ed.publicKey },
  };
}

/** base64 of a key's JSON (field order as Go writes it): a one-line form for key files and config values. */
export function encodeAuthorizationKey(key: AuthorizationSigningKey | AuthorizationVerificationKey): string {
  const json =
    'PrivateKey' in key
      ? {
          ID: key.ID,
          AccessType: key.AccessType,
          AuthorizationIDKey: key.AuthorizationIDKey,
          PrivateKey: key.PrivateKey,
        }
      : { ID: key.ID, AccessType: key.AccessType, PublicKey: key.PublicKey };
  return Buffer.from(JSON.stringify(json), 'utf8').toString('base64');
}

/** A new key pair like generateAuthorizationKeyPair, each key as encodeAuthorizationKey writes it. */
export function generateAuthorizationSigningKey(accessType: string): {
  signingKey: string;
  verificationKey: string;
} {
  const pair = generateAuthorizationKeyPair(accessType);
  return {
    signingKey: encodeAuthorizationKey(pair.signingKey),
    verificationKey: encodeAuthorizationKey(pair.verificationKey),
  };
}

function keyBytes(obj: Record<string, unknown>, field: string, length: number, what: string): Buffer {
  const v = obj[field];
  if (typeof v !== 'string' || !isStdBase64(v)) {
    throw new PosternError('BAD_KEY', `${what} field "${field}" must be a standard base64 string`);
  }
  const b = Buffer.from(v, 'base64');
  if (b.length !== length) {
    throw new PosternError('BAD_KEY', `${what} field "${field}" must be ${length} bytes, got ${b.length}`);
  }
  return b;
}

function keyObject(value: unknown, what: string): Record<string, unknown> {
  if (typeof value === 'string') {
    // the one-line form of encodeAuthorizationKey
    try {
      if (!isStdBase64(value)) throw new Error('not standard base64');
      value = JSON.parse(Buffer.from(value, 'base64').toString('utf8')) as unknown;
    } catch (e) {
      throw new PosternError(
        'BAD_KEY',
        `${what} is neither a JSON object nor base64 of one: ${describeError(e)}`,
      );
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new PosternError('BAD_KEY', `${what} must be a JSON object`);
  }
  const obj = value as Record<string, unknown>;
  if (typeof obj['AccessType'] !== 'string' || obj['AccessType'].length === 0) {
    throw new PosternError('BAD_KEY', `${what} field "AccessType" must be a non-empty string`);
  }
  return obj;
}

/**
 * Checks a signing key read from JSON, given as the object or as encodeAuthorizationKey's base64 form (the
 * reference's ValidateSigningKey, plus a check that the private key's halves agree).
 */
export function parseAuthorizationSigningKey(value: unknown): AuthorizationSigningKey {
  const what = 'authorization signing key';
  const obj = keyObject(value, what);
  keyBytes(obj, 'ID', AUTHORIZATION_KEY_ID_LENGTH, what);
  keyBytes(obj, 'AuthorizationIDKey', AUTHORIZATION_ID_KEY_LENGTH, what);
  keyBytes(obj, 'PrivateKey', ED25519_PRIVATE_KEY_LENGTH, what);
  const key: AuthorizationSigningKey = {
    ID: obj['ID'] as string,
    AccessType: obj['AccessType'] as string,
    AuthorizationIDKey: obj['AuthorizationIDKey'] as string,
    PrivateKey: obj['PrivateKey'] as string,
  };
  ed25519PrivateKeyObject(key.PrivateKey); // refuses a private key whose public half was altered
  return key;
}

/** Checks one verification key read from JSON (the object or encodeAuthorizationKey's base64 form). */
export function parseAuthorizationVerificationKey(value: unknown): AuthorizationVerificationKey {
  const what = 'authorization verification key';
  const obj = keyObject(value, what);
  keyBytes(obj, 'ID', AUTHORIZATION_KEY_ID_LENGTH, what);
  keyBytes(obj, 'PublicKey', ED25519_PUBLIC_KEY_LENGTH, what);
  return {
    ID: obj['ID'] as string,
    AccessType: obj['AccessType'] as string,
    PublicKey: obj['PublicKey'] as string,
  };
}

/** Checks a key ring read from JSON (`{"Keys":[...]}`; `Keys` may be absent or null, as in Go). */
export function parseAuthorizationVerificationKeyRing(value: unknown): AuthorizationVerificationKeyRing {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new PosternError('BAD_KEY', 'authorization verification key ring must be a JSON object');
  }
  const keys = (value as Record<string, unknown>)['Keys'];
  if (keys === undefined || keys === null) return { Keys: [] };
  if (!Array.isArray(keys))
    throw new PosternError('BAD_KEY', 'authorization key ring field "Keys" must be an array');
  return { Keys: keys.map((k: unknown) => parseAuthorizationVerificationKey(k)) };
}

// ---------------------------------------------------------------------------------------------------------
// Issuing

/**
 * The authorization ID for a purchase: HKDF-SHA256 with the key's AuthorizationIDKey as secret, no salt,
 * the seed as info; the same seed always gives the same ID, and the ID cannot be traced back to the seed.
 */
export function deriveAuthorizationId(
  signingKey: AuthorizationSigningKey,
  seedAuthorizationId: Uint8Array,
): Buffer {
  const ikm = Buffer.from(signingKey.AuthorizationIDKey, 'base64');
  // RFC 5869 by hand: node's hkdfSync caps `info` at 1024 bytes, the reference does not.
  const prk = createHmac('sha256', Buffer.alloc(32)).update(ikm).digest();
  const okm = createHmac('sha256', prk).update(seedAuthorizationId).update(Buffer.of(1)).digest();
  return okm.subarray(0, AUTHORIZATION_ID_LENGTH);
}

/** The JSON Go's json.Marshal writes for an accesscontrol.Authorization, expiry converted to UTC. */
export function marshalAuthorizationJson(id: Uint8Array, accessType: string, expires: Date | string): string {
  // Go would sign U+FFFD for an unpaired surrogate, and the verifier compare it with the key's access type.
  if (LONE_SURROGATE.test(accessType)) {
    throw new PosternError('BAD_ARGUMENT', 'access type contains an unpaired UTF-16 surrogate');
  }
  return (
    `{"ID":"${Buffer.from(id).toString('base64')}",` +
    `"AccessType":${goJsonQuote(accessType)},` +
    `"Expires":"${formatGoRfc3339Nano(toUnixNanos(expires))}"}`
  );
}

/**
 * Issues an authorization for the signing key's access type, valid until `expires` (a Date, or an RFC 3339
 * string when sub-millisecond precision matters). Byte-identical to the reference's IssueAuthorization for
 * the same key, seed and expiry. The ID it carries is deriveAuthorizationId(signingKey, seed).
 */
export function issueAuthorization(
  signingKey: AuthorizationSigningKey,
  seedAuthorizationId: Uint8Array,
  expires: Date | string,
): string {
  const key = parseAuthorizationSigningKey(signingKey);
  const authorizationJson = marshalAuthorizationJson(
    deriveAuthorizationId(key, seedAuthorizationId),
    key.AccessType,
    expires,
  );
  const signature = ed25519Sign(key.PrivateKey, Buffer.from(authorizationJson, 'utf8'));
  const signed = `{"Authorization":${authorizationJson},"SigningKeyID":"${key.ID}","Signature":"${signature.toString('base64')}"}`;
  return Buffer.from(signed, 'utf8').toString('base64');
}

// ---------------------------------------------------------------------------------------------------------
// Decoding and verifying

interface Span {
  start: number;
  end: number;
}

const JSON_WS = new Set([' ', '\t', '\n', '\r']);
const VALUE_END = new Set([',', '}', ']', ' ', '\t', '\n', '\r']);

function skipWs(t: string, i: number): number {
  while (i < t.length && JSON_WS.has(t[i] as string)) i++;
  return i;
}

function skipString(t: string, i: number): number {
  i++; // opening quote
  while (i < t.length) {
    const c = t[i];
    if (c === '"') return i + 1;
    i += c === '\\' ? 2 : 1;
  }
  return i;
}

function skipValue(t: string, i: number): number {
  const c = t[i];
  if (c === '"') return skipString(t, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    while (i < t.length) {
      const ch = t[i];
      if (ch === '"') {
        i = skipString(t, i);
        continue;
      }
      if (ch === '{' || ch === '[') depth++;
      else if (ch === '}' || ch === ']') depth--;
      i++;
      if (depth === 0) return i;
    }
    return i;
  }
  while (i < t.length && !VALUE_END.has(t[i] as string)) i++;
  return i;
}

/**
 * The raw text of each member of a top-level JSON object. Only called on text JSON.parse accepted as an
 * object, so the scan can be simple; it exists because the signature covers the Authorization member's bytes
 * as they appear, which JSON.parse does not give back.
 */
function objectMemberSpans(t: string): Map<string, Span> {
  const spans = new Map<string, Span>();
  let i = skipWs(t, 0) + 1; // past '{'
  for (;;) {
    i = skipWs(t, i);
    if (t[i] === '}' || i >= t.length) return spans;
    if (t[i] === ',') {
      i++;
      continue;
    }
    const keyEnd = skipString(t, i);
    const key = JSON.parse(t.slice(i, keyEnd)) as string;
    i = skipWs(t, keyEnd) + 1; // past ':'
    const start = skipWs(t, i);
    const end = skipValue(t, start);
    if (spans.has(key)) fail(`authorization has the field "${key}" twice`);
    spans.set(key, { start, end });
    i = end;
  }
}

function parseJsonObject(text: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    fail(`${what} is not valid JSON: ${describeError(e)}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

function onlyFields(obj: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(obj)) if (!allowed.includes(k)) fail(`${what} has an unexpected field "${k}"`);
}

function base64Field(obj: Record<string, unknown>, field: string, what: string): Buffer {
  const v = obj[field];
  if (typeof v !== 'string' || !isStdBase64(v))
    fail(`${what} field "${field}" is not a standard base64 string`);
  return Buffer.from(v, 'base64');
}

/**
 * Decodes an authorization without checking its signature or expiry (for re-encoding, e.g. packing into
 * CBOR). Throws BAD_AUTHORIZATION when it is not a well-formed authorization.
 */
export function decodeAuthorization(encoded: string): DecodedAuthorization {
  if (typeof encoded !== 'string') fail('authorization must be a string');
  if (encoded.length > MAX_ENCODED_AUTHORIZATION_LENGTH) {
    fail(`authorization is longer than ${MAX_ENCODED_AUTHORIZATION_LENGTH} characters`);
  }
  if (!isStdBase64(encoded)) fail('authorization is not standard base64');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(Buffer.from(encoded, 'base64'));
  } catch {
    fail('authorization is not valid UTF-8');
  }
  const outer = parseJsonObject(text, 'authorization');
  onlyFields(outer, ['Authorization', 'SigningKeyID', 'Signature'], 'authorization');
  const span = objectMemberSpans(text).get('Authorization');
  if (span === undefined) fail('authorization has no "Authorization" field');
  const authorizationJson = text.slice(span.start, span.end);
  const signingKeyId = base64Field(outer, 'SigningKeyID', 'authorization');
  const signature = base64Field(outer, 'Signature', 'authorization');

  const inner = parseJsonObject(authorizationJson, 'authorization field "Authorization"');
  const what = 'authorization field "Authorization"';
  onlyFields(inner, ['ID', 'AccessType', 'Expires'], what);
  const id = base64Field(inner, 'ID', what);
  const accessType = inner['AccessType'];
  if (typeof accessType !== 'string') fail(`${what} has no string "AccessType"`);
  const expiresText = inner['Expires'];
  if (typeof expiresText !== 'string') fail(`${what} has no string "Expires"`);
  const expiresUnixNanos = parseGoRfc3339(expiresText);
  if (expiresUnixNanos === undefined)
    fail(`authorization expiry "${expiresText}" is not an RFC 3339 timestamp`);
  return {
    id,
    idBase64: id.toString('base64'),
    accessType,
    expires: new Date(Number(floorDiv(expiresUnixNanos, NANOS_PER_MILLISECOND))),
    expiresText,
    expiresUnixNanos,
    signingKeyId,
    signature,
    authorizationJson,
  };
}

/**
 * Verifies an authorization as the reference's VerifyAuthorization does, against `now` instead of the wall
 * clock: the key named by SigningKeyID must be in the ring, the signature must hold, the access type must be
 * the key's, and the expiry must be set and not before `now`. Throws BAD_KEY for an invalid key ring and
 * BAD_AUTHORIZATION, with the reason, for everything else.
 */
export function verifyAuthorization(
  encoded: string,
  keys: AuthorizationVerificationKeyRing | readonly AuthorizationVerificationKey[],
  now: Date,
): VerifiedAuthorization {
  const ring = parseAuthorizationVerificationKeyRing(Array.isArray(keys) ? { Keys: keys } : keys);
  const nowMs = now.getTime();
  if (Number.isNaN(nowMs)) throw new PosternError('BAD_ARGUMENT', '`now` is an invalid Date');

  const auth = decodeAuthorization(encoded);
  if (auth.signingKeyId.length !== AUTHORIZATION_KEY_ID_LENGTH) {
    fail(
      `authorization key ID must be ${AUTHORIZATION_KEY_ID_LENGTH} bytes, got ${auth.signingKeyId.length}`,
    );
  }
  if (auth.signature.length !== AUTHORIZATION_SIGNATURE_LENGTH) {
    fail(
      `authorization signature must be ${AUTHORIZATION_SIGNATURE_LENGTH} bytes, got ${auth.signature.length}`,
    );
  }
  // The reference takes the last key with the ID; IDs are public, so no constant-time compare is needed.
  let key: AuthorizationVerificationKey | undefined;
  for (const k of ring.Keys) if (Buffer.from(k.ID, 'base64').equals(auth.signingKeyId)) key = k;
  if (key === undefined)
    fail(`authorization was signed by an unknown key (ID ${auth.signingKeyId.toString('base64')})`);
  if (!ed25519Verify(key.PublicKey, Buffer.from(auth.authorizationJson, 'utf8'), auth.signature)) {
    fail('authorization signature does not match its contents');
  }
  if (auth.id.length === 0) fail('authorization has an empty ID');
  if (auth.accessType !== key.AccessType) {
    fail(`authorization is for access type "${auth.accessType}" but its key is for "${key.AccessType}"`);
  }
  if (auth.expiresUnixNanos === GO_ZERO_TIME_UNIX_NANOS) fail('authorization has no expiry');
  if (auth.expiresUnixNanos < BigInt(nowMs) * NANOS_PER_MILLISECOND) {
    fail(`authorization expired at ${auth.expiresText}`);
  }
  return auth;
}
