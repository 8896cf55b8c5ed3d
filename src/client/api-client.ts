// The client side of the tunnel API: builds the handshake, connected and status requests as the reference
// client builds them (same parameters, same encodings, packed CBOR by default, a CBOR handshake response asked
// for), parses the server's answers into typed results, and answers the requests a server may send the client.
// Pure logic: the tunnel sends `{name, payload}` as an SSH global request and passes the reply back here.
//
// Privacy: the client sends what the reference sends for a tunnel, minus what Postern has no use for (no device
// location, no tactics history); timestamps it reports are cut to the hour.
import { randomBytes, randomInt } from 'node:crypto';
import { PosternError, describeError } from '../common/errors.ts';
import {
  HANDSHAKE_REQUEST_PARAMS,
  CONNECTED_REQUEST_PARAMS,
  STATUS_REQUEST_PARAMS,
  PSIPHON_API_ALERT_REQUEST_NAME,
  PSIPHON_API_CLIENT_SESSION_ID_LENGTH,
  PSIPHON_API_CONNECTED_REQUEST_NAME,
  PSIPHON_API_HANDSHAKE_AUTHORIZATIONS,
  PSIPHON_API_HANDSHAKE_REQUEST_NAME,
  PSIPHON_API_RESPONSE_V1,
  PSIPHON_API_RESPONSE_VERSION_FIELD_NAME,
  PSIPHON_API_STATUS_REQUEST_NAME,
  API_VALUE_NONE,
  decodeAlertRequest,
  decodeConnectedResponse,
  decodeHandshakeResponse,
  decodeStatusResponse,
  encodeApiParams,
  truncateTimestampToHour,
  validateApiParams,
  type AlertRequest,
  type ApiEncoding,
  type ApiParamSpec,
  type ApiParams,
  type DomainRegex,
} from '../protocol/api.ts';
import { decodeAuthorization } from '../protocol/authorization.ts';
import { isRegionCode } from '../protocol/api-params.ts';
import type { JsonObject, JsonValue } from '../protocol/go-json.ts';

/** The reference's default APIRequest{Upstream,Downstream}Padding{Min,Max}Bytes. */
export const DEFAULT_API_PADDING_MIN_BYTES = 0;
export const DEFAULT_API_PADDING_MAX_BYTES = 1024;

/** A fresh client session ID: 16 random bytes, lower-case hex (the reference's MakeSessionId). */
export function makeSessionId(): string {
  return randomBytes(PSIPHON_API_CLIENT_SESSION_ID_LENGTH).toString('hex');
}

export interface PaddingRange {
  min: number;
  max: number;
}

export interface ApiClientOptions {
  /** hex */
  propagationChannelId: string;
  /** 16 hex digits */
  sponsorId: string;
  /** decimal digits */
  clientVersion: string;
  /** no white space; "Android…", "iOS…", "Windows…" get platform-specific home pages and upgrades */
  clientPlatform: string;
  clientFeatures?: readonly string[];
  /** hex */
  clientBuildRev?: string;
  /** the device's own region setting (two letters), if the platform tells */
  deviceRegion?: string;
  /** the exit region the user chose (two upper-case letters) */
  egressRegion?: string;
  networkType?: string;
  /** request encoding; the reference client's default is packed CBOR */
  encoding?: ApiEncoding;
  /** ask for the CBOR handshake response (response version 1), as the reference client does by default */
  cborHandshakeResponse?: boolean;
  /** encoded authorizations (e.g. speed boost) to present in the handshake */
  authorizations?: readonly string[];
  splitTunnelOwnRegion?: boolean;
  splitTunnelRegions?: readonly string[];
  /** random `padding` sent up; default 0..1024 bytes */
  upstreamPadding?: PaddingRange;
  /** `pad_response` asked for; default 0..1024 bytes */
  downstreamPadding?: PaddingRange;
}

/** How this tunnel was dialled: the per-tunnel parameters of the handshake. */
export interface TunnelDialInfo {
  tunnelProtocol: string;
  /** milliseconds from the start of the dial to the tunnel being up */
  dialDurationMs: number;
  candidateNumber?: number;
  establishedTunnelsCount?: number;
  serverEntryRegion?: string;
  serverEntrySource?: string;
  /** when the entry was stored; sent cut to the hour */
  serverEntryTimestamp?: string;
  dialPortNumber?: number;
  isReplay?: boolean;
  sshClientVersion?: string;
  upstreamOsshPadding?: number;
  userAgent?: string;
  tlsProfile?: string;
  tlsVersion?: string;
  meekDialAddress?: string;
  meekSniServerName?: string;
  meekHostHeader?: string;
  meekTransformedHostName?: boolean;
  tlsOsshSniServerName?: string;
  /** the entry's tag, when the stored entry has no signature: the server returns a signed copy */
  missingSignatureServerEntryTag?: string;
  /** the entry's tag, when the stored entry has no provider ID: the server returns a full copy */
  missingProviderIdServerEntryTag?: string;
}

