// The tunnel server's answers to the client's API requests (SSH global requests after authentication):
// handshake, connected, status, client-verification and the keep-alive speed test, as psiphond answers them.
// Pure logic: the SSH server hands each request's name and payload to `handle` with the connection's
// ApiSession and sends back the returned payload (or a failure reply for null).
//
// Privacy: a session holds GeoIP results (looked up once, elsewhere), never the client's IP. Events go out
// through callbacks with parameters filtered by apiLogFields (no IPs, no device location, no cross-session
// identifiers, client timestamps cut to the hour); the client's address is not echoed back in the handshake
// response either. Bytes-per-domain reports are kept only for names the sponsor's regexes can produce.
import { randomInt } from 'node:crypto';
import type { Clock } from '../common/clock.ts';
import { PosternError, describeError } from '../common/errors.ts';
import {
  API_VALUE_NONE,
  BASE_DIAL_PARAMS,
  CONNECTED_REQUEST_PARAMS,
  FAILED_TUNNEL_STAT_PARAMS,
  HANDSHAKE_REQUEST_PARAMS,
  MAX_API_PARAMS_SIZE,
  OTHER_HOST_STATS_NAME,
  PSIPHON_API_CLIENT_VERIFICATION_REQUEST_NAME,
  PSIPHON_API_CONNECTED_REQUEST_NAME,
  PSIPHON_API_HANDSHAKE_AUTHORIZATIONS,
  PSIPHON_API_HANDSHAKE_REQUEST_NAME,
  PSIPHON_API_STATUS_REQUEST_NAME,
  REMOTE_SERVER_LIST_STAT_BACKWARDS_COMPATIBILITY_PARAM_NAMES,
  REMOTE_SERVER_LIST_STAT_PARAMS,
  SSH_KEEP_ALIVE_PAYLOAD_MAX_BYTES,
  SSH_KEEP_ALIVE_PAYLOAD_MIN_BYTES,
  SSH_KEEP_ALIVE_REQUEST_NAME,
  STATUS_REQUEST_PARAMS,
  UNIQUE_USER_PARAMS,
  apiLogFields,
  decodeApiParams,
  encodeConnectedResponse,
  encodeHandshakeResponse,
  encodeSpeedTestResponse,
  encodeStatusResponse,
  formatTimestampRfc3339,
  getPaddingSizeParam,
  getStringArrayParam,
  getStringParam,
  goAtoi,
  isMobileClientPlatform,
  normalizeClientPlatform,
  truncateToHour,
  validateApiParams,
  wantsCborResponse,
  compileDomainRegexes,
  parseGoTemplate,
  statsNameForHost,
  type ApiLogFields,
  type ApiParamSpec,
  type DomainRegex,
  type ApiParams,
  type HandshakeResponse,
} from '../protocol/api.ts';
import {
  verifyAuthorization,
  parseGoRfc3339,
  type AuthorizationVerificationKeyRing,
} from '../protocol/authorization.ts';
import { goJsonMarshal, type JsonValue } from '../protocol/go-json.ts';
import { DEFAULT_REGION_KEY, type Psinet, type PsinetSponsor } from '../protocol/psinet.ts';
import { tunnelProtocolUsesInproxy } from '../protocol/tunnel-protocols.ts';

/** Authorizations looked at per handshake (the reference's MAX_AUTHORIZATIONS): bounds signature checks. */
export const MAX_AUTHORIZATIONS = 16;
/** Persistent-stat records (remote server list, failed tunnel) passed on per tunnel; the rest are dropped. */
export const PERSISTENT_STATS_MAX_LOGS_PER_TUNNEL = 1024;
/** Domain names taken from one status request; more are dropped. */
export const MAX_HOST_BYTES_ENTRIES = 1000;
/** Longest domain name accepted in a bytes-per-domain report. */
export const MAX_HOST_BYTES_NAME_LENGTH = 255;
/** Server entry tags checked for pruning per status request. */
export const MAX_CHECK_SERVER_ENTRY_TAGS = 10_000;

