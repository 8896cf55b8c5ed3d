// The usage-statistics event schema, version 1: what a tunnel server may write to its spool and what the back
// office accepts. One definition serves both ends, and the data inventory (src/privacy/inventory.ts) declares
// every field named here. Events carry the hour, the server, the sponsor and channel, the client's version and
// simplified platform, the protocol and GeoIP results; never an address, a URL, a path or a device identifier.
// The back office refuses any event that does not match exactly (unknown field, wrong type, over a bound).
import { z } from 'zod';
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

const HOUR_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:00:00(?:\.000)?Z$/;
const ID_PATTERN = /^[A-Za-z0-9._-]+$/;
const PROTOCOL_PATTERN = /^[A-Za-z0-9._-]+$/;
const REGION_PATTERN = /^(?:[A-Z]{2}|None)$/;
const ASN_PATTERN = /^(?:\d{1,10}|None)$/;
const DOMAIN_PATTERN = /^(?:\(OTHER\)|[A-Za-z0-9*_](?:[A-Za-z0-9._*-]{0,253}[A-Za-z0-9*_])?)$/;

/** Text that must not hold an address: refused when it looks like one (a second line behind the server). */
const safeText = (max: number): z.ZodString =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !containsIpAddress(s), 'looks like an IP address');

const hour = z.string().regex(HOUR_PATTERN, 'must be an hour: YYYY-MM-DDTHH:00:00Z');
const id = z.string().min(1).max(MAX_ID_LENGTH).regex(ID_PATTERN);
const counter = z.number().int().min(0).max(MAX_COUNTER);

const common = {
  event_name: z.string(),
  schema_version: z.literal(EVENT_SCHEMA_VERSION),
  timestamp: hour,
  host_id: id,
};

const geo = {
  client_region: z.string().regex(REGION_PATTERN),
  client_city: safeText(MAX_GEO_TEXT_LENGTH),
  client_isp: safeText(MAX_GEO_TEXT_LENGTH),
  client_asn: z.string().regex(ASN_PATTERN),
  client_aso: safeText(MAX_GEO_TEXT_LENGTH),
};

/** The fields every event about a client's tunnel carries (null where the client never said). */
const tunnelBase = {
  ...common,
  sponsor_id: id.nullable(),
  propagation_channel_id: id.nullable(),
  client_version: id.nullable(),
  client_platform: z.enum(CLIENT_PLATFORMS).nullable(),
  relay_protocol: z.string().min(1).max(MAX_ID_LENGTH).regex(PROTOCOL_PATTERN).nullable(),
  ...geo,
};

export const EVENT_SCHEMAS = {
  server_tunnel: z.strictObject({
    ...tunnelBase,
    event_name: z.literal('server_tunnel'),
    session_id: z
      .string()
      .regex(/^[0-9a-fA-F]{1,64}$/)
      .nullable(),
    handshake_completed: z.boolean(),
    start_time: hour,
    duration_ms: counter,
    bytes_up_tcp: counter,
    bytes_down_tcp: counter,
    bytes: counter,
    port_forwards: counter,
    port_forwards_refused: counter,
    peak_concurrent_port_forwards: counter,
  }),
  unique_user: z.strictObject({ ...tunnelBase, event_name: z.literal('unique_user') }),
  failed_tunnel: z.strictObject({
    ...tunnelBase,
    event_name: z.literal('failed_tunnel'),
    tunnel_error: z.enum(TUNNEL_ERROR_CODES),
  }),
  domain_dest_bytes: z.strictObject({
    ...common,
    event_name: z.literal('domain_dest_bytes'),
    sponsor_id: id.nullable(),
    client_platform: z.enum(CLIENT_PLATFORMS).nullable(),
    client_region: geo.client_region,
    client_asn: geo.client_asn,
    domain: safeText(MAX_DOMAIN_LENGTH).regex(DOMAIN_PATTERN),
    bytes: counter,
  }),
  remote_server_list: z.strictObject({
    ...tunnelBase,
    event_name: z.literal('remote_server_list'),
    tunneled: z.boolean().nullable(),
    authenticated: z.boolean().nullable(),
    bytes: counter.nullable(),
    duration_ms: counter.nullable(),
  }),
  discovery: z.strictObject({
    ...tunnelBase,
    event_name: z.literal('discovery'),
    discovered_servers: counter,
  }),
  upgrade: z.strictObject({
    ...tunnelBase,
    event_name: z.literal('upgrade'),
    upgrade_version: id,
  }),
  server_load: z.strictObject({
    ...common,
    event_name: z.literal('server_load'),
    established_tunnels: counter,
    open_port_forwards: counter,
    bytes_since_last: counter,
    rss_bytes: counter,
  }),
  irregular_tunnel: z.strictObject({
    ...common,
    ...geo,
    event_name: z.literal('irregular_tunnel'),
    listener_protocol: z.string().min(1).max(MAX_ID_LENGTH).regex(PROTOCOL_PATTERN),
    tunnel_error: z
      .string()
      .min(1)
      .max(MAX_ERROR_CODE_LENGTH)
      .regex(/^[a-z0-9 _.-]+$/),
    duplicate_seed: z.boolean(),
  }),
} as const satisfies Record<EventName, z.ZodType>;

export type StatsEvent = { [K in EventName]: z.infer<(typeof EVENT_SCHEMAS)[K]> }[EventName];
export type StatsEventOf<K extends EventName> = z.infer<(typeof EVENT_SCHEMAS)[K]>;

export function isEventName(name: unknown): name is EventName {
  return typeof name === 'string' && (EVENT_NAMES as readonly string[]).includes(name);
}

/**
 * Checks one event against the schema. Throws BAD_EVENT naming the first problem (field and rule, never the
 * offending value, which might be the very thing that must not be logged).
 */
export function parseEvent(value: unknown): StatsEvent {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new PosternError('BAD_EVENT', 'an event must be a JSON object');
  }
  const name = (value as { event_name?: unknown }).event_name;
  if (!isEventName(name)) throw new PosternError('BAD_EVENT', 'unknown or missing event_name');
  const r = EVENT_SCHEMAS[name].safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const where = issue.path.length > 0 ? issue.path.join('.') : '(event)';
    const what =
      issue.code === 'unrecognized_keys' ? `undeclared field(s) ${issue.keys.join(', ')}` : issue.message;
    throw new PosternError('BAD_EVENT', `${name}: ${where}: ${what}`);
  }
  return r.data as StatsEvent;
}

/** The field names an event of this kind may carry (for the data inventory's check). */
export function eventFieldNames(name: EventName): string[] {
  return Object.keys(EVENT_SCHEMAS[name].shape);
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
