// The tunnel API's parameters: the lists of parameters each request carries, the checks the reference server
// (psiphond, following the legacy psi_web rules) applies to each of them, Go's number and time parsing that
// those checks rely on, and which parameters Postern keeps out of its logs (apiLogFields). Shared by the
// client, which checks what it is about to send, and the server, which checks what it receives.
import { isValidDateTimeMatch } from './calendar.ts';
import { isIP } from 'node:net';
import { PosternError } from '../common/errors.ts';
import { redactString } from '../common/redact.ts';
import type { JsonValue } from './go-json.ts';
import { isValidServerEntrySource } from './server-entry.ts';
import {
  isKnownTunnelProtocol,
  tunnelProtocolUsesFrontedMeek,
  tunnelProtocolUsesMeek,
  tunnelProtocolUsesMeekHTTPS,
  tunnelProtocolUsesRefractionNetworking,
} from './tunnel-protocols.ts';

/** Largest `pad_response` honoured; larger requests get this much. */
export const PADDING_MAX_BYTES = 16 * 1024;
/** Length of a sponsor ID in hex digits. */
export const SPONSOR_ID_LENGTH = 16;
/** What the reference's last_connected and device_region default to when unknown. */
export const API_VALUE_NONE = 'None';

export const CLIENT_PLATFORM_ANDROID = 'Android';
export const CLIENT_PLATFORM_WINDOWS = 'Windows';
export const CLIENT_PLATFORM_IOS = 'iOS';
export const CLIENT_PLATFORM_OTHER = 'Other';

/** API parameters as the reference server holds them after decoding (Go's common.APIParameters). */
export type ApiParams = { [name: string]: JsonValue };

function badRequest(message: string): never {
  throw new PosternError('BAD_API_REQUEST', message);
}

// ---------------------------------------------------------------------------------------------------------
// Go's scalar parsing, as the reference's validators and converters use it

export const INT64_MIN = -(1n << 63n);
export const INT64_MAX = (1n << 63n) - 1n;

/** Go's strconv.Atoi on a 64-bit machine: optional sign, decimal digits, int64 range. */
export function goAtoi(s: string): bigint | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const v = BigInt(s);
  return v < INT64_MIN || v > INT64_MAX ? undefined : v;
}

/** Go's underscoreOK: underscores only between digits (or after a base prefix). */
function goUnderscoresOk(s: string): boolean {
  let saw = '^';
  let i = 0;
  if (s.startsWith('+') || s.startsWith('-')) s = s.slice(1);
  let hex = false;
  if (s.length >= 2 && s[0] === '0' && 'box'.includes((s[1] ?? '').toLowerCase())) {
    i = 2;
    saw = '0';
    hex = (s[1] ?? '').toLowerCase() === 'x';
  }
  for (; i < s.length; i++) {
    const c = s[i] as string;
    if ((c >= '0' && c <= '9') || (hex && /[a-fA-F]/.test(c))) {
      saw = '0';
      continue;
    }
    if (c === '_') {
      if (saw !== '0') return false;
      saw = '_';
      continue;
    }
    if (saw === '_') return false;
    saw = '!';
  }
  return saw !== '_';
}

const DECIMAL_FLOAT = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
const HEX_FLOAT = /^([+-]?)0[xX]([0-9a-fA-F]*)\.?([0-9a-fA-F]*)[pP]([+-]?[0-9]+)$/;
const FLOAT_SPECIAL = /^(?:[+-]?(?:inf|infinity)|nan)$/i;

/** Go's strconv.ParseFloat(s, 64): decimal or hex floats, inf/infinity/nan, digit separators; overflow fails. */
export function goParseFloat(s: string): number | undefined {
  if (FLOAT_SPECIAL.test(s)) {
    if (/nan/i.test(s)) return NaN;
    return s.startsWith('-') ? -Infinity : Infinity;
  }
  if (s.includes('_')) {
    if (!goUnderscoresOk(s)) return undefined;
    s = s.replaceAll('_', '');
  }
  const hex = HEX_FLOAT.exec(s);
  if (hex !== null) {
    const [, sign, intDigits, fracDigits, exp] = hex as unknown as [string, string, string, string, string];
    if (intDigits.length + fracDigits.length === 0) return undefined;
    const mantissa = Number(BigInt('0x' + (intDigits + fracDigits || '0')));
    const v = mantissa * 2 ** (Number(exp) - 4 * fracDigits.length);
    if (!Number.isFinite(v) && mantissa !== 0) return undefined;
    return sign === '-' ? -v : v;
  }
  if (!DECIMAL_FLOAT.test(s)) return undefined;
  const v = Number(s);
  return Number.isFinite(v) ? v : undefined;
}

