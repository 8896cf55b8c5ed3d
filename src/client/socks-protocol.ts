// SOCKS wire format (RFC 1928, RFC 1929, SOCKS4 and 4a): incremental parsers for the messages a client sends
// and encoders for our replies. Every parser takes whatever bytes have arrived so far and returns null when
// more are needed, a message and the number of bytes it used, or throws a SocksProtocolError that names the
// reply to send before closing. No parser looks past its own message, so a client that sends its next message
// early (or starts its data) loses nothing.

import { PosternError } from '../common/errors.ts';

export const SOCKS4_VERSION = 0x04;
export const SOCKS5_VERSION = 0x05;
/** Version byte of the RFC 1929 username/password sub-negotiation. */
export const USERPASS_VERSION = 0x01;

export const METHOD_NO_AUTH = 0x00;
export const METHOD_USERPASS = 0x02;
export const METHOD_NONE_ACCEPTABLE = 0xff;

export const CMD_CONNECT = 0x01;
export const CMD_BIND = 0x02;
export const CMD_UDP_ASSOCIATE = 0x03;

export const ATYP_IPV4 = 0x01;
export const ATYP_DOMAIN = 0x03;
export const ATYP_IPV6 = 0x04;

/** SOCKS5 reply codes (RFC 1928 section 6). */
export const REPLY = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;
export type Socks5Reply = (typeof REPLY)[keyof typeof REPLY];

/** SOCKS4 reply codes. */
export const SOCKS4_GRANTED = 0x5a;
export const SOCKS4_REJECTED = 0x5b;

/** Longest domain name we accept: DNS allows 253 characters (without a trailing dot). */
export const MAX_DOMAIN_LENGTH = 253;
/** Longest SOCKS4 user id we wait for before giving up on its terminating NUL. */
export const MAX_SOCKS4_USERID_LENGTH = 255;

/** A client's first SOCKS5 message: the authentication methods it offers. */
export interface Socks5Greeting {
  methods: readonly number[];
}

export interface UserPassCredentials {
  username: Buffer;
  password: Buffer;
}

export type SocksCommand = 'connect' | 'bind' | 'udp-associate';

/** A SOCKS request, after parsing: what to do and with which destination. */
export interface SocksRequest {
  version: 4 | 5;
  command: SocksCommand;
  /** Domain name, dotted IPv4 or IPv6 text (without brackets). */
  host: string;
  port: number;
  /** SOCKS4 only: the user id the client sent (ignored by us, kept for completeness). */
  userId?: string;
}

export interface Parsed<T> {
  value: T;
  /** Bytes of the input the message took. */
  length: number;
}

/** A client broke the protocol; `reply` is what to answer before closing (null: close without a word). */
export class SocksProtocolError extends PosternError {
  readonly reply: number | null;
  constructor(message: string, reply: number | null) {
    super('BAD_PROXY_REQUEST', message);
    this.name = 'SocksProtocolError';
    this.reply = reply;
  }
}

/** The SOCKS version a connection speaks, from its first byte. */
export function socksVersionOf(firstByte: number): 4 | 5 {
  if (firstByte === SOCKS5_VERSION) return 5;
  if (firstByte === SOCKS4_VERSION) return 4;
  throw new SocksProtocolError(`not a SOCKS client (first byte 0x${firstByte.toString(16)})`, null);
}

/** VER NMETHODS METHODS... */
export function parseSocks5Greeting(buf: Buffer): Parsed<Socks5Greeting> | null {
  if (buf.length < 2) return null;
  if (buf[0] !== SOCKS5_VERSION) throw new SocksProtocolError('greeting is not SOCKS5', null);
  const n = buf[1] as number;
  if (n === 0) {
    throw new SocksProtocolError('greeting offers no authentication method', METHOD_NONE_ACCEPTABLE);
  }
  if (buf.length < 2 + n) return null;
  return { value: { methods: [...buf.subarray(2, 2 + n)] }, length: 2 + n };
}

/** RFC 1929: VER ULEN UNAME PLEN PASSWD. */
export function parseUserPass(buf: Buffer): Parsed<UserPassCredentials> | null {
  if (buf.length < 2) return null;
  if (buf[0] !== USERPASS_VERSION) {
    throw new SocksProtocolError('bad username/password sub-negotiation version', null);
  }
  const ulen = buf[1] as number;
  if (buf.length < 2 + ulen + 1) return null;
  const plen = buf[2 + ulen] as number;
  const total = 3 + ulen + plen;
  if (buf.length < total) return null;
  return {
    value: {
      username: Buffer.from(buf.subarray(2, 2 + ulen)),
      password: Buffer.from(buf.subarray(3 + ulen, total)),
    },
    length: total,
  };
}

function commandOf(cmd: number): SocksCommand {
  switch (cmd) {
    case CMD_CONNECT:
      return 'connect';
    case CMD_BIND:
      return 'bind';
    case CMD_UDP_ASSOCIATE:
      return 'udp-associate';
    default:
      throw new SocksProtocolError(`unknown SOCKS command ${cmd}`, REPLY.COMMAND_NOT_SUPPORTED);
  }
}

/** Checks a destination name a client sent: printable ASCII without spaces, DNS length. */
function checkDomain(bytes: Buffer, reply: number): string {
  if (bytes.length === 0) throw new SocksProtocolError('empty destination name', reply);
  // A trailing dot is a fully qualified name; it does not count towards the length.
  const significant = bytes[bytes.length - 1] === 0x2e ? bytes.length - 1 : bytes.length;
  if (significant > MAX_DOMAIN_LENGTH) {
    throw new SocksProtocolError(`destination name longer than ${MAX_DOMAIN_LENGTH} characters`, reply);
  }
  for (const b of bytes) {
    if (b <= 0x20 || b >= 0x7f) {
      throw new SocksProtocolError('destination name has a character that is not printable ASCII', reply);
    }
  }
  return bytes.toString('latin1');
}