/** GeoIP results for the client's address, looked up once per connection ("None" when unknown). */
export interface ApiGeoInfo {
  region: string;
  city: string;
  isp: string;
  asn: string;
}

/** What the handshake established; read by later requests and by the rest of the server. */
export interface ApiHandshakeState {
  readonly completedAt: Date;
  readonly sponsorId: string;
  readonly propagationChannelId: string;
  readonly clientVersion: string;
  readonly clientPlatform: string;
  readonly normalizedClientPlatform: string;
  readonly deviceRegion: string;
  readonly relayProtocol: string;
  readonly establishedTunnelsCount: number;
  readonly splitTunnelOwnRegion: boolean;
  readonly splitTunnelRegions: readonly string[];
  /** the sponsor's regexes sent to the client; bytes-per-domain reports are judged against them */
  readonly domainRegexes: readonly DomainRegex[];
  readonly activeAuthorizationIds: readonly string[];
  readonly authorizedAccessTypes: readonly string[];
  /** when the soonest-expiring active authorization ends (the server disconnects then) */
  readonly authorizationsExpireAt: Date | undefined;
  /** the handshake's base and dial parameters, filtered for logging (for the tunnel's closing event) */
  readonly logFields: ApiLogFields;
}

/** One tunnel's API state. Created when the SSH password is accepted; lives in memory only. */
export interface ApiSession {
  /** from the SSH password payload */
  readonly sessionId: string;
  /** from the SSH password payload */
  readonly sponsorId: string;
  readonly geo: ApiGeoInfo;
  readonly tunnelProtocol: string;
  handshake: ApiHandshakeState | undefined;
  lastConnectedRequestTime: Date | undefined;
  lastConnectedTimestamp: string | undefined;
  persistentStatsLogCount: number;
  /** set when a request failed in a way after which the reference server closes the tunnel */
  mustDisconnect: boolean;
}

export function createApiSession(init: {
  sessionId: string;
  sponsorId: string;
  geo: ApiGeoInfo;
  tunnelProtocol: string;
}): ApiSession {
  return {
    sessionId: init.sessionId,
    sponsorId: init.sponsorId,
    geo: { ...init.geo },
    tunnelProtocol: init.tunnelProtocol,
    handshake: undefined,
    lastConnectedRequestTime: undefined,
    lastConnectedTimestamp: undefined,
    persistentStatsLogCount: 0,
    mustDisconnect: false,
  };
}

export interface HandshakeEvent {
  logFields: ApiLogFields;
  authorizedAccessTypes: readonly string[];
}

export interface ConnectedEvent {
  /** false for a second connected request on the same UTC day: nothing new is counted */
  accepted: boolean;
  /** the client was not seen earlier on this UTC day (decided from its hour-truncated last_connected) */
  uniqueUser: boolean;
  /** the hour-truncated timestamp returned to the client */
  connectedTimestamp: string;
  /** filtered base parameters for the unique_user event (empty unless uniqueUser) */
  uniqueUserFields: ApiLogFields;
  /** fields that only the connected request carries (establishment duration, fragmentor metrics) */
  updatedFields: ApiLogFields;
}

export interface StatusReport {
  /** bytes per domain name, for names the sponsor's regexes can produce (or "(OTHER)") */
  hostBytes: Record<string, number>;
  /** entries of host_bytes left out: unknown names, negative or absurd counts, over the cap */
  droppedHostBytesEntries: number;
  remoteServerListStats: ApiLogFields[];
  failedTunnelStats: ApiLogFields[];
  /** persistent-stat records that failed validation or went over the per-tunnel cap */
  droppedPersistentStats: number;
  checkedServerEntryTags: number;
  invalidServerEntryTags: number;
}

