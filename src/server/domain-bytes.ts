// Bytes per domain, as clients report them in psiphon-status (`host_bytes`, already mapped through the sponsor's
// regexes and checked against them by the API handler). A single report is never logged: reports are summed
// into buckets of (hour, sponsor, platform, region, ASN, domain) across every tunnel of this server, and each
// bucket is written as one `domain_dest_bytes` event when the period ends. So the log shows how many bytes a
// domain carried for a region in a period, not what one session did ("page views are aggregated by time and/or
// session before being logged").
//
// Buckets live in memory until the period ends: a crash of the server loses at most one period of domain
// counts (the tunnel's own byte totals are in its server_tunnel event). A clean stop flushes them.
import type { Clock } from '../common/clock.ts';
import { hourOf, EVENT_SCHEMA_VERSION, type StatsEventOf } from '../stats/events.ts';

/** How often buckets are written out. */
export const DEFAULT_DOMAIN_BYTES_PERIOD_MS = 5 * 60_000;
/** Buckets held at once; when a new one would go over, everything is written out early. */
export const MAX_DOMAIN_BUCKETS = 50_000;

export interface DomainBytesKey {
  sponsorId: string | null;
  platform: StatsEventOf<'domain_dest_bytes'>['client_platform'];
  region: string;
  asn: string;
}

interface Bucket {
  hour: string;
  key: DomainBytesKey;
  domain: string;
  bytes: number;
}

export interface DomainBytesAggregatorOptions {
  hostId: string;
  clock: Clock;
  emit: (event: StatsEventOf<'domain_dest_bytes'>) => void;
  periodMs?: number;
}

export class DomainBytesAggregator {
  private readonly buckets = new Map<string, Bucket>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: DomainBytesAggregatorOptions) {}

  /** Adds one status report's bytes per domain. */
  add(key: DomainBytesKey, hostBytes: Readonly<Record<string, number>>): void {
    const hour = hourOf(this.opts.clock.now());
    for (const [domain, bytes] of Object.entries(hostBytes)) {
      if (!(bytes > 0)) continue;
      const id = JSON.stringify([hour, key.sponsorId, key.platform, key.region, key.asn, domain]);
      const b = this.buckets.get(id);
      if (b) {
        b.bytes = Math.min(Number.MAX_SAFE_INTEGER, b.bytes + bytes);
        continue;
      }
      if (this.buckets.size >= MAX_DOMAIN_BUCKETS) this.flush();
      this.buckets.set(id, { hour, key, domain, bytes });
    }
  }

  /** Buckets not yet written. */
  get pending(): number {
    return this.buckets.size;
  }

  /** Writes every bucket as an event and empties them. */
  flush(): void {
    const buckets = [...this.buckets.values()];
    this.buckets.clear();
    for (const b of buckets) {
      this.opts.emit({
        event_name: 'domain_dest_bytes',
        schema_version: EVENT_SCHEMA_VERSION,
        timestamp: b.hour,
        host_id: this.opts.hostId,
        sponsor_id: b.key.sponsorId,
        client_platform: b.key.platform,
        client_region: b.key.region,
        client_asn: b.key.asn,
        domain: b.domain,
        bytes: b.bytes,
      });
    }
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.flush(), this.opts.periodMs ?? DEFAULT_DOMAIN_BYTES_PERIOD_MS);
    this.timer.unref();
  }

  /** Stops the period timer and writes what is pending. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.flush();
  }
}
