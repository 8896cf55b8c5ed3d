// Statistics ingest speed: events per second through the stats store's ingest (cursor check, cells, raw rows,
// cursor and rollup marks, one transaction per batch), against a bare insert loop of the same rows in the
// same run: better-sqlite3 stepping a prepared INSERT per row, and for PostgreSQL a multi-row INSERT ... VALUES
// per batch on one pg connection. Both baselines commit once per batch, like the store.
// Run: node --import tsx bench/stats-ingest.ts [--events 200000] [--batch 5000] [--pg postgres://...]
//      (PostgreSQL runs when --pg or POSTERN_TEST_PG gives a URL; a fresh schema is used and dropped)
import Database from 'better-sqlite3';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openSqlDb } from '../src/store/open-sql-db.ts';
import type { StatsEvent } from '../src/stats/events.ts';
import type { IngestBatch } from '../src/stats/ingest-protocol.ts';
import { createStatsStore, durationBucket, NONE_PLACEHOLDER } from '../src/stats/sql-stats-store.ts';
import { tempDir } from './lib.ts';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '200000' },
    batch: { type: 'string', default: '5000' },
    pg: { type: 'string' },
  },
});
const EVENTS = Number(values.events);
const BATCH = Number(values.batch);
const PG_URL = values.pg ?? process.env['POSTERN_TEST_PG'];
const SPONSORS = ['SPONSOR1', 'SPONSOR2', 'SPONSOR3', 'SPONSOR4', null] as const;
const REGIONS = [
  'US',
  'IR',
  'CN',
  'RU',
  'TR',
  'DE',
  'BR',
  'IN',
  'GB',
  'VE',
  'BY',
  'EG',
  'PK',
  'None',
] as const;
const PLATFORMS = ['Android', 'iOS', 'Windows', 'Other', null] as const;
const PROTOCOLS = ['OSSH', 'TLS-OSSH', 'UNFRONTED-MEEK-OSSH', 'FRONTED-MEEK-OSSH', 'SSH', null] as const;
const DOMAINS = ['(OTHER)', 'youtube.com', 'facebook.com', 'instagram.com', 'whatsapp.net', 'example.com'];

/** Deterministic, so every run ingests the same events. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function pick<T>(random: () => number, list: readonly T[]): T {
  return list[Math.floor(random() * list.length)]!;
}

/** A realistic mix: tunnels, users, domain buckets, failures, and a few discoveries, downloads and upgrades. */
function makeEvents(n: number): StatsEvent[] {
  const random = lcg(1);
  const today = Date.now();
  const out: StatsEvent[] = [];
  for (let i = 0; i < n; i++) {
    const hour = new Date(today - Math.floor(random() * 72) * 3_600_000);
    hour.setUTCMinutes(0, 0, 0);
    const base = {
      schema_version: 1 as const,
      timestamp: hour.toISOString(),
      host_id: 'host-1',
      sponsor_id: pick(random, SPONSORS),
      propagation_channel_id: 'CHANNEL1',
      client_version: '170',
      client_platform: pick(random, PLATFORMS),
      relay_protocol: pick(random, PROTOCOLS),
      client_region: pick(random, REGIONS),
      client_city: 'Springfield',
      client_isp: 'Example ISP',
      client_asn: '64500',
      client_aso: 'Example AS',
    };
    const kind = random();
    if (kind < 0.4) {
      const up = Math.floor(random() * 1e7);
      const down = Math.floor(random() * 1e8);
      out.push({
        ...base,
        event_name: 'server_tunnel',
        session_id: 'abcdef0123456789',
        handshake_completed: true,
        start_time: base.timestamp,
        duration_ms: Math.floor(Math.exp(random() * 16)),
        bytes_up_tcp: up,
        bytes_down_tcp: down,
        bytes: up + down,
        port_forwards: 10,
        port_forwards_refused: 0,
        peak_concurrent_port_forwards: 4,
      });
    } else if (kind < 0.6) out.push({ ...base, event_name: 'unique_user' });
    else if (kind < 0.8) {
      out.push({
        schema_version: 1,
        event_name: 'domain_dest_bytes',
        timestamp: base.timestamp,
        host_id: base.host_id,
        sponsor_id: base.sponsor_id,
        client_platform: base.client_platform,
        client_region: base.client_region,
        client_asn: base.client_asn,
        domain: pick(random, DOMAINS),
        bytes: Math.floor(random() * 1e7),
      });
    } else if (kind < 0.9) out.push({ ...base, event_name: 'failed_tunnel', tunnel_error: 'timeout' });
    else if (kind < 0.95) out.push({ ...base, event_name: 'discovery', discovered_servers: 2 });
    else if (kind < 0.98) {
      out.push({
        ...base,
        event_name: 'remote_server_list',
        tunneled: false,
        authenticated: true,
        bytes: 4096,
        duration_ms: 200,
      });
    } else out.push({ ...base, event_name: 'upgrade', upgrade_version: '171' });
  }
  return out;
}