export interface ApiHandlerDeps {
  /** the current psinet database (may be reloaded between calls) */
  psinet: () => Psinet;
  clock: Clock;
  /** this server's own signed entries by tag, returned to clients that hold an unsigned copy */
  ownEncodedServerEntries?: () => ReadonlyMap<string, string>;
  /** authorization verification keys; no ring means no authorization is honoured */
  authorizationKeys?: () => AuthorizationVerificationKeyRing | undefined;
  /** discovery: hex server entries to hand this client (empty when absent) */
  discoverServers?: (session: ApiSession) => readonly string[];
  /** traffic-rule rates to announce (0 or absent: unlimited) */
  trafficRates?: (
    session: ApiSession,
    handshake: ApiHandshakeState,
  ) => { upstreamBytesPerSecond: number; downstreamBytesPerSecond: number } | undefined;
  onHandshake?: (session: ApiSession, event: HandshakeEvent) => void;
  onConnected?: (session: ApiSession, event: ConnectedEvent) => void;
  onStatus?: (session: ApiSession, report: StatusReport) => void;
  /** a request was refused (reply false); for rate-limited logging */
  onRequestFailed?: (session: ApiSession, requestName: string, error: PosternError) => void;
}

export interface ApiHandler {
  /** The reply payload for a global request, or null to reply with failure. Never throws. */
  handle(session: ApiSession, name: string, payload: Uint8Array): Buffer | null;
}

function refuse(message: string): never {
  throw new PosternError('REFUSED', message);
}

/** Go's url.QueryEscape: everything but A-Z a-z 0-9 - _ . ~ percent-encoded, space as '+'. */
function goQueryEscape(s: string): string {
  return encodeURIComponent(s)
    .replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
    .replace(/%20/g, '+');
}

/** psiphond's homepageQueryParameterSubstitution: fills `…=XX` placeholders, first occurrence of each. */
export function substituteHomepageParameters(
  url: string,
  clientRegion: string,
  clientAsn: string,
  deviceRegion: string,
  normalizedClientPlatform: string,
): string {
  const replaceOnce = (s: string, placeholder: string, value: string): string =>
    s.replace(`${placeholder}=XX`, () => `${placeholder}=${goQueryEscape(value)}`);
  let out = replaceOnce(url, 'client_region', clientRegion);
  out = replaceOnce(out, 'client_asn', clientAsn);
  out = replaceOnce(out, 'device_region', deviceRegion);
  return replaceOnce(out, 'client_platform', normalizedClientPlatform.toLowerCase());
}

function sponsorFor(db: Psinet, sponsorId: string): PsinetSponsor | undefined {
  if (Object.hasOwn(db.sponsors, sponsorId)) return db.sponsors[sponsorId];
  if (Object.hasOwn(db.sponsors, db.default_sponsor_id)) return db.sponsors[db.default_sponsor_id];
  return undefined;
}

/** psiphond's GetHomepages: the region's pages, else the "None" pages; mobile pages for mobile platforms. */
export function homepagesFor(
  db: Psinet,
  sponsorId: string,
  geo: ApiGeoInfo,
  deviceRegion: string,
  clientPlatform: string,
): string[] {
  const sponsor = sponsorFor(db, sponsorId);
  if (sponsor === undefined) return [];
  const normalized = normalizeClientPlatform(clientPlatform);
  let pages = sponsor.home_pages;
  if (isMobileClientPlatform(clientPlatform) && Object.keys(sponsor.mobile_home_pages).length > 0) {
    pages = sponsor.mobile_home_pages;
  }
  const substitute = (url: string): string =>
    substituteHomepageParameters(url, geo.region, geo.asn, deviceRegion, normalized);
  const forRegion = Object.hasOwn(pages, geo.region) ? (pages[geo.region] ?? []) : [];
  let out = forRegion.map((p) => substitute(p.url));
  if (out.length === 0 && Object.hasOwn(pages, DEFAULT_REGION_KEY)) {
    out = (pages[DEFAULT_REGION_KEY] ?? []).map((p) => substitute(p.url));
  }
  return out;
}

