// The tunnel API that client and server speak over SSH global requests once the tunnel is up:
// `psiphon-handshake`, `psiphon-connected`, `psiphon-status` (and the keep-alive speed test), byte-compatible
// with psiphon-tunnel-core. This module holds what both sides share: request names, the two request encodings
// (JSON, or "packed" CBOR with integer keys behind a 0x00 0x01 preamble, which reference clients send by
// default), the response formats (the handshake response is CBOR when the client asks for response version 1,
// JSON otherwise; the connected and status responses are always JSON), the keep-alive speed test, and how a
// sponsor's regexes name domains. The parameters themselves, their checks and what is logged of them are in
// api-params.ts (re-exported here).
//
// Request payloads are hostile input: decodeApiParams caps their size, decodes strictly and throws
// BAD_API_REQUEST / TOO_LARGE, never returns a partial result.
import { randomBytes } from 'node:crypto';
import { PosternError, describeError } from '../common/errors.ts';
import {
  INT64_MIN,
  PADDING_MAX_BYTES,
  decodeGoBase64,
  getStringParam,
  goAtoi,
  goFormatFloatF,
  goParseFloat,
  isGoHex,
  isGoRawStdBase64,
  isGoStdBase64,
  type ApiParams,
} from './api-params.ts';
import { decodeAuthorization, formatGoRfc3339Nano, parseGoRfc3339 } from './authorization.ts';
import { CborFloat, decodeCbor, encodeCbor, type CborKey, type CborValue } from './cbor.ts';
import { goJsonMarshal, goJsonQuote, goJsonUnmarshal, type JsonObject, type JsonValue } from './go-json.ts';

export * from './api-params.ts';

// ---------------------------------------------------------------------------------------------------------
// Names and limits

export const PSIPHON_API_HANDSHAKE_REQUEST_NAME = 'psiphon-handshake';
export const PSIPHON_API_CONNECTED_REQUEST_NAME = 'psiphon-connected';
export const PSIPHON_API_STATUS_REQUEST_NAME = 'psiphon-status';
/** Still sent by old Android clients; the reference answers with an empty payload. */
export const PSIPHON_API_CLIENT_VERIFICATION_REQUEST_NAME = 'psiphon-client-verification';
/** Server-to-client requests (only to clients that announced the "server-requests" capability). */
export const PSIPHON_API_OSL_REQUEST_NAME = 'psiphon-osl';
export const PSIPHON_API_ALERT_REQUEST_NAME = 'psiphon-alert';
export const PSIPHON_API_INPROXY_RELAY_REQUEST_NAME = 'psiphon-inproxy-relay';
export const PSIPHON_API_DSL_REQUEST_NAME = 'psiphon-dsl';
/** The SSH keep-alive the reference client sends periodically and times as a speed test. */
export const SSH_KEEP_ALIVE_REQUEST_NAME = 'keepalive@openssh.com';

export const PSIPHON_API_CLIENT_SESSION_ID_LENGTH = 16;
export const PSIPHON_API_RESPONSE_VERSION_FIELD_NAME = 'psiphon_api_response_version';
/** Response version 1: the handshake response is CBOR (and tactics compressed). */
export const PSIPHON_API_RESPONSE_V1 = '1';
export const PSIPHON_API_HANDSHAKE_AUTHORIZATIONS = 'authorizations';

/** Largest request payload accepted (the reference's MAX_API_PARAMS_SIZE). */
export const MAX_API_PARAMS_SIZE = 256 * 1024;
/** Largest response payload decoded by a client. */
export const MAX_API_RESPONSE_SIZE = 4 * 1024 * 1024;

/** First two bytes of a packed (CBOR) parameters payload: a zero byte, which no JSON text starts with, and a version. */
export const PACKED_API_PARAMETERS_DISTINGUISHER = 0x00;
export const PACKED_API_PARAMETERS_VERSION = 0x01;

export type ApiEncoding = 'json' | 'cbor';

function badRequest(message: string, cause?: unknown): never {
  throw new PosternError('BAD_API_REQUEST', message, cause === undefined ? undefined : { cause });
}

function badResponse(message: string, cause?: unknown): never {
  throw new PosternError('BAD_API_RESPONSE', message, cause === undefined ? undefined : { cause });
}

// ---------------------------------------------------------------------------------------------------------
// Packed (CBOR) parameters

type Converter =
  | 'int'
  | 'float'
  | 'lowerHex'
  | 'upperHex'
  | 'base64'
  | 'unpaddedBase64'
  | 'authorizations'
  | 'rawJson'
  | 'jsonMaps'
  | null;

