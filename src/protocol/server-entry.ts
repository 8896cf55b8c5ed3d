// Psiphon-compatible server entries: how a server is described to clients (address, ports, keys,
// capabilities), how it travels (hex of "<ip> <webServerPort> <webServerSecret> <webServerCertificate> <json>",
// one per line in lists), how it is signed (Ed25519 over Go-marshalled JSON minus local fields) and tagged.
// Entries are kept as JSON records so fields this version does not know survive decode → store → re-encode,
// and a signature made over them still verifies.
import { isValidDateTimeMatch } from './calendar.ts';
import { createHash, createHmac } from 'node:crypto';
import { isIP } from 'node:net';
import { PosternError, isPosternError } from '../common/errors.ts';
import { decodeBase64Strict, ed25519Sign, ed25519Verify } from './keys.ts';
import { goJsonMarshal, goJsonUnmarshal, type JsonValue } from './go-json.ts';
import {
  DEFAULT_DISABLED_TUNNEL_PROTOCOLS,
  DISABLED_TUNNEL_PROTOCOLS,
  SUPPORTED_TUNNEL_PROTOCOLS,
  TUNNEL_PROTOCOL_CONJURE_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_FRONTED_MEEK,
  TUNNEL_PROTOCOL_FRONTED_MEEK_HTTP,
  TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_QUIC_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_SHADOWSOCKS_OSSH,
  TUNNEL_PROTOCOL_SSH,
  TUNNEL_PROTOCOL_TAPDANCE_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_TLS_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_UNFRONTED_MEEK,
  TUNNEL_PROTOCOL_UNFRONTED_MEEK_HTTPS,
  TUNNEL_PROTOCOL_UNFRONTED_MEEK_SESSION_TICKET,
  CAPABILITY_SSH_API_REQUESTS,
  capabilitiesInclude,
  capabilitiesSupportTunnelProtocol,
  tunnelProtocolIsResourceIntensive,
  tunnelProtocolMinusInproxy,
  tunnelProtocolSupportsUpstreamProxy,
  tunnelProtocolUsesInproxy,
  tunnelProtocolUsesQUIC,
  tunnelProtocolUsesRefractionNetworking,
} from './tunnel-protocols.ts';

/**
 * Longest hex line accepted. The reference's streaming list decoder reads lines with Go's default scanner
 * buffer (bufio.MaxScanTokenSize, 64 KiB), so a longer entry could not reach its clients anyway.
 */
export const MAX_ENCODED_SERVER_ENTRY_LENGTH = 64 * 1024;

/** The signature field starts with this many bytes of SHA-256(raw public key), naming the signing key. */
export const SIGNATURE_PUBLIC_KEY_ID_SIZE = 8;
const ED25519_SIGNATURE_SIZE = 64;
const ED25519_PUBLIC_KEY_SIZE = 32;
const ED25519_PRIVATE_KEY_SIZE = 64;
const MAX_PORT = 65535;

/** Dial ports of fronted meek: the CDN's, not the server's. */
export const FRONTED_MEEK_HTTPS_DIAL_PORT = 443;
export const FRONTED_MEEK_HTTP_DIAL_PORT = 80;

// Where a client got an entry (the `localSource` field). "*" matches any suffix.
export const SERVER_ENTRY_SOURCE_EMBEDDED = 'EMBEDDED';
export const SERVER_ENTRY_SOURCE_REMOTE = 'REMOTE';
export const SERVER_ENTRY_SOURCE_DISCOVERY = 'DISCOVERY';
export const SERVER_ENTRY_SOURCE_TARGET = 'TARGET';
export const SERVER_ENTRY_SOURCE_OBFUSCATED = 'OBFUSCATED';
export const SERVER_ENTRY_SOURCE_EXCHANGED = 'EXCHANGED';
export const SERVER_ENTRY_SOURCE_DSL = 'DSL-*';
export const SERVER_ENTRY_SOURCE_PUSH = 'PUSH-*';
export const SERVER_ENTRY_SOURCES: readonly string[] = [
  SERVER_ENTRY_SOURCE_EMBEDDED,
  SERVER_ENTRY_SOURCE_REMOTE,
  SERVER_ENTRY_SOURCE_DISCOVERY,
  SERVER_ENTRY_SOURCE_TARGET,
  SERVER_ENTRY_SOURCE_OBFUSCATED,
  SERVER_ENTRY_SOURCE_EXCHANGED,
  SERVER_ENTRY_SOURCE_DSL,
  SERVER_ENTRY_SOURCE_PUSH,
];

