// An in-memory StatsStore for tests of the services around the store (HTTP routes, scheduled jobs). Same
// exactly-once semantics as the SQL store: per (host, file) an ingested-up-to offset; a batch starting there is
// taken whole, one ending at or before it is a duplicate, anything else is out of order.
import { randomBytes } from 'node:crypto';
import type { Clock } from '../../src/common/clock.ts';
import { dateOfHour, type StatsEvent } from '../../src/stats/events.ts';
import type { IngestBatch, IngestResult } from '../../src/stats/ingest-protocol.ts';
import {
  DEFAULT_RETENTION_DAYS,
  type DailyRollupRow,
  type DomainRollupRow,
  type FailureRollupRow,
  type ReportQuery,
  type PurgeSummary,
  type RetentionSummary,
  type RollupSummary,
  type ServerLoadRow,
  type StatsStore,
} from '../../src/stats/store.ts';

const DAY_MS = 86_400_000;
const NONE = 'None';

function cutoffDate(now: Date, retentionDays: number): string {
  return new Date(now.getTime() - retentionDays * DAY_MS).toISOString().slice(0, 10);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

function inRange(q: ReportQuery, date: string, sponsorId: string): boolean {
  return date >= q.from && date <= q.to && (q.sponsorId === undefined || q.sponsorId === sponsorId);
}

export class MemoryStatsStore implements StatsStore {
  readonly raw: StatsEvent[] = [];
  readonly offsets = new Map<string, number>();
  ingestCalls = 0;
  /** Set to make the next calls fail, as a broken database would. */
  failWith: Error | undefined;
  private readonly dirty = new Set<string>();
  private dailyRows: DailyRollupRow[] = [];
  private domainRows: DomainRollupRow[] = [];
  private failureRows: FailureRollupRow[] = [];

  constructor(private readonly opts: { clock: Clock; retentionDays?: number }) {}

  private check(): void {
    if (this.failWith) throw this.failWith;
  }

  async ingest(batch: IngestBatch): Promise<IngestResult> {
    this.check();
    this.ingestCalls++;
    const key = `${batch.hostId}\u0000${batch.file}`;
    const next = this.offsets.get(key) ?? 0;
    if (batch.offset !== next) {
      if (batch.offset < next && batch.endOffset <= next) return { status: 'duplicate', nextOffset: next };
      return { status: 'out-of-order', nextOffset: next };
    }
    const cutoff = cutoffDate(this.opts.clock.now(), this.opts.retentionDays ?? DEFAULT_RETENTION_DAYS);
    let expired = 0;
    for (const e of batch.events) {
      const date = dateOfHour(e.timestamp);
      if (date < cutoff) {
        expired++;
        continue;
      }
      this.raw.push(e);
      this.dirty.add(date);
    }
    this.offsets.set(key, batch.endOffset);
    return {
      status: 'ingested',
      events: batch.events.length - expired,
      expired,
      nextOffset: batch.endOffset,
    };
  }

  async nextOffset(hostId: string, file: string): Promise<number> {
    this.check();
    return this.offsets.get(`${hostId}\u0000${file}`) ?? 0;
  }

  async datesNeedingRollup(): Promise<string[]> {
    this.check();
    return [...this.dirty].sort();
  }

  async rollup(date: string): Promise<RollupSummary> {
    this.check();
    const events = this.raw.filter((e) => dateOfHour(e.timestamp) === date);
    const daily = new Map<string, DailyRollupRow & { durations: number[] }>();
    const domains = new Map<string, DomainRollupRow>();
    const failures = new Map<string, FailureRollupRow>();
    for (const e of events) {
      if (e.event_name === 'domain_dest_bytes') {
        const dims = {
          date,
          sponsorId: e.sponsor_id ?? NONE,
          region: e.client_region,
          platform: e.client_platform ?? NONE,
          domain: e.domain,
        };
        const k = Object.values(dims).join('\u0000');
        const row = domains.get(k) ?? { ...dims, bytes: 0 };
        row.bytes += e.bytes;
        domains.set(k, row);
        continue;
      }
      if (e.event_name === 'server_load' || e.event_name === 'irregular_tunnel') continue;
      const dims = {
        date,
        sponsorId: e.sponsor_id ?? NONE,
        region: e.client_region,
        platform: e.client_platform ?? NONE,
        protocol: e.relay_protocol ?? NONE,
      };
      const k = Object.values(dims).join('\u0000');
      const row = daily.get(k) ?? {
        ...dims,
        uniqueUsers: 0,
        sessions: 0,
        durationSumMs: 0,
        durationP50Ms: 0,
        durationP90Ms: 0,
        bytesUp: 0,
        bytesDown: 0,
        bytes: 0,
        failures: 0,
        discoveries: 0,
        listDownloads: 0,
        upgrades: 0,
        durations: [],
      };
      daily.set(k, row);
      switch (e.event_name) {
        case 'unique_user':
          row.uniqueUsers++;
          break;
        case 'server_tunnel':
          row.sessions++;
          row.durations.push(e.duration_ms);
          row.durationSumMs += e.duration_ms;
          row.bytesUp += e.bytes_up_tcp;
          row.bytesDown += e.bytes_down_tcp;
          row.bytes += e.bytes;
          break;
        case 'failed_tunnel': {
          row.failures++;
          const fk = `${k}\u0000${e.tunnel_error}`;
          const f = failures.get(fk) ?? { ...dims, errorCode: e.tunnel_error, count: 0 };
          f.count++;
          failures.set(fk, f);
          break;
        }
        case 'discovery':
          row.discoveries += e.discovered_servers;
          break;
        case 'remote_server_list':
          row.listDownloads++;
          break;
        case 'upgrade':
          row.upgrades++;
          break;
      }
    }
    const dailyRows = [...daily.values()].map(({ durations, ...row }) => {
      const sorted = durations.sort((a, b) => a - b);
      return { ...row, durationP50Ms: percentile(sorted, 0.5), durationP90Ms: percentile(sorted, 0.9) };
    });
    this.dailyRows = [...this.dailyRows.filter((r) => r.date !== date), ...dailyRows];
    this.domainRows = [...this.domainRows.filter((r) => r.date !== date), ...domains.values()];
    this.failureRows = [...this.failureRows.filter((r) => r.date !== date), ...failures.values()];
    this.dirty.delete(date);
    return {
      date,
      events: events.length,
      dailyRows: dailyRows.length,
      domainRows: domains.size,
      failureRows: failures.size,
    };
  }

  async deleteExpired(now: Date, retentionDays: number): Promise<RetentionSummary> {
    this.check();
    const cutoff = cutoffDate(now, retentionDays);
    return { deleted: this.deleteRawBefore(cutoff), cutoffDate: cutoff };
  }

  /** Drops raw events dated before `date`; returns their counts by event kind. */
  private deleteRawBefore(date: string): Record<string, number> {
    const deleted: Record<string, number> = {};
    const kept = this.raw.filter((e) => {
      if (dateOfHour(e.timestamp) >= date) return true;
      deleted[e.event_name] = (deleted[e.event_name] ?? 0) + 1;
      return false;
    });
    this.raw.splice(0, this.raw.length, ...kept);
    return deleted;
  }

  private noiseKey: Buffer | null = null;
  async sponsorNoiseKey(): Promise<Buffer> {
    this.check();
    this.noiseKey ??= randomBytes(32);
    return this.noiseKey;
  }

  async purgeBefore(date: string): Promise<PurgeSummary> {
    this.check();
    const deleted = this.deleteRawBefore(date);
    const before = {
      daily: this.dailyRows.length,
      domains: this.domainRows.length,
      failures: this.failureRows.length,
    };
    this.dailyRows = this.dailyRows.filter((r) => r.date >= date);
    this.domainRows = this.domainRows.filter((r) => r.date >= date);
    this.failureRows = this.failureRows.filter((r) => r.date >= date);
    for (const d of [...this.dirty]) if (d < date) this.dirty.delete(d);
    return {
      deleted,
      cutoffDate: date,
      rollupsDeleted: {
        daily: before.daily - this.dailyRows.length,
        domains: before.domains - this.domainRows.length,
        failures: before.failures - this.failureRows.length,
      },
    };
  }

  async daily(q: ReportQuery): Promise<DailyRollupRow[]> {
    this.check();
    return this.dailyRows.filter((r) => inRange(q, r.date, r.sponsorId));
  }

  async domains(q: ReportQuery): Promise<DomainRollupRow[]> {
    this.check();
    return this.domainRows.filter((r) => inRange(q, r.date, r.sponsorId));
  }

  async failures(q: ReportQuery): Promise<FailureRollupRow[]> {
    this.check();
    return this.failureRows.filter((r) => inRange(q, r.date, r.sponsorId));
  }

  async serverLoad(): Promise<ServerLoadRow[]> {
    this.check();
    const latest = new Map<string, ServerLoadRow>();
    for (const e of this.raw) {
      if (e.event_name !== 'server_load') continue;
      latest.set(e.host_id, {
        hostId: e.host_id,
        hour: e.timestamp,
        establishedTunnels: e.established_tunnels,
        openPortForwards: e.open_port_forwards,
        rssBytes: e.rss_bytes,
      });
    }
    return [...latest.values()].sort((a, b) => (a.hostId < b.hostId ? -1 : 1));
  }

  async close(): Promise<void> {}
}