// Keys are the reference's; they can only ever be appended to.
const PACKED_API_PARAMETER_SPECS: readonly (readonly [number, string, Converter])[] = [
  [1, 'authorizations', 'authorizations'],
  [2, 'stored_tactics_tag', 'lowerHex'],
  [3, 'speed_test_samples', 'jsonMaps'],
  [4, 'applied_tactics_tag', 'lowerHex'],
  [5, 'client_session_id', 'lowerHex'],
  [6, 'propagation_channel_id', 'upperHex'],
  [7, 'sponsor_id', 'upperHex'],
  [8, 'client_version', 'int'],
  [9, 'client_platform', null],
  [10, 'client_features', null],
  [11, 'client_build_rev', null],
  [12, 'device_region', null],
  [13, 'device_location', null],
  [14, 'session_id', 'lowerHex'],
  [15, 'relay_protocol', null],
  [16, 'ssh_client_version', null],
  [17, 'upstream_proxy_type', null],
  [18, 'upstream_proxy_custom_header_names', null],
  [19, 'fronting_provider_id', 'upperHex'],
  [20, 'meek_dial_address', null],
  [21, 'meek_resolved_ip_address', null],
  [22, 'meek_sni_server_name', null],
  [23, 'meek_host_header', null],
  [24, 'meek_transformed_host_name', 'int'],
  [25, 'user_agent', null],
  [26, 'tls_profile', null],
  [27, 'tls_version', null],
  [28, 'server_entry_region', null],
  [29, 'server_entry_source', null],
  [30, 'server_entry_timestamp', null],
  [31, 'dial_port_number', 'int'],
  [32, 'quic_version', null],
  [33, 'quic_dial_sni_address', null],
  [34, 'quic_disable_client_path_mtu_discovery', 'int'],
  [35, 'upstream_bytes_fragmented', 'int'],
  [36, 'upstream_min_bytes_written', 'int'],
  [37, 'upstream_max_bytes_written', 'int'],
  [38, 'upstream_min_delayed', 'int'],
  [39, 'upstream_max_delayed', 'int'],
  [40, 'padding', null],
  [41, 'pad_response', 'int'],
  [42, 'is_replay', 'int'],
  [43, 'egress_region', null],
  [44, 'dial_duration', 'int'],
  [45, 'candidate_number', 'int'],
  [46, 'established_tunnels_count', 'int'],
  [47, 'upstream_ossh_padding', 'int'],
  [48, 'meek_cookie_size', 'int'],
  [49, 'meek_limit_request', 'int'],
  [50, 'meek_redial_probability', 'float'],
  [51, 'meek_tls_padding', 'int'],
  [52, 'network_latency_multiplier', 'float'],
  [53, 'client_bpf', null],
  [54, 'network_type', null],
  [55, 'conjure_cached', null],
  [56, 'conjure_delay', null],
  [57, 'conjure_transport', null],
  [58, 'conjure_prefix', null],
  [59, 'conjure_stun', null],
  [60, 'conjure_empty_packet', 'int'],
  [61, 'conjure_network', null],
  [62, 'conjure_port_number', 'int'],
  [63, 'split_tunnel', null],
  [64, 'split_tunnel_regions', null],
  [65, 'dns_preresolved', null],
  [66, 'dns_preferred', null],
  [67, 'dns_transform', null],
  [68, 'dns_attempt', 'int'],
  [69, 'http_transform', null],
  [70, 'seed_transform', null],
  [71, 'ossh_prefix', null],
  [72, 'tls_fragmented', 'int'],
  [73, 'tls_padding', 'int'],
  [74, 'tls_ossh_sni_server_name', null],
  [75, 'tls_ossh_transformed_host_name', 'int'],
  [76, 'inproxy_connection_id', 'unpaddedBase64'],
  [77, 'inproxy_relay_packet', 'unpaddedBase64'],
  [78, 'inproxy_broker_is_replay', 'int'],
  [79, 'inproxy_broker_transport', null],
  [80, 'inproxy_broker_fronting_provider_id', 'upperHex'],
  [81, 'inproxy_broker_dial_address', null],
  [82, 'inproxy_broker_resolved_ip_address', null],
  [83, 'inproxy_broker_sni_server_name', null],
  [84, 'inproxy_broker_host_header', null],
  [85, 'inproxy_broker_transformed_host_name', 'int'],
  [86, 'inproxy_broker_user_agent', null],
  [87, 'inproxy_broker_tls_profile', null],
  [88, 'inproxy_broker_tls_version', null],
  [89, 'inproxy_broker_tls_fragmented', 'int'],
  [90, 'inproxy_broker_tls_padding', 'int'],
  [91, 'inproxy_broker_client_bpf', null],
  [92, 'inproxy_broker_upstream_bytes_fragmented', 'int'],
  [93, 'inproxy_broker_upstream_min_bytes_written', 'int'],
  [94, 'inproxy_broker_upstream_max_bytes_written', 'int'],
  [95, 'inproxy_broker_upstream_min_delayed', 'int'],
  [96, 'inproxy_broker_upstream_max_delayed', 'int'],
  [97, 'inproxy_broker_http_transform', null],
  [98, 'inproxy_broker_dns_preresolved', null],
  [99, 'inproxy_broker_dns_preferred', null],
  [100, 'inproxy_broker_dns_transform', null],
  [101, 'inproxy_broker_dns_attempt', 'int'],
  [102, 'inproxy_webrtc_dns_preresolved', null],
  [103, 'inproxy_webrtc_dns_preferred', null],
  [104, 'inproxy_webrtc_dns_transform', null],
  [105, 'inproxy_webrtc_dns_attempt', 'int'],
  [106, 'inproxy_webrtc_stun_server', null],
  [107, 'inproxy_webrtc_stun_server_resolved_ip_address', null],
  [108, 'inproxy_webrtc_stun_server_RFC5780', null],
  [109, 'inproxy_webrtc_stun_server_RFC5780_resolved_ip_address', null],
  [110, 'inproxy_webrtc_randomize_dtls', 'int'],
  [111, 'inproxy_webrtc_padded_messages_sent', 'int'],
  [112, 'inproxy_webrtc_padded_messages_received', 'int'],
  [113, 'inproxy_webrtc_decoy_messages_sent', 'int'],
  [114, 'inproxy_webrtc_decoy_messages_received', 'int'],
  [115, 'inproxy_webrtc_local_ice_candidate_type', null],
  [116, 'inproxy_webrtc_local_ice_candidate_is_initiator', 'int'],
  [117, 'inproxy_webrtc_local_ice_candidate_is_IPv6', 'int'],
  [118, 'inproxy_webrtc_local_ice_candidate_port', 'int'],
  [119, 'inproxy_webrtc_remote_ice_candidate_type', null],
  [120, 'inproxy_webrtc_remote_ice_candidate_is_IPv6', 'int'],
  [121, 'inproxy_webrtc_remote_ice_candidate_port', 'int'],
  [122, 'missing_server_entry_signature', 'base64'],
  [123, 'missing_server_entry_provider_id', 'base64'],
  [124, 'last_connected', null],
  [125, 'establishment_duration', 'int'],
  [126, 'client_download_timestamp', null],
  [127, 'tunneled', 'int'],
  [128, 'url', null],
  [129, 'etag', null],
  [130, 'bytes', 'int'],
  [131, 'duration', 'int'],
  [132, 'server_entry_tag', 'base64'],
  [133, 'client_failed_timestamp', null],
  [134, 'record_probability', 'float'],
  [135, 'liveness_test_upstream_bytes', 'int'],
  [136, 'liveness_test_sent_upstream_bytes', 'int'],
  [137, 'liveness_test_downstream_bytes', 'int'],
  [138, 'liveness_test_received_downstream_bytes', 'int'],
  [139, 'bytes_up', 'int'],
  [140, 'bytes_down', 'int'],
  [141, 'tunnel_error', null],
  [142, 'statusData', 'rawJson'],
  [143, 'inproxy_webrtc_local_ice_candidate_is_private_IP', 'int'],
  [144, 'inproxy_webrtc_remote_ice_candidate_is_private_IP', 'int'],
  [145, 'tls_sent_ticket', 'int'],
  [146, 'tls_did_resume', 'int'],
  [147, 'quic_sent_ticket', 'int'],
  [148, 'quic_did_resume', 'int'],
  [149, 'quic_dial_early', 'int'],
  [150, 'quic_obfuscated_psk', 'int'],
  [151, 'dns_qname_random_casing', 'int'],
  [152, 'dns_qname_must_match', 'int'],
  [153, 'dns_qname_mismatches', 'int'],
  [154, 'inproxy_broker_dns_qname_random_casing', 'int'],
  [155, 'inproxy_broker_dns_qname_must_match', 'int'],
  [156, 'inproxy_broker_dns_qname_mismatches', 'int'],
  [157, 'inproxy_webrtc_dns_qname_random_casing', 'int'],
  [158, 'inproxy_webrtc_dns_qname_must_match', 'int'],
  [159, 'inproxy_webrtc_dns_qname_mismatches', 'int'],
  [160, 'inproxy_dial_nat_discovery_duration', 'int'],
  [161, 'inproxy_dial_failed_attempts_duration', 'int'],
  [162, 'inproxy_dial_webrtc_ice_gathering_duration', 'int'],
  [163, 'inproxy_dial_broker_offer_duration', 'int'],
  [164, 'inproxy_dial_webrtc_connection_duration', 'int'],
  [165, 'inproxy_broker_is_reuse', 'int'],
  [166, 'inproxy_webrtc_use_media_streams', 'int'],
  [167, 'shadowsocks_prefix', null],
  [168, PSIPHON_API_RESPONSE_VERSION_FIELD_NAME, 'int'],
  [169, 'server_entry_count', 'int'],
  [170, 'replay_ignored_change', 'int'],
  [171, 'dsl_prioritized', 'int'],
  [172, 'unique_candidate_estimate', 'int'],
  [173, 'candidates_moved_to_front', 'int'],
  [174, 'first_fronted_meek_candidate', 'int'],
  [175, 'dsl_prioritized_reason', null],
  [176, 'enable_proxy_protocol_headers', 'int'],
  [177, 'dsl_prioritized_tunnel_protocol', null],
  [178, 'inproxy_webrtc_dtls_fingerprint', null],
  [179, 'light_proxy_id', 'unpaddedBase64'],
  [180, 'light_proxy_entry_tracker', 'int'],
  [181, 'light_proxy_dial_IPv4', 'int'],
  [182, 'light_proxy_dial_IPv6', 'int'],
  [183, 'light_proxy_dial_failed', 'int'],
  [184, 'tunnel_personal_light_proxy_id', 'unpaddedBase64'],
  [185, 'light_proxy_dial_canceled', 'int'],
];

