// Which port-forward destinations a tunnel server may dial. By default it never reaches loopback, private,
// link-local, multicast, CGNAT, reserved, documentation or benchmark addresses (psiphond's bogon list and
// IANA's special-purpose registries), in any spelling, unless the operator's AllowDestinations names them.
// Names are resolved here and every resolved address is checked; the caller dials the address returned,
// never the name again, so a second DNS answer cannot swap in a forbidden address (DNS rebinding).
// Port rules have the shape of psiphond's traffic rules (AllowTCPPorts / DisallowTCPPorts, ...).
// Refusal messages name the range, never the address: destinations are user activity.
import { lookup as dnsLookup } from 'node:dns/promises';
import { z } from 'zod';
import { PosternError, describeError } from '../common/errors.ts';
import {
  classifyIp,
  cidrContains,
  formatIp,
  parseCidr,
  parseIp,
  unmapIpv4,
  type Cidr,
  type IpAddress,
  type IpFamily,
  type SpecialRange,
} from './ip-address.ts';

/** psiphond's DEFAULT_DIAL_TCP_PORT_FORWARD_TIMEOUT is 10 s for resolve + dial; resolving gets a share. */
export const DEFAULT_RESOLVE_TIMEOUT_MS = 5_000;
/** A name may resolve to many addresses; all are checked, but no more than this many are looked at. */
export const MAX_RESOLVED_ADDRESSES = 64;
/** RFC 1035: 253 characters of name (psiphond checks 255). */
export const MAX_HOSTNAME_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;
/** Bounds the size of a port list a config may hold (ranges count once). */
export const MAX_PORT_LIST_ENTRIES = 1024;
export const MAX_CIDR_LIST_ENTRIES = 4096;

export type PortForwardKind = 'tcp' | 'udp';

export type RefusalReason =
  | SpecialRange
  | 'disallowed-destination'
  | 'port-disallowed'
  | 'port-not-allowed'
  | 'invalid-port'
  | 'invalid-host'
  | 'resolve-failed'
  | 'resolve-timeout'
  | 'no-address';

export type DestinationDecision =
  | {
      readonly allowed: true;
      /** The address to dial: canonical text; IPv4-mapped IPv6 is given as IPv4. */
      readonly address: string;
      readonly family: IpFamily;
      readonly port: number;
      /** The name asked for, lower-cased without a trailing dot (domain-bytes stats use it); null for literals. */
      readonly domain: string | null;
    }
  | {
      readonly allowed: false;
      readonly reason: RefusalReason;
      /** For logs and the SSH channel-open failure text; never contains the destination address. */
      readonly message: string;
    };

/** An inclusive port range list, psiphond's `common.PortList`: JSON `[443, [8000, 8080]]`. */
export class PortList {
  private readonly ranges: readonly (readonly [number, number])[];
  private constructor(ranges: (readonly [number, number])[]) {
    this.ranges = ranges;
  }
  static of(entries: readonly (number | readonly [number, number])[]): PortList {
    if (entries.length > MAX_PORT_LIST_ENTRIES) {
      throw new PosternError(
        'BAD_CONFIG',
        `port list has ${entries.length} entries; at most ${MAX_PORT_LIST_ENTRIES}`,
      );
    }
    const ranges = entries.map((e): readonly [number, number] => {
      const [lo, hi] = typeof e === 'number' ? [e, e] : e;
      if (!isPort(lo) || !isPort(hi) || hi < lo) {
        throw new PosternError(
          'BAD_CONFIG',
          `invalid port range ${JSON.stringify(e)}: ports are 1-65535, low to high`,
        );
      }
      return [lo, hi];
    });
    return new PortList(ranges);
  }
  get isEmpty(): boolean {
    return this.ranges.length === 0;
  }
  has(port: number): boolean {
    for (const [lo, hi] of this.ranges) if (port >= lo && port <= hi) return true;
    return false;
  }
  toJSON(): (number | [number, number])[] {
    return this.ranges.map(([lo, hi]) => (lo === hi ? lo : [lo, hi]));
  }
}

function isPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

const PortSchema = z.number().int().min(1).max(65535);
export const PortListSchema = z
  .array(z.union([PortSchema, z.tuple([PortSchema, PortSchema])]))
  .max(MAX_PORT_LIST_ENTRIES)
  .refine((l) => l.every((e) => typeof e === 'number' || e[0] <= e[1]), 'a range is [low, high]');

/** The JSON shape in a server config (psiphond-style names; AllowDestinations/DisallowDestinations are ours). */
export const DestinationPolicyConfigSchema = z.object({
  AllowDestinations: z.array(z.string()).max(MAX_CIDR_LIST_ENTRIES).default([]),
  DisallowDestinations: z.array(z.string()).max(MAX_CIDR_LIST_ENTRIES).default([]),
  AllowTCPPorts: PortListSchema.optional(),
  DisallowTCPPorts: PortListSchema.optional(),
  AllowUDPPorts: PortListSchema.optional(),
  DisallowUDPPorts: PortListSchema.optional(),
  ResolveTimeoutMilliseconds: z.number().int().min(1).max(60_000).optional(),
});
export type DestinationPolicyConfig = z.input<typeof DestinationPolicyConfigSchema>;

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Resolves a name to all its addresses (dns.lookup semantics). Injected so tests never query DNS. */
export type Resolver = (host: string) => Promise<readonly ResolvedAddress[]>;