/** Go's fmt "%f" of a float64: exactly rounded (half to even) to six decimals. */
export function goFormatFloatF(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  const negative = v < 0 || Object.is(v, -0);
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(v));
  const bits = view.getBigUint64(0);
  const biasedExp = Number((bits >> 52n) & 0x7ffn);
  let mantissa = bits & ((1n << 52n) - 1n);
  let exp: number;
  if (biasedExp === 0) exp = -1074;
  else {
    mantissa |= 1n << 52n;
    exp = biasedExp - 1075;
  }
  const SCALE = 1_000_000n;
  let q: bigint;
  if (exp >= 0) q = (mantissa << BigInt(exp)) * SCALE;
  else {
    const num = mantissa * SCALE;
    const den = 1n << BigInt(-exp);
    q = num / den;
    const twiceRem = 2n * (num % den);
    if (twiceRem > den || (twiceRem === den && (q & 1n) === 1n)) q += 1n;
  }
  const digits = q.toString().padStart(7, '0');
  return `${negative ? '-' : ''}${digits.slice(0, -6)}.${digits.slice(-6)}`;
}

/** Go's base64.StdEncoding.DecodeString acceptance (it skips CR and LF, and needs padding). */
export function isGoStdBase64(s: string): boolean {
  return /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s.replace(/[\r\n]/g, ''));
}

/** Go's base64.RawStdEncoding.DecodeString acceptance (no padding). */
export function isGoRawStdBase64(s: string): boolean {
  return /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2,3})?$/.test(s.replace(/[\r\n]/g, ''));
}

/** Decodes base64 that isGoStdBase64 or isGoRawStdBase64 accepted (CR and LF skipped, as by Go). */
export function decodeGoBase64(s: string): Buffer {
  return Buffer.from(s.replace(/[\r\n]/g, ''), 'base64');
}

/** Go's hex.DecodeString acceptance: an even number of hex digits, either case. */
export function isGoHex(s: string): boolean {
  return s.length % 2 === 0 && /^[0-9a-fA-F]*$/.test(s);
}

// ---------------------------------------------------------------------------------------------------------
// Validators: the reference server's (legacy psi_web) rules for each parameter

export function isAnyString(_value: string): boolean {
  return true;
}

/** Hex digits, either case; the empty string passes, as in the reference. */
export function isHexDigits(value: string): boolean {
  return /^[0-9a-fA-F]*$/.test(value);
}

export function isSponsorId(value: string): boolean {
  return value.length === SPONSOR_ID_LENGTH && isHexDigits(value);
}

export function isDigits(value: string): boolean {
  return /^[0-9]*$/.test(value);
}

export function isIntString(value: string): boolean {
  return goAtoi(value) !== undefined;
}

export function isFloatString(value: string): boolean {
  return goParseFloat(value) !== undefined;
}

// Unicode White_Space (the reference uses unicode.White_Space; JS \s differs on U+FEFF).
const UNICODE_WHITE_SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

/** A client platform string: anything without white space (e.g. "Android_4.0.4_com.example"). */
export function isClientPlatform(value: string): boolean {
  return !UNICODE_WHITE_SPACE.test(value);
}

export function isRelayProtocol(value: string): boolean {
  return isKnownTunnelProtocol(value);
}

export function isBooleanFlag(value: string): boolean {
  return value === '0' || value === '1';
}

export function isUpstreamProxyType(value: string): boolean {
  const v = value.toLowerCase();
  return v === 'http' || v === 'socks5' || v === 'socks4a';
}

export function isRegionCode(value: string): boolean {
  return /^[A-Z]{2}$/.test(value);
}

/** Go's net.ParseIP: dotted IPv4 or IPv6 (no zone). */
export function isIpAddress(value: string): boolean {
  return !value.includes('%') && isIP(value) !== 0;
}

// The reference's pattern is anchored only at the end, so a label passes when it ends in 1-63 allowed
// characters; kept as is so that both servers accept the same values.
const DOMAIN_LABEL_TAIL = /[a-zA-Z\d-]{1,63}$/;

export function isDomain(value: string): boolean {
  if (value.length > 255) return false;
  const trimmed = value.endsWith('.') ? value.slice(0, -1) : value;
  for (const part of trimmed.split('.')) {
    if (part.startsWith('-') || part.endsWith('-')) return false;
    if (!DOMAIN_LABEL_TAIL.test(part)) return false;
  }
  return true;
}