const PACKED_BY_NAME = new Map(PACKED_API_PARAMETER_SPECS.map((s) => [s[1], s] as const));
const PACKED_BY_KEY = new Map(PACKED_API_PARAMETER_SPECS.map((s) => [s[0], s] as const));

/** The packed integer key of a parameter name, or undefined when the name cannot be sent packed. */
export function packedApiParameterKey(name: string): number | undefined {
  return PACKED_BY_NAME.get(name)?.[0];
}

// Packed authorizations: a CBOR array of {1: ID, 2: AccessType, 3: Expires (RFC 3339 text), 4: SigningKeyID,
// 5: Signature}, each a re-encoding of the base64 JSON authorization the issuer signed.

/** Go's json.Marshal of a time.Time that was parsed from RFC 3339 `text` (zero offsets become "Z"). */
function goRemarshalTime(text: string): string | undefined {
  const nanos = parseGoRfc3339(text);
  if (nanos === undefined) return undefined;
  const m = /([+-])(\d{2}):(\d{2})$/.exec(text);
  if (m === null || (m[2] === '00' && m[3] === '00')) return formatGoRfc3339Nano(nanos);
  // A non-zero offset is kept, with Go's RFC3339Nano fraction (trailing zeros dropped, at most nine digits).
  const base = text.slice(0, 19);
  const frac = (/^\.(\d+)/.exec(text.slice(19))?.[1] ?? '').slice(0, 9).replace(/0+$/, '');
  return `${base}${frac === '' ? '' : '.' + frac}${m[0]}`;
}

/** Packs authorizations as the reference client does; throws BAD_AUTHORIZATION for a malformed one. */
export function packAuthorizations(authorizations: readonly string[]): Buffer {
  const packed = authorizations.map((encoded) => {
    const auth = decodeAuthorization(encoded);
    const expires = goRemarshalTime(auth.expiresText);
    if (expires === undefined) {
      throw new PosternError('BAD_AUTHORIZATION', 'authorization expiry is not an RFC 3339 timestamp');
    }
    const m = new Map<number, CborValue>();
    if (auth.id.length > 0) m.set(1, auth.id);
    if (auth.accessType !== '') m.set(2, auth.accessType);
    m.set(3, expires);
    if (auth.signingKeyId.length > 0) m.set(4, auth.signingKeyId);
    if (auth.signature.length > 0) m.set(5, auth.signature);
    return m;
  });
  return encodeCbor(packed);
}

function optionalBytes(m: Map<CborKey, CborValue>, key: number, what: string): Uint8Array | null {
  const v = m.get(key);
  if (v === undefined || v === null) return null;
  if (!(v instanceof Uint8Array)) badRequest(`packed authorization ${what} must be bytes`);
  return v;
}