export const systemResolver: Resolver = (host) => dnsLookup(host, { all: true, verbatim: true });

export interface DestinationPolicyOptions {
  /** CIDRs that may be dialled although they are special-purpose (e.g. 127.0.0.0/8 for tests). */
  allowDestinations?: readonly string[];
  /** CIDRs never dialled; wins over everything (psiphond's DisallowSubnets). */
  disallowDestinations?: readonly string[];
  allowTcpPorts?: PortList;
  disallowTcpPorts?: PortList;
  allowUdpPorts?: PortList;
  disallowUdpPorts?: PortList;
  resolveTimeoutMs?: number;
  resolver?: Resolver;
}

const NUMERIC_LABEL = /^(?:0x[0-9a-f]*|[0-9]+)$/i;
const HOST_LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

type HostCheck =
  { kind: 'ip'; ip: IpAddress } | { kind: 'name'; name: string } | { kind: 'bad'; message: string };

/** Sorts the host of a port-forward request into an IP literal, a plausible DNS name, or junk. */
export function classifyHost(host: unknown): HostCheck {
  if (typeof host !== 'string' || host.length === 0) return { kind: 'bad', message: 'empty host' };
  if (host.length > MAX_HOSTNAME_LENGTH + 2) return { kind: 'bad', message: 'host name too long' };
  let h = host;
  const bracketed = h.startsWith('[') && h.endsWith(']');
  if (bracketed) h = h.slice(1, -1);
  if (bracketed || h.includes(':') || h.includes('%')) {
    const ip = parseIp(h);
    // Zone ids (fe80::1%eth0) and anything else net.isIP would not take are refused; brackets hold IPv6 only.
    return ip?.family === 6 ? { kind: 'ip', ip } : { kind: 'bad', message: 'not a valid IPv6 literal' };
  }
  const ip = parseIp(h);
  if (ip) return { kind: 'ip', ip };
  let name = h.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.length === 0 || name.length > MAX_HOSTNAME_LENGTH)
    return { kind: 'bad', message: 'invalid host name' };
  const labels = name.split('.');
  for (const l of labels) {
    if (l.length === 0 || l.length > MAX_LABEL_LENGTH || !HOST_LABEL.test(l)) {
      return { kind: 'bad', message: 'invalid host name' };
    }
  }
  // inet_aton shorthands ("127.1", "0x7f.1", "2130706433", "0177.0.0.1") are addresses to the system
  // resolver; no real name has an all-numeric last label, so refuse them rather than resolve them.
  if (NUMERIC_LABEL.test(labels[labels.length - 1] ?? '')) {
    return { kind: 'bad', message: 'numeric host that is not a dotted-quad address' };
  }
  // psiphond does not resolve mDNS names either.
  if (name === 'local' || name.endsWith('.local'))
    return { kind: 'bad', message: 'mDNS (.local) names are not resolved' };
  return { kind: 'name', name };
}

