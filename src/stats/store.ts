// The statistics store: raw user activity as the back office ingests it, daily rollups, retention, and the
// queries behind reports. One interface, implemented on the SqlDb (SQLite by default, PostgreSQL for scale).
import type { IngestBatch, IngestResult } from './ingest-protocol.ts';

/** The seed's figure: raw user activity and domain rows are discarded after this many days. */
export const DEFAULT_RETENTION_DAYS = 60;
/** Sponsor-view cells with fewer unique users than this are suppressed. */
export const DEFAULT_SPONSOR_K = 10;

/** One daily rollup row: date × sponsor × region × platform × protocol. */
export interface DailyRollupRow {
  date: string;
  sponsorId: string;
  region: string;
  platform: string;
  protocol: string;
  uniqueUsers: number;
  sessions: number;
  durationSumMs: number;
  durationP50Ms: number;
  durationP90Ms: number;
  bytesUp: number;
  bytesDown: number;
  bytes: number;
  failures: number;
  discoveries: number;
  listDownloads: number;
  upgrades: number;
}

/** Bytes per domain: date × sponsor × region × platform × domain. */
export interface DomainRollupRow {
  date: string;
  sponsorId: string;
  region: string;
  platform: string;
  domain: string;
  bytes: number;
}

/** Failed tunnels: date × sponsor × region × platform × protocol × error code. */
export interface FailureRollupRow {
  date: string;
  sponsorId: string;
  region: string;
  platform: string;
  protocol: string;
  errorCode: string;
  count: number;
}

/** The latest load report of one tunnel server (server_load events; about servers, not users). */
export interface ServerLoadRow {
  hostId: string;
  /** The hour of the report */
  hour: string;
  establishedTunnels: number;
  openPortForwards: number;
  rssBytes: number;
}

export interface RollupSummary {
  date: string;
  /** Raw rows read */
  events: number;
  dailyRows: number;
  domainRows: number;
  failureRows: number;
}

export interface RetentionSummary {
  /** Raw rows deleted, by event kind (counts only: what was deleted is gone) */
  deleted: Record<string, number>;
  /** Events dated before this (YYYY-MM-DD) are gone */
  cutoffDate: string;
}

export interface PurgeSummary extends RetentionSummary {
  /** Rollup rows deleted, by table: what reports showed for the purged dates */
  rollupsDeleted: { daily: number; domains: number; failures: number };
}

export interface ReportQuery {
  /** Inclusive, YYYY-MM-DD */
  from: string;
  /** Inclusive, YYYY-MM-DD */
  to: string;
  sponsorId?: string;
}

export interface StatsStore {
  /** Takes a batch exactly once (see ingest-protocol.ts); all of it or nothing. */
  ingest(batch: IngestBatch): Promise<IngestResult>;
  /** The offset up to which (host, file) has been ingested (0 when never seen). */
  nextOffset(hostId: string, file: string): Promise<number>;
  /** (Re)computes the rollups of one date from the raw rows; running it twice gives the same rows. */
  rollup(date: string): Promise<RollupSummary>;
  /** Dates with raw rows ingested since their last rollup. */
  datesNeedingRollup(): Promise<string[]>;
  /** Deletes raw rows dated before `now - retentionDays` (rollups are kept). */
  deleteExpired(now: Date, retentionDays: number): Promise<RetentionSummary>;
  /**
   * Deletes everything dated before `date` (YYYY-MM-DD), rollups included: the operator's way to delete what
   * retention keeps. Events of those dates that arrive later are expired at ingest.
   */
  purgeBefore(date: string): Promise<PurgeSummary>;
  daily(q: ReportQuery): Promise<DailyRollupRow[]>;
  domains(q: ReportQuery): Promise<DomainRollupRow[]>;
  failures(q: ReportQuery): Promise<FailureRollupRow[]>;
  /**
   * The secret that makes the sponsor view's noise consistent (see sponsor-view.ts), created on first use and
   * kept as long as the database.
   */
  sponsorNoiseKey(): Promise<Buffer>;
  /** Each server's latest load report, by host ID. */
  serverLoad(): Promise<ServerLoadRow[]>;
  close(): Promise<void>;
}
