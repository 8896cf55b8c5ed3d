// Tunnel protocol names and server capabilities, as Psiphon spells them: a server entry lists capabilities,
// a client maps them to the protocols it may dial, and both report the protocol name in the API and stats.
// The names, the capability of each protocol and the matching rules (passthrough suffixes, "QUICv1",
// TLS-OSSH offered by unfronted meek HTTPS servers) follow psiphon-tunnel-core's protocol package.

export const TUNNEL_PROTOCOL_SSH = 'SSH';
export const TUNNEL_PROTOCOL_OBFUSCATED_SSH = 'OSSH';
export const TUNNEL_PROTOCOL_TLS_OBFUSCATED_SSH = 'TLS-OSSH';
export const TUNNEL_PROTOCOL_SHADOWSOCKS_OSSH = 'SHADOWSOCKS-OSSH';
export const TUNNEL_PROTOCOL_UNFRONTED_MEEK = 'UNFRONTED-MEEK-OSSH';
export const TUNNEL_PROTOCOL_UNFRONTED_MEEK_HTTPS = 'UNFRONTED-MEEK-HTTPS-OSSH';
export const TUNNEL_PROTOCOL_UNFRONTED_MEEK_SESSION_TICKET = 'UNFRONTED-MEEK-SESSION-TICKET-OSSH';
export const TUNNEL_PROTOCOL_FRONTED_MEEK = 'FRONTED-MEEK-OSSH';
export const TUNNEL_PROTOCOL_FRONTED_MEEK_HTTP = 'FRONTED-MEEK-HTTP-OSSH';
export const TUNNEL_PROTOCOL_QUIC_OBFUSCATED_SSH = 'QUIC-OSSH';
export const TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH = 'FRONTED-MEEK-QUIC-OSSH';
export const TUNNEL_PROTOCOL_TAPDANCE_OBFUSCATED_SSH = 'TAPDANCE-OSSH';
export const TUNNEL_PROTOCOL_CONJURE_OBFUSCATED_SSH = 'CONJURE-OSSH';

/** Key meaning "every protocol" in per-protocol settings such as dial port limits. */
export const TUNNEL_PROTOCOLS_ALL = 'All';

/** Prefix of the in-proxy (WebRTC first hop) variant of a protocol, e.g. "INPROXY-WEBRTC-OSSH". */
export const INPROXY_PROTOCOL_WEBRTC = 'INPROXY-WEBRTC';

/** Capability: the server answers the API as SSH requests inside the tunnel. */
export const CAPABILITY_SSH_API_REQUESTS = 'ssh-api-requests';
/** Capability: the server answers the legacy untunneled web API (named "handshake" for history's sake). */
export const CAPABILITY_UNTUNNELED_WEB_API_REQUESTS = 'handshake';

/** Non-in-proxy protocols in the reference's preference order. */
const BASE_TUNNEL_PROTOCOLS: readonly string[] = [
  TUNNEL_PROTOCOL_SSH,
  TUNNEL_PROTOCOL_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_TLS_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_UNFRONTED_MEEK,
  TUNNEL_PROTOCOL_UNFRONTED_MEEK_HTTPS,
  TUNNEL_PROTOCOL_UNFRONTED_MEEK_SESSION_TICKET,
  TUNNEL_PROTOCOL_FRONTED_MEEK,
  TUNNEL_PROTOCOL_FRONTED_MEEK_HTTP,
  TUNNEL_PROTOCOL_QUIC_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_TAPDANCE_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_CONJURE_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_SHADOWSOCKS_OSSH,
];

export function tunnelProtocolUsesRefractionNetworking(protocol: string): boolean {
  return (
    protocol === TUNNEL_PROTOCOL_TAPDANCE_OBFUSCATED_SSH ||
    protocol === TUNNEL_PROTOCOL_CONJURE_OBFUSCATED_SSH
  );
}

export function tunnelProtocolPlusInproxyWebRTC(protocol: string): string {
  return `${INPROXY_PROTOCOL_WEBRTC}-${protocol}`;
}

/** In-proxy variants exist for every protocol except TapDance and Conjure, whose addresses are not in entries. */
export const INPROXY_TUNNEL_PROTOCOLS: readonly string[] = BASE_TUNNEL_PROTOCOLS.filter(
  (p) => !tunnelProtocolUsesRefractionNetworking(p),
).map(tunnelProtocolPlusInproxyWebRTC);