function parseCidrList(list: readonly string[] | undefined, field: string): Cidr[] {
  if (!list) return [];
  if (list.length > MAX_CIDR_LIST_ENTRIES) {
    throw new PosternError(
      'BAD_CONFIG',
      `${field} has ${list.length} entries; at most ${MAX_CIDR_LIST_ENTRIES}`,
    );
  }
  return list.map((s) => {
    try {
      return parseCidr(s);
    } catch (e) {
      throw new PosternError('BAD_CONFIG', `${field}: ${describeError(e)}`, { cause: e });
    }
  });
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
const TIMED_OUT = Symbol('timed out');

function refuse(reason: RefusalReason, message: string): DestinationDecision {
  return { allowed: false, reason, message };
}

export class DestinationPolicy {
  private readonly allow: Cidr[];
  private readonly disallow: Cidr[];
  private readonly ports: Record<
    PortForwardKind,
    { allow: PortList | undefined; disallow: PortList | undefined }
  >;
  private readonly resolveTimeoutMs: number;
  private readonly resolver: Resolver;

  constructor(opts: DestinationPolicyOptions = {}) {
    this.allow = parseCidrList(opts.allowDestinations, 'AllowDestinations');
    this.disallow = parseCidrList(opts.disallowDestinations, 'DisallowDestinations');
    this.ports = {
      tcp: { allow: opts.allowTcpPorts, disallow: opts.disallowTcpPorts },
      udp: { allow: opts.allowUdpPorts, disallow: opts.disallowUdpPorts },
    };
    this.resolveTimeoutMs = opts.resolveTimeoutMs ?? DEFAULT_RESOLVE_TIMEOUT_MS;
    this.resolver = opts.resolver ?? systemResolver;
  }

  /** Builds a policy from the server config's JSON fields (validated; BAD_CONFIG names the field). */
  static fromConfig(config: unknown, resolver?: Resolver): DestinationPolicy {
    const r = DestinationPolicyConfigSchema.safeParse(config);
    if (!r.success) {
      const issues = r.error.issues.map((i) => `${i.path.map(String).join('.')}: ${i.message}`).join('; ');
      throw new PosternError('BAD_CONFIG', `destination rules are not valid: ${issues}`);
    }
    const c = r.data;
    const list = (l: (number | [number, number])[] | undefined): PortList | undefined =>
      l === undefined ? undefined : PortList.of(l);
    return new DestinationPolicy({
      allowDestinations: c.AllowDestinations,
      disallowDestinations: c.DisallowDestinations,
      allowTcpPorts: list(c.AllowTCPPorts),
      disallowTcpPorts: list(c.DisallowTCPPorts),
      allowUdpPorts: list(c.AllowUDPPorts),
      disallowUdpPorts: list(c.DisallowUDPPorts),
      ...(c.ResolveTimeoutMilliseconds !== undefined
        ? { resolveTimeoutMs: c.ResolveTimeoutMilliseconds }
        : {}),
      ...(resolver ? { resolver } : {}),
    });
  }

  /**
   * Decides on a port forward to host:port. Never throws: hostile input is a refusal. When allowed, dial
   * `address` (already resolved and checked), not `host`.
   */
  async check(host: unknown, port: unknown, kind: PortForwardKind = 'tcp'): Promise<DestinationDecision> {
    if (!isPort(port)) return refuse('invalid-port', 'port must be an integer 1-65535');
    const rules = this.ports[kind];
    // As in psiphond, a disallowed port is refused before anything else is spent on it.
    if (rules.disallow?.has(port))
      return refuse('port-disallowed', `${kind.toUpperCase()} port ${port} is disallowed`);

    const h = classifyHost(host);
    if (h.kind === 'bad') return refuse('invalid-host', h.message);
    let chosen: IpAddress;
    let domain: string | null = null;
    if (h.kind === 'ip') {
      chosen = unmapIpv4(h.ip);
      const d = this.checkAddress(chosen);
      if (d) return d;
    } else {
      domain = h.name;
      const addrs = await this.resolve(h.name);
      if (!Array.isArray(addrs)) return addrs;
      // Every answer must pass: a name that mixes public and private answers is refused whole, so which
      // address a later dial would have picked cannot matter.
      for (const a of addrs) {
        const d = this.checkAddress(a);
        if (d) return d;
      }
      // psiphond prefers IPv4 (hosts may lack IPv6 routes), else the first IPv6 answer.
      chosen = addrs.find((a) => a.family === 4) ?? (addrs[0] as IpAddress);
    }

    if (rules.allow && !rules.allow.isEmpty && !rules.allow.has(port) && !this.isAllowListed(chosen)) {
      return refuse('port-not-allowed', `${kind.toUpperCase()} port ${port} is not in the allowed ports`);
    }
    return { allowed: true, address: formatIp(chosen), family: chosen.family, port, domain };
  }

  private isAllowListed(a: IpAddress): boolean {
    return this.allow.some((c) => cidrContains(c, a));
  }

  /** Null when the address may be dialled. */
  private checkAddress(a: IpAddress): DestinationDecision | null {
    if (this.disallow.some((c) => cidrContains(c, a))) {
      return refuse('disallowed-destination', 'destination is in DisallowDestinations');
    }
    if (this.isAllowListed(a)) return null;
    const special = classifyIp(a);
    if (special) {
      return refuse(special.range, `destination is in a ${special.range} range (${special.block})`);
    }
    return null;
  }

  private async resolve(name: string): Promise<IpAddress[] | DestinationDecision> {
    let answers: unknown;
    try {
      const r = await withTimeout(this.resolver(name), this.resolveTimeoutMs);
      if (r === TIMED_OUT)
        return refuse('resolve-timeout', `resolving took longer than ${this.resolveTimeoutMs} ms`);
      answers = r;
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      return refuse(
        'resolve-failed',
        `cannot resolve the name${typeof code === 'string' ? ` (${code})` : ''}`,
      );
    }
    if (!Array.isArray(answers) || answers.length === 0)
      return refuse('no-address', 'the name has no address');
    const out: IpAddress[] = [];
    for (const ans of answers.slice(0, MAX_RESOLVED_ADDRESSES)) {
      const text = (ans as { address?: unknown } | null)?.address;
      const ip = typeof text === 'string' ? parseIp(text) : null;
      // An answer we cannot parse (a zone id, junk from a custom resolver) is not dialled, and since we
      // cannot tell what it is, the name is refused.
      if (!ip) return refuse('invalid-host', 'the name resolved to something that is not an address');
      out.push(unmapIpv4(ip));
    }
    return out;
  }
}
