// A self-signed TLS identity built in-process: Node 20 can parse X.509 but not create it, and a fresh machine
// may have no `openssl`. We write the few DER structures a minimal v3 certificate needs (ECDSA P-256, SHA-256,
// subject = issuer = one CN, validity, subjectAltName, basicConstraints, keyUsage, extKeyUsage) and sign them
// with node:crypto. Peers pin the certificate itself (its PEM as `ca`, or its SHA-256 fingerprint).
import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
} from 'node:crypto';
import { isIP } from 'node:net';
import { PosternError } from './errors.ts';

export const MAX_COMMON_NAME_LENGTH = 64; // X.520 ub-common-name
export const MAX_DNS_NAME_LENGTH = 253;
export const MAX_SUBJECT_ALT_NAMES = 100;
export const DEFAULT_VALIDITY_DAYS = 3650;
export const MAX_VALIDITY_DAYS = 36500;
/** notBefore is set this far in the past so that a peer whose clock runs a little slow still accepts it. */
export const NOT_BEFORE_SKEW_MS = 60 * 60 * 1000;
const SERIAL_BYTES = 16;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface SelfSignedCertOptions {
  commonName: string;
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  validityDays?: number;
  /** The moment the certificate is made (tests pass a fixed time). */
  now?: Date;
}

export interface SelfSignedIdentity {
  /** PKCS#8 PEM private key (EC P-256) */
  keyPem: string;
  certPem: string;
  /** SHA-256 of the certificate's DER, as Node prints it: upper-case hex pairs joined by colons */
  fingerprint256: string;
}

// ---- DER ----------------------------------------------------------------------------------------------------

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const seq = (...c: Buffer[]): Buffer => tlv(0x30, ...c);
const set = (...c: Buffer[]): Buffer => tlv(0x31, ...c);
const octets = (b: Buffer): Buffer => tlv(0x04, b);
const explicit = (n: number, c: Buffer): Buffer => tlv(0xa0 | n, c);
const bitString = (b: Buffer, unusedBits = 0): Buffer => tlv(0x03, Buffer.from([unusedBits]), b);
const derTrue = Buffer.from([0x01, 0x01, 0xff]);