function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** psiphond's GetUpgradeClientVersion: the platform's last listed version when it is newer. */
export function upgradeClientVersionFor(
  db: Psinet,
  clientVersion: string,
  normalizedPlatform: string,
): string {
  if (!Object.hasOwn(db.client_versions, normalizedPlatform)) return '';
  const versions = db.client_versions[normalizedPlatform] ?? [];
  const last = versions[versions.length - 1]?.version;
  if (last === undefined) return '';
  const lastN = goAtoi(last);
  const clientN = goAtoi(clientVersion);
  if (lastN === undefined || clientN === undefined) return '';
  return lastN > clientN ? last : '';
}

function domainRegexesFor(db: Psinet, sponsorId: string): DomainRegex[] {
  const sponsor = sponsorFor(db, sponsorId);
  return (sponsor?.https_request_regexes ?? []).map((r) => ({ regex: r.regex, replace: r.replace }));
}

function regexesKey(regexes: readonly DomainRegex[]): string {
  return goJsonMarshal(regexes.map((r) => ({ regex: r.regex, replace: r.replace })));
}

// Characters a capture group of a host name can hold; a reported name built from them has no path or space.
const HOST_CHARS = '[A-Za-z0-9._-]*';

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/**
 * A pattern matching every name Go's Regexp.Expand can make from `template` (a sponsor's replace string)
 * when each group reference holds host-name characters.
 */
export function replaceTemplatePattern(template: string): RegExp {
  const pattern = parseGoTemplate(template)
    .map((p) => ('literal' in p ? escapeRegExp(p.literal) : HOST_CHARS))
    .join('');
  return new RegExp(`^${pattern}$`);
}

/**
 * Which reported names to keep: "(OTHER)"; a sponsor's fixed replacement; a name the client's own mapping
 * leaves as it is (the usual `^(?:.*\.)?(example\.com)$` → `$1` form); or, for a template that mixes text and
 * groups, a name of that shape. Anything else (a name no regex of this sponsor can produce) is dropped.
 */
export function domainNameMatcher(regexes: readonly DomainRegex[]): (name: string) => boolean {
  const usable = regexes.filter((r) => r.regex !== '' && r.replace !== '');
  const compiled = compileDomainRegexes(usable);
  const literals = new Set<string>();
  const shapes: RegExp[] = [];
  for (const r of usable) {
    const parts = parseGoTemplate(r.replace);
    const hasGroup = parts.some((p) => 'group' in p);
    const hasText = parts.some((p) => 'literal' in p);
    if (!hasGroup) literals.add(parts.map((p) => ('literal' in p ? p.literal : '')).join(''));
    else if (hasText) shapes.push(replaceTemplatePattern(r.replace));
  }
  return (name) =>
    name.length > 0 &&
    name.length <= MAX_HOST_BYTES_NAME_LENGTH &&
    (name === OTHER_HOST_STATS_NAME ||
      literals.has(name) ||
      shapes.some((p) => p.test(name)) ||
      (/^[A-Za-z0-9._-]+$/.test(name) && statsNameForHost(name, compiled) === name));
}