/** "<host>:<port>" where host is a domain or IP address (IPv6 literals cannot pass, as in the reference). */
export function isDialAddress(value: string): boolean {
  const parts = value.split(':');
  if (parts.length !== 2) return false;
  const [host, port] = parts as [string, string];
  if (!isIpAddress(host) && !isDomain(host)) return false;
  return isDigits(port) && goAtoi(port) !== undefined;
}

export function isHostHeader(value: string): boolean {
  if (value.includes(':')) return isDialAddress(value);
  return isIpAddress(value) || isDomain(value);
}

export function isServerEntrySource(value: string): boolean {
  return isValidServerEntrySource(value);
}

const ISO8601_DATE =
  /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:[.,][0-9]+)?(?:Z|([+-])([0-9]{2})([0-9]{2}))$/;

/** Go's time.Parse with "2006-01-02T15:04:05.999999999Z0700" (note: offsets without a colon). */
export function isIso8601Date(value: string): boolean {
  const m = ISO8601_DATE.exec(value);
  if (m === null) return false;
  if (!isValidDateTimeMatch(m)) return false;
  if (m[7] !== undefined && (Number(m[8]) > 24 || Number(m[9]) > 60)) return false;
  return true;
}

export function isLastConnected(value: string): boolean {
  return value === API_VALUE_NONE || isIso8601Date(value);
}

const GEOHASH_ALPHABET = /^[0-9bcdefghjkmnpqrstuvwxyz]{1,12}$/;

export function isGeoHashString(value: string): boolean {
  return GEOHASH_ALPHABET.test(value);
}

/** The reference's normalizeClientPlatform: Android (anywhere, any case), iOS/Windows (prefix), else Other. */
export function normalizeClientPlatform(clientPlatform: string): string {
  if (clientPlatform.toLowerCase().includes(CLIENT_PLATFORM_ANDROID.toLowerCase()))
    return CLIENT_PLATFORM_ANDROID;
  if (clientPlatform.startsWith(CLIENT_PLATFORM_IOS)) return CLIENT_PLATFORM_IOS;
  if (clientPlatform.startsWith(CLIENT_PLATFORM_WINDOWS)) return CLIENT_PLATFORM_WINDOWS;
  return CLIENT_PLATFORM_OTHER;
}

export function isMobileClientPlatform(clientPlatform: string): boolean {
  const p = normalizeClientPlatform(clientPlatform);
  return p === CLIENT_PLATFORM_ANDROID || p === CLIENT_PLATFORM_IOS;
}

// ---------------------------------------------------------------------------------------------------------
// Parameter specs (the reference's requestParamSpec lists)

export const PARAM_OPTIONAL = 1;
export const PARAM_NOT_LOGGED = 1 << 1;
export const PARAM_ARRAY = 1 << 2;
export const PARAM_JSON = 1 << 3;
export const PARAM_LOG_STRING_AS_INT = 1 << 4;
export const PARAM_LOG_STRING_AS_FLOAT = 1 << 5;
export const PARAM_LOG_STRING_LENGTH_AS_INT = 1 << 6;
export const PARAM_LOG_FLAG_AS_BOOL = 1 << 7;
export const PARAM_LOG_ONLY_FOR_FRONTED_MEEK_OR_CONJURE = 1 << 8;
export const PARAM_NOT_LOGGED_FOR_UNFRONTED_MEEK_NON_TRANSFORMED_HEADER = 1 << 9;
export const PARAM_LOG_OMITTED_FLAG_AS_FALSE = 1 << 10;

export interface ApiParamSpec {
  readonly name: string;
  readonly validator: ((value: string) => boolean) | null;
  readonly flags: number;
}

const O = PARAM_OPTIONAL;
const INT = PARAM_LOG_STRING_AS_INT;
const FLOAT = PARAM_LOG_STRING_AS_FLOAT;
const BOOL = PARAM_LOG_FLAG_AS_BOOL;

function spec(name: string, validator: ((value: string) => boolean) | null, flags = 0): ApiParamSpec {
  return { name, validator, flags };
}

export const STORED_TACTICS_TAG_PARAMETER_NAME = 'stored_tactics_tag';
export const SPEED_TEST_SAMPLES_PARAMETER_NAME = 'speed_test_samples';
export const APPLIED_TACTICS_TAG_PARAMETER_NAME = 'applied_tactics_tag';

