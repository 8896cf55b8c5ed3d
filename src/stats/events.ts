// The usage-statistics event schema, version 1: what a tunnel server may write to its spool and what the back
// office accepts. One definition serves both ends, and the data inventory (src/privacy/inventory.ts) declares
// every field named here. Events carry the hour, the server, the sponsor and channel, the client's version and
// simplified platform, the protocol and GeoIP results; never an address, a URL, a path or a device identifier.
// The back office refuses any event that does not match exactly (unknown field, wrong type, over a bound).
import { PosternError } from '../common/errors.ts';
import { containsIpAddress } from '../common/redact.ts';

/** Written into every event, so a back office can read spools written by older servers. */
export const EVENT_SCHEMA_VERSION = 1;

export const MAX_ID_LENGTH = 64;
export const MAX_GEO_TEXT_LENGTH = 128;
export const MAX_DOMAIN_LENGTH = 255;
export const MAX_ERROR_CODE_LENGTH = 64;
/** Counters above this are refused: no real tunnel moves 2^53 bytes, and JSON numbers stay exact below it. */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

/** Tunnel-server events. Back-office events (email requests, PsiCash, feedback) are added by those services. */
export const EVENT_NAMES = [
  'server_tunnel',
  'unique_user',
  'failed_tunnel',
  'domain_dest_bytes',
  'remote_server_list',
  'discovery',
  'upgrade',
  'server_load',
  'irregular_tunnel',
] as const;
export type EventName = (typeof EVENT_NAMES)[number];

/** The simplified platform list the policy promises (the reference's normalizeClientPlatform). */
export const CLIENT_PLATFORMS = ['Android', 'iOS', 'Windows', 'Other'] as const;

/**
 * Why a tunnel failed, as a short code. Free-text errors are never stored: they can hold addresses and names.
 * See `tunnelErrorCode` for the mapping.
 */
export const TUNNEL_ERROR_CODES = [
  'timeout',
  'refused',
  'reset',
  'unreachable',
  'obfuscation',
  'ssh-handshake',
  'ssh-auth',
  'api-handshake',
  'closed',
  'other',
] as const;
export type TunnelErrorCode = (typeof TUNNEL_ERROR_CODES)[number];

const HOUR_PATTERN = /^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):00:00(?:\.000)?Z$/;
const ID_PATTERN = /^[A-Za-z0-9._-]+$/;
const PROTOCOL_PATTERN = /^[A-Za-z0-9._-]+$/;
const REGION_PATTERN = /^(?:[A-Z]{2}|None)$/;
const ASN_PATTERN = /^(?:\d{1,10}|None)$/;
const SESSION_ID_PATTERN = /^[0-9a-fA-F]{1,64}$/;
const DOMAIN_PATTERN = /^(?:\(OTHER\)|[A-Za-z0-9*_](?:[A-Za-z0-9._*-]{0,253}[A-Za-z0-9*_])?)$/;
const IRREGULAR_ERROR_PATTERN = /^[a-z0-9 _.-]+$/;

// The schema is data, checked by one small loop: the back office validates every event it ingests, and a
// general-purpose validator cost more than the database insert.
type FieldSpec =
  | { readonly t: 'version' }
  | { readonly t: 'hour' }
  | {
      readonly t: 'text';
      readonly re: RegExp;
      readonly max: number;
      readonly null?: true;
      readonly noIp?: true;
    }
  | { readonly t: 'enum'; readonly values: readonly string[]; readonly null?: true }
  | { readonly t: 'counter'; readonly null?: true }
  | { readonly t: 'bool'; readonly null?: true };

type ValueOf<S> = S extends { t: 'version' }
  ? typeof EVENT_SCHEMA_VERSION
  : S extends { t: 'hour' }
    ? string
    : S extends { t: 'enum'; values: readonly (infer V)[] }
      ? V | (S extends { null: true } ? null : never)
      : S extends { t: 'counter' }
        ? number | (S extends { null: true } ? null : never)
        : S extends { t: 'bool' }
          ? boolean | (S extends { null: true } ? null : never)
          : string | (S extends { null: true } ? null : never);

