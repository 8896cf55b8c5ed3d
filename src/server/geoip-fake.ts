// An in-memory GeoIpLookup for tests of the modules that take one (handshake, traffic rules, events): answers
// from a table the test fills, "None" for everything else. It counts lookups but keeps no record of which
// addresses were asked for, like the real one.
import { GEOIP_UNKNOWN_VALUE, unknownGeoInfo, type GeoInfo, type GeoIpLookup } from './geoip.ts';
import { cidrContains, parseCidr, parseIp, unmapIpv4, type Cidr } from './ip-address.ts';

export class FakeGeoIp implements GeoIpLookup {
  private readonly entries: { cidr: Cidr; info: GeoInfo }[] = [];
  private count = 0;

  /** `table` maps an address or CIDR block to the fields to answer; missing fields are "None". */
  constructor(table: Record<string, Partial<GeoInfo>> = {}) {
    for (const [block, info] of Object.entries(table)) this.set(block, info);
  }

  /** Adds or overrides an answer; later entries win over earlier ones. */
  set(block: string, info: Partial<GeoInfo>): this {
    const full = { ...unknownGeoInfo(), ...info };
    if (full.isp === GEOIP_UNKNOWN_VALUE) full.isp = full.aso;
    this.entries.unshift({ cidr: parseCidr(block), info: full });
    return this;
  }

  lookup(ip: string): GeoInfo {
    this.count++;
    const a = typeof ip === 'string' ? parseIp(ip) : null;
    if (!a) return unknownGeoInfo();
    const u = unmapIpv4(a);
    const hit = this.entries.find((e) => cidrContains(e.cidr, u));
    return hit ? { ...hit.info } : unknownGeoInfo();
  }

  /** How many lookups were made (a session should make exactly one). */
  get lookups(): number {
    return this.count;
  }
}