/** Fields a client adds for itself; never signed. */
export const LOCAL_SERVER_ENTRY_FIELDS: readonly string[] = [
  'localSource',
  'localTimestamp',
  'isLocalDerivedTag',
];

/**
 * A server entry as a JSON record. The well-known fields (those of the reference's ServerEntry, same JSON
 * names) are typed; any other field is kept as it came so it survives re-encoding and signature checks.
 */
export interface ServerEntryFields {
  tag?: string;
  ipAddress?: string;
  /** A decimal string, not a number (legacy web API) */
  webServerPort?: string;
  webServerSecret?: string;
  webServerCertificate?: string;
  sshPort?: number;
  sshUsername?: string;
  sshPassword?: string;
  /** base64 of the SSH wire-format host public key */
  sshHostKey?: string;
  sshObfuscatedPort?: number;
  sshObfuscatedQUICPort?: number;
  limitQUICVersions?: string[];
  /** Spelled "Tapdance" in the JSON, as in the reference */
  sshObfuscatedTapdancePort?: number;
  sshObfuscatedConjurePort?: number;
  sshObfuscatedKey?: string;
  sshShadowsocksPort?: number;
  sshShadowsocksKey?: string;
  capabilities?: string[];
  region?: string;
  providerID?: string;
  frontingProviderID?: string;
  tlsOSSHPort?: number;
  meekServerPort?: number;
  meekCookieEncryptionPublicKey?: string;
  meekObfuscatedKey?: string;
  meekFrontingHost?: string;
  meekFrontingHosts?: string[];
  meekFrontingDomain?: string;
  meekFrontingAddresses?: string[];
  meekFrontingAddressesRegex?: string;
  meekFrontingDisableSNI?: boolean;
  tacticsRequestPublicKey?: string;
  tacticsRequestObfuscatedKey?: string;
  configurationVersion?: number;
  signature?: string;
  disableHTTPTransforms?: boolean;
  disableObfuscatedQUICTransforms?: boolean;
  disableOSSHTransforms?: boolean;
  disableOSSHPrefix?: boolean;
  disableShadowsocksPrefix?: boolean;
  inproxySessionPublicKey?: string;
  inproxySessionRootObfuscationSecret?: string;
  inproxySSHPort?: number;
  inproxyOSSHPort?: number;
  inproxyQUICPort?: number;
  inproxyMeekPort?: number;
  inproxyTlsOSSHPort?: number;
  inproxyShadowsocksPort?: number;
  allowUpstreamProxy?: boolean;
  // Local fields
  localSource?: string;
  /** RFC 3339 */
  localTimestamp?: string;
  isLocalDerivedTag?: boolean;
  [field: string]: JsonValue | undefined;
}

type FieldKind = 'string' | 'int' | 'port' | 'bool' | 'strings';

