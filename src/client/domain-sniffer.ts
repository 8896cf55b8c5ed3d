// Finds the domain name a forward is for in the first bytes a local application sends on it: the Host of an
// HTTP/1.x request or the server_name (SNI) of a TLS ClientHello, for the bytes-per-domain statistics. Only a
// host name ever leaves this module (lowercased, no port, no user info, never an IP address literal); paths,
// query strings and URLs are never returned. Every input is hostile: truncated, mis-sized or garbage bytes give
// 'need-more' or 'none', never an exception, and nothing beyond MAX_SNIFF_BYTES is ever looked at.

/** Bytes of a forward's start that are examined; a name not found by then is not looked for any more. */
export const MAX_SNIFF_BYTES = 16 * 1024;
/** Chunks a FirstBytesSniffer accepts before giving up (each one re-examines the buffer). */
export const MAX_SNIFF_CHUNKS = 64;
/** A DNS name's longest text form (RFC 1035), without the trailing dot. */
export const MAX_HOST_NAME_LENGTH = 253;
/** A DNS label's longest length. */
const MAX_LABEL_LENGTH = 63;
/** An HTTP method longer than this is not one a browser or library sends. */
const MAX_HTTP_METHOD_LENGTH = 32;
/** TLS record payload limit (RFC 8446 5.1: 2^14 plus room the older versions allowed for expansion). */
const MAX_TLS_RECORD_LENGTH = 16 * 1024 + 2048;
/** Records a ClientHello may be split into here; real ones take one, rarely two. */
const MAX_HELLO_RECORDS = 8;

const TLS_CONTENT_HANDSHAKE = 22;
const TLS_HANDSHAKE_CLIENT_HELLO = 1;
const TLS_EXTENSION_SERVER_NAME = 0;
const TLS_SERVER_NAME_HOST_NAME = 0;

export type SniffResult = { kind: 'found'; domain: string } | { kind: 'need-more' } | { kind: 'none' };

const NONE: SniffResult = { kind: 'none' };
const NEED_MORE: SniffResult = { kind: 'need-more' };

/**
 * The domain name in the first bytes of a forward (everything the application sent so far, from its start).
 * 'need-more' means the bytes are a plausible prefix of an HTTP request or TLS ClientHello that does not yet
 * hold the name; past MAX_SNIFF_BYTES the answer is 'none'.
 */
export function sniffDomain(firstBytes: Uint8Array): SniffResult {
  try {
    const bytes = firstBytes.subarray(0, MAX_SNIFF_BYTES);
    const result =
      bytes.length === 0
        ? NEED_MORE
        : bytes[0] === TLS_CONTENT_HANDSHAKE
          ? sniffTls(bytes)
          : sniffHttp(bytes);
    // Everything that may be looked at has been: more bytes cannot help.
    if (result.kind === 'need-more' && firstBytes.length >= MAX_SNIFF_BYTES) return NONE;
    return result;
  } catch {
    // Unreachable by design (every read is bounds-checked); a last line of defence for the relay path.
    return NONE;
  }
}

/**
 * A host name as the statistics name it: lowercase, no trailing dot, DNS characters only (letters, digits,
 * '-', '_'), labels of 1–63 characters, at most 253 in all; undefined for anything else, including IPv4 and
 * IPv6 literals, which are addresses, not domains.
 */
export function normalizeHostName(raw: string): string | undefined {
  if (raw.length > MAX_HOST_NAME_LENGTH + 1) return undefined;
  let host = raw.toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host.length === 0 || host.length > MAX_HOST_NAME_LENGTH) return undefined;
  if (!/^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/.test(host)) return undefined;
  const labels = host.split('.');
  if (labels.some((l) => l.length > MAX_LABEL_LENGTH)) return undefined;
  // A numeric last label is an IPv4 address in one of its spellings (1.2.3.4, 0x7f.1, 2130706433).
  if (/^(?:[0-9]+|0x[0-9a-f]*)$/.test(labels[labels.length - 1]!)) return undefined;
  return host;
}

/** The host of `host[:port]` (an HTTP Host value or URI authority without user info), normalized. */
function hostOfHostPort(value: string): string | undefined {
  // A bracketed host is an IPv6 (or future) literal: never a domain.
  if (value.startsWith('[')) return undefined;
  const colon = value.indexOf(':');
  if (colon === -1) return normalizeHostName(value);
  if (!/^[0-9]*$/.test(value.slice(colon + 1))) return undefined;
  return normalizeHostName(value.slice(0, colon));
}

// ---- TLS ----------------------------------------------------------------------------------------------------