const hour = { t: 'hour' } as const;
const id = { t: 'text', re: ID_PATTERN, max: MAX_ID_LENGTH } as const;
const idOrNull = { ...id, null: true } as const;
const counter = { t: 'counter' } as const;
const counterOrNull = { t: 'counter', null: true } as const;
const boolOrNull = { t: 'bool', null: true } as const;
const geoText = { t: 'text', re: /^[^\x00-\x1f]+$/, max: MAX_GEO_TEXT_LENGTH, noIp: true } as const;
const platform = { t: 'enum', values: CLIENT_PLATFORMS, null: true } as const;
const region = { t: 'text', re: REGION_PATTERN, max: 4 } as const;
const asn = { t: 'text', re: ASN_PATTERN, max: 10 } as const;
const protocol = { t: 'text', re: PROTOCOL_PATTERN, max: MAX_ID_LENGTH } as const;

const common = { schema_version: { t: 'version' }, timestamp: hour, host_id: id } as const;
const geo = {
  client_region: region,
  client_city: geoText,
  client_isp: geoText,
  client_asn: asn,
  client_aso: geoText,
} as const;
/** The fields every event about a client's tunnel carries (null where the client never said). */
const tunnelBase = {
  ...common,
  sponsor_id: idOrNull,
  propagation_channel_id: idOrNull,
  client_version: idOrNull,
  client_platform: platform,
  relay_protocol: { ...protocol, null: true },
  ...geo,
} as const;

const EVENT_FIELDS = {
  server_tunnel: {
    ...tunnelBase,
    session_id: { t: 'text', re: SESSION_ID_PATTERN, max: 64, null: true },
    handshake_completed: { t: 'bool' },
    start_time: hour,
    duration_ms: counter,
    bytes_up_tcp: counter,
    bytes_down_tcp: counter,
    bytes: counter,
    port_forwards: counter,
    port_forwards_refused: counter,
    peak_concurrent_port_forwards: counter,
  },
  unique_user: tunnelBase,
  failed_tunnel: { ...tunnelBase, tunnel_error: { t: 'enum', values: TUNNEL_ERROR_CODES } },
  domain_dest_bytes: {
    ...common,
    sponsor_id: idOrNull,
    client_platform: platform,
    client_region: region,
    client_asn: asn,
    domain: { t: 'text', re: DOMAIN_PATTERN, max: MAX_DOMAIN_LENGTH, noIp: true },
    bytes: counter,
  },
  remote_server_list: {
    ...tunnelBase,
    tunneled: boolOrNull,
    authenticated: boolOrNull,
    bytes: counterOrNull,
    duration_ms: counterOrNull,
  },
  discovery: { ...tunnelBase, discovered_servers: counter },
  upgrade: { ...tunnelBase, upgrade_version: id },
  server_load: {
    ...common,
    established_tunnels: counter,
    open_port_forwards: counter,
    bytes_since_last: counter,
    rss_bytes: counter,
  },
  irregular_tunnel: {
    ...common,
    ...geo,
    listener_protocol: protocol,
    tunnel_error: { t: 'text', re: IRREGULAR_ERROR_PATTERN, max: MAX_ERROR_CODE_LENGTH },
    duplicate_seed: { t: 'bool' },
  },
} as const satisfies Record<EventName, Record<string, FieldSpec>>;

export type StatsEventOf<K extends EventName> = { event_name: K } & {
  -readonly [F in keyof (typeof EVENT_FIELDS)[K]]: ValueOf<(typeof EVENT_FIELDS)[K][F]>;
};
export type StatsEvent = { [K in EventName]: StatsEventOf<K> }[EventName];

const FIELD_TABLES: Record<string, Readonly<Record<string, FieldSpec>>> = EVENT_FIELDS;
const FIELD_COUNTS: Record<string, number> = Object.fromEntries(
  Object.entries(EVENT_FIELDS).map(([k, v]) => [k, Object.keys(v).length]),
);

export function isEventName(name: unknown): name is EventName {
  return typeof name === 'string' && Object.hasOwn(FIELD_TABLES, name);
}

/** Cheap test first: an address needs a digit or a colon. */
function mayHoldIp(s: string): boolean {
  return /[\d:]/.test(s) && containsIpAddress(s);
}