/** Unpacks packed authorizations back to the base64 JSON form that was signed (the reference's UnpackAuthorizations). */
export function unpackAuthorizations(packed: Uint8Array): string[] {
  const list = decodeCbor(packed);
  if (list === null) return [];
  if (!Array.isArray(list)) badRequest('packed authorizations must be an array');
  return list.map((item) => {
    const m = item === null ? new Map<CborKey, CborValue>() : item;
    if (!(m instanceof Map)) badRequest('packed authorization must be a map');
    const id = optionalBytes(m, 1, 'ID');
    const accessType = m.get(2) ?? '';
    if (typeof accessType !== 'string') badRequest('packed authorization AccessType must be text');
    const expiresValue = m.get(3);
    let expires = '0001-01-01T00:00:00Z';
    if (expiresValue !== undefined && expiresValue !== null) {
      const t = typeof expiresValue === 'string' ? goRemarshalTime(expiresValue) : undefined;
      if (t === undefined) badRequest('packed authorization Expires must be an RFC 3339 timestamp');
      expires = t;
    }
    const signingKeyId = optionalBytes(m, 4, 'SigningKeyID');
    const signature = optionalBytes(m, 5, 'Signature');
    const b64 = (b: Uint8Array | null): string =>
      b === null ? 'null' : `"${Buffer.from(b).toString('base64')}"`;
    const authJson = `{"ID":${b64(id)},"AccessType":${goJsonQuote(accessType)},"Expires":"${expires}"}`;
    const signed = `{"Authorization":${authJson},"SigningKeyID":${b64(signingKeyId)},"Signature":${b64(signature)}}`;
    return Buffer.from(signed, 'utf8').toString('base64');
  });
}

function packValue(name: string, converter: Converter, value: JsonValue): unknown {
  const fail = (why: string): never => {
    throw new PosternError('BAD_ARGUMENT', `cannot pack API parameter ${name}: ${why}`);
  };
  switch (converter) {
    case null:
    case 'jsonMaps':
      return value;
    case 'int': {
      if (typeof value === 'number') return Math.trunc(value);
      if (typeof value !== 'string') return fail('expected a string');
      const n = goAtoi(value);
      if (n === undefined) return fail('not an integer');
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    case 'float': {
      if (typeof value === 'number') return new CborFloat(value);
      if (typeof value !== 'string') return fail('expected a string');
      const f = goParseFloat(value);
      if (f === undefined) return fail('not a number');
      return new CborFloat(f);
    }
    case 'lowerHex':
    case 'upperHex':
      if (typeof value !== 'string' || !isGoHex(value)) return fail('not hex');
      return Buffer.from(value, 'hex');
    case 'base64':
      if (typeof value !== 'string' || !isGoStdBase64(value)) return fail('not base64');
      return decodeGoBase64(value);
    case 'unpaddedBase64':
      if (typeof value !== 'string' || !isGoRawStdBase64(value)) return fail('not unpadded base64');
      return decodeGoBase64(value);
    case 'authorizations':
      if (value === null) return packAuthorizations([]);
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string'))
        return fail('expected strings');
      return packAuthorizations(value as string[]);
    case 'rawJson':
      // The reference sends the status payload as the bytes of its JSON text.
      return Buffer.from(goJsonMarshal(value), 'utf8');
  }
}

/**
 * Encodes request parameters as the reference client does: JSON (Go's json.Marshal of the map: sorted keys,
 * HTML-safe escaping) or packed CBOR behind the two-byte preamble. Parameters whose value is undefined are left
 * out. Packing fails (BAD_ARGUMENT) for a name the packed format has no key for, as the reference's does.
 */
export function encodeApiParams(
  params: { [name: string]: JsonValue | undefined },
  encoding: ApiEncoding,
): Buffer {
  const present = Object.entries(params).filter((e): e is [string, JsonValue] => e[1] !== undefined);
  if (encoding === 'json') return Buffer.from(goJsonMarshal(Object.fromEntries(present)), 'utf8');
  const packed = new Map<number, unknown>();
  for (const [name, value] of present) {
    const s = PACKED_BY_NAME.get(name);
    if (s === undefined) throw new PosternError('BAD_ARGUMENT', `unknown API parameter name: ${name}`);
    packed.set(s[0], packValue(name, s[2], value));
  }
  return Buffer.concat([
    Buffer.of(PACKED_API_PARAMETERS_DISTINGUISHER, PACKED_API_PARAMETERS_VERSION),
    encodeCbor(packed),
  ]);
}

/** Which encoding a request payload uses, detected as the reference server does (the 0x00 0x01 preamble). */
export function detectApiEncoding(payload: Uint8Array): ApiEncoding {
  return payload.length >= 2 &&
    payload[0] === PACKED_API_PARAMETERS_DISTINGUISHER &&
    payload[1] === PACKED_API_PARAMETERS_VERSION
    ? 'cbor'
    : 'json';
}

/** A decoded CBOR value in the JSON data model, where a parameter without a converter must fit it. */
function cborToJson(v: CborValue, name: string): JsonValue {
  if (v === null || typeof v === 'boolean' || typeof v === 'string' || typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof CborFloat) return v.value;
  if (Array.isArray(v)) return v.map((e) => cborToJson(e, name));
  if (v instanceof Map) {
    const obj: JsonObject = {};
    for (const [k, e] of v) {
      if (typeof k !== 'string') badRequest(`invalid param: ${name}: map keys must be text`);
      Object.defineProperty(obj, k, {
        value: cborToJson(e, name),
        writable: true,
        enumerable: true,
        configurable: true,
      });
    }
    return obj;
  }
  return badRequest(`invalid param: ${name}: unexpected byte string`);
}

function unpackValue(name: string, converter: Converter, v: CborValue): JsonValue {
  const fail = (why: string): never => badRequest(`unpack ${name} failed: ${why}`);
  const bytes = (): Uint8Array => (v instanceof Uint8Array ? v : fail('expected bytes'));
  switch (converter) {
    case null:
      return cborToJson(v, name);
    case 'int':
      if (typeof v === 'number' || typeof v === 'bigint') {
        if (typeof v === 'bigint' && v < INT64_MIN) return fail('integer out of range');
        return v.toString();
      }
      return fail('expected an integer');
    case 'float':
      return v instanceof CborFloat ? goFormatFloatF(v.value) : fail('expected a float');
    case 'lowerHex':
      return Buffer.from(bytes()).toString('hex');
    case 'upperHex':
      return Buffer.from(bytes()).toString('hex').toUpperCase();
    case 'base64':
      return Buffer.from(bytes()).toString('base64');
    case 'unpaddedBase64':
      return Buffer.from(bytes()).toString('base64').replace(/=+$/, '');
    case 'authorizations':
      return unpackAuthorizations(bytes());
    case 'rawJson': {
      const parsed = goJsonUnmarshal(bytes());
      if (parsed === null) return {};
      if (typeof parsed !== 'object' || Array.isArray(parsed)) return fail('expected a JSON object');
      return parsed;
    }
    case 'jsonMaps': {
      if (v === null) return null;
      if (!Array.isArray(v)) return fail('expected an array');
      return v.map((e) => {
        if (!(e instanceof Map)) return fail('expected maps');
        return cborToJson(e, name);
      });
    }
  }
}

/**
 * Decodes a request payload, packed CBOR or JSON, into parameters as the reference server does: unknown packed
 * keys are skipped, converters undo the packing (integers back to decimal strings, byte strings back to
 * hex/base64, packed authorizations back to their signed form, the status payload back to an object).
 * Throws TOO_LARGE past MAX_API_PARAMS_SIZE, BAD_API_REQUEST for anything malformed.
 */
export function decodeApiParams(payload: Uint8Array): ApiParams {
  if (payload.length > MAX_API_PARAMS_SIZE) {
    throw new PosternError(
      'TOO_LARGE',
      `API request is ${payload.length} bytes, over ${MAX_API_PARAMS_SIZE}`,
    );
  }
  if (detectApiEncoding(payload) === 'cbor') {
    let decoded: CborValue;
    try {
      decoded = decodeCbor(payload.subarray(2));
    } catch (e) {
      return badRequest(`invalid packed payload: ${describeError(e)}`, e);
    }
    const params: ApiParams = {};
    if (decoded === null) return params;
    if (!(decoded instanceof Map)) return badRequest('invalid packed payload: not a map');
    for (const [key, value] of decoded) {
      if (typeof key !== 'number') return badRequest('invalid packed payload: keys must be integers');
      const s = PACKED_BY_KEY.get(key);
      if (s === undefined) continue; // a newer client's parameter: ignored, as by the reference
      let unpacked: JsonValue;
      try {
        unpacked = unpackValue(s[1], s[2], value);
      } catch (e) {
        if (e instanceof PosternError && e.code === 'BAD_API_REQUEST') throw e;
        return badRequest(`unpack ${s[1]} failed: ${describeError(e)}`, e);
      }
      params[s[1]] = unpacked;
    }
    return params;
  }
  let parsed: JsonValue;
  try {
    parsed = goJsonUnmarshal(payload);
  } catch (e) {
    return badRequest(`invalid payload: ${describeError(e)}`, e);
  }
  if (parsed === null) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed))
    return badRequest('invalid payload: not a JSON object');
  return parsed;
}