function batches(events: StatsEvent[]): IngestBatch[] {
  const out: IngestBatch[] = [];
  let offset = 0;
  for (let i = 0; i < events.length; i += BATCH) {
    const slice = events.slice(i, i + BATCH);
    // About 400 bytes per JSON line; the exact figure does not matter to the store.
    const end = offset + slice.length * 400;
    out.push({
      hostId: 'host-1',
      file: 'events-0000000000001-0000000001.jsonl',
      offset,
      endOffset: end,
      events: slice,
    });
    offset = end;
  }
  return out;
}

type Row = Array<string | number | null>;

/** The same rows the store writes, with cell IDs taken from `cells` (filled as new combinations appear). */
function rowsFor(events: StatsEvent[], cells: Map<string, number>): { events: Row[]; domains: Row[] } {
  const out = { events: [] as Row[], domains: [] as Row[] };
  const cellOf = (s: string | null, r: string, p: string | null, proto: string | null): number => {
    const key = `${s ?? NONE_PLACEHOLDER}|${r}|${p ?? NONE_PLACEHOLDER}|${proto ?? NONE_PLACEHOLDER}`;
    let id = cells.get(key);
    if (id === undefined) cells.set(key, (id = cells.size + 1));
    return id;
  };
  for (const e of events) {
    const date = e.timestamp.slice(0, 10);
    if (e.event_name === 'domain_dest_bytes') {
      out.domains.push([
        date,
        cellOf(e.sponsor_id, e.client_region, e.client_platform, null),
        e.domain,
        e.bytes,
      ]);
      continue;
    }
    if (e.event_name === 'server_load' || e.event_name === 'irregular_tunnel') continue;
    const row: Row = [
      date,
      e.event_name,
      cellOf(e.sponsor_id, e.client_region, e.client_platform, e.relay_protocol),
    ];
    if (e.event_name === 'server_tunnel') {
      row.push(
        e.duration_ms,
        durationBucket(e.duration_ms),
        e.bytes_up_tcp,
        e.bytes_down_tcp,
        e.bytes,
        null,
        null,
      );
    } else if (e.event_name === 'failed_tunnel') row.push(null, null, null, null, null, e.tunnel_error, null);
    else if (e.event_name === 'discovery') row.push(null, null, null, null, null, null, e.discovered_servers);
    else row.push(null, null, null, null, null, null, null);
    out.events.push(row);
  }
  return out;
}

const EVENT_INSERT_COLUMNS =
  'date, event_name, cell_id, duration_ms, duration_bucket, bytes_up_tcp, bytes_down_tcp, bytes, tunnel_error, discovered_servers';
const DOMAIN_INSERT_COLUMNS = 'date, cell_id, domain, bytes';

async function storeRate(target: string, opts: { schema?: string }, all: IngestBatch[]): Promise<number> {
  const store = await createStatsStore(await openSqlDb(target, opts));
  try {
    // A first batch outside the timing, as a running back office has its cells cached.
    await store.ingest({ ...all[0]!, file: 'events-0000000000000-0000000000.jsonl' });
    const t = performance.now();
    for (const b of all) {
      const r = await store.ingest(b);
      if (r.status !== 'ingested' || r.expired !== 0) throw new Error(`unexpected ingest result ${r.status}`);
    }
    return (EVENTS / (performance.now() - t)) * 1000;
  } finally {
    await store.close();
  }
}

function sqliteBaselineRate(path: string, all: IngestBatch[]): number {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(`CREATE TABLE stats_events (date TEXT NOT NULL, event_name TEXT NOT NULL, cell_id BIGINT NOT NULL,
    duration_ms BIGINT, duration_bucket INTEGER, bytes_up_tcp BIGINT, bytes_down_tcp BIGINT, bytes BIGINT,
    tunnel_error TEXT, discovered_servers BIGINT);
    CREATE INDEX stats_events_date ON stats_events (date);
    CREATE TABLE stats_domain_bytes (date TEXT NOT NULL, cell_id BIGINT NOT NULL, domain TEXT NOT NULL, bytes BIGINT NOT NULL);
    CREATE INDEX stats_domain_bytes_date ON stats_domain_bytes (date);`);
  const insertEvent = db.prepare(
    `INSERT INTO stats_events (${EVENT_INSERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)`,
  );
  const insertDomain = db.prepare(
    `INSERT INTO stats_domain_bytes (${DOMAIN_INSERT_COLUMNS}) VALUES (?,?,?,?)`,
  );
  const cells = new Map<string, number>();
  const prepared = all.map((b) => rowsFor(b.events, cells));
  const t = performance.now();
  for (const rows of prepared) {
    db.exec('BEGIN IMMEDIATE');
    for (const r of rows.events) insertEvent.run(r);
    for (const r of rows.domains) insertDomain.run(r);
    db.exec('COMMIT');
  }
  const rate = (EVENTS / (performance.now() - t)) * 1000;
  db.close();
  return rate;
}