/** Sent with every request and logged with every event. */
export const BASE_PARAMS: readonly ApiParamSpec[] = [
  spec('propagation_channel_id', isHexDigits),
  spec('sponsor_id', isSponsorId),
  spec('client_version', isIntString, INT),
  spec('client_platform', isClientPlatform),
  spec('client_features', isAnyString, O | PARAM_ARRAY),
  spec('client_build_rev', isHexDigits, O),
  spec('device_region', isAnyString, O),
  spec('device_location', isGeoHashString, O),
  spec('egress_region', isRegionCode, O),
  spec('network_type', isAnyString, O),
  spec(APPLIED_TACTICS_TAG_PARAMETER_NAME, isAnyString, O),
  spec('compress_response', isIntString, O | PARAM_NOT_LOGGED),
];

/** Per-tunnel dial parameters (handshake and failed_tunnel). */
export const BASE_DIAL_PARAMS: readonly ApiParamSpec[] = [
  spec('relay_protocol', isRelayProtocol),
  spec('ssh_client_version', isAnyString, O),
  spec('upstream_proxy_type', isUpstreamProxyType, O),
  spec('upstream_proxy_custom_header_names', isAnyString, O | PARAM_ARRAY),
  spec('fronting_provider_id', isAnyString, O),
  spec('meek_dial_address', isDialAddress, O | PARAM_LOG_ONLY_FOR_FRONTED_MEEK_OR_CONJURE),
  spec('meek_resolved_ip_address', isIpAddress, O | PARAM_LOG_ONLY_FOR_FRONTED_MEEK_OR_CONJURE),
  spec('meek_sni_server_name', isDomain, O),
  spec('meek_host_header', isHostHeader, O | PARAM_NOT_LOGGED_FOR_UNFRONTED_MEEK_NON_TRANSFORMED_HEADER),
  spec('meek_transformed_host_name', isBooleanFlag, O | BOOL),
  spec('user_agent', isAnyString, O),
  spec('tls_profile', isAnyString, O),
  spec('tls_version', isAnyString, O),
  spec('server_entry_region', isRegionCode, O),
  spec('server_entry_source', isServerEntrySource, O),
  spec('server_entry_timestamp', isIso8601Date, O),
  spec('dial_port_number', isIntString, O | INT),
  spec('quic_version', isAnyString, O),
  spec('quic_dial_sni_address', isAnyString, O),
  spec('quic_disable_client_path_mtu_discovery', isBooleanFlag, O | BOOL),
  spec('upstream_bytes_fragmented', isIntString, O | INT),
  spec('upstream_min_bytes_written', isIntString, O | INT),
  spec('upstream_max_bytes_written', isIntString, O | INT),
  spec('upstream_min_delayed', isIntString, O | INT),
  spec('upstream_max_delayed', isIntString, O | INT),
  spec('padding', isAnyString, O | PARAM_LOG_STRING_LENGTH_AS_INT),
  spec('pad_response', isIntString, O | INT),
  spec('is_replay', isBooleanFlag, O | BOOL | PARAM_LOG_OMITTED_FLAG_AS_FALSE),
  spec('replay_ignored_change', isBooleanFlag, O | BOOL | PARAM_LOG_OMITTED_FLAG_AS_FALSE),
  spec('dsl_prioritized', isBooleanFlag, O | BOOL | PARAM_LOG_OMITTED_FLAG_AS_FALSE),
  spec('dsl_prioritized_reason', isAnyString, O),
  spec('dsl_prioritized_tunnel_protocol', isRelayProtocol, O),
  spec('dial_duration', isIntString, O | INT),
  spec('candidate_number', isIntString, O | INT),
  spec('established_tunnels_count', isIntString, O | INT),
  spec('upstream_ossh_padding', isIntString, O | INT),
  spec('meek_cookie_size', isIntString, O | INT),
  spec('meek_limit_request', isIntString, O | INT),
  spec('meek_redial_probability', isFloatString, O | FLOAT),
  spec('meek_tls_padding', isIntString, O | INT),
  spec('network_latency_multiplier', isFloatString, O | FLOAT),
  spec('client_bpf', isAnyString, O),
  spec('conjure_cached', isBooleanFlag, O | BOOL),
  spec('conjure_delay', isIntString, O | INT),
  spec('conjure_transport', isAnyString, O),
  spec('conjure_prefix', isAnyString, O),
  spec('conjure_stun', isAnyString, O),
  spec('conjure_empty_packet', isBooleanFlag, O | BOOL),
  spec('conjure_network', isAnyString, O),
  spec('conjure_port_number', isAnyString, O),
  spec('split_tunnel', isBooleanFlag, O | BOOL),
  spec('split_tunnel_regions', isRegionCode, O | PARAM_ARRAY),
  spec('dns_preresolved', isAnyString, O),
  spec('dns_preferred', isAnyString, O),
  spec('dns_transform', isAnyString, O),
  spec('dns_qname_random_casing', isBooleanFlag, O | BOOL),
  spec('dns_qname_must_match', isBooleanFlag, O | BOOL),
  spec('dns_qname_mismatches', isIntString, O | INT),
  spec('dns_attempt', isIntString, O | INT),
  spec('http_transform', isAnyString, O),
  spec('seed_transform', isAnyString, O),
  spec('ossh_prefix', isAnyString, O),
  spec('shadowsocks_prefix', isAnyString, O),
  spec('tls_fragmented', isBooleanFlag, O | BOOL),
  spec('tls_padding', isIntString, O | INT),
  spec('tls_ossh_sni_server_name', isDomain, O),
  spec('tls_ossh_transformed_host_name', isBooleanFlag, O | BOOL),
  spec('steering_ip', isIpAddress, O | PARAM_LOG_ONLY_FOR_FRONTED_MEEK_OR_CONJURE),
  spec('tls_sent_ticket', isBooleanFlag, O | BOOL),
  spec('tls_did_resume', isBooleanFlag, O | BOOL),
  spec('quic_sent_ticket', isBooleanFlag, O | BOOL),
  spec('quic_did_resume', isBooleanFlag, O | BOOL),
  spec('quic_dial_early', isBooleanFlag, O | BOOL),
  spec('quic_obfuscated_psk', isBooleanFlag, O | BOOL),
  spec('server_entry_count', isIntString, O | INT),
  spec('unique_candidate_estimate', isIntString, O | INT),
  spec('candidates_moved_to_front', isIntString, O | INT),
  spec('first_fronted_meek_candidate', isIntString, O | INT),
  spec('tunnel_personal_light_proxy_id', isAnyString, O),
];