export interface ApiRequest {
  name: string;
  payload: Buffer;
}

export interface HandshakeRequest extends ApiRequest {
  /** the encoding the server will answer in */
  responseEncoding: ApiEncoding;
}

export interface HandshakeResult {
  homepages: string[];
  /** set when the server offers a newer client version */
  upgradeClientVersion: string | undefined;
  clientRegion: string;
  serverTimestamp: string;
  /** serverTimestamp cut to the hour: the local timestamp to store discovered entries with */
  serverEntryTimestamp: string;
  /** hex server entries to store (source DISCOVERY) */
  encodedServerList: string[];
  /** the sponsor's regexes that name domains for bytes-per-domain stats */
  domainRegexes: DomainRegex[];
  activeAuthorizationIds: string[];
  /** 0 when unlimited */
  upstreamBytesPerSecond: number;
  downstreamBytesPerSecond: number;
}

export interface StatusData {
  /** bytes per stats name (see statsNameForHost) */
  hostBytes: Record<string, number>;
  /** persistent stats records stored earlier (JSON objects as the reference stores them) */
  remoteServerListStats?: readonly JsonObject[];
  failedTunnelStats?: readonly JsonObject[];
  checkServerEntryTags?: readonly string[];
}

export interface ServerRequestResult {
  /** what to reply: false refuses the request */
  ok: boolean;
  alert?: AlertRequest;
}

function pick(range: PaddingRange | undefined): number {
  const min = Math.max(0, Math.floor(range?.min ?? DEFAULT_API_PADDING_MIN_BYTES));
  const max = Math.max(min, Math.floor(range?.max ?? DEFAULT_API_PADDING_MAX_BYTES));
  return randomInt(min, max + 1);
}

function checkParams(params: ApiParams, specs: readonly ApiParamSpec[], what: string): void {
  try {
    validateApiParams(params, specs);
  } catch (e) {
    throw new PosternError('BAD_ARGUMENT', `the ${what} request would be refused: ${describeError(e)}`, {
      cause: e,
    });
  }
}

function isWellFormedAuthorization(encoded: string): boolean {
  try {
    decodeAuthorization(encoded);
    return true;
  } catch {
    return false;
  }
}

type MutableParams = { [name: string]: JsonValue | undefined };

function baseParams(options: ApiClientOptions): MutableParams {
  const params: MutableParams = {};
  const upstream = options.upstreamPadding ?? {
    min: DEFAULT_API_PADDING_MIN_BYTES,
    max: DEFAULT_API_PADDING_MAX_BYTES,
  };
  const downstream = options.downstreamPadding ?? {
    min: DEFAULT_API_PADDING_MIN_BYTES,
    max: DEFAULT_API_PADDING_MAX_BYTES,
  };
  // Random sizes on both directions blur the request and response lengths (no padding at the SSH layer).
  if (upstream.max > 0) params['padding'] = ' '.repeat(pick(upstream));
  if (downstream.max > 0) params['pad_response'] = String(pick(downstream));
  params['propagation_channel_id'] = options.propagationChannelId;
  params['sponsor_id'] = options.sponsorId;
  params['client_version'] = options.clientVersion;
  params['client_platform'] = options.clientPlatform;
  if (options.clientFeatures !== undefined && options.clientFeatures.length > 0) {
    params['client_features'] = [...options.clientFeatures];
  }
  if (options.clientBuildRev) params['client_build_rev'] = options.clientBuildRev;
  if (options.networkType) params['network_type'] = options.networkType;
  // Blank values are left out, as the reference requires.
  if (options.deviceRegion) params['device_region'] = options.deviceRegion;
  if (options.egressRegion) params['egress_region'] = options.egressRegion;
  return params;
}

function compact(params: MutableParams): ApiParams {
  const out: ApiParams = {};
  for (const [k, v] of Object.entries(params)) if (v !== undefined) out[k] = v;
  return out;
}