/** Every protocol name the network knows, in the order clients prefer them. */
export const SUPPORTED_TUNNEL_PROTOCOLS: readonly string[] = [
  ...BASE_TUNNEL_PROTOCOLS,
  ...INPROXY_TUNNEL_PROTOCOLS,
];

/** Protocols clients use only when explicitly asked for. */
export const DEFAULT_DISABLED_TUNNEL_PROTOCOLS: readonly string[] = [
  TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_TAPDANCE_OBFUSCATED_SSH,
  TUNNEL_PROTOCOL_CONJURE_OBFUSCATED_SSH,
  ...INPROXY_TUNNEL_PROTOCOLS,
];

/** Protocols that may not be selected at all. */
export const DISABLED_TUNNEL_PROTOCOLS: readonly string[] = [TUNNEL_PROTOCOL_TAPDANCE_OBFUSCATED_SSH];

export function isKnownTunnelProtocol(protocol: string): boolean {
  return SUPPORTED_TUNNEL_PROTOCOLS.includes(protocol);
}

export function tunnelProtocolUsesInproxy(protocol: string): boolean {
  return protocol.startsWith(INPROXY_PROTOCOL_WEBRTC);
}

export function tunnelProtocolMinusInproxy(protocol: string): string {
  const prefix = `${INPROXY_PROTOCOL_WEBRTC}-`;
  return protocol.startsWith(prefix) ? protocol.slice(prefix.length) : protocol;
}

/**
 * The capability a server entry lists for a protocol: the name minus "-OSSH" (legacy spelling), except
 * in-proxy protocols, which use their full name to stay unambiguous.
 */
export function capabilityForTunnelProtocol(protocol: string): string {
  if (tunnelProtocolUsesInproxy(protocol)) return protocol;
  return protocol.endsWith('-OSSH') ? protocol.slice(0, -'-OSSH'.length) : protocol;
}

export function tacticsCapabilityForTunnelProtocol(protocol: string): string {
  return `${capabilityForTunnelProtocol(protocol)}-TACTICS`;
}

export function isTacticsCapability(capability: string): boolean {
  return capability.endsWith('-TACTICS');
}

export function tunnelProtocolUsesTCP(protocol: string): boolean {
  const p = tunnelProtocolMinusInproxy(protocol);
  return p !== TUNNEL_PROTOCOL_QUIC_OBFUSCATED_SSH && p !== TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH;
}

export function tunnelProtocolUsesObfuscatedSSH(protocol: string): boolean {
  return tunnelProtocolMinusInproxy(protocol) !== TUNNEL_PROTOCOL_SSH;
}

export function tunnelProtocolUsesTLSOSSH(protocol: string): boolean {
  return tunnelProtocolMinusInproxy(protocol) === TUNNEL_PROTOCOL_TLS_OBFUSCATED_SSH;
}

export function tunnelProtocolUsesMeekHTTP(protocol: string): boolean {
  const p = tunnelProtocolMinusInproxy(protocol);
  return p === TUNNEL_PROTOCOL_UNFRONTED_MEEK || p === TUNNEL_PROTOCOL_FRONTED_MEEK_HTTP;
}

export function tunnelProtocolUsesMeekHTTPS(protocol: string): boolean {
  const p = tunnelProtocolMinusInproxy(protocol);
  return (
    p === TUNNEL_PROTOCOL_FRONTED_MEEK ||
    p === TUNNEL_PROTOCOL_UNFRONTED_MEEK_HTTPS ||
    p === TUNNEL_PROTOCOL_UNFRONTED_MEEK_SESSION_TICKET
  );
}

export function tunnelProtocolUsesFrontedMeekQUIC(protocol: string): boolean {
  return tunnelProtocolMinusInproxy(protocol) === TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH;
}

export function tunnelProtocolUsesMeek(protocol: string): boolean {
  return (
    tunnelProtocolUsesMeekHTTP(protocol) ||
    tunnelProtocolUsesMeekHTTPS(protocol) ||
    tunnelProtocolUsesFrontedMeekQUIC(protocol)
  );
}