/**
 * In-proxy dial parameters: validated like the reference so that its clients are accepted, never logged by
 * Postern (no in-proxy support, and several carry broker and STUN addresses).
 */
export const INPROXY_DIAL_PARAMS: readonly ApiParamSpec[] = [
  spec('inproxy_connection_id', isGoRawStdBase64, O | PARAM_NOT_LOGGED),
  spec('inproxy_relay_packet', isGoRawStdBase64, O | PARAM_NOT_LOGGED),
  ...[
    'inproxy_broker_is_replay',
    'inproxy_broker_transformed_host_name',
    'inproxy_broker_tls_fragmented',
    'inproxy_broker_dns_qname_random_casing',
    'inproxy_broker_dns_qname_must_match',
    'inproxy_webrtc_dns_qname_must_match',
    'inproxy_webrtc_randomize_dtls',
    'inproxy_webrtc_local_ice_candidate_is_initiator',
    'inproxy_webrtc_local_ice_candidate_is_IPv6',
    'inproxy_webrtc_remote_ice_candidate_is_IPv6',
    'inproxy_broker_is_reuse',
    'inproxy_webrtc_use_media_streams',
  ].map((n) => spec(n, isBooleanFlag, O | BOOL)),
  ...[
    'inproxy_broker_upstream_bytes_fragmented',
    'inproxy_broker_dns_qname_mismatches',
    'inproxy_broker_dns_attempt',
    'inproxy_webrtc_dns_qname_mismatches',
    'inproxy_webrtc_dns_attempt',
    'inproxy_webrtc_padded_messages_sent',
    'inproxy_webrtc_padded_messages_received',
    'inproxy_webrtc_decoy_messages_sent',
    'inproxy_webrtc_decoy_messages_received',
    'inproxy_webrtc_local_ice_candidate_port',
    'inproxy_webrtc_remote_ice_candidate_port',
    'inproxy_dial_nat_discovery_duration',
    'inproxy_dial_failed_attempts_duration',
    'inproxy_dial_webrtc_ice_gathering_duration',
    'inproxy_dial_broker_offer_duration',
    'inproxy_dial_webrtc_connection_duration',
  ].map((n) => spec(n, isIntString, O | INT)),
  ...[
    'inproxy_broker_transport',
    'inproxy_broker_fronting_provider_id',
    'inproxy_broker_dial_address',
    'inproxy_broker_resolved_ip_address',
    'inproxy_broker_sni_server_name',
    'inproxy_broker_host_header',
    'inproxy_broker_user_agent',
    'inproxy_broker_tls_profile',
    'inproxy_broker_tls_version',
    'inproxy_broker_client_bpf',
    'inproxy_broker_http_transform',
    'inproxy_broker_dns_preresolved',
    'inproxy_broker_dns_preferred',
    'inproxy_broker_dns_transform',
    'inproxy_webrtc_dns_preresolved',
    'inproxy_webrtc_dns_preferred',
    'inproxy_webrtc_dns_transform',
    'inproxy_webrtc_stun_server',
    'inproxy_webrtc_stun_server_resolved_ip_address',
    'inproxy_webrtc_stun_server_RFC5780',
    'inproxy_webrtc_stun_server_RFC5780_resolved_ip_address',
    'inproxy_webrtc_dtls_fingerprint',
    'inproxy_proxy_webrtc_dtls_fingerprint',
    'inproxy_webrtc_local_ice_candidate_type',
    'inproxy_webrtc_remote_ice_candidate_type',
  ].map((n) => spec(n, isAnyString, O)),
];