/** Whether the request asks for response version 1 (a CBOR handshake response). */
export function wantsCborResponse(params: ApiParams): boolean {
  return getStringParam(params, PSIPHON_API_RESPONSE_VERSION_FIELD_NAME) === PSIPHON_API_RESPONSE_V1;
}

// ---------------------------------------------------------------------------------------------------------
// Time

/** RFC 3339 at second precision in UTC, as Go's time.Now().UTC().Format(time.RFC3339). */
export function formatTimestampRfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The start of the UTC hour that holds `d`. */
export function truncateToHour(d: Date): Date {
  const HOUR_MS = 3_600_000;
  return new Date(Math.floor(d.getTime() / HOUR_MS) * HOUR_MS);
}

/** The reference's common.TruncateTimestampToHour: an RFC 3339 string cut to the hour, "" when unparsable. */
export function truncateTimestampToHour(timestamp: string): string {
  const nanos = parseGoRfc3339(timestamp);
  if (nanos === undefined) return '';
  const HOUR_NS = 3_600_000_000_000n;
  let hourNanos = nanos - (((nanos % HOUR_NS) + HOUR_NS) % HOUR_NS);
  // Go keeps the parsed offset in the output; clients and servers only ever send UTC.
  const m = /([+-])(\d{2}):(\d{2})$/.exec(timestamp);
  if (m === null || (m[2] === '00' && m[3] === '00')) {
    return formatTimestampRfc3339(new Date(Number(hourNanos / 1_000_000n)));
  }
  const offsetNs =
    BigInt((Number(m[2]) * 60 + Number(m[3])) * 60) * 1_000_000_000n * (m[1] === '-' ? -1n : 1n);
  // Truncation is on absolute time (Go's Truncate); the wall clock shown keeps the offset.
  hourNanos += offsetNs;
  return formatTimestampRfc3339(new Date(Number(hourNanos / 1_000_000n))).replace(/Z$/, m[0]);
}

// ---------------------------------------------------------------------------------------------------------
// Responses

export interface HandshakeResponse {
  homepages?: string[];
  upgradeClientVersion?: string;
  /** obsolete; no client uses it */
  pageViewRegexes?: Record<string, string>[];
  /** the sponsor's domain regexes for bytes-per-domain stats: `{regex, replace}` */
  httpsRequestRegexes?: Record<string, string>[];
  /** hex server entries for discovery (and the server's own, when the client asked for it) */
  encodedServerList?: string[];
  clientRegion?: string;
  /** Postern servers never send it: it is the client's IP address */
  clientAddress?: string;
  serverTimestamp?: string;
  activeAuthorizationIds?: string[];
  /**
   * raw tactics payload: CBOR bytes in a CBOR response, JSON text in a JSON one (embedded as given when
   * encoding; re-marshalled with sorted keys when decoding)
   */
  tacticsPayload?: Buffer;
  tacticsPayloadCompression?: number;
  upstreamBytesPerSecond?: number;
  downstreamBytesPerSecond?: number;
  steeringIp?: string;
  padding?: string;
}