/** Why the value breaks the rule, or '' when it keeps it. Never the value itself. */
function check(spec: FieldSpec, v: unknown): string {
  if (v === null) return 'null' in spec && spec.null ? '' : 'must not be null';
  switch (spec.t) {
    case 'version':
      return v === EVENT_SCHEMA_VERSION ? '' : `must be ${EVENT_SCHEMA_VERSION}`;
    case 'hour':
      return typeof v === 'string' && HOUR_PATTERN.test(v) ? '' : 'must be an hour: YYYY-MM-DDTHH:00:00Z';
    case 'counter':
      return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= MAX_COUNTER
        ? ''
        : 'must be a whole number from 0 to 2^53-1';
    case 'bool':
      return typeof v === 'boolean' ? '' : 'must be true or false';
    case 'enum':
      return typeof v === 'string' && spec.values.includes(v)
        ? ''
        : `must be one of ${spec.values.join(', ')}`;
    case 'text':
      if (typeof v !== 'string' || v.length === 0 || v.length > spec.max) {
        return `must be text of 1 to ${spec.max} characters`;
      }
      if (!spec.re.test(v)) return 'has characters or a form not allowed here';
      if (spec.noIp && mayHoldIp(v)) return 'looks like an IP address';
      return '';
  }
}

/**
 * Checks one event against the schema: every declared field present, nothing undeclared, each value of its
 * kind. Throws BAD_EVENT naming the first problem (field and rule, never the offending value, which might be
 * the very thing that must not be logged).
 */
export function parseEvent(value: unknown): StatsEvent {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new PosternError('BAD_EVENT', 'an event must be a JSON object');
  }
  const obj = value as Record<string, unknown>;
  const name = obj['event_name'];
  if (!isEventName(name)) throw new PosternError('BAD_EVENT', 'unknown or missing event_name');
  const fields = FIELD_TABLES[name]!;
  let seen = 0;
  const undeclared: string[] = [];
  for (const key of Object.keys(obj)) {
    if (key === 'event_name') continue;
    const spec = Object.hasOwn(fields, key) ? fields[key] : undefined;
    if (spec === undefined) {
      // Names are echoed only when they look like field names: a hostile key could be an address or a URL.
      if (undeclared.length < 5)
        undeclared.push(/^[a-z_][a-z0-9_]{0,63}$/.test(key) ? key : '(an unusual name)');
      continue;
    }
    seen++;
    const why = check(spec, obj[key]);
    if (why !== '') throw new PosternError('BAD_EVENT', `${name}: ${key}: ${why}`);
  }
  if (undeclared.length > 0) {
    throw new PosternError('BAD_EVENT', `${name}: undeclared field(s) ${undeclared.join(', ')}`);
  }
  if (seen !== FIELD_COUNTS[name]) {
    const missing = Object.keys(fields).filter((f) => !Object.hasOwn(obj, f));
    throw new PosternError('BAD_EVENT', `${name}: missing field(s) ${missing.join(', ')}`);
  }
  return value as StatsEvent;
}

/** The field names an event of this kind may carry (for the data inventory's check). */
export function eventFieldNames(name: EventName): string[] {
  return ['event_name', ...Object.keys(FIELD_TABLES[name]!)];
}

/** Truncates to the hour, as every event time is. */
export function hourOf(d: Date): string {
  const t = new Date(d.getTime());
  t.setUTCMinutes(0, 0, 0);
  return t.toISOString();
}

/** The UTC date (YYYY-MM-DD) of an event's hour. */
export function dateOfHour(hourTimestamp: string): string {
  return hourTimestamp.slice(0, 10);
}

/**
 * Reduces an error (a client's failed-tunnel report, or our own) to a code. The text itself is never kept: it
 * can name the server's address, a resolver, or a file path.
 */
export function tunnelErrorCode(text: string): TunnelErrorCode {
  const t = text.toLowerCase();
  if (/timed? ?out|timeout|deadline/.test(t)) return 'timeout';
  if (/refused/.test(t)) return 'refused';
  if (/reset|broken pipe|econnreset|epipe/.test(t)) return 'reset';
  if (/unreachable|no route|enetunreach|ehostunreach/.test(t)) return 'unreachable';
  if (/obfuscat|magic|seed/.test(t)) return 'obfuscation';
  if (/auth|password/.test(t)) return 'ssh-auth';
  if (/ssh|kex|handshake failed|host key/.test(t)) return 'ssh-handshake';
  if (/api|psiphon-handshake|handshake/.test(t)) return 'api-handshake';
  if (/closed|eof|shut ?down/.test(t)) return 'closed';
  return 'other';
}