async function pgBaselineRate(url: string, schema: string, all: IngestBatch[]): Promise<number> {
  const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
  await client.connect();
  try {
    await client.query(`CREATE TABLE stats_events (date TEXT NOT NULL, event_name TEXT NOT NULL, cell_id BIGINT NOT NULL,
      duration_ms BIGINT, duration_bucket INTEGER, bytes_up_tcp BIGINT, bytes_down_tcp BIGINT, bytes BIGINT,
      tunnel_error TEXT, discovered_servers BIGINT);
      CREATE INDEX stats_events_date ON stats_events (date);
      CREATE TABLE stats_domain_bytes (date TEXT NOT NULL, cell_id BIGINT NOT NULL, domain TEXT NOT NULL, bytes BIGINT NOT NULL);
      CREATE INDEX stats_domain_bytes_date ON stats_domain_bytes (date);`);
    const cells = new Map<string, number>();
    const prepared = all.map((b) => rowsFor(b.events, cells));
    const insert = async (table: string, columns: string, rows: Row[]): Promise<void> => {
      if (rows.length === 0) return;
      const width = rows[0]!.length;
      const tuples = rows.map(
        (_, r) => `(${Array.from({ length: width }, (_, c) => `$${r * width + c + 1}`).join(',')})`,
      );
      await client.query(`INSERT INTO ${table} (${columns}) VALUES ${tuples.join(',')}`, rows.flat());
    };
    const t = performance.now();
    for (const rows of prepared) {
      await client.query('BEGIN');
      await insert('stats_events', EVENT_INSERT_COLUMNS, rows.events);
      await insert('stats_domain_bytes', DOMAIN_INSERT_COLUMNS, rows.domains);
      await client.query('COMMIT');
    }
    return (EVENTS / (performance.now() - t)) * 1000;
  } finally {
    await client.end();
  }
}

async function dropSchemas(url: string, schemas: string[]): Promise<void> {
  const admin = await openSqlDb(url);
  try {
    for (const s of schemas) await admin.exec(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
  } finally {
    await admin.close();
  }
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const events = makeEvents(EVENTS);
const all = batches(events);
console.log(
  `${fmt(EVENTS)} events in batches of ${fmt(BATCH)} (40% tunnels, 20% users, 20% domain bytes, 20% other)`,
);

const dir = tempDir('postern-bench-stats-');
const sqliteBase = sqliteBaselineRate(join(dir, 'baseline.sqlite'), all);
const sqliteStore = await storeRate(join(dir, 'store.sqlite'), {}, all);
console.log(
  `SQLite:     store ${fmt(sqliteStore)} events/s; bare better-sqlite3 insert loop ${fmt(sqliteBase)} rows/s; ` +
    `ratio ${(sqliteStore / sqliteBase).toFixed(2)}x (target >= 100,000 events/s)`,
);

if (PG_URL) {
  const schemas = [`bench_${randomBytes(5).toString('hex')}`, `bench_${randomBytes(5).toString('hex')}`];
  try {
    const admin = await openSqlDb(PG_URL);
    for (const s of schemas) await admin.exec(`CREATE SCHEMA "${s}"`);
    await admin.close();
    const pgBase = await pgBaselineRate(PG_URL, schemas[0]!, all);
    const pgStore = await storeRate(PG_URL, { schema: schemas[1]! }, all);
    console.log(
      `PostgreSQL: store ${fmt(pgStore)} events/s; bare pg multi-row INSERT ${fmt(pgBase)} rows/s; ` +
        `ratio ${(pgStore / pgBase).toFixed(2)}x (target >= 50,000 events/s)`,
    );
  } finally {
    await dropSchemas(PG_URL, schemas);
  }
} else {
  console.log('PostgreSQL: skipped (give --pg postgres://... or set POSTERN_TEST_PG)');
}