// The type each well-known field must have for the reference's ServerEntry to accept the entry.
const KNOWN_FIELDS: ReadonlyMap<string, FieldKind> = new Map<string, FieldKind>([
  ['tag', 'string'],
  ['ipAddress', 'string'],
  ['webServerPort', 'string'],
  ['webServerSecret', 'string'],
  ['webServerCertificate', 'string'],
  ['sshPort', 'port'],
  ['sshUsername', 'string'],
  ['sshPassword', 'string'],
  ['sshHostKey', 'string'],
  ['sshObfuscatedPort', 'port'],
  ['sshObfuscatedQUICPort', 'port'],
  ['limitQUICVersions', 'strings'],
  ['sshObfuscatedTapdancePort', 'port'],
  ['sshObfuscatedConjurePort', 'port'],
  ['sshObfuscatedKey', 'string'],
  ['sshShadowsocksPort', 'port'],
  ['sshShadowsocksKey', 'string'],
  ['capabilities', 'strings'],
  ['region', 'string'],
  ['providerID', 'string'],
  ['frontingProviderID', 'string'],
  ['tlsOSSHPort', 'port'],
  ['meekServerPort', 'port'],
  ['meekCookieEncryptionPublicKey', 'string'],
  ['meekObfuscatedKey', 'string'],
  ['meekFrontingHost', 'string'],
  ['meekFrontingHosts', 'strings'],
  ['meekFrontingDomain', 'string'],
  ['meekFrontingAddresses', 'strings'],
  ['meekFrontingAddressesRegex', 'string'],
  ['meekFrontingDisableSNI', 'bool'],
  ['tacticsRequestPublicKey', 'string'],
  ['tacticsRequestObfuscatedKey', 'string'],
  ['configurationVersion', 'int'],
  ['signature', 'string'],
  ['disableHTTPTransforms', 'bool'],
  ['disableObfuscatedQUICTransforms', 'bool'],
  ['disableOSSHTransforms', 'bool'],
  ['disableOSSHPrefix', 'bool'],
  ['disableShadowsocksPrefix', 'bool'],
  ['inproxySessionPublicKey', 'string'],
  ['inproxySessionRootObfuscationSecret', 'string'],
  ['inproxySSHPort', 'port'],
  ['inproxyOSSHPort', 'port'],
  ['inproxyQUICPort', 'port'],
  ['inproxyMeekPort', 'port'],
  ['inproxyTlsOSSHPort', 'port'],
  ['inproxyShadowsocksPort', 'port'],
  ['allowUpstreamProxy', 'bool'],
  ['localSource', 'string'],
  ['localTimestamp', 'string'],
  ['isLocalDerivedTag', 'bool'],
]);

// Go matches JSON keys to struct fields case-insensitively (ASCII, plus ſ→s and K→k); a key that folds onto
// a well-known name without being it would be read as that field by the reference.
function foldKey(key: string): string {
  return key
    .replace(/\u017f/g, 's')
    .replace(/\u212a/g, 'k')
    .replace(/[A-Z]+/g, (m) => m.toLowerCase());
}
const KNOWN_FIELDS_BY_FOLDED: ReadonlyMap<string, string> = new Map(
  [...KNOWN_FIELDS.keys()].map((k) => [foldKey(k), k]),
);

function badEntry(message: string, cause?: unknown): PosternError {
  return new PosternError('BAD_SERVER_ENTRY', message, cause === undefined ? undefined : { cause });
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  return `a ${typeof v}`;
}

/** Go's net.ParseIP: dotted IPv4 without leading zeros, or IPv6 (embedded IPv4 allowed), no zone. */
export function isValidServerEntryIpAddress(s: string): boolean {
  return isIP(s) !== 0 && !s.includes('%');
}

// Go's parser is looser than RFC 3339 in two ways kept here for agreement: a one-digit hour is read, and zone
// offsets up to +24:60 pass.
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{1,2}):(\d{2}):(\d{2})(?:[.,]\d+)?(?:Z|([+-])(\d{2}):(\d{2}))$/;
const MAX_ZONE_OFFSET_HOURS = 24;
const MAX_ZONE_OFFSET_MINUTES = 60;

/** An RFC 3339 timestamp as Go's time.Parse(time.RFC3339, …) reads it. */
export function isValidServerEntryTimestamp(s: string): boolean {
  const m = RFC3339.exec(s);
  if (m === null) return false;
  if (!isValidDateTimeMatch(m)) return false;
  if (
    m[7] !== undefined &&
    (Number(m[8]) > MAX_ZONE_OFFSET_HOURS || Number(m[9]) > MAX_ZONE_OFFSET_MINUTES)
  ) {
    return false;
  }
  return true;
}

/** Whether `source` is one of SERVER_ENTRY_SOURCES ("DSL-*" and "PUSH-*" take any suffix). */
export function isValidServerEntrySource(source: string): boolean {
  return SERVER_ENTRY_SOURCES.some((pattern) =>
    pattern.endsWith('*') ? source.startsWith(pattern.slice(0, -1)) : source === pattern,
  );
}

function checkFieldType(name: string, kind: FieldKind, v: JsonValue | undefined): void {
  if (v === undefined) return;
  const wrong = (expected: string): never => {
    throw badEntry(`server entry field "${name}" must be ${expected}, not ${describeValue(v)}`);
  };
  switch (kind) {
    case 'string':
      if (typeof v !== 'string') wrong('a string');
      return;
    case 'bool':
      if (typeof v !== 'boolean') wrong('true or false');
      return;
    case 'int':
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) wrong('an integer');
      return;
    case 'port':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_PORT)
        wrong(`a port number (0-${MAX_PORT})`);
      return;
    case 'strings':
      if (!Array.isArray(v) || !v.every((e) => typeof e === 'string')) wrong('an array of strings');
      return;
  }
}