interface ResponseField {
  key: number;
  json: string;
  prop: keyof HandshakeResponse;
  kind: 'string' | 'strings' | 'maps' | 'bytes' | 'int';
}

// In the reference's struct order, which is its JSON field order.
const HANDSHAKE_RESPONSE_FIELDS: readonly ResponseField[] = [
  { key: 1, json: 'homepages', prop: 'homepages', kind: 'strings' },
  { key: 2, json: 'upgrade_client_version', prop: 'upgradeClientVersion', kind: 'string' },
  { key: 3, json: 'page_view_regexes', prop: 'pageViewRegexes', kind: 'maps' },
  { key: 4, json: 'https_request_regexes', prop: 'httpsRequestRegexes', kind: 'maps' },
  { key: 5, json: 'encoded_server_list', prop: 'encodedServerList', kind: 'strings' },
  { key: 6, json: 'client_region', prop: 'clientRegion', kind: 'string' },
  { key: 7, json: 'client_address', prop: 'clientAddress', kind: 'string' },
  { key: 8, json: 'server_timestamp', prop: 'serverTimestamp', kind: 'string' },
  { key: 9, json: 'active_authorization_ids', prop: 'activeAuthorizationIds', kind: 'strings' },
  { key: 10, json: 'tactics_payload', prop: 'tacticsPayload', kind: 'bytes' },
  { key: 11, json: 'tactics_payload_compression', prop: 'tacticsPayloadCompression', kind: 'int' },
  { key: 12, json: 'upstream_bytes_per_second', prop: 'upstreamBytesPerSecond', kind: 'int' },
  { key: 13, json: 'downstream_bytes_per_second', prop: 'downstreamBytesPerSecond', kind: 'int' },
  { key: 14, json: 'steering_ip', prop: 'steeringIp', kind: 'string' },
  { key: 15, json: 'padding', prop: 'padding', kind: 'string' },
];

/** Go's omitempty: empty strings, empty lists, zero numbers and empty byte strings are left out. */
function isEmptyField(v: unknown): boolean {
  return (
    v === undefined ||
    v === null ||
    v === '' ||
    v === 0 ||
    (Array.isArray(v) && v.length === 0) ||
    (v instanceof Uint8Array && v.length === 0)
  );
}

function jsonObjectInOrder(pairs: readonly (readonly [string, string])[]): string {
  return '{' + pairs.map(([k, v]) => `${goJsonQuote(k)}:${v}`).join(',') + '}';
}

/**
 * The handshake response as the reference server writes it: CBOR with integer keys (`cbor`), or JSON in the
 * struct's field order (`json`); empty fields are omitted in both.
 */
export function encodeHandshakeResponse(response: HandshakeResponse, encoding: ApiEncoding): Buffer {
  if (encoding === 'cbor') {
    const m = new Map<number, unknown>();
    for (const f of HANDSHAKE_RESPONSE_FIELDS) {
      const v = response[f.prop];
      if (!isEmptyField(v)) m.set(f.key, v);
    }
    return encodeCbor(m);
  }
  const pairs: [string, string][] = [];
  for (const f of HANDSHAKE_RESPONSE_FIELDS) {
    const v = response[f.prop];
    if (isEmptyField(v)) continue;
    if (f.kind === 'bytes') {
      // A RawMessage: the tactics JSON text, embedded as given once it is known to be JSON.
      const text = Buffer.from(v as Uint8Array).toString('utf8');
      goJsonUnmarshal(text);
      pairs.push([f.json, text.trim()]);
    } else {
      pairs.push([f.json, goJsonMarshal(v)]);
    }
  }
  return Buffer.from(jsonObjectInOrder(pairs), 'utf8');
}

function checkResponseField(f: ResponseField, v: unknown): unknown {
  const wrong = (): never => badResponse(`handshake response field ${f.json} has the wrong type`);
  switch (f.kind) {
    case 'string':
      return typeof v === 'string' ? v : wrong();
    case 'strings':
      return Array.isArray(v) && v.every((e) => typeof e === 'string') ? v : wrong();
    case 'int':
      return typeof v === 'number' && Number.isSafeInteger(v) ? v : wrong();
    case 'maps': {
      if (!Array.isArray(v)) return wrong();
      return v.map((e: unknown) => {
        const out: Record<string, string> = {};
        const entries: [unknown, unknown][] =
          e instanceof Map
            ? [...(e as Map<unknown, unknown>)]
            : typeof e === 'object' && e !== null && !Array.isArray(e)
              ? Object.entries(e)
              : wrong();
        for (const [k, val] of entries) {
          if (typeof k !== 'string' || typeof val !== 'string') return wrong();
          Object.defineProperty(out, k, { value: val, writable: true, enumerable: true, configurable: true });
        }
        return out;
      });
    }
    case 'bytes':
      return v instanceof Uint8Array ? Buffer.from(v) : wrong();
  }
}

/**
 * Parses a handshake response in the encoding the request asked for (what the reference client does with
 * json.Unmarshal / cbor.Unmarshal into its HandshakeResponse). Unknown fields are ignored, null is absent, a
 * field of the wrong type is BAD_API_RESPONSE.
 */
