// IP address literals and special-purpose ranges, shared by the GeoIP lookup (special ranges have no
// location) and the destination rules (special ranges are never dialled unless allowed). Parsing is strict:
// only the forms `net.isIP` accepts, without zone ids, so that "127.1", "0x7f.1" or "2130706433" are never
// taken for addresses here (the system resolver would turn them into 127.0.0.1: callers treat them as names
// and refuse them).
import { PosternError } from '../common/errors.ts';

export type IpFamily = 4 | 6;

export interface IpAddress {
  readonly family: IpFamily;
  /** 4 bytes for IPv4, 16 for IPv6, network order. */
  readonly bytes: Uint8Array;
}

export interface Cidr {
  readonly family: IpFamily;
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

/** Why an address is not an ordinary public unicast address. */
export type SpecialRange =
  | 'unspecified'
  | 'this-network'
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'link-local'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'benchmark'
  | 'reserved';

export interface SpecialRangeMatch {
  readonly range: SpecialRange;
  /** The registry block that matched, e.g. "10.0.0.0/8" (a range, never the address itself). */
  readonly block: string;
}

/** Longest IPv6 text form: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255". */
export const MAX_IP_LITERAL_LENGTH = 45;
const MAX_CIDR_LENGTH = MAX_IP_LITERAL_LENGTH + 4;

/** A strict dotted quad as an unsigned 32-bit number, or -1. */
export function parseIpv4Number(s: string): number {
  if (s.length < 7 || s.length > 15) return -1;
  let acc = 0;
  let parts = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 0x2e; // a virtual '.' closes the last part
    if (c === 0x2e) {
      if (digits === 0 || parts > 3) return -1;
      acc = acc * 256 + value;
      parts++;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      // No leading zeros ("01" is octal to inet_aton, and net.isIP refuses it).
      if (digits === 1 && value === 0) return -1;
      value = value * 10 + (c - 0x30);
      if (++digits > 3 || value > 255) return -1;
    } else {
      return -1;
    }
  }
  return parts === 4 ? acc : -1;
}

function parseIpv4Bytes(s: string): Uint8Array | null {
  const n = parseIpv4Number(s);
  if (n < 0) return null;
  return new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

function parseHexGroups(s: string, into: number[]): boolean {
  if (s === '') return true;
  for (const g of s.split(':')) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return false;
    into.push(parseInt(g, 16));
  }
  return true;
}