/**
 * The checks a client makes before storing an entry: a valid `ipAddress` (the entry's identity), the types the
 * reference's ServerEntry requires for its well-known fields, and well-formed local fields when present.
 * Stricter than the reference in three ways, all on input no reference server produces: well-known fields may
 * not be null, ports must be 0-65535, and no other key may equal a well-known name up to letter case.
 */
export function validateServerEntryFields(fields: ServerEntryFields): void {
  if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) {
    throw badEntry('a server entry must be a JSON object');
  }
  for (const key of Object.keys(fields)) {
    const kind = KNOWN_FIELDS.get(key);
    if (kind !== undefined) {
      checkFieldType(key, kind, fields[key]);
      continue;
    }
    const known = KNOWN_FIELDS_BY_FOLDED.get(foldKey(key));
    if (known !== undefined) {
      throw badEntry(`server entry field "${key}" differs from the field "${known}" only in letter case`);
    }
  }
  const ip = fields.ipAddress;
  if (ip === undefined || !isValidServerEntryIpAddress(ip)) {
    throw badEntry(`server entry has an invalid ipAddress: ${describeValue(ip ?? null)}`);
  }
  if (fields.localSource !== undefined && !isValidServerEntrySource(fields.localSource)) {
    throw badEntry(`server entry has an invalid localSource ${JSON.stringify(fields.localSource)}`);
  }
  if (fields.localTimestamp !== undefined && !isValidServerEntryTimestamp(fields.localTimestamp)) {
    throw badEntry(
      `server entry has an invalid localTimestamp ${JSON.stringify(fields.localTimestamp)} (want RFC 3339)`,
    );
  }
}

export interface DecodeServerEntryOptions {
  /** Recorded as `localSource` (replacing any value in the entry); one of SERVER_ENTRY_SOURCES */
  source?: string;
  /** Recorded as `localTimestamp` (replacing any value in the entry); RFC 3339 */
  timestamp?: string;
}

const HEX = /^[0-9a-fA-F]*$/;
const SPACE = 0x20;
const LEGACY_PREFIX_FIELDS = 4;

/** Hex → JSON record (null for JSON null), without validating its fields. Throws BAD_HEX or BAD_SERVER_ENTRY. */
function decodeUnvalidated(hexLine: string): ServerEntryFields | null {
  if (typeof hexLine !== 'string') throw new PosternError('BAD_HEX', 'encoded server entry must be a string');
  if (hexLine.length > MAX_ENCODED_SERVER_ENTRY_LENGTH) {
    throw badEntry(
      `encoded server entry is ${hexLine.length} characters, more than the limit of ${MAX_ENCODED_SERVER_ENTRY_LENGTH}`,
    );
  }
  if (hexLine.length % 2 !== 0 || !HEX.test(hexLine)) {
    throw new PosternError('BAD_HEX', 'encoded server entry is not a hex string');
  }
  const bytes = Buffer.from(hexLine, 'hex');
  // Four space-delimited legacy fields, then the JSON (which may itself contain spaces).
  let at = 0;
  for (let n = 0; n < LEGACY_PREFIX_FIELDS; n++) {
    const space = bytes.indexOf(SPACE, at);
    if (space < 0) {
      throw badEntry(
        `encoded server entry has ${n + 1} space-separated parts; it needs 5 (4 legacy fields + JSON)`,
      );
    }
    at = space + 1;
  }
  let value: JsonValue;
  try {
    value = goJsonUnmarshal(bytes.subarray(at));
  } catch (e) {
    if (isPosternError(e, 'BAD_JSON')) throw badEntry(`server entry JSON: ${e.message}`, e);
    throw e;
  }
  // JSON null decodes (to no fields) in the reference and then fails validation, so it is not a decode error.
  if (value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw badEntry(`server entry JSON must be an object, not ${describeValue(value)}`);
  }
  return value as ServerEntryFields;
}

function validated(fields: ServerEntryFields | null): ServerEntryFields {
  if (fields === null) throw badEntry('server entry JSON is null, not an object');
  validateServerEntryFields(fields);
  return fields;
}