/** Bounds-checked reads over one byte range; any read past its end makes `ok` false. */
class Reader {
  ok = true;
  constructor(
    private readonly b: Uint8Array,
    private pos: number,
    private readonly end: number,
  ) {}

  get remaining(): number {
    return this.end - this.pos;
  }

  u8(): number {
    if (!this.ok || this.remaining < 1) return this.fail();
    return this.b[this.pos++]!;
  }

  u16(): number {
    if (!this.ok || this.remaining < 2) return this.fail();
    const v = (this.b[this.pos]! << 8) | this.b[this.pos + 1]!;
    this.pos += 2;
    return v;
  }

  skip(n: number): void {
    if (!this.ok || this.remaining < n) this.fail();
    else this.pos += n;
  }

  /** A sub-reader over the next n bytes, which this reader then skips. */
  sub(n: number): Reader {
    if (!this.ok || this.remaining < n) {
      this.fail();
      return new Reader(this.b, 0, 0);
    }
    const r = new Reader(this.b, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }

  bytes(n: number): Uint8Array {
    if (!this.ok || this.remaining < n) {
      this.fail();
      return new Uint8Array(0);
    }
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  private fail(): number {
    this.ok = false;
    return 0;
  }
}

/**
 * The SNI of a ClientHello carried in one or more handshake records (a large hello, e.g. with post-quantum key
 * shares, may be split across records, and the records across chunks).
 */
function sniffTls(b: Uint8Array): SniffResult {
  const handshake: Uint8Array[] = [];
  let handshakeLength = 0;
  let pos = 0;
  for (let records = 0; records < MAX_HELLO_RECORDS; records++) {
    // Record header: type, version (2), length (2). Check what has arrived of it before asking for more.
    if (pos < b.length && b[pos] !== TLS_CONTENT_HANDSHAKE) return NONE;
    if (pos + 1 < b.length && b[pos + 1] !== 3) return NONE;
    if (pos + 5 > b.length) return NEED_MORE;
    const recordLength = (b[pos + 3]! << 8) | b[pos + 4]!;
    if (recordLength === 0 || recordLength > MAX_TLS_RECORD_LENGTH) return NONE;
    const start = pos + 5;
    const available = Math.min(recordLength, b.length - start);
    handshake.push(b.subarray(start, start + available));
    handshakeLength += available;

    const message = handshake.length === 1 ? handshake[0]! : Buffer.concat(handshake, handshakeLength);
    if (message.length >= 1 && message[0] !== TLS_HANDSHAKE_CLIENT_HELLO) return NONE;
    if (message.length >= 4) {
      const bodyLength = (message[1]! << 16) | (message[2]! << 8) | message[3]!;
      if (bodyLength + 4 > MAX_SNIFF_BYTES) return NONE;
      if (message.length >= bodyLength + 4) return serverNameOf(new Reader(message, 4, 4 + bodyLength));
    }
    if (available < recordLength) return NEED_MORE;
    pos = start + recordLength;
  }
  return NONE;
}

/** The host_name in a ClientHello body (RFC 8446 4.1.2, RFC 6066 3). */
function serverNameOf(r: Reader): SniffResult {
  if (r.u8() !== 3) return NONE; // legacy_version major
  r.skip(1 + 32); // minor, random
  r.skip(r.u8()); // legacy_session_id
  r.skip(r.u16()); // cipher_suites
  r.skip(r.u8()); // legacy_compression_methods
  if (!r.ok || r.remaining === 0) return NONE; // no extensions, so no SNI
  const extensions = r.sub(r.u16());
  while (extensions.ok && extensions.remaining > 0) {
    const type = extensions.u16();
    const data = extensions.sub(extensions.u16());
    if (!extensions.ok) return NONE;
    if (type !== TLS_EXTENSION_SERVER_NAME) continue;
    const list = data.sub(data.u16());
    while (list.ok && list.remaining > 0) {
      const nameType = list.u8();
      const name = list.bytes(list.u16());
      if (!list.ok) return NONE;
      if (nameType !== TLS_SERVER_NAME_HOST_NAME) continue;
      const host = normalizeHostName(Buffer.from(name).toString('latin1'));
      return host === undefined ? NONE : { kind: 'found', domain: host };
    }
    return NONE;
  }
  return NONE;
}

// ---- HTTP/1.x -----------------------------------------------------------------------------------------------

// RFC 9110 token characters: what a method and a header name are made of.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The host of an HTTP/1.x request: an absolute-form target's authority (as Go's http.ReadRequest prefers it),
 * CONNECT's authority, or else the first Host header.
 */
function sniffHttp(b: Uint8Array): SniffResult {
  const text = Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
  const lineEnd = text.indexOf('\n');
  if (lineEnd === -1) {
    // Only a method so far (or part of one): keep waiting only while it still looks like one.
    const space = text.indexOf(' ');
    const method = space === -1 ? text : text.slice(0, space);
    if (method.length > MAX_HTTP_METHOD_LENGTH || (method.length > 0 && !TOKEN.test(method))) return NONE;
    if (space === 0) return NONE;
    return NEED_MORE;
  }
  const requestLine = text.slice(0, lineEnd).replace(/\r$/, '');
  const parts = requestLine.split(' ');
  if (parts.length !== 3) return NONE;
  const [method, target, version] = parts as [string, string, string];
  if (method.length > MAX_HTTP_METHOD_LENGTH || !TOKEN.test(method)) return NONE;
  // Any HTTP/x.y text request line, as Go's http.ReadRequest accepts, but not HTTP/2's connection preface.
  if (!/^HTTP\/[0-9]{1,3}\.[0-9]{1,3}$/.test(version) || method === 'PRI' || target.length === 0) return NONE;

  // The header block must be whole, as for Go's http.ReadRequest: a second Host header makes it refuse the
  // request, and so does this.
  let hostHeader: string | undefined;
  let pos = lineEnd + 1;
  for (let first = true; ; first = false) {
    const end = text.indexOf('\n', pos);
    if (end === -1) return NEED_MORE;
    const line = text.slice(pos, end).replace(/\r$/, '');
    pos = end + 1;
    if (line === '') break;
    if (line.startsWith(' ') || line.startsWith('\t')) {
      if (first) return NONE; // a header block cannot start folded
      continue; // obsolete line folding of the header above
    }
    const colon = line.indexOf(':');
    if (colon <= 0 || !TOKEN.test(line.slice(0, colon))) return NONE;
    if (line.slice(0, colon).toLowerCase() !== 'host') continue;
    if (hostHeader !== undefined) return NONE;
    hostHeader = line.slice(colon + 1).trim();
  }

  // An absolute-form target's authority names the host before any Host header (RFC 9112 3.2.2); so does
  // CONNECT's, unless its target is a path.
  const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(target);
  let hostPort: string | undefined;
  if (absolute !== null || (method === 'CONNECT' && !target.startsWith('/'))) {
    const authority = absolute !== null ? absolute[1]! : target;
    // User info is a credential: drop it (the host follows the last '@').
    hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  } else if (!target.startsWith('/') && target !== '*') {
    return NONE; // neither origin, absolute, authority nor asterisk form
  }
  // Like Go, an absolute target without a host leaves the Host header to name it.
  if (hostPort === undefined || hostPort === '') hostPort = hostHeader;
  if (hostPort === undefined) return NONE;
  const host = hostOfHostPort(hostPort);
  return host === undefined ? NONE : { kind: 'found', domain: host };
}

// ---- accumulating chunks ------------------------------------------------------------------------------------

/**
 * Feeds a forward's first chunks to sniffDomain until it decides, keeping at most MAX_SNIFF_BYTES of them.
 * Once decided, the answer stays the same and further chunks are ignored.
 */
export class FirstBytesSniffer {
  private buffer: Buffer | undefined;
  private length = 0;
  private chunks = 0;
  private decided: SniffResult | undefined;

  /** The answer so far: 'need-more' until a chunk decides it. */
  get result(): SniffResult {
    return this.decided ?? NEED_MORE;
  }

  push(chunk: Uint8Array): SniffResult {
    if (this.decided !== undefined) return this.decided;
    if (chunk.length === 0) return NEED_MORE;
    this.chunks++;
    let view: Uint8Array;
    if (this.length === 0 && chunk.length >= MAX_SNIFF_BYTES) {
      view = chunk; // one big first chunk: no copy needed, sniffDomain reads only its start
    } else {
      this.buffer ??= Buffer.allocUnsafe(MAX_SNIFF_BYTES);
      const take = Math.min(chunk.length, MAX_SNIFF_BYTES - this.length);
      this.buffer.set(chunk.subarray(0, take), this.length);
      this.length += take;
      view = this.buffer.subarray(0, this.length);
    }
    const result = sniffDomain(view);
    if (result.kind !== 'need-more') return this.decide(result);
    if (this.chunks >= MAX_SNIFF_CHUNKS) return this.decide(NONE);
    return result;
  }

  /** Stops waiting: no name unless one was already found. */
  giveUp(): SniffResult {
    return this.decided ?? this.decide(NONE);
  }

  private decide(result: SniffResult): SniffResult {
    this.decided = result;
    this.buffer = undefined;
    return result;
  }
}
