// Authenticated data packages: the signed envelope Psiphon uses for remote server lists and client upgrades.
// A package is the JSON object {"data","signingPublicKeyDigest","signature"} (in that order, as Go's
// json.Marshal writes the reference's struct), zlib-compressed when published. `signature` is RSA PKCS#1 v1.5
// over SHA-256 of the UTF-8 bytes of `data`; `signingPublicKeyDigest` is SHA-256 of the base64 public-key
// *string*, so readers can tell "signed by another key" from "tampered with".
import { createHash, createPublicKey, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { deflateSync, inflateSync } from 'node:zlib';
import { PosternError, describeError } from '../common/errors.ts';
import { goJsonQuote } from './go-json.ts';
import { rsaPrivateKeyObject, rsaPublicKeyObject } from './keys.ts';

/**
 * Largest package JSON a reader accepts by default (after decompression). Psiphon's remote server lists are
 * a few MiB; the cap stops a small zlib bomb from taking the process's memory.
 */
export const DEFAULT_MAX_PACKAGE_BYTES = 64 * 1024 * 1024;

/** Length of `signingPublicKeyDigest` (SHA-256). */
export const PACKAGE_KEY_DIGEST_LENGTH = 32;

const PACKAGE_FIELDS = ['data', 'signingPublicKeyDigest', 'signature'] as const;
const STD_BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
// In a `u` regex a surrogate pair is one code point, so this matches only unpaired halves.
const LONE_SURROGATE = /\p{Cs}/u;

export interface WriteAuthenticatedDataPackageOptions {
  /** zlib-compress the package, as published packages are (default true). */
  compress?: boolean;
}

export interface ReadAuthenticatedDataPackageOptions {
  /** The package is zlib-compressed (default true). */
  compressed?: boolean;
  /** Refuse packages whose JSON is larger than this many bytes (default DEFAULT_MAX_PACKAGE_BYTES). */
  maxDecompressedBytes?: number;
}

/** SHA-256 of the base64 public-key string, as carried in `signingPublicKeyDigest`. */
export function signingPublicKeyDigest(signingPublicKeyB64: string): Buffer {
  return createHash('sha256').update(signingPublicKeyB64, 'utf8').digest();
}

/**
 * Signs `data` and wraps it in a package that psiphon-tunnel-core's ReadAuthenticatedDataPackage and
 * NewAuthenticatedDataPackageReader accept. The JSON is byte-identical to the reference's for the same key and
 * data (PKCS#1 v1.5 signatures are deterministic); the zlib bytes differ from Go's compressor but inflate to
 * the same JSON. The reference's streaming reader understands only the escape `\n` inside `data`: server
 * lists (hex lines) need nothing else, other data should avoid `"`, `\`, `<`, `>`, `&` and control characters.
 */
export function writeAuthenticatedDataPackage(
  data: string,
  signingPublicKeyB64: string,
  signingPrivateKeyB64: string,
  opts: WriteAuthenticatedDataPackageOptions = {},
): Buffer {
  if (typeof data !== 'string') throw new PosternError('BAD_ARGUMENT', 'package data must be a string');
  // An unpaired surrogate has no UTF-8 form: the signature would be over U+FFFD, not over `data`.
  if (LONE_SURROGATE.test(data)) {
    throw new PosternError('BAD_ARGUMENT', 'package data contains an unpaired UTF-16 surrogate');
  }
  const dataLiteral = goJsonQuote(data);
  const privateKey = rsaPrivateKeyObject(signingPrivateKeyB64);
  const publicKey = rsaPublicKeyObject(signingPublicKeyB64);
  // A mismatched pair would publish a list no client accepts; catch it here rather than in the field.
  const derivedPublic = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  if (!derivedPublic.equals(publicKey.export({ type: 'spki', format: 'der' }))) {
    throw new PosternError('BAD_KEY', 'the package signing private key does not match the public key');
  }
  const signature = cryptoSign('sha256', Buffer.from(data, 'utf8'), privateKey);
  const json =
    `{"data":${dataLiteral},` +
    `"signingPublicKeyDigest":"${signingPublicKeyDigest(signingPublicKeyB64).toString('base64')}",` +
    `"signature":"${signature.toString('base64')}"}`;
  const bytes = Buffer.from(json, 'utf8');
  return opts.compress === false ? bytes : deflateSync(bytes);
}

function decodeField(value: unknown, name: string): Buffer {
  if (typeof value !== 'string' || value.length % 4 !== 0 || !STD_BASE64.test(value)) {
    throw new PosternError('BAD_PACKAGE', `package field "${name}" is not a standard base64 string`);
  }
  return Buffer.from(value, 'base64');
}

function inflateCapped(pkg: Uint8Array, max: number): Buffer {
  let result: { buffer: Buffer; engine: { bytesWritten: number } };
  try {
    // `info` exposes how much input the stream used, so trailing bytes can be refused.
    result = inflateSync(pkg, { maxOutputLength: max, info: true }) as unknown as typeof result;
  } catch (e) {
    if (e instanceof Error && (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new PosternError('TOO_LARGE', `package inflates to more than ${max} bytes`, { cause: e });
    }
    throw new PosternError('BAD_PACKAGE', `package is not a valid zlib stream: ${describeError(e)}`, {
      cause: e,
    });
  }
  if (result.engine.bytesWritten !== pkg.length) {
    throw new PosternError(
      'BAD_PACKAGE',
      `package has ${pkg.length - result.engine.bytesWritten} bytes after the end of its zlib stream`,
    );
  }
  return result.buffer;
}

/**
 * Checks a package against the expected signing key and returns its data. Throws BAD_KEY for an unusable
 * key, TOO_LARGE past the size cap, BAD_PACKAGE for anything that is not a well-formed package, and
 * BAD_SIGNATURE when it was signed by another key or its data or signature were altered.
 *
 * Stricter than the reference's json.Unmarshal-based reader on form (exact field names, no extra fields,
 * valid UTF-8, no bytes after the zlib stream), the same on what is authenticated.
 */
export function readAuthenticatedDataPackage(
  pkg: Uint8Array,
  signingPublicKeyB64: string,
  opts: ReadAuthenticatedDataPackageOptions = {},
): string {
  const max = opts.maxDecompressedBytes ?? DEFAULT_MAX_PACKAGE_BYTES;
  if (!Number.isSafeInteger(max) || max < 1) {
    throw new PosternError('BAD_ARGUMENT', `maxDecompressedBytes must be a positive integer, got ${max}`);
  }
  if (!(pkg instanceof Uint8Array)) throw new PosternError('BAD_ARGUMENT', 'package must be bytes');
  const publicKey = rsaPublicKeyObject(signingPublicKeyB64);

  let jsonBytes: Uint8Array;
  if (opts.compressed === false) {
    if (pkg.length > max) throw new PosternError('TOO_LARGE', `package is larger than ${max} bytes`);
    jsonBytes = pkg;
  } else {
    jsonBytes = inflateCapped(pkg, max);
  }

  let parsed: unknown;
  try {
    // fatal: invalid UTF-8 is refused rather than silently replaced; ignoreBOM keeps a BOM so JSON.parse
    // refuses it, as Go does.
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(jsonBytes);
    parsed = JSON.parse(text);
  } catch (e) {
    throw new PosternError('BAD_PACKAGE', `package is not valid UTF-8 JSON: ${describeError(e)}`, {
      cause: e,
    });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new PosternError('BAD_PACKAGE', 'package is not a JSON object');
  }
  const record = parsed as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!(PACKAGE_FIELDS as readonly string[]).includes(key)) {
      throw new PosternError('BAD_PACKAGE', `package has an unexpected field "${key}"`);
    }
  }
  const data = record['data'];
  if (typeof data !== 'string') throw new PosternError('BAD_PACKAGE', 'package field "data" is not a string');
  const digest = decodeField(record['signingPublicKeyDigest'], 'signingPublicKeyDigest');
  const signature = decodeField(record['signature'], 'signature');
  if (digest.length !== PACKAGE_KEY_DIGEST_LENGTH) {
    throw new PosternError(
      'BAD_PACKAGE',
      `package field "signingPublicKeyDigest" must be ${PACKAGE_KEY_DIGEST_LENGTH} bytes, got ${digest.length}`,
    );
  }

  const expected = signingPublicKeyDigest(signingPublicKeyB64);
  if (!digest.equals(expected)) {
    throw new PosternError(
      'BAD_SIGNATURE',
      `package was signed by another key (key digest ${digest.toString('base64')}; ` +
        `the configured key's digest is ${expected.toString('base64')})`,
    );
  }
  let ok: boolean;
  try {
    ok = cryptoVerify('sha256', Buffer.from(data, 'utf8'), publicKey, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new PosternError('BAD_SIGNATURE', 'package signature does not match its data');
  return data;
}