export function decodeHandshakeResponse(payload: Uint8Array, encoding: ApiEncoding): HandshakeResponse {
  if (payload.length > MAX_API_RESPONSE_SIZE)
    badResponse(`handshake response is over ${MAX_API_RESPONSE_SIZE} bytes`);
  const out: HandshakeResponse = {};
  const set = (f: ResponseField, v: unknown): void => {
    (out as Record<string, unknown>)[f.prop] = checkResponseField(f, v);
  };
  if (encoding === 'cbor') {
    let decoded: CborValue;
    try {
      decoded = decodeCbor(payload);
    } catch (e) {
      return badResponse(`handshake response is not valid CBOR: ${describeError(e)}`, e);
    }
    if (decoded === null) return out;
    if (!(decoded instanceof Map)) return badResponse('handshake response is not a CBOR map');
    for (const f of HANDSHAKE_RESPONSE_FIELDS) {
      const v = decoded.get(f.key);
      if (v === undefined || v === null) continue;
      set(f, v);
    }
    return out;
  }
  let parsed: JsonValue;
  try {
    parsed = goJsonUnmarshal(payload);
  } catch (e) {
    return badResponse(`handshake response is not valid JSON: ${describeError(e)}`, e);
  }
  if (parsed === null) return out;
  if (typeof parsed !== 'object' || Array.isArray(parsed))
    return badResponse('handshake response is not an object');
  for (const f of HANDSHAKE_RESPONSE_FIELDS) {
    const v = Object.hasOwn(parsed, f.json) ? parsed[f.json] : undefined;
    if (v === undefined || v === null) continue;
    if (f.kind === 'bytes') out.tacticsPayload = Buffer.from(goJsonMarshal(v), 'utf8');
    else set(f, v);
  }
  return out;
}

export interface ConnectedResponse {
  connectedTimestamp?: string;
  padding?: string;
}

export interface StatusResponse {
  invalidServerEntryTags?: string[];
  padding?: string;
}

/** `{"connected_timestamp":…,"padding":…}`, empty fields omitted (always JSON). */
export function encodeConnectedResponse(response: ConnectedResponse): Buffer {
  const pairs: [string, string][] = [];
  if (!isEmptyField(response.connectedTimestamp))
    pairs.push(['connected_timestamp', goJsonQuote(response.connectedTimestamp!)]);
  if (!isEmptyField(response.padding)) pairs.push(['padding', goJsonQuote(response.padding!)]);
  return Buffer.from(jsonObjectInOrder(pairs), 'utf8');
}

/** `{"invalid_server_entry_tags":[…],"padding":…}`, empty fields omitted (always JSON). */
export function encodeStatusResponse(response: StatusResponse): Buffer {
  const pairs: [string, string][] = [];
  if (!isEmptyField(response.invalidServerEntryTags)) {
    pairs.push(['invalid_server_entry_tags', goJsonMarshal(response.invalidServerEntryTags!)]);
  }
  if (!isEmptyField(response.padding)) pairs.push(['padding', goJsonQuote(response.padding!)]);
  return Buffer.from(jsonObjectInOrder(pairs), 'utf8');
}

function decodeJsonResponseObject(payload: Uint8Array, what: string): JsonObject {
  if (payload.length > MAX_API_RESPONSE_SIZE)
    badResponse(`${what} response is over ${MAX_API_RESPONSE_SIZE} bytes`);
  let parsed: JsonValue;
  try {
    parsed = goJsonUnmarshal(payload);
  } catch (e) {
    return badResponse(`${what} response is not valid JSON: ${describeError(e)}`, e);
  }
  if (parsed === null) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed))
    return badResponse(`${what} response is not an object`);
  return parsed;
}

function optionalJsonString(obj: JsonObject, key: string, what: string): string | undefined {
  const v = Object.hasOwn(obj, key) ? obj[key] : undefined;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') badResponse(`${what} response field ${key} must be a string`);
  return v;
}

export function decodeConnectedResponse(payload: Uint8Array): ConnectedResponse {
  const obj = decodeJsonResponseObject(payload, 'connected');
  const out: ConnectedResponse = {};
  const ts = optionalJsonString(obj, 'connected_timestamp', 'connected');
  if (ts !== undefined) out.connectedTimestamp = ts;
  const padding = optionalJsonString(obj, 'padding', 'connected');
  if (padding !== undefined) out.padding = padding;
  return out;
}

export function decodeStatusResponse(payload: Uint8Array): StatusResponse {
  const obj = decodeJsonResponseObject(payload, 'status');
  const out: StatusResponse = {};
  const tags = Object.hasOwn(obj, 'invalid_server_entry_tags') ? obj['invalid_server_entry_tags'] : undefined;
  if (tags !== undefined && tags !== null) {
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) {
      badResponse('status response field invalid_server_entry_tags must be a list of strings');
    }
    out.invalidServerEntryTags = tags as string[];
  }
  const padding = optionalJsonString(obj, 'padding', 'status');
  if (padding !== undefined) out.padding = padding;
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Server-to-client requests and the keep-alive speed test

export interface AlertRequest {
  reason: string;
  subject: string;
  actionUrls: string[];
}

/** A `psiphon-alert` payload: JSON `{reason, subject, action}` (all optional). */
export function decodeAlertRequest(payload: Uint8Array): AlertRequest {
  const obj = decodeJsonResponseObject(payload, 'alert');
  const action = Object.hasOwn(obj, 'action') ? obj['action'] : undefined;
  let actionUrls: string[] = [];
  if (action !== undefined && action !== null) {
    if (!Array.isArray(action) || !action.every((a) => typeof a === 'string')) {
      badResponse('alert field action must be a list of strings');
    }
    actionUrls = action as string[];
  }
  return {
    reason: optionalJsonString(obj, 'reason', 'alert') ?? '',
    subject: optionalJsonString(obj, 'subject', 'alert') ?? '',
    actionUrls,
  };
}

/** Seconds from Go's zero time (year 1) to the Unix epoch. */
const GO_UNIX_TO_INTERNAL_SECONDS = 62_135_596_800n;
const GO_TIME_BINARY_VERSION_V1 = 1;
const GO_TIME_BINARY_V1_LENGTH = 15;
/** Random bytes after the timestamp in a keep-alive answer, as the reference server sends. */
export const SSH_KEEP_ALIVE_PAYLOAD_MIN_BYTES = 0;
export const SSH_KEEP_ALIVE_PAYLOAD_MAX_BYTES = 256;

/**
 * The reply to a keep-alive: one length byte, Go's time.MarshalBinary of the current UTC hour (the client
 * records it with its speed test sample; hour precision is all it gets), then random padding.
 */