function withLocalFields(
  fields: ServerEntryFields | null,
  opts: DecodeServerEntryOptions,
): ServerEntryFields | null {
  if (fields === null) return null;
  // Like the reference: given values replace whatever the entry carried.
  if (opts.source !== undefined && opts.source !== '') fields.localSource = opts.source;
  if (opts.timestamp !== undefined && opts.timestamp !== '') fields.localTimestamp = opts.timestamp;
  return fields;
}

/**
 * Decode one hex-encoded entry and validate it (see validateServerEntryFields). Throws BAD_HEX for a line
 * that is not hex, BAD_SERVER_ENTRY for anything else wrong; never returns a partial entry.
 */
export function decodeServerEntry(hexLine: string, opts: DecodeServerEntryOptions = {}): ServerEntryFields {
  return validated(withLocalFields(decodeUnvalidated(hexLine), opts));
}

export interface DecodeServerEntryListOptions extends DecodeServerEntryOptions {
  /**
   * Also skip (and count) lines that cannot be decoded at all. By default such a line fails the whole list,
   * as in the reference, whose list decoders skip only entries that decode but fail validation.
   */
  skipUndecodable?: boolean;
}

export interface DecodedServerEntryList {
  entries: ServerEntryFields[];
  /** Lines skipped as invalid */
  rejected: number;
}

/**
 * Decode a newline-separated list of hex entries (a remote server list, a handshake's discovered entries).
 * Empty lines are ignored and a trailing "\r" is dropped. Entries that decode but fail validation are skipped
 * and counted; a line that does not decode throws (with its line number) unless `skipUndecodable`.
 */
export function decodeServerEntryList(
  text: string,
  opts: DecodeServerEntryListOptions = {},
): DecodedServerEntryList {
  if (typeof text !== 'string') throw badEntry('server entry list must be a string');
  const entries: ServerEntryFields[] = [];
  let rejected = 0;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    let line = lines[n]!;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.length === 0) continue;
    let fields: ServerEntryFields | null;
    try {
      fields = withLocalFields(decodeUnvalidated(line), opts);
    } catch (e) {
      if (opts.skipUndecodable === true && isPosternError(e)) {
        rejected++;
        continue;
      }
      if (isPosternError(e))
        throw new PosternError(e.code, `server entry list line ${n + 1}: ${e.message}`, { cause: e });
      throw e;
    }
    try {
      entries.push(validated(fields));
    } catch (e) {
      if (!isPosternError(e, 'BAD_SERVER_ENTRY')) throw e;
      rejected++;
    }
  }
  return { entries, rejected };
}

export interface EncodeServerEntryOptions {
  /**
   * Write the entry's own ip, webServerPort and webServerSecret in the legacy prefix (each "0" when absent)
   * even without a webServerCertificate. By default the prefix is "0 0 0 0" when there is no certificate,
   * as the reference writes it. Decoders ignore the prefix either way.
   */
  fullPrefix?: boolean;
}

function prefixValue(v: JsonValue | undefined): string {
  return typeof v === 'string' ? v : '';
}

/** Hex of "<ip> <webServerPort> <webServerSecret> <webServerCertificate> <Go-marshalled JSON>". */
export function encodeServerEntry(fields: ServerEntryFields, opts: EncodeServerEntryOptions = {}): string {
  validateServerEntryFields(fields);
  const json = goJsonMarshal(fields);
  let prefix: string[] = [
    prefixValue(fields.ipAddress),
    prefixValue(fields.webServerPort),
    prefixValue(fields.webServerSecret),
    prefixValue(fields.webServerCertificate),
  ];
  if (opts.fullPrefix === true) prefix = prefix.map((p) => (p === '' ? '0' : p));
  else if (prefix[3] === '') prefix = ['0', '0', '0', '0'];
  // Decoders split on the first four spaces; one inside a prefix value would cut into the JSON.
  const spaced = prefix.findIndex((p) => p.includes(' '));
  if (spaced >= 0) {
    const name = ['ipAddress', 'webServerPort', 'webServerSecret', 'webServerCertificate'][spaced];
    throw badEntry(`server entry field "${name}" contains a space, which would make the entry undecodable`);
  }
  const hex = Buffer.from(`${prefix.join(' ')} ${json}`, 'utf8').toString('hex');
  if (hex.length > MAX_ENCODED_SERVER_ENTRY_LENGTH) {
    throw badEntry(
      `encoded server entry would be ${hex.length} characters, more than clients accept (${MAX_ENCODED_SERVER_ENTRY_LENGTH})`,
    );
  }
  return hex;
}

