// Pure parts of the HTTP proxy: where a request goes (CONNECT authority, absolute URI), which headers cross the
// proxy (hop-by-hop ones do not), and Proxy-Authorization. Inputs are a client's bytes: each parser returns a
// typed value or throws an HttpProxyError carrying the status to answer with.

import net from 'node:net';
import { PosternError } from '../common/errors.ts';
import { credentialsMatch, type ProxyCredentials } from './local-proxy.ts';

/** Longest host name accepted (DNS: 253 characters without a trailing dot). */
export const MAX_HOST_LENGTH = 253;

/** A request the proxy will not forward, with the status to answer. */
export class HttpProxyError extends PosternError {
  readonly status: number;
  constructor(status: number, message: string) {
    super('BAD_PROXY_REQUEST', message);
    this.name = 'HttpProxyError';
    this.status = status;
  }
}

export interface Authority {
  /** Domain name, dotted IPv4 or IPv6 text (without brackets). */
  host: string;
  port: number;
}

export interface AbsoluteTarget extends Authority {
  /** What the Host header must say (RFC 9112 section 3.2.2: the URI's authority). */
  hostHeader: string;
  /** The request target in origin form: path and query. */
  path: string;
}

const DOMAIN_RE = /^[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*\.?$/;
const PORT_RE = /^[0-9]{1,5}$/;

function parseHost(text: string): string {
  if (text.startsWith('[')) {
    if (!text.endsWith(']')) throw new HttpProxyError(400, 'malformed IPv6 address');
    const inner = text.slice(1, -1);
    if (!net.isIPv6(inner)) throw new HttpProxyError(400, 'malformed IPv6 address');
    return inner;
  }
  const significant = text.endsWith('.') ? text.length - 1 : text.length;
  if (significant === 0 || significant > MAX_HOST_LENGTH || !DOMAIN_RE.test(text)) {
    throw new HttpProxyError(400, 'malformed host name');
  }
  return text;
}

function parsePort(text: string): number {
  const port = PORT_RE.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new HttpProxyError(400, 'malformed port');
  return port;
}

/** Splits "host:port" or "[v6]:port"; the port may be absent only when a default is given. */
export function parseAuthority(text: string, defaultPort?: number): Authority {
  let hostPart = text;
  let portPart: string | undefined;
  const close = text.lastIndexOf(']');
  const colon = text.lastIndexOf(':');
  if (colon > close) {
    hostPart = text.slice(0, colon);
    portPart = text.slice(colon + 1);
  }
  if (!hostPart.startsWith('[') && hostPart.includes(':')) {
    throw new HttpProxyError(400, 'IPv6 address without brackets');
  }
  const host = parseHost(hostPart);
  if (portPart === undefined || portPart === '') {
    if (defaultPort === undefined) throw new HttpProxyError(400, 'CONNECT target needs a port');
    return { host, port: defaultPort };
  }
  return { host, port: parsePort(portPart) };
}

const HTTP_DEFAULT_PORT = 80;

/** Parses an absolute-form request target (`http://host[:port]/path?query`). */
export function parseAbsoluteTarget(url: string, method: string): AbsoluteTarget {
  const schemeEnd = url.indexOf('://');
  if (schemeEnd < 0) {
    // An origin-form request (`GET /path`) asks the proxy itself for a page; it serves none.
    throw new HttpProxyError(400, 'requests to a proxy must carry an absolute http:// URI');
  }
  const scheme = url.slice(0, schemeEnd).toLowerCase();
  if (scheme !== 'http') {
    throw new HttpProxyError(
      501,
      scheme === 'https'
        ? 'https:// through this proxy needs CONNECT (curl: -p, or use an https URL with -x)'
        : 'only http:// URIs can be proxied',
    );
  }
  const rest = url.slice(schemeEnd + 3);
  let authEnd = rest.length;
  for (let i = 0; i < rest.length; i++) {
    const c = rest.charCodeAt(i);
    if (c === 0x2f || c === 0x3f || c === 0x23) {
      authEnd = i;
      break;
    }
  }
  const authority = rest.slice(0, authEnd);
  if (authority.includes('@')) throw new HttpProxyError(400, 'credentials in the URI are not forwarded');
  const { host, port } = parseAuthority(authority, HTTP_DEFAULT_PORT);
  let path = rest.slice(authEnd);
  const hash = path.indexOf('#');
  if (hash >= 0) path = path.slice(0, hash);
  if (path.startsWith('?')) path = `/${path}`;
  if (path === '') path = method === 'OPTIONS' ? '*' : '/';
  const bracketed = net.isIPv6(host) ? `[${host}]` : host;
  const hostHeader = port === HTTP_DEFAULT_PORT ? bracketed : `${bracketed}:${port}`;
  return { host, port, hostHeader, path };
}

/**
 * Headers that describe one hop and never cross the proxy. Transfer-Encoding is not among them: node's HTTP
 * layers decode a chunked body on one side and re-frame it on the other, so the header stays true.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'upgrade',
]);

/** Header names listed in Connection headers (they are hop-by-hop too). */
function connectionTokens(raw: readonly string[]): Set<string> {
  const tokens = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() !== 'connection') continue;
    for (const t of (raw[i + 1] as string).split(',')) {
      const token = t.trim().toLowerCase();
      if (token) tokens.add(token);
    }
  }
  return tokens;
}

export interface FilterOptions {
  /** Header names (lower case) to drop as well. */
  drop?: readonly string[];
  /** Keep Upgrade and `Connection: upgrade` (a WebSocket handshake). */
  keepUpgrade?: boolean;
}

/** Removes hop-by-hop headers from a raw header list ([name, value, name, value, ...]). */
export function filterHeaders(raw: readonly string[], opts: FilterOptions = {}): string[] {
  const listed = connectionTokens(raw);
  const drop = new Set(opts.drop ?? []);
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (drop.has(lower)) continue;
    const keep = opts.keepUpgrade && lower === 'upgrade';
    if (!keep && (HOP_BY_HOP.has(lower) || listed.has(lower))) continue;
    out.push(name, raw[i + 1] as string);
  }
  if (opts.keepUpgrade) out.push('Connection', 'Upgrade');
  return out;
}

/** The value of the first header with this name (lower case), if any. */
export function headerValue(raw: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() === lowerName) return raw[i + 1];
  }
  return undefined;
}

/** Checks `Proxy-Authorization: Basic ...` against the configured credentials. */
export function proxyAuthorizationOk(value: string | undefined, expected: ProxyCredentials): boolean {
  if (value === undefined) return false;
  const m = /^\s*basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(value);
  if (!m) return false;
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return false;
  return credentialsMatch(expected, decoded.slice(0, colon), decoded.slice(colon + 1));
}

/** Serializes a request head for a raw (upgraded) forward: request line in origin form plus headers. */
export function encodeRequestHead(method: string, path: string, raw: readonly string[]): string {
  let head = `${method} ${path} HTTP/1.1\r\n`;
  for (let i = 0; i + 1 < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return `${head}\r\n`;
}