/** The handshake parameters the reference client sends for a tunnel (getBaseAPIParameters, all dial fields). */
export function buildHandshakeParams(options: ApiClientOptions, dial: TunnelDialInfo): ApiParams {
  const p = baseParams(options);
  p['relay_protocol'] = dial.tunnelProtocol;
  if (dial.sshClientVersion) p['ssh_client_version'] = dial.sshClientVersion;
  if (dial.meekDialAddress) p['meek_dial_address'] = dial.meekDialAddress;
  if (dial.meekSniServerName) p['meek_sni_server_name'] = dial.meekSniServerName;
  if (dial.meekHostHeader) p['meek_host_header'] = dial.meekHostHeader;
  if (dial.meekDialAddress) p['meek_transformed_host_name'] = dial.meekTransformedHostName ? '1' : '0';
  if (dial.tlsOsshSniServerName) p['tls_ossh_sni_server_name'] = dial.tlsOsshSniServerName;
  if (dial.userAgent) p['user_agent'] = dial.userAgent;
  if (dial.tlsProfile) {
    p['tls_profile'] = dial.tlsProfile;
    if (dial.tlsVersion) p['tls_version'] = dial.tlsVersion;
  }
  // An entry from an older or hand-made list may carry a region the server would refuse: leave it out then.
  if (dial.serverEntryRegion && isRegionCode(dial.serverEntryRegion))
    p['server_entry_region'] = dial.serverEntryRegion;
  if (dial.serverEntrySource) p['server_entry_source'] = dial.serverEntrySource;
  if (dial.serverEntryTimestamp) {
    const hour = truncateTimestampToHour(dial.serverEntryTimestamp);
    if (hour !== '') p['server_entry_timestamp'] = hour;
  }
  if (dial.dialPortNumber !== undefined) p['dial_port_number'] = String(dial.dialPortNumber);
  // The server counts an omitted is_replay as false; omitting it keeps the handshake small.
  if (dial.isReplay) p['is_replay'] = '1';
  p['dial_duration'] = String(Math.max(0, Math.floor(dial.dialDurationMs)));
  p['candidate_number'] = String(dial.candidateNumber ?? 0);
  p['established_tunnels_count'] = String(dial.establishedTunnelsCount ?? 0);
  if (dial.upstreamOsshPadding !== undefined) p['upstream_ossh_padding'] = String(dial.upstreamOsshPadding);
  if (dial.missingSignatureServerEntryTag)
    p['missing_server_entry_signature'] = dial.missingSignatureServerEntryTag;
  if (dial.missingProviderIdServerEntryTag) {
    p['missing_server_entry_provider_id'] = dial.missingProviderIdServerEntryTag;
  }
  if (options.splitTunnelOwnRegion) p['split_tunnel'] = '1';
  if (options.splitTunnelRegions !== undefined && options.splitTunnelRegions.length > 0) {
    p['split_tunnel_regions'] = [...options.splitTunnelRegions];
  }
  // Always present (possibly empty), as from the reference client; one malformed stored authorization would
  // make packing, and so the whole handshake, fail, so those are left out.
  p[PSIPHON_API_HANDSHAKE_AUTHORIZATIONS] = (options.authorizations ?? []).filter(isWellFormedAuthorization);
  if (options.cborHandshakeResponse ?? true)
    p[PSIPHON_API_RESPONSE_VERSION_FIELD_NAME] = PSIPHON_API_RESPONSE_V1;
  const params = compact(p);
  checkParams(params, HANDSHAKE_REQUEST_PARAMS, 'handshake');
  return params;
}

/** The connected request: base parameters, the stored last_connected ("None" at first) and the setup time. */
export function buildConnectedParams(
  options: ApiClientOptions,
  connected: { lastConnected: string | undefined; establishmentDurationMs: number },
): ApiParams {
  const p = baseParams(options);
  p['last_connected'] = connected.lastConnected || API_VALUE_NONE;
  p['establishment_duration'] = String(Math.max(0, Math.floor(connected.establishmentDurationMs)));
  const params = compact(p);
  checkParams(params, CONNECTED_REQUEST_PARAMS, 'connected');
  return params;
}

/**
 * The status payload as the reference client builds it (makeStatusRequestPayload), or undefined when there is
 * nothing to report (the reference then skips the request).
 */