function utcDay(d: Date): number {
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

const DAY_MS = 86_400_000;

/** Decides unique_user as psiphond does from last_connected ("None", or an RFC 3339 time, local date compared). */
function isUniqueUser(lastConnected: string, connectedTime: Date): boolean {
  if (lastConnected === API_VALUE_NONE) return true;
  const connectedNs = BigInt(connectedTime.getTime()) * 1_000_000n;
  const nanos = parseGoRfc3339(lastConnected);
  // An unparsable value is Go's zero time: before now and on another day.
  if (nanos === undefined) return true;
  const m = /([+-])(\d{2}):(\d{2})$/.exec(lastConnected);
  const offsetMs = m === null ? 0 : (Number(m[2]) * 60 + Number(m[3])) * 60_000 * (m[1] === '-' ? -1 : 1);
  // Go compares the calendar date in the timestamp's own offset.
  const localMs = Number(nanos / 1_000_000n) + offsetMs;
  const lastDay = Math.floor(localMs / DAY_MS);
  const connectedDay = Math.floor(connectedTime.getTime() / DAY_MS);
  return nanos < connectedNs && lastDay !== connectedDay;
}

const UPDATE_ON_CONNECTED_NAMES = new Set([
  'establishment_duration',
  'light_proxy_entry_tracker',
  'light_proxy_dial_IPv4',
  'light_proxy_dial_IPv6',
  'light_proxy_dial_failed',
  'light_proxy_dial_canceled',
  'upstream_bytes_fragmented',
  'upstream_min_bytes_written',
  'upstream_max_bytes_written',
  'upstream_min_delayed',
  'upstream_max_delayed',
]);
const UPDATE_ON_CONNECTED_SPECS: readonly ApiParamSpec[] = [
  ...CONNECTED_REQUEST_PARAMS,
  ...BASE_DIAL_PARAMS,
].filter((s) => UPDATE_ON_CONNECTED_NAMES.has(s.name));

function validOnly(params: ApiParams, specs: readonly ApiParamSpec[]): ApiParams {
  const out: ApiParams = {};
  for (const s of specs) {
    const v = Object.hasOwn(params, s.name) ? params[s.name] : undefined;
    if (typeof v === 'string' && (s.validator === null || s.validator(v))) out[s.name] = v;
  }
  return out;
}

function isJsonObject(v: JsonValue | undefined): v is { [k: string]: JsonValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

export function createApiHandler(deps: ApiHandlerDeps): ApiHandler {
  function handshake(session: ApiSession, params: ApiParams): Buffer {
    if (tunnelProtocolUsesInproxy(session.tunnelProtocol)) refuse('in-proxy tunnels are not supported');
    validateApiParams(params, HANDSHAKE_REQUEST_PARAMS);
    if (session.handshake !== undefined) refuse('handshake already completed');

    const sponsorId = getStringParam(params, 'sponsor_id') ?? '';
    const clientVersion = getStringParam(params, 'client_version') ?? '';
    const clientPlatform = getStringParam(params, 'client_platform') ?? '';
    const normalizedPlatform = normalizeClientPlatform(clientPlatform);
    const established = goAtoi(getStringParam(params, 'established_tunnels_count') ?? '') ?? 0n;
    const authorizations = getStringArrayParam(params, PSIPHON_API_HANDSHAKE_AUTHORIZATIONS) ?? [];
    const deviceRegion = getStringParam(params, 'device_region') ?? API_VALUE_NONE;
    const db = deps.psinet();
    const domainRegexes = domainRegexesFor(db, sponsorId);
    const now = deps.clock.now();

    // Verified, active, one per access type; failures are simply not honoured, as in the reference.
    const activeAuthorizationIds: string[] = [];
    const authorizedAccessTypes: string[] = [];
    let authorizationsExpireAt: Date | undefined;
    const ring = deps.authorizationKeys?.();
    if (ring !== undefined) {
      for (const encoded of authorizations.slice(0, MAX_AUTHORIZATIONS)) {
        let verified;
        try {
          verified = verifyAuthorization(encoded, ring, now);
        } catch {
          continue;
        }
        if (authorizedAccessTypes.includes(verified.accessType)) continue;
        activeAuthorizationIds.push(verified.idBase64);
        authorizedAccessTypes.push(verified.accessType);
        if (authorizationsExpireAt === undefined || verified.expires < authorizationsExpireAt) {
          authorizationsExpireAt = verified.expires;
        }
      }
    }

    const state: ApiHandshakeState = {
      completedAt: now,
      sponsorId,
      propagationChannelId: getStringParam(params, 'propagation_channel_id') ?? '',
      clientVersion,
      clientPlatform,
      normalizedClientPlatform: normalizedPlatform,
      deviceRegion,
      relayProtocol: getStringParam(params, 'relay_protocol') ?? '',
      establishedTunnelsCount: Number(established),
      splitTunnelOwnRegion: getStringParam(params, 'split_tunnel') === '1',
      splitTunnelRegions: getStringArrayParam(params, 'split_tunnel_regions') ?? [],
      domainRegexes,
      activeAuthorizationIds,
      authorizedAccessTypes,
      authorizationsExpireAt,
      logFields: apiLogFields(params, HANDSHAKE_REQUEST_PARAMS),
    };
    session.handshake = state;
    deps.onHandshake?.(session, { logFields: state.logFields, authorizedAccessTypes });

    const encodedServerList = [...(deps.discoverServers?.(session) ?? [])];
    const ownTag =
      getStringParam(params, 'missing_server_entry_signature') ??
      getStringParam(params, 'missing_server_entry_provider_id');
    if (ownTag !== undefined) {
      const own = deps.ownEncodedServerEntries?.().get(ownTag);
      if (own !== undefined) encodedServerList.push(own);
    }
    const rates = deps.trafficRates?.(session, state);
    const response: HandshakeResponse = {
      homepages: shuffled(homepagesFor(db, sponsorId, session.geo, deviceRegion, clientPlatform)),
      upgradeClientVersion: upgradeClientVersionFor(db, clientVersion, normalizedPlatform),
      httpsRequestRegexes: domainRegexes.map((r) => ({ regex: r.regex, replace: r.replace })),
      encodedServerList,
      clientRegion: session.geo.region,
      serverTimestamp: formatTimestampRfc3339(now),
      activeAuthorizationIds,
      upstreamBytesPerSecond: rates?.upstreamBytesPerSecond ?? 0,
      downstreamBytesPerSecond: rates?.downstreamBytesPerSecond ?? 0,
      padding: ' '.repeat(getPaddingSizeParam(params)),
    };
    return encodeHandshakeResponse(response, wantsCborResponse(params) ? 'cbor' : 'json');
  }

  function connected(session: ApiSession, params: ApiParams): Buffer {
    validateApiParams(params, CONNECTED_REQUEST_PARAMS);
    const now = deps.clock.now();
    const connectedTime = truncateToHour(now);
    let connectedTimestamp = formatTimestampRfc3339(connectedTime);
    const padding = ' '.repeat(getPaddingSizeParam(params));

    // One counted connected request per tunnel per UTC day; repeats get the earlier answer.
    const last = session.lastConnectedRequestTime;
    if (last !== undefined && utcDay(now) <= utcDay(last)) {
      connectedTimestamp = session.lastConnectedTimestamp ?? connectedTimestamp;
      deps.onConnected?.(session, {
        accepted: false,
        uniqueUser: false,
        connectedTimestamp,
        uniqueUserFields: {},
        updatedFields: {},
      });
      return encodeConnectedResponse({ connectedTimestamp, padding });
    }
    session.lastConnectedRequestTime = now;
    session.lastConnectedTimestamp = connectedTimestamp;

    const uniqueUser = isUniqueUser(getStringParam(params, 'last_connected') ?? '', connectedTime);
    deps.onConnected?.(session, {
      accepted: true,
      uniqueUser,
      connectedTimestamp,
      uniqueUserFields: uniqueUser ? apiLogFields(params, UNIQUE_USER_PARAMS) : {},
      updatedFields: apiLogFields(validOnly(params, UPDATE_ON_CONNECTED_SPECS), UPDATE_ON_CONNECTED_SPECS),
    });
    return encodeConnectedResponse({ connectedTimestamp, padding });
  }

  function persistentStats(
    params: ApiParams,
    statusData: { [k: string]: JsonValue },
    field: string,
    specs: readonly ApiParamSpec[],
    backfill: readonly string[],
    onValid: (record: ApiParams, fields: ApiLogFields) => void,
  ): number {
    const list = Object.hasOwn(statusData, field) ? statusData[field] : undefined;
    if (list === undefined || list === null) return 0;
    if (!Array.isArray(list) || !list.every(isJsonObject)) refuse(`invalid param: ${field}`);
    let dropped = 0;
    for (const item of list) {
      const record: ApiParams = { ...item };
      for (const name of backfill) {
        if (!Object.hasOwn(record, name) && Object.hasOwn(params, name)) record[name] = params[name]!;
      }
      try {
        validateApiParams(record, specs);
      } catch {
        dropped++; // a corrupt record must not fail the request, or the client resends forever
        continue;
      }
      onValid(record, apiLogFields(record, specs));
    }
    return dropped;
  }

  function status(session: ApiSession, params: ApiParams): Buffer {
    validateApiParams(params, STATUS_REQUEST_PARAMS);
    const statusData = Object.hasOwn(params, 'statusData') ? params['statusData'] : undefined;
    if (statusData === undefined || statusData === null) refuse('missing param: statusData');
    if (!isJsonObject(statusData)) refuse('invalid param: statusData');
    const handshake = session.handshake!;
    const db = deps.psinet();

    // Nothing is reported until the whole request has been checked, so a bad request counts nothing twice.
    const report: StatusReport = {
      hostBytes: {},
      droppedHostBytesEntries: 0,
      remoteServerListStats: [],
      failedTunnelStats: [],
      droppedPersistentStats: 0,
      checkedServerEntryTags: 0,
      invalidServerEntryTags: 0,
    };

    const hostBytes = Object.hasOwn(statusData, 'host_bytes') ? statusData['host_bytes'] : undefined;
    if (hostBytes !== undefined && hostBytes !== null) {
      if (!isJsonObject(hostBytes)) refuse('invalid param: host_bytes');
      const entries = Object.entries(hostBytes);
      if (!entries.every(([, v]) => typeof v === 'number')) refuse('invalid param: host_bytes');
      // Accepted only when the sponsor's regexes are those the client got at handshake.
      const current = domainRegexesFor(db, handshake.sponsorId);
      const accept =
        handshake.domainRegexes.length > 0 && regexesKey(current) === regexesKey(handshake.domainRegexes);
      const allowed = domainNameMatcher(handshake.domainRegexes);
      for (const [index, [name, value]] of entries.entries()) {
        const bytes = Math.trunc(value as number);
        if (
          !accept ||
          index >= MAX_HOST_BYTES_ENTRIES ||
          !allowed(name) ||
          !(bytes >= 0) ||
          bytes > Number.MAX_SAFE_INTEGER
        ) {
          report.droppedHostBytesEntries++;
          continue;
        }
        const previous = Object.hasOwn(report.hostBytes, name) ? report.hostBytes[name]! : 0;
        setOwn(report.hostBytes, name, Math.min(Number.MAX_SAFE_INTEGER, previous + bytes));
      }
    }

    const invalidTags = new Set<string>();
    const validTags = db.valid_server_entry_tags;
    const checkTags = Object.keys(validTags).length > 0;
    const isValidTag = (tag: string): boolean =>
      !checkTags || (Object.hasOwn(validTags, tag) && validTags[tag] === true);

    report.droppedPersistentStats += persistentStats(
      params,
      statusData,
      'remote_server_list_stats',
      REMOTE_SERVER_LIST_STAT_PARAMS,
      REMOTE_SERVER_LIST_STAT_BACKWARDS_COMPATIBILITY_PARAM_NAMES,
      (_record, fields) => report.remoteServerListStats.push(fields),
    );
    report.droppedPersistentStats += persistentStats(
      params,
      statusData,
      'failed_tunnel_stats',
      FAILED_TUNNEL_STAT_PARAMS,
      [],
      (record, fields) => {
        const tag = getStringParam(record, 'server_entry_tag');
        if (tag !== undefined) {
          // A port of 0 marks a damaged entry on the client: have it pruned.
          const valid = isValidTag(tag) && getStringParam(record, 'dial_port_number') !== '0';
          if (!valid) invalidTags.add(tag);
          fields['server_entry_valid'] = valid;
        }
        report.failedTunnelStats.push(fields);
      },
    );

    const checkServerEntryTags = Object.hasOwn(statusData, 'check_server_entry_tags')
      ? statusData['check_server_entry_tags']
      : undefined;
    if (checkServerEntryTags !== undefined && checkServerEntryTags !== null) {
      if (!Array.isArray(checkServerEntryTags) || !checkServerEntryTags.every((t) => typeof t === 'string')) {
        refuse('invalid param: check_server_entry_tags');
      }
      const tags = (checkServerEntryTags as string[]).slice(0, MAX_CHECK_SERVER_ENTRY_TAGS);
      report.checkedServerEntryTags = tags.length;
      for (const tag of tags) {
        if (!isValidTag(tag)) {
          invalidTags.add(tag);
          report.invalidServerEntryTags++;
        }
      }
    }

    // Cap what one tunnel can push into the event log.
    const logged = report.remoteServerListStats.length + report.failedTunnelStats.length;
    const remaining = Math.max(0, PERSISTENT_STATS_MAX_LOGS_PER_TUNNEL - session.persistentStatsLogCount);
    if (logged > remaining) {
      report.droppedPersistentStats += logged - remaining;
      report.remoteServerListStats = report.remoteServerListStats.slice(0, remaining);
      report.failedTunnelStats = report.failedTunnelStats.slice(
        0,
        Math.max(0, remaining - report.remoteServerListStats.length),
      );
    }
    session.persistentStatsLogCount += logged;

    deps.onStatus?.(session, report);
    return encodeStatusResponse({
      invalidServerEntryTags: [...invalidTags],
      padding: ' '.repeat(getPaddingSizeParam(params)),
    });
  }

  function dispatch(session: ApiSession, name: string, payload: Uint8Array): Buffer {
    if (name === SSH_KEEP_ALIVE_REQUEST_NAME) {
      return encodeSpeedTestResponse(
        deps.clock.now(),
        randomInt(SSH_KEEP_ALIVE_PAYLOAD_MIN_BYTES, SSH_KEEP_ALIVE_PAYLOAD_MAX_BYTES + 1),
      );
    }
    // Every other request needs a completed handshake, and a handshake only goes once.
    if (name !== PSIPHON_API_HANDSHAKE_REQUEST_NAME && session.handshake === undefined) {
      refuse('handshake not completed');
    }
    if (name === PSIPHON_API_CLIENT_VERIFICATION_REQUEST_NAME) return Buffer.alloc(0);
    if (
      name !== PSIPHON_API_HANDSHAKE_REQUEST_NAME &&
      name !== PSIPHON_API_CONNECTED_REQUEST_NAME &&
      name !== PSIPHON_API_STATUS_REQUEST_NAME
    ) {
      refuse('unsupported request');
    }
    if (payload.length > MAX_API_PARAMS_SIZE) {
      throw new PosternError('TOO_LARGE', `API request is over ${MAX_API_PARAMS_SIZE} bytes`);
    }
    const params = decodeApiParams(payload);
    switch (name) {
      case PSIPHON_API_HANDSHAKE_REQUEST_NAME:
        return handshake(session, params);
      case PSIPHON_API_CONNECTED_REQUEST_NAME:
        return connected(session, params);
      default:
        return status(session, params);
    }
  }

  return {
    handle(session, name, payload) {
      try {
        return dispatch(session, name, payload);
      } catch (e) {
        const error =
          e instanceof PosternError
            ? e
            : new PosternError('BAD_API_REQUEST', `request failed: ${describeError(e)}`, { cause: e });
        // The reference closes a tunnel whose handshake failed: the client cannot use it.
        if (name === PSIPHON_API_HANDSHAKE_REQUEST_NAME) session.mustDisconnect = true;
        try {
          deps.onRequestFailed?.(session, name.slice(0, 64), error);
        } catch {
          // a failing observer must not turn a refusal into a crash
        }
        return null;
      }
    },
  };
}