export const BASE_AND_DIAL_PARAMS: readonly ApiParamSpec[] = [
  ...BASE_PARAMS,
  ...BASE_DIAL_PARAMS,
  ...INPROXY_DIAL_PARAMS,
];

export const TACTICS_PARAMS: readonly ApiParamSpec[] = [
  spec(STORED_TACTICS_TAG_PARAMETER_NAME, isAnyString, O),
  spec(SPEED_TEST_SAMPLES_PARAMETER_NAME, null, O | PARAM_JSON),
];

export const HANDSHAKE_REQUEST_PARAMS: readonly ApiParamSpec[] = [
  spec('missing_server_entry_signature', isGoStdBase64, O),
  spec('missing_server_entry_provider_id', isGoStdBase64, O),
  spec('enable_proxy_protocol_headers', isBooleanFlag, O | PARAM_NOT_LOGGED),
  ...BASE_AND_DIAL_PARAMS,
  ...TACTICS_PARAMS,
];

/** What a unique_user event carries. */
export const UNIQUE_USER_PARAMS: readonly ApiParamSpec[] = [
  spec('last_connected', isLastConnected),
  ...BASE_PARAMS,
];

export const CONNECTED_REQUEST_PARAMS: readonly ApiParamSpec[] = [
  spec('establishment_duration', isIntString, O | INT),
  spec('light_proxy_id', isAnyString, O),
  spec('light_proxy_entry_tracker', isIntString, O | INT),
  spec('light_proxy_dial_IPv4', isIntString, O | INT),
  spec('light_proxy_dial_IPv6', isIntString, O | INT),
  spec('light_proxy_dial_failed', isIntString, O | INT),
  spec('light_proxy_dial_canceled', isIntString, O | INT),
  ...UNIQUE_USER_PARAMS,
];

export const STATUS_REQUEST_PARAMS: readonly ApiParamSpec[] = BASE_PARAMS;

export const REMOTE_SERVER_LIST_STAT_PARAMS: readonly ApiParamSpec[] = [
  spec('session_id', isHexDigits, O),
  spec('client_download_timestamp', isIso8601Date),
  spec('tunneled', isBooleanFlag, O | BOOL),
  spec('url', isAnyString),
  spec('etag', isAnyString),
  spec('bytes', isIntString, O | INT),
  spec('duration', isIntString, O | INT),
  spec('authenticated', isBooleanFlag, O | BOOL),
  spec('fronting_provider_id', isAnyString, O),
  spec('meek_dial_address', isDialAddress, O),
  spec('meek_resolved_ip_address', isIpAddress, O),
  spec('meek_sni_server_name', isDomain, O),
  spec('meek_host_header', isHostHeader, O),
  spec('meek_transformed_host_name', isBooleanFlag, O | BOOL),
  spec('user_agent', isAnyString, O),
  spec('tls_profile', isAnyString, O),
  spec('tls_version', isAnyString, O),
  spec('tls_fragmented', isBooleanFlag, O | BOOL),
  ...BASE_PARAMS,
];

/** Fields a legacy client leaves out of remote_server_list_stats entries; taken from the status request. */
export const REMOTE_SERVER_LIST_STAT_BACKWARDS_COMPATIBILITY_PARAM_NAMES: readonly string[] = [
  'propagation_channel_id',
  'sponsor_id',
  'client_version',
  'client_platform',
  'client_build_rev',
  'device_region',
  'device_location',
];

export const FAILED_TUNNEL_STAT_PARAMS: readonly ApiParamSpec[] = [
  spec('server_entry_tag', isAnyString, O),
  spec('session_id', isHexDigits),
  spec('last_connected', isLastConnected),
  spec('client_failed_timestamp', isIso8601Date),
  spec('record_probability', isFloatString, O | FLOAT),
  spec('liveness_test_upstream_bytes', isIntString, O | INT),
  spec('liveness_test_sent_upstream_bytes', isIntString, O | INT),
  spec('liveness_test_downstream_bytes', isIntString, O | INT),
  spec('liveness_test_received_downstream_bytes', isIntString, O | INT),
  spec('bytes_up', isIntString, O | INT),
  spec('bytes_down', isIntString, O | INT),
  spec('tunnel_error', isAnyString),
  ...BASE_AND_DIAL_PARAMS,
];