export function tunnelProtocolUsesFrontedMeek(protocol: string): boolean {
  const p = tunnelProtocolMinusInproxy(protocol);
  return (
    p === TUNNEL_PROTOCOL_FRONTED_MEEK ||
    p === TUNNEL_PROTOCOL_FRONTED_MEEK_HTTP ||
    p === TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH
  );
}

export function tunnelProtocolUsesQUIC(protocol: string): boolean {
  const p = tunnelProtocolMinusInproxy(protocol);
  return p === TUNNEL_PROTOCOL_QUIC_OBFUSCATED_SSH || p === TUNNEL_PROTOCOL_FRONTED_MEEK_QUIC_OBFUSCATED_SSH;
}

export function tunnelProtocolUsesShadowsocks(protocol: string): boolean {
  return tunnelProtocolMinusInproxy(protocol) === TUNNEL_PROTOCOL_SHADOWSOCKS_OSSH;
}

export function tunnelProtocolIsResourceIntensive(protocol: string): boolean {
  return (
    tunnelProtocolUsesMeek(protocol) ||
    tunnelProtocolUsesQUIC(protocol) ||
    tunnelProtocolUsesRefractionNetworking(protocol) ||
    tunnelProtocolUsesInproxy(protocol)
  );
}

export function tunnelProtocolSupportsUpstreamProxy(protocol: string): boolean {
  return (
    !tunnelProtocolUsesInproxy(protocol) &&
    !tunnelProtocolUsesQUIC(protocol) &&
    !tunnelProtocolUsesRefractionNetworking(protocol)
  );
}

export function tunnelProtocolSupportsPassthrough(protocol: string): boolean {
  const p = tunnelProtocolMinusInproxy(protocol);
  return (
    p === TUNNEL_PROTOCOL_UNFRONTED_MEEK_HTTPS ||
    p === TUNNEL_PROTOCOL_UNFRONTED_MEEK_SESSION_TICKET ||
    p === TUNNEL_PROTOCOL_UNFRONTED_MEEK ||
    p === TUNNEL_PROTOCOL_TLS_OBFUSCATED_SSH
  );
}

/** Unfronted meek HTTPS servers with v2 passthrough also accept TLS-OSSH on the same port. */
function capabilityAlsoOffersTLSOSSH(capability: string): boolean {
  return [TUNNEL_PROTOCOL_UNFRONTED_MEEK_HTTPS, TUNNEL_PROTOCOL_UNFRONTED_MEEK_SESSION_TICKET].some(
    (p) => capability === `${capabilityForTunnelProtocol(p)}-PASSTHROUGH-v2`,
  );
}

/**
 * Whether a capability list grants `requiredCapability`. "-PASSTHROUGH-v2" and "-PASSTHROUGH" suffixes are
 * ignored (they hide passthrough protocols from old clients), "QUICv1" counts as "QUIC", and unfronted meek
 * HTTPS with v2 passthrough grants TLS-OSSH too.
 */
export function capabilitiesInclude(capabilities: readonly string[], requiredCapability: string): boolean {
  const quic = capabilityForTunnelProtocol(TUNNEL_PROTOCOL_QUIC_OBFUSCATED_SSH);
  const tls = capabilityForTunnelProtocol(TUNNEL_PROTOCOL_TLS_OBFUSCATED_SSH);
  for (const original of capabilities) {
    let capability = original.replaceAll('-PASSTHROUGH-v2', '').replaceAll('-PASSTHROUGH', '');
    if (capability === `${quic}v1`) capability = quic;
    if (capability === requiredCapability) return true;
    if (requiredCapability === tls && capabilityAlsoOffersTLSOSSH(original)) return true;
  }
  return false;
}

/** Whether the capability list lets a client use `protocol`. */
export function capabilitiesSupportTunnelProtocol(
  capabilities: readonly string[],
  protocol: string,
): boolean {
  return capabilitiesInclude(capabilities, capabilityForTunnelProtocol(protocol));
}

/** Whether `protocol` must be spoken with legacy (v1) passthrough messages to this server. */
export function capabilitiesUseLegacyPassthrough(capabilities: readonly string[], protocol: string): boolean {
  return capabilities.includes(`${capabilityForTunnelProtocol(protocol)}-PASSTHROUGH`);
}