export function encodeSpeedTestResponse(now: Date, paddingLength: number): Buffer {
  const ms = truncateToHour(now).getTime();
  const t = Buffer.alloc(GO_TIME_BINARY_V1_LENGTH);
  t[0] = GO_TIME_BINARY_VERSION_V1;
  t.writeBigInt64BE(BigInt(Math.floor(ms / 1000)) + GO_UNIX_TO_INTERNAL_SECONDS, 1);
  t.writeInt32BE(0, 9); // nanoseconds: none at hour precision
  t.writeInt16BE(-1, 13); // -1 means UTC
  const pad = Math.max(0, Math.min(SSH_KEEP_ALIVE_PAYLOAD_MAX_BYTES, Math.floor(paddingLength)));
  return Buffer.concat([Buffer.of(t.length), t, randomBytes(pad)]);
}

/** The timestamp in a keep-alive reply (what the reference client's AddSpeedTestSample reads). */
export function decodeSpeedTestResponse(payload: Uint8Array): Date {
  if (payload.length < 1) badResponse('speed test response is empty');
  const len = payload[0]!;
  if (payload.length < 1 + len) badResponse('speed test response is shorter than its timestamp');
  const t = Buffer.from(payload.subarray(1, 1 + len));
  const version = t[0];
  if ((version !== 1 && version !== 2) || t.length !== (version === 1 ? 15 : 16)) {
    badResponse('speed test timestamp is not a Go binary time');
  }
  const seconds = t.readBigInt64BE(1) - GO_UNIX_TO_INTERNAL_SECONDS;
  const nanos = t.readInt32BE(9);
  const ms = Number(seconds) * 1000 + Math.floor(nanos / 1_000_000);
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) badResponse('speed test timestamp is out of range');
  return d;
}

// ---------------------------------------------------------------------------------------------------------
// The sponsor's domain regexes: how a client names a host for bytes-per-domain stats

/** A sponsor's `{regex, replace}` pair, sent in the handshake response (Go regexp syntax, Go template). */
export interface DomainRegex {
  regex: string;
  replace: string;
}

export interface CompiledDomainRegex {
  regex: RegExp;
  replace: string;
}

/** Regexes compiled from one handshake response; more are ignored. */
export const MAX_DOMAIN_REGEXES = 256;
/** The stats name of a host no regex matched. */
export const OTHER_HOST_STATS_NAME = '(OTHER)';

/**
 * Compiles domain regexes, skipping (as the reference client does) empty ones and those that do not compile.
 * Go's `(?P<name>` group syntax is accepted.
 */
/**
 * A Go (RE2) pattern as a JavaScript RegExp source and flags: named groups `(?P<name>` become `(?<name>`, and
 * leading inline flags such as `(?i)` (which sponsors' regexes use for case-insensitive names) become
 * RegExp flags. Undefined for what JavaScript cannot express the same way (e.g. `U`, ungreedy).
 */
export function goRegexToJs(pattern: string): { source: string; flags: string } | undefined {
  let source = pattern.replaceAll('(?P<', '(?<');
  let flags = '';
  const m = /^\(\?([imsU]+)\)/.exec(source);
  if (m) {
    if (m[1]!.includes('U')) return undefined;
    flags = [...new Set(m[1]!)].join('');
    source = source.slice(m[0].length);
  }
  return { source, flags };
}

export function compileDomainRegexes(regexes: readonly DomainRegex[]): CompiledDomainRegex[] {
  const out: CompiledDomainRegex[] = [];
  for (const r of regexes.slice(0, MAX_DOMAIN_REGEXES)) {
    if (r.regex === '' || r.replace === '') continue;
    const js = goRegexToJs(r.regex);
    if (!js) continue;
    try {
      out.push({ regex: new RegExp(js.source, `gu${js.flags}`), replace: r.replace });
    } catch {
      continue;
    }
  }
  return out;
}

type TemplatePart = { literal: string } | { group: string };

/** Go's Regexp.Expand template syntax: `$$` is a dollar, `$name` / `${name}` a group, any other `$` itself. */
export function parseGoTemplate(template: string): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let literal = '';
  let i = 0;
  while (i < template.length) {
    const dollar = template.indexOf('$', i);
    if (dollar === -1) {
      literal += template.slice(i);
      break;
    }
    literal += template.slice(i, dollar);
    const rest = template.slice(dollar + 1);
    if (rest.startsWith('$')) {
      literal += '$';
      i = dollar + 2;
      continue;
    }
    const braced = /^\{([\p{L}\p{Nd}_]+)\}/u.exec(rest);
    const bare = /^[\p{L}\p{Nd}_]+/u.exec(rest);
    const name = braced?.[1] ?? bare?.[0];
    if (name === undefined) {
      literal += '$';
      i = dollar + 1;
      continue;
    }
    if (literal !== '') parts.push({ literal });
    literal = '';
    parts.push({ group: name });
    i = dollar + 1 + (braced ?? bare)![0].length;
  }
  if (literal !== '') parts.push({ literal });
  return parts;
}

function expandGoTemplate(parts: readonly TemplatePart[], match: RegExpExecArray): string {
  return parts
    .map((p) => {
      if ('literal' in p) return p.literal;
      if (/^[0-9]+$/.test(p.group)) return match[Number(p.group)] ?? '';
      return match.groups?.[p.group] ?? '';
    })
    .join('');
}

/**
 * The stats name of a host (a TLS SNI or HTTP Host name, never a URL), as the reference client's transferstats
 * computes it: the first regex that matches rewrites every match in the host (Go's ReplaceAllString);
 * no match gives "(OTHER)".
 */
export function statsNameForHost(host: string, regexes: readonly CompiledDomainRegex[]): string {
  for (const { regex, replace } of regexes) {
    regex.lastIndex = 0;
    if (!regex.test(host)) continue;
    const parts = parseGoTemplate(replace);
    regex.lastIndex = 0;
    let out = '';
    let last = 0;
    for (let m = regex.exec(host); m !== null; m = regex.exec(host)) {
      out += host.slice(last, m.index) + expandGoTemplate(parts, m);
      last = m.index + m[0].length;
      if (m[0].length === 0) regex.lastIndex++;
    }
    return out + host.slice(last);
  }
  return OTHER_HOST_STATS_NAME;
}