/** Whether a parameter value is absent: missing, or JSON/CBOR null (Go's nil). */
function isAbsent(v: JsonValue | undefined): v is null | undefined {
  return v === undefined || v === null;
}

function ownValue(params: ApiParams, name: string): JsonValue | undefined {
  return Object.hasOwn(params, name) ? params[name] : undefined;
}

/**
 * The reference's validateRequestParams: every required parameter present, and every present one a string
 * (or, for array parameters, an array of strings) that passes its validator. Extra parameters are ignored.
 * Throws BAD_API_REQUEST naming the parameter.
 */
export function validateApiParams(params: ApiParams, specs: readonly ApiParamSpec[]): void {
  for (const s of specs) {
    const value = ownValue(params, s.name);
    if (isAbsent(value)) {
      if (s.flags & PARAM_OPTIONAL) continue;
      badRequest(`missing param: ${s.name}`);
    }
    if (s.flags & PARAM_JSON) continue; // the parameter's user checks it
    const check = (v: JsonValue): void => {
      if (typeof v !== 'string') badRequest(`unexpected string param type: ${s.name}`);
      if (s.validator !== null && !s.validator(v)) badRequest(`invalid param: ${s.name}`);
    };
    if (s.flags & PARAM_ARRAY) {
      if (!Array.isArray(value)) badRequest(`unexpected array param type: ${s.name}`);
      for (const v of value) check(v);
    } else {
      check(value);
    }
  }
}

/** A string parameter, or undefined when absent or not a string. */
export function getStringParam(params: ApiParams, name: string): string | undefined {
  const v = ownValue(params, name);
  return typeof v === 'string' ? v : undefined;
}

/** The reference's getStringArrayRequestParam: an array of strings, or BAD_API_REQUEST. */
export function getStringArrayParam(params: ApiParams, name: string): string[] | undefined {
  const v = ownValue(params, name);
  if (isAbsent(v)) return undefined;
  if (!Array.isArray(v) || !v.every((e) => typeof e === 'string')) badRequest(`invalid param: ${name}`);
  return v as string[];
}

/** The reference's getPaddingSizeRequestParam: `pad_response` clamped to 0..PADDING_MAX_BYTES, 0 when unusable. */
export function getPaddingSizeParam(params: ApiParams, name = 'pad_response'): number {
  const s = getStringParam(params, name);
  const v = s === undefined ? undefined : goAtoi(s);
  if (v === undefined || v < 0n) return 0;
  return v > BigInt(PADDING_MAX_BYTES) ? PADDING_MAX_BYTES : Number(v);
}

// ---------------------------------------------------------------------------------------------------------
// Privacy: what Postern never writes to its logs

/**
 * Parameters the reference logs but Postern drops from every event, with the reason. Everything else in a
 * spec list is logged the way the reference logs it (after the spec's own not-logged rules).
 */
export const API_PARAMS_NEVER_LOGGED: ReadonlyMap<string, string> = new Map([
  ['device_location', 'a geohash of where the device is: precise location'],
  ['meek_resolved_ip_address', 'an IP address'],
  ['steering_ip', 'an IP address'],
  ['dns_preresolved', 'an IP address'],
  ['dns_preferred', "a DNS server address, possibly the user's own network's"],
  ['upstream_proxy_custom_header_names', "names from the user's own proxy configuration"],
  ['light_proxy_id', "identifies a person's own proxy"],
  ['tunnel_personal_light_proxy_id', "identifies a person's own proxy"],
  ['session_id', 'links persistent stats to another session'],
  ['last_connected', 'only needed for the unique-user decision, which is logged instead'],
  ['padding', 'random filler'],
  ['pad_response', 'random filler size'],
  [SPEED_TEST_SAMPLES_PARAMETER_NAME, 'per-network timing history, not needed'],
  [STORED_TACTICS_TAG_PARAMETER_NAME, 'tactics are not served'],
]);

function neverLogged(name: string): boolean {
  return API_PARAMS_NEVER_LOGGED.has(name) || name.startsWith('inproxy_');
}

/** Timestamps a client sends are cut to the hour before they are logged. */
const HOUR_TRUNCATED_PARAMS = new Set([
  'server_entry_timestamp',
  'client_download_timestamp',
  'client_failed_timestamp',
]);