function checkPort(port: number, reply: number): number {
  if (port === 0) throw new SocksProtocolError('destination port 0', reply);
  return port;
}

/** Canonical text of a 16-byte IPv6 address (RFC 5952: lower case, longest zero run compressed). */
export function formatIpv6(bytes: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** VER CMD RSV ATYP DST.ADDR DST.PORT. */
export function parseSocks5Request(buf: Buffer): Parsed<SocksRequest> | null {
  if (buf.length < 4) return null;
  if (buf[0] !== SOCKS5_VERSION) {
    throw new SocksProtocolError('request is not SOCKS5', REPLY.GENERAL_FAILURE);
  }
  const cmd = buf[1] as number;
  const atyp = buf[3] as number;
  let host: string;
  let addrEnd: number;
  switch (atyp) {
    case ATYP_IPV4:
      addrEnd = 4 + 4;
      if (buf.length < addrEnd + 2) return null;
      host = `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`;
      break;
    case ATYP_IPV6:
      addrEnd = 4 + 16;
      if (buf.length < addrEnd + 2) return null;
      host = formatIpv6(buf.subarray(4, addrEnd));
      break;
    case ATYP_DOMAIN: {
      if (buf.length < 5) return null;
      addrEnd = 5 + (buf[4] as number);
      if (buf.length < addrEnd + 2) return null;
      host = checkDomain(buf.subarray(5, addrEnd), REPLY.GENERAL_FAILURE);
      break;
    }
    default:
      throw new SocksProtocolError(`unknown address type ${atyp}`, REPLY.ADDRESS_TYPE_NOT_SUPPORTED);
  }
  // The command is checked only once the whole request is here, so the reply follows the request in order.
  const command = commandOf(cmd);
  const port = checkPort(buf.readUInt16BE(addrEnd), REPLY.GENERAL_FAILURE);
  return { value: { version: 5, command, host, port }, length: addrEnd + 2 };
}

function indexOfNul(buf: Buffer, from: number, maxLength: number, what: string): number | null {
  const limit = Math.min(buf.length, from + maxLength + 1);
  for (let i = from; i < limit; i++) if (buf[i] === 0) return i;
  if (buf.length > from + maxLength) {
    throw new SocksProtocolError(`SOCKS4 ${what} longer than ${maxLength} bytes`, SOCKS4_REJECTED);
  }
  return null;
}

/**
 * SOCKS4: VN CD DSTPORT DSTIP USERID NUL; SOCKS4a: DSTIP 0.0.0.x (x != 0) and then DOMAIN NUL.
 * (The name is limited to MAX_DOMAIN_LENGTH bytes plus a trailing dot.)
 */
export function parseSocks4Request(buf: Buffer): Parsed<SocksRequest> | null {
  if (buf.length < 8) return null;
  if (buf[0] !== SOCKS4_VERSION) throw new SocksProtocolError('request is not SOCKS4', null);
  const cmd = buf[1] as number;
  if (cmd !== CMD_CONNECT && cmd !== CMD_BIND) {
    throw new SocksProtocolError(`unknown SOCKS4 command ${cmd}`, SOCKS4_REJECTED);
  }
  const userEnd = indexOfNul(buf, 8, MAX_SOCKS4_USERID_LENGTH, 'user id');
  if (userEnd === null) return null;
  const userId = buf.subarray(8, userEnd).toString('latin1');
  const isSocks4a = buf[4] === 0 && buf[5] === 0 && buf[6] === 0 && buf[7] !== 0;
  let host: string;
  let length: number;
  if (isSocks4a) {
    const nameEnd = indexOfNul(buf, userEnd + 1, MAX_DOMAIN_LENGTH + 1, 'destination name');
    if (nameEnd === null) return null;
    host = checkDomain(buf.subarray(userEnd + 1, nameEnd), SOCKS4_REJECTED);
    length = nameEnd + 1;
  } else {
    host = `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`;
    length = userEnd + 1;
  }
  const port = checkPort(buf.readUInt16BE(2), SOCKS4_REJECTED);
  return {
    value: { version: 4, command: cmd === CMD_CONNECT ? 'connect' : 'bind', host, port, userId },
    length,
  };
}

export function encodeMethodSelection(method: number): Buffer {
  return Buffer.from([SOCKS5_VERSION, method]);
}

export function encodeUserPassStatus(ok: boolean): Buffer {
  return Buffer.from([USERPASS_VERSION, ok ? 0x00 : 0x01]);
}

/**
 * A SOCKS5 reply with the bound address 0.0.0.0:0: through a tunnel there is no local address that would mean
 * anything to the client (the reference client answers the same), and clients ignore it for CONNECT.
 */
export function encodeSocks5Reply(reply: number): Buffer {
  return Buffer.from([SOCKS5_VERSION, reply, 0x00, ATYP_IPV4, 0, 0, 0, 0, 0, 0]);
}

/** A SOCKS4 reply (VN is 0 in replies; port and address are ignored by clients for CONNECT). */
export function encodeSocks4Reply(code: typeof SOCKS4_GRANTED | typeof SOCKS4_REJECTED): Buffer {
  const out = Buffer.alloc(8);
  out[1] = code;
  return out;
}