/** A non-negative INTEGER from big-endian bytes (a leading zero keeps the sign bit clear). */
function unsignedInteger(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0 && (bytes[i + 1]! & 0x80) === 0) i++;
  const b = bytes.subarray(i);
  return tlv(0x02, (b[0]! & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const group: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) group.unshift(0x80 | (v & 0x7f));
    out.push(...group);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime through 2049, GeneralizedTime after, as RFC 5280 section 4.1.2.5 requires. */
function time(d: Date): Buffer {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const rest = `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  const y = d.getUTCFullYear();
  if (y >= 1950 && y < 2050) return tlv(0x17, Buffer.from(`${p(y % 100)}${rest}`, 'ascii'));
  return tlv(0x18, Buffer.from(`${p(y, 4)}${rest}`, 'ascii'));
}

const OID_ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
const OID_COMMON_NAME = '2.5.4.3';
const OID_SUBJECT_KEY_ID = '2.5.29.14';
const OID_KEY_USAGE = '2.5.29.15';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_EXT_KEY_USAGE = '2.5.29.37';
const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), derTrue, octets(value)) : seq(oid(id), octets(value));
}

// ---- arguments ----------------------------------------------------------------------------------------------

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function checkDnsName(name: string): string {
  const n = name.toLowerCase();
  const labels = n.split('.');
  const ok =
    n.length > 0 &&
    n.length <= MAX_DNS_NAME_LENGTH &&
    labels.every((l, i) => (i === 0 && l === '*' && labels.length > 2) || DNS_LABEL.test(l));
  if (!ok) throw new PosternError('BAD_ARGUMENT', `"${name}" is not a DNS name a certificate can hold`);
  return n;
}

/** The 4 or 16 bytes of a textual IP address. */
export function ipAddressBytes(text: string): Buffer {
  const family = isIP(text);
  if (family === 4) return Buffer.from(text.split('.').map(Number));
  if (family !== 6) throw new PosternError('BAD_ARGUMENT', `"${text}" is not an IP address`);
  // An embedded IPv4 tail (::ffff:192.0.2.1) becomes its two hex groups, so one parser handles every form.
  const s = text.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, a: string, b: string, c: string, d: string) =>
    [((+a << 8) | +b).toString(16), ((+c << 8) | +d).toString(16)].join(':'),
  );
  const groups = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const [head, rest] = s.split('::') as [string, string | undefined];
  const hs = groups(head);
  const rs = rest === undefined ? [] : groups(rest);
  const all =
    rest === undefined ? hs : [...hs, ...new Array<number>(8 - hs.length - rs.length).fill(0), ...rs];
  if (all.length !== 8 || all.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) {
    throw new PosternError('BAD_ARGUMENT', `"${text}" is not an IP address`);
  }
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

// ---- the certificate ----------------------------------------------------------------------------------------

export function createSelfSignedIdentity(opts: SelfSignedCertOptions): SelfSignedIdentity {
  const cn = opts.commonName;
  if (typeof cn !== 'string' || cn.length === 0 || cn.length > MAX_COMMON_NAME_LENGTH) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `the common name must be 1 to ${MAX_COMMON_NAME_LENGTH} characters`,
    );
  }
  if (/[\u0000-\u001f\u007f]/.test(cn)) {
    throw new PosternError('BAD_ARGUMENT', 'the common name must not hold control characters');
  }
  const dnsNames = (opts.dnsNames ?? []).map(checkDnsName);
  const ips = (opts.ipAddresses ?? []).map(ipAddressBytes);
  if (dnsNames.length + ips.length === 0) {
    throw new PosternError('BAD_ARGUMENT', 'a certificate needs at least one DNS name or IP address');
  }
  if (dnsNames.length + ips.length > MAX_SUBJECT_ALT_NAMES) {
    throw new PosternError('BAD_ARGUMENT', `at most ${MAX_SUBJECT_ALT_NAMES} names fit in one certificate`);
  }
  const days = opts.validityDays ?? DEFAULT_VALIDITY_DAYS;
  if (!Number.isInteger(days) || days < 1 || days > MAX_VALIDITY_DAYS) {
    throw new PosternError('BAD_ARGUMENT', `validity must be 1 to ${MAX_VALIDITY_DAYS} whole days`);
  }
  const now = opts.now ?? new Date();
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) {
    throw new PosternError('BAD_ARGUMENT', 'the certificate time must be a valid date');
  }
  // Whole seconds: X.509 times have no fractions.
  const nowS = Math.floor(now.getTime() / 1000) * 1000;
  const notBefore = new Date(nowS - NOT_BEFORE_SKEW_MS);
  const notAfter = new Date(nowS + days * DAY_MS);

  // Encoded by the generation itself: exporting a freshly generated KeyObject can deadlock Node 20's GC.
  const pair = generateKeyPairSync('ec', {
    namedCurve: 'P-256',
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  });
  const spki = pair.publicKey;
  const privateKey = createPrivateKey({ key: pair.privateKey, format: 'der', type: 'pkcs8' });
  // The SPKI ends in the BIT STRING of the 65-byte uncompressed point: its SHA-1 is the usual key identifier.
  const keyId = createHash('sha1')
    .update(spki.subarray(spki.length - 65))
    .digest();

  const name = seq(set(seq(oid(OID_COMMON_NAME), tlv(0x0c, Buffer.from(cn, 'utf8')))));
  const serial = randomBytes(SERIAL_BYTES);
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive and never zero-trimmed to a shorter length
  const sigAlg = seq(oid(OID_ECDSA_WITH_SHA256));
  const altNames = seq(
    ...dnsNames.map((d) => tlv(0x82, Buffer.from(d, 'ascii'))),
    ...ips.map((b) => tlv(0x87, b)),
  );
  const extensions = seq(
    extension(OID_BASIC_CONSTRAINTS, true, seq()),
    // digitalSignature only (bit 0): the key signs TLS handshakes, never other certificates.
    extension(OID_KEY_USAGE, true, bitString(Buffer.from([0x80]), 7)),
    extension(OID_EXT_KEY_USAGE, false, seq(oid(OID_SERVER_AUTH))),
    extension(OID_SUBJECT_KEY_ID, false, octets(keyId)),
    extension(OID_SUBJECT_ALT_NAME, false, altNames),
  );
  const tbs = seq(
    explicit(0, tlv(0x02, Buffer.from([2]))), // v3
    unsignedInteger(serial),
    sigAlg,
    name,
    seq(time(notBefore), time(notAfter)),
    name,
    spki,
    explicit(3, extensions),
  );
  const signature = sign('sha256', tbs, privateKey); // DER ECDSA-Sig-Value, as X.509 wants
  const der = seq(tbs, sigAlg, bitString(signature));
  const certPem = `-----BEGIN CERTIFICATE-----\n${der
    .toString('base64')
    .replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { keyPem, certPem, fingerprint256: certificateFingerprint(certPem) };
}

/** SHA-256 fingerprint of a PEM certificate, in Node's format (AB:CD:...). */
export function certificateFingerprint(certPem: string): string {
  try {
    return new X509Certificate(certPem).fingerprint256;
  } catch (e) {
    throw new PosternError('BAD_KEY', 'not a PEM certificate', { cause: e });
  }
}