export type ApiLogValue = string | number | boolean | string[];
export type ApiLogFields = { [name: string]: ApiLogValue };

// Legacy clients put the proxy URL (which may hold credentials) into this error text.
const LEGACY_PROXY_URL_ERROR = 'upstreamproxy error: proxyURI url.Parse: parse ';

function isoDateToHour(value: string): string | undefined {
  const m = ISO8601_DATE.exec(value);
  if (m === null) return undefined;
  const [year, month, day, hour, minute] = m.slice(1, 6).map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ];
  let offsetMinutes = 0;
  if (m[7] !== undefined) offsetMinutes = (Number(m[8]) * 60 + Number(m[9])) * (m[7] === '-' ? -1 : 1);
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute - offsetMinutes, 0, 0);
  const HOUR_MS = 3_600_000;
  return new Date(Math.floor(d.getTime() / HOUR_MS) * HOUR_MS).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The fields an event carries for these parameters: the reference's getRequestLogFields conversions (integer
 * strings as numbers, "0"/"1" flags as booleans, a meek dial host as meek_dial_domain when it is a name and
 * left out when it is an IP address), minus every parameter in API_PARAMS_NEVER_LOGGED and every in-proxy
 * parameter, with client timestamps cut to the hour and IP-shaped text redacted from every string. Expects
 * parameters that passed validateApiParams with the same specs. Never includes an IP address.
 */
export function apiLogFields(params: ApiParams, specs: readonly ApiParamSpec[]): ApiLogFields {
  const fields: ApiLogFields = {};
  const relayProtocol = getStringParam(params, 'relay_protocol') ?? '';
  for (const s of specs) {
    if (s.flags & PARAM_NOT_LOGGED || neverLogged(s.name)) continue;
    if (
      s.flags & PARAM_LOG_ONLY_FOR_FRONTED_MEEK_OR_CONJURE &&
      !tunnelProtocolUsesFrontedMeek(relayProtocol) &&
      !tunnelProtocolUsesRefractionNetworking(relayProtocol)
    ) {
      continue;
    }
    if (
      s.flags & PARAM_NOT_LOGGED_FOR_UNFRONTED_MEEK_NON_TRANSFORMED_HEADER &&
      tunnelProtocolUsesMeek(relayProtocol) &&
      !tunnelProtocolUsesFrontedMeek(relayProtocol) &&
      (tunnelProtocolUsesMeekHTTPS(relayProtocol) ||
        getStringParam(params, 'meek_transformed_host_name') !== '1')
    ) {
      continue;
    }
    let value = ownValue(params, s.name);
    if (isAbsent(value)) {
      if (s.flags & PARAM_LOG_FLAG_AS_BOOL && s.flags & PARAM_LOG_OMITTED_FLAG_AS_FALSE) value = '0';
      else continue;
    }
    if (Array.isArray(value)) {
      if (value.every((v) => typeof v === 'string')) fields[s.name] = (value as string[]).map(redactString);
      continue;
    }
    if (typeof value !== 'string') continue;
    if (s.name === 'meek_dial_address') {
      const host = value.split(':')[0] ?? '';
      if (!isIpAddress(host)) fields['meek_dial_domain'] = host;
    } else if (s.name === 'upstream_proxy_type') {
      fields[s.name] = value.toLowerCase();
    } else if (s.name === 'tunnel_error') {
      const i = value.indexOf(LEGACY_PROXY_URL_ERROR);
      const text = i === -1 ? value : value.slice(0, i + LEGACY_PROXY_URL_ERROR.length) + '<redacted>';
      fields[s.name] = redactString(text);
    } else if (HOUR_TRUNCATED_PARAMS.has(s.name)) {
      const hour = isoDateToHour(value);
      if (hour !== undefined) fields[s.name] = hour;
    } else if (s.flags & PARAM_LOG_STRING_AS_INT) {
      // Go's Atoi result (0 on error) as a JSON number; beyond 2^53 precision is lost, as in a float64 log.
      fields[s.name] = Number(goAtoi(value) ?? 0n);
    } else if (s.flags & PARAM_LOG_STRING_AS_FLOAT) {
      fields[s.name] = goParseFloat(value) ?? 0;
    } else if (s.flags & PARAM_LOG_STRING_LENGTH_AS_INT) {
      fields[s.name] = Buffer.byteLength(value, 'utf8');
    } else if (s.flags & PARAM_LOG_FLAG_AS_BOOL) {
      fields[s.name] = value === '1';
    } else {
      // Front, SNI and host names may be IP literals, and other text may hold one: none reaches a log.
      fields[s.name] = redactString(value);
    }
  }
  return fields;
}