export function makeStatusData(data: StatusData): JsonObject | undefined {
  const hostEntries = Object.entries(data.hostBytes);
  const rsl = data.remoteServerListStats ?? [];
  const failed = data.failedTunnelStats ?? [];
  const tags = data.checkServerEntryTags ?? [];
  if (hostEntries.length === 0 && rsl.length === 0 && failed.length === 0 && tags.length === 0)
    return undefined;
  const hostBytes: JsonObject = {};
  for (const [name, bytes] of hostEntries) {
    Object.defineProperty(hostBytes, name, {
      value: bytes,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  }
  const out: JsonObject = {
    host_bytes: hostBytes,
    // Unused, but legacy servers require them.
    bytes_transferred: 0,
    page_views: [],
    https_requests: [],
    check_server_entry_tags: tags.length > 0 ? [...tags] : null,
  };
  if (rsl.length > 0) out['remote_server_list_stats'] = [...rsl];
  if (failed.length > 0) out['failed_tunnel_stats'] = [...failed];
  return out;
}

/** The status request's parameters: base parameters (no dial fields) plus the payload. */
export function buildStatusParams(options: ApiClientOptions, statusData: JsonObject): ApiParams {
  const p = baseParams(options);
  p['statusData'] = statusData;
  const params = compact(p);
  checkParams(params, STATUS_REQUEST_PARAMS, 'status');
  return params;
}

/** Turns a handshake response into what the client acts on. */
export function parseHandshakeResult(payload: Uint8Array, responseEncoding: ApiEncoding): HandshakeResult {
  const r = decodeHandshakeResponse(payload, responseEncoding);
  const serverTimestamp = r.serverTimestamp ?? '';
  return {
    homepages: r.homepages ?? [],
    upgradeClientVersion: r.upgradeClientVersion || undefined,
    clientRegion: r.clientRegion ?? '',
    serverTimestamp,
    serverEntryTimestamp: truncateTimestampToHour(serverTimestamp),
    encodedServerList: r.encodedServerList ?? [],
    domainRegexes: (r.httpsRequestRegexes ?? []).map((m) => ({
      regex: Object.hasOwn(m, 'regex') ? (m['regex'] ?? '') : '',
      replace: Object.hasOwn(m, 'replace') ? (m['replace'] ?? '') : '',
    })),
    activeAuthorizationIds: r.activeAuthorizationIds ?? [],
    upstreamBytesPerSecond: r.upstreamBytesPerSecond ?? 0,
    downstreamBytesPerSecond: r.downstreamBytesPerSecond ?? 0,
  };
}

/** The connected response's timestamp: store it and send it as last_connected next time. */
export function parseConnectedResult(payload: Uint8Array): { connectedTimestamp: string } {
  const r = decodeConnectedResponse(payload);
  return { connectedTimestamp: r.connectedTimestamp ?? '' };
}

/** Tags of server entries the server says no longer exist: prune them. */
export function parseStatusResult(payload: Uint8Array): { invalidServerEntryTags: string[] } {
  const r = decodeStatusResponse(payload);
  return { invalidServerEntryTags: r.invalidServerEntryTags ?? [] };
}

/**
 * Answers a request the server sends the client: alerts are parsed and acknowledged; OSL seeding and anything
 * else are refused (Postern does not hold obfuscated server list keys).
 */
export function handleServerRequest(name: string, payload: Uint8Array): ServerRequestResult {
  if (name !== PSIPHON_API_ALERT_REQUEST_NAME) return { ok: false };
  try {
    return { ok: true, alert: decodeAlertRequest(payload) };
  } catch {
    return { ok: false };
  }
}

/** Builds the requests for one tunnel with fixed options. */
export class ApiClient {
  readonly encoding: ApiEncoding;
  constructor(readonly options: ApiClientOptions) {
    this.encoding = options.encoding ?? 'cbor';
  }

  handshakeRequest(dial: TunnelDialInfo): HandshakeRequest {
    const params = buildHandshakeParams(this.options, dial);
    return {
      name: PSIPHON_API_HANDSHAKE_REQUEST_NAME,
      payload: encodeApiParams(params, this.encoding),
      responseEncoding:
        params[PSIPHON_API_RESPONSE_VERSION_FIELD_NAME] === PSIPHON_API_RESPONSE_V1 ? 'cbor' : 'json',
    };
  }

  connectedRequest(lastConnected: string | undefined, establishmentDurationMs: number): ApiRequest {
    const params = buildConnectedParams(this.options, { lastConnected, establishmentDurationMs });
    return { name: PSIPHON_API_CONNECTED_REQUEST_NAME, payload: encodeApiParams(params, this.encoding) };
  }

  /** undefined when there is nothing to report */
  statusRequest(data: StatusData): ApiRequest | undefined {
    const statusData = makeStatusData(data);
    if (statusData === undefined) return undefined;
    const params = buildStatusParams(this.options, statusData);
    return { name: PSIPHON_API_STATUS_REQUEST_NAME, payload: encodeApiParams(params, this.encoding) };
  }
}