function parseIpv6Bytes(input: string): Uint8Array | null {
  if (input.length < 2 || input.length > MAX_IP_LITERAL_LENGTH) return null;
  let s = input;
  const lastColon = s.lastIndexOf(':');
  if (lastColon < 0) return null;
  if (s.indexOf('.', lastColon) !== -1) {
    const v4 = parseIpv4Bytes(s.slice(lastColon + 1));
    if (!v4) return null;
    const hi = ((v4[0] ?? 0) << 8) | (v4[1] ?? 0);
    const lo = ((v4[2] ?? 0) << 8) | (v4[3] ?? 0);
    s = `${s.slice(0, lastColon + 1)}${hi.toString(16)}:${lo.toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const head: number[] = [];
  const tail: number[] = [];
  if (!parseHexGroups(halves[0] ?? '', head)) return null;
  if (halves.length === 2) {
    if (!parseHexGroups(halves[1] ?? '', tail)) return null;
    if (head.length + tail.length > 7) return null; // "::" stands for at least one group
  } else if (head.length !== 8) {
    return null;
  }
  const groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/**
 * Parses an IPv4 dotted quad or an IPv6 literal (no brackets, no zone id). Returns null for anything else,
 * including the numeric shorthands inet_aton accepts.
 */
export function parseIp(s: string): IpAddress | null {
  if (typeof s !== 'string' || s.length > MAX_IP_LITERAL_LENGTH) return null;
  if (s.includes(':')) {
    const b = parseIpv6Bytes(s);
    return b ? { family: 6, bytes: b } : null;
  }
  const b = parseIpv4Bytes(s);
  return b ? { family: 4, bytes: b } : null;
}

const MAPPED_PREFIX = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

function hasPrefixBytes(bytes: Uint8Array, prefix: Uint8Array): boolean {
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/** ::ffff:a.b.c.d (in any of its spellings) becomes a.b.c.d; anything else is returned as it is. */
export function unmapIpv4(a: IpAddress): IpAddress {
  if (a.family === 6 && hasPrefixBytes(a.bytes, MAPPED_PREFIX)) {
    return { family: 4, bytes: a.bytes.slice(12) };
  }
  return a;
}

/** Canonical text: dotted quad, or RFC 5952 IPv6 (lower case, longest zero run compressed). */
export function formatIp(a: IpAddress): string {
  const b = a.bytes;
  if (a.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (hasPrefixBytes(b, MAPPED_PREFIX)) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] ?? 0) << 8) | (b[i + 1] ?? 0));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Parses "10.0.0.0/8" or "fc00::/7"; a bare address means a single host. Host bits must be zero. */
export function parseCidr(s: string): Cidr {
  if (typeof s !== 'string' || s.length === 0 || s.length > MAX_CIDR_LENGTH) {
    throw new PosternError('BAD_CONFIG', `not a CIDR block: ${JSON.stringify(String(s).slice(0, 60))}`);
  }
  const slash = s.indexOf('/');
  const addr = parseIp(slash < 0 ? s : s.slice(0, slash));
  if (!addr) throw new PosternError('BAD_CONFIG', `not a CIDR block (bad address): ${JSON.stringify(s)}`);
  const max = addr.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) {
      throw new PosternError(
        'BAD_CONFIG',
        `not a CIDR block (prefix must be 0-${max}): ${JSON.stringify(s)}`,
      );
    }
    prefix = Number(p);
  }
  const cidr: Cidr = { family: addr.family, bytes: addr.bytes, prefix };
  for (let bit = prefix; bit < max; bit++) {
    if (((addr.bytes[bit >> 3] ?? 0) >> (7 - (bit & 7))) & 1) {
      throw new PosternError(
        'BAD_CONFIG',
        `CIDR block ${JSON.stringify(s)} has host bits set after /${prefix}; did you mean ${formatIp(maskBytes(addr, prefix))}/${prefix}?`,
      );
    }
  }
  return cidr;
}

function maskBytes(a: IpAddress, prefix: number): IpAddress {
  const out = a.bytes.slice();
  for (let bit = prefix; bit < out.length * 8; bit++) {
    const i = bit >> 3;
    out[i] = (out[i] ?? 0) & ~(1 << (7 - (bit & 7)));
  }
  return { family: a.family, bytes: out };
}

export function cidrContains(c: Cidr, a: IpAddress): boolean {
  if (c.family !== a.family) return false;
  const full = c.prefix >> 3;
  for (let i = 0; i < full; i++) if (c.bytes[i] !== a.bytes[i]) return false;
  const rest = c.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((c.bytes[full] ?? 0) & mask) === ((a.bytes[full] ?? 0) & mask);
}

export function formatCidr(c: Cidr): string {
  return `${formatIp({ family: c.family, bytes: c.bytes })}/${c.prefix}`;
}

interface RangeEntry {
  readonly cidr: Cidr;
  readonly match: SpecialRangeMatch;
}

function table(rows: [string, SpecialRange][]): RangeEntry[] {
  return rows.map(([block, range]) => ({ cidr: parseCidr(block), match: { range, block } }));
}

// IANA special-purpose registries (RFC 6890 and later), plus psiphond's bogon list. More specific blocks
// come first so that the reason is the most precise one.
const IPV4_SPECIAL = table([
  ['0.0.0.0/32', 'unspecified'],
  ['0.0.0.0/8', 'this-network'], // RFC 1122
  ['10.0.0.0/8', 'private'], // RFC 1918
  ['100.64.0.0/10', 'cgnat'], // RFC 6598
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'], // RFC 3927
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'], // RFC 6890 IETF protocol assignments (DS-Lite, NAT64 discovery)
  ['192.0.2.0/24', 'documentation'], // RFC 5737 TEST-NET-1
  ['192.88.99.0/24', 'reserved'], // RFC 7526 deprecated 6to4 relay anycast
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmark'], // RFC 2544
  ['198.51.100.0/24', 'documentation'], // TEST-NET-2
  ['203.0.113.0/24', 'documentation'], // TEST-NET-3
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved'], // RFC 1112 class E
]);

const IPV6_SPECIAL = table([
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['::/96', 'reserved'], // deprecated IPv4-compatible addresses (RFC 4291)
  ['64:ff9b:1::/48', 'private'], // RFC 8215 local-use IPv4/IPv6 translation
  ['100::/64', 'reserved'], // RFC 6666 discard-only
  ['2001:2::/48', 'benchmark'], // RFC 5180
  ['2001::/23', 'reserved'], // RFC 2928 IETF protocol assignments, incl. Teredo 2001::/32
  ['2001:db8::/32', 'documentation'], // RFC 3849
  ['2002::/16', 'reserved'], // RFC 7526 6to4
  ['3fff::/20', 'documentation'], // RFC 9637
  ['fc00::/7', 'private'], // RFC 4193 unique local
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'private'], // deprecated site-local
  ['ff00::/8', 'multicast'],
]);

const NAT64_WELL_KNOWN = parseCidr('64:ff9b::/96'); // RFC 6052: the last 32 bits are an IPv4 address
const GLOBAL_UNICAST = parseCidr('2000::/3');
const OUTSIDE_GLOBAL_UNICAST: SpecialRangeMatch = { range: 'reserved', block: 'outside 2000::/3' };

/**
 * Returns which special-purpose range holds the address, or null for ordinary public unicast. Addresses
 * that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96) are judged by that address.
 */
export function classifyIp(a: IpAddress): SpecialRangeMatch | null {
  if (a.family === 4) {
    for (const e of IPV4_SPECIAL) if (cidrContains(e.cidr, a)) return e.match;
    return null;
  }
  if (hasPrefixBytes(a.bytes, MAPPED_PREFIX) || cidrContains(NAT64_WELL_KNOWN, a)) {
    return classifyIp({ family: 4, bytes: a.bytes.slice(12) });
  }
  for (const e of IPV6_SPECIAL) if (cidrContains(e.cidr, a)) return e.match;
  return cidrContains(GLOBAL_UNICAST, a) ? null : OUTSIDE_GLOBAL_UNICAST;
}

/** True for loopback, private, link-local, multicast, reserved, documentation ... (anything not public). */
export function isSpecialIp(a: IpAddress): boolean {
  return classifyIp(a) !== null;
}