/** A copy without the fields that are not signed: local fields, and the tag when it is a local derived one. */
export function removeUnsignedFields(fields: ServerEntryFields): ServerEntryFields {
  const copy: ServerEntryFields = { ...fields };
  delete copy.localSource;
  delete copy.localTimestamp;
  if (copy.isLocalDerivedTag === true) delete copy.tag;
  delete copy.isLocalDerivedTag;
  return copy;
}

/** The exact text a server entry's signature covers. */
export function serverEntrySignedJson(fields: ServerEntryFields): string {
  const copy = removeUnsignedFields(fields);
  delete copy.signature;
  return goJsonMarshal(copy);
}

/** The 8-byte key id that starts every signature made with this public key. */
export function serverEntrySigningKeyId(publicKeyB64: string): Buffer {
  const raw = decodeBase64Strict(publicKeyB64, 'server entry signing public key');
  return createHash('sha256').update(raw).digest().subarray(0, SIGNATURE_PUBLIC_KEY_ID_SIZE);
}

/**
 * A copy of the entry with `signature` set (replacing any): base64(key id ‖ Ed25519 signature of
 * serverEntrySignedJson). Keys are base64 of the raw 32-byte public and 64-byte Go private key.
 */
export function signServerEntry(
  fields: ServerEntryFields,
  publicKeyB64: string,
  privateKeyB64: string,
): ServerEntryFields {
  validateServerEntryFields(fields);
  const publicKey = decodeBase64Strict(publicKeyB64, 'server entry signing public key');
  if (publicKey.length !== ED25519_PUBLIC_KEY_SIZE) {
    throw new PosternError(
      'BAD_KEY',
      `server entry signing public key must be 32 bytes, got ${publicKey.length}`,
    );
  }
  const privateKey = decodeBase64Strict(privateKeyB64, 'server entry signing private key');
  if (privateKey.length !== ED25519_PRIVATE_KEY_SIZE) {
    throw new PosternError(
      'BAD_KEY',
      `server entry signing private key must be 64 bytes, got ${privateKey.length}`,
    );
  }
  if (!privateKey.subarray(32).equals(publicKey)) {
    // Otherwise every entry would carry a key id no verifier expects.
    throw new PosternError(
      'BAD_KEY',
      'server entry signing private key does not belong to the given public key',
    );
  }
  const message = Buffer.from(serverEntrySignedJson(fields), 'utf8');
  const signature = ed25519Sign(privateKeyB64, message);
  const keyId = serverEntrySigningKeyId(publicKeyB64);
  return { ...fields, signature: Buffer.concat([keyId, signature]).toString('base64') };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Check the entry's `signature` against the network's server entry signing key. Throws BAD_SIGNATURE saying
 * what is wrong (no signature, made with another key, does not match the contents), BAD_KEY for a bad key.
 */
export function verifyServerEntrySignature(fields: ServerEntryFields, publicKeyB64: string): void {
  if (typeof publicKeyB64 !== 'string' || publicKeyB64 === '') {
    throw new PosternError('BAD_KEY', 'no server entry signing public key to verify with');
  }
  const field: unknown = fields.signature;
  if (field === undefined) throw new PosternError('BAD_SIGNATURE', 'server entry has no signature');
  if (typeof field !== 'string')
    throw new PosternError('BAD_SIGNATURE', 'server entry signature is not a string');
  if (field.length % 4 !== 0 || !BASE64.test(field)) {
    throw new PosternError('BAD_SIGNATURE', 'server entry signature is not standard base64');
  }
  const decoded = Buffer.from(field, 'base64');
  if (decoded.length !== SIGNATURE_PUBLIC_KEY_ID_SIZE + ED25519_SIGNATURE_SIZE) {
    throw new PosternError(
      'BAD_SIGNATURE',
      `server entry signature is ${decoded.length} bytes; expected ${SIGNATURE_PUBLIC_KEY_ID_SIZE + ED25519_SIGNATURE_SIZE} (key id + Ed25519 signature)`,
    );
  }
  const keyId = decoded.subarray(0, SIGNATURE_PUBLIC_KEY_ID_SIZE);
  const expectedKeyId = serverEntrySigningKeyId(publicKeyB64);
  if (!keyId.equals(expectedKeyId)) {
    throw new PosternError(
      'BAD_SIGNATURE',
      `server entry was signed with another key (key id ${keyId.toString('hex')}, expected ${expectedKeyId.toString('hex')})`,
    );
  }
  const message = Buffer.from(serverEntrySignedJson(fields), 'utf8');
  if (!ed25519Verify(publicKeyB64, message, decoded.subarray(SIGNATURE_PUBLIC_KEY_ID_SIZE))) {
    throw new PosternError('BAD_SIGNATURE', 'server entry signature does not match its contents');
  }
}

/**
 * A server's tag: base64(HMAC-SHA256(key = webServerSecret, ipAddress)). Hard to reverse to the IP address
 * without the server's secret, so a set of tags (pruning, tombstones) does not list the network's addresses.
 */
export function serverEntryTag(secret: string, ipAddress: string): string {
  return createHmac('sha256', Buffer.from(secret, 'utf8')).update(ipAddress, 'utf8').digest('base64');
}

/** The entry's explicit tag, or the one derived from its ipAddress and webServerSecret. */
export function getServerEntryTag(fields: ServerEntryFields): string {
  const tag = fields.tag;
  if (typeof tag === 'string' && tag !== '') return tag;
  return serverEntryTag(prefixValue(fields.webServerSecret), prefixValue(fields.ipAddress));
}

/**
 * A copy carrying a local derived tag (marked `isLocalDerivedTag`, so it is left out of the signature), unless
 * the entry already has an explicit tag set by the network, which is kept.
 */
export function withDerivedServerEntryTag(fields: ServerEntryFields, tag?: string): ServerEntryFields {
  const existing = fields.tag;
  if (typeof existing === 'string' && existing !== '') {
    // Replaced only when it is itself marked as a local derived tag.
    const flag: unknown = fields.isLocalDerivedTag;
    if (flag === undefined || flag === false) return { ...fields };
  }
  const derived = tag ?? serverEntryTag(prefixValue(fields.webServerSecret), prefixValue(fields.ipAddress));
  return { ...fields, tag: derived, isLocalDerivedTag: true };
}

/** The first 8 characters of a tag: enough to tell servers apart in logs without naming their address. */
export function serverEntryDiagnosticId(tag: string): string {
  return tag.length < 8 ? '<unknown>' : tag.slice(0, 8);
}

export function serverEntryCapabilities(fields: ServerEntryFields): string[] {
  const c = fields.capabilities;
  return Array.isArray(c) ? c.filter((x): x is string => typeof x === 'string') : [];
}

export function serverEntrySupportsProtocol(fields: ServerEntryFields, protocol: string): boolean {
  return capabilitiesSupportTunnelProtocol(serverEntryCapabilities(fields), protocol);
}

export function serverEntrySupportsSshApiRequests(fields: ServerEntryFields): boolean {
  return capabilitiesInclude(serverEntryCapabilities(fields), CAPABILITY_SSH_API_REQUESTS);
}

function port(v: JsonValue | undefined): number {
  return typeof v === 'number' && Number.isInteger(v) ? v : 0;
}

/**
 * The port a client dials for `protocol`, or undefined when the entry does not offer it. Like the reference,
 * an offered protocol whose port field is missing gives 0. TLS-OSSH falls back to the meek port (servers
 * running unfronted meek HTTPS accept TLS-OSSH there); fronted meek dials the CDN on 443 (80 for HTTP).
 */
export function serverEntryDialPort(fields: ServerEntryFields, protocol: string): number | undefined {
  if (!serverEntrySupportsProtocol(fields, protocol)) return undefined;
  const inproxy = tunnelProtocolUsesInproxy(protocol);
  switch (tunnelProtocolMinusInproxy(protocol)) {
    case TUNNEL_PROTOCOL_TLS_OBFUSCATED_SSH: {
      const tls = port(inproxy ? fields.inproxyTlsOSSHPort : fields.tlsOSSHPort);
      return tls !== 0 ? tls : port(inproxy ? fields.inproxyMeekPort : fields.meekServerPort);
    }
    case TUNNEL_PROTOCOL_SSH:
      return port(inproxy ? fields.inproxySSHPort : fields.sshPort);
    case TUNNEL_PROTOCOL_OBFUSCATED_SSH:
      return port(inproxy ? fields.inproxyOSSHPort : fields.sshObfuscatedPort);
    case TUNNEL_PROTOCOL_TAPDANCE_OBFUSCATED_SSH:
      return inproxy ? undefined : port(fields.sshObfuscatedTapdancePort);
    case TUNNEL_PROTOCOL_CONJURE_OBFUSCATED_SSH:
      return inproxy ? undefined : port(fields.sshObfuscatedConjurePort);
    case TUNNEL_PROTOCOL_QUIC_OBFUSCATED_SSH:
      return port(inproxy ? fields.inproxyQUICPort : fields.sshObfuscatedQUICPort);
    case TUNNEL_PROTOCOL_FRONTED_MEEK:
    case TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH:
      return FRONTED_MEEK_HTTPS_DIAL_PORT;
    case TUNNEL_PROTOCOL_FRONTED_MEEK_HTTP:
      return FRONTED_MEEK_HTTP_DIAL_PORT;
    case TUNNEL_PROTOCOL_UNFRONTED_MEEK_HTTPS:
    case TUNNEL_PROTOCOL_UNFRONTED_MEEK_SESSION_TICKET:
    case TUNNEL_PROTOCOL_UNFRONTED_MEEK:
      return port(inproxy ? fields.inproxyMeekPort : fields.meekServerPort);
    case TUNNEL_PROTOCOL_SHADOWSOCKS_OSSH:
      return port(inproxy ? fields.inproxyShadowsocksPort : fields.sshShadowsocksPort);
    default:
      return undefined;
  }
}

export interface SupportedTunnelProtocolsOptions {
  /** Only these protocols (default-disabled ones become allowed when listed) */
  limitProtocols?: readonly string[];
  /** Leave out meek, QUIC, refraction networking and in-proxy protocols */
  excludeIntensive?: boolean;
  /** Only protocols that work through an upstream proxy */
  useUpstreamProxy?: boolean;
  /** Whether this client can dial QUIC (default true: a pure capability mapping) */
  quicEnabled?: boolean;
  refractionNetworkingEnabled?: boolean;
  inproxyEnabled?: boolean;
  /** QUIC versions this client speaks; when given, an entry's limitQUICVersions must include one */
  quicVersions?: readonly string[];
}

/**
 * The protocols a client may use to reach this server, in preference order: what its capabilities offer,
 * minus disabled protocols, default-disabled ones unless `limitProtocols` names them, and whatever the
 * options rule out. Follows the reference's GetSupportedProtocols (without per-port limits).
 */
export function supportedTunnelProtocols(
  fields: ServerEntryFields,
  opts: SupportedTunnelProtocolsOptions = {},
): string[] {
  const out: string[] = [];
  const limit = opts.limitProtocols ?? [];
  for (const protocol of SUPPORTED_TUNNEL_PROTOCOLS) {
    if (opts.useUpstreamProxy === true && !tunnelProtocolSupportsUpstreamProxy(protocol)) continue;
    if (DISABLED_TUNNEL_PROTOCOLS.includes(protocol)) continue;
    if (limit.length > 0) {
      if (!limit.includes(protocol)) continue;
    } else if (DEFAULT_DISABLED_TUNNEL_PROTOCOLS.includes(protocol)) continue;
    if (opts.excludeIntensive === true && tunnelProtocolIsResourceIntensive(protocol)) continue;
    if (tunnelProtocolUsesQUIC(protocol) && opts.quicEnabled === false) continue;
    if (tunnelProtocolUsesRefractionNetworking(protocol) && opts.refractionNetworkingEnabled === false)
      continue;
    if (tunnelProtocolUsesInproxy(protocol) && opts.inproxyEnabled === false) continue;
    if (!serverEntrySupportsProtocol(fields, protocol)) continue;
    const limitQuic = fields.limitQUICVersions;
    if (tunnelProtocolUsesQUIC(protocol) && opts.quicVersions !== undefined && Array.isArray(limitQuic)) {
      if (limitQuic.length > 0 && !limitQuic.some((v) => opts.quicVersions!.includes(v as string))) continue;
    }
    if (serverEntryDialPort(fields, protocol) === undefined) continue;
    out.push(protocol);
  }
  return out;
}
