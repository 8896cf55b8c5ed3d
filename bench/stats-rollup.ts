// Daily rollup speed on SQLite: N raw events of one date (generated straight into the store's tables by SQL,
// which is far quicker than ingesting them), then the store's rollup(date) timed, against a bare
// `SELECT count(*) ... GROUP BY cell_id` over the same rows in the same run.
// Run: node --import tsx bench/stats-rollup.ts [--events 10000000]
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openSqlDb } from '../src/store/open-sql-db.ts';
import { createStatsStore, DURATION_BUCKET_BASE } from '../src/stats/sql-stats-store.ts';
import { tempDir } from './lib.ts';

const { values } = parseArgs({ options: { events: { type: 'string', default: '10000000' } } });
const EVENTS = Number(values.events);
const DATE = new Date().toISOString().slice(0, 10);
/** Share of the events that are domain-bytes buckets (kept in their own table). */
const DOMAIN_SHARE = 0.2;
const SPONSORS = ['SPONSOR1', 'SPONSOR2', 'SPONSOR3', 'SPONSOR4', 'None'];
const REGIONS = ['US', 'IR', 'CN', 'RU', 'TR', 'DE', 'BR', 'IN', 'GB', 'VE', 'BY', 'EG', 'PK', 'None'];
const PLATFORMS = ['Android', 'iOS', 'Windows', 'Other', 'None'];
const PROTOCOLS = ['OSSH', 'TLS-OSSH', 'UNFRONTED-MEEK-OSSH', 'FRONTED-MEEK-OSSH', 'SSH', 'None'];
const ERRORS = ['timeout', 'refused', 'reset', 'ssh-handshake'];

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
/** CPU seconds this process spent since `start`: on a shared machine, a steadier figure than wall time. */
const cpuSeconds = (start: NodeJS.CpuUsage): number => {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1e6;
};
const dir = tempDir('postern-bench-rollup-');
const path = join(dir, 'stats.sqlite');

// The schema, through the store's own migrations.
await (await createStatsStore(await openSqlDb(path))).close();

const raw = new Database(path);
raw.pragma('journal_mode = WAL');
const insertCell = raw.prepare(
  `INSERT INTO stats_cells (sponsor_id, client_region, client_platform, relay_protocol) VALUES (?, ?, ?, ?)`,
);
raw.exec('BEGIN');
for (const s of SPONSORS)
  for (const r of REGIONS) for (const p of PLATFORMS) for (const x of PROTOCOLS) insertCell.run(s, r, p, x);
raw.exec('COMMIT');
const cells = Number((raw.prepare(`SELECT COUNT(*) AS n FROM stats_cells`).get() as { n: number }).n);

// Pseudo-random but repeatable columns from the row number, computed by SQLite itself: about 40% tunnels
// (durations log-uniform up to ~2.5 hours), 20% unique users, 10% failures, 5% discoveries, 3% list
// downloads, 2% upgrades; domain buckets go to their own table.
const domainEvents = Math.round(EVENTS * DOMAIN_SHARE);
const rawEvents = EVENTS - domainEvents;
const tGen = performance.now();
raw.exec(`
  BEGIN;
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${rawEvents}),
  g AS (SELECT i, (i * 2654435761) % 4294967296 AS h FROM n),
  k AS (SELECT i, h, h % 80 AS kind, 1 + (h / 97) % ${cells} AS cell,
               CAST(exp(((h / 7919) % 1000) / 1000.0 * 16) AS INTEGER) AS d FROM g)
  INSERT INTO stats_events (date, event_name, cell_id, duration_ms, duration_bucket, bytes_up_tcp, bytes_down_tcp,
                            bytes, tunnel_error, discovered_servers)
  SELECT '${DATE}',
    CASE WHEN kind < 40 THEN 'server_tunnel' WHEN kind < 60 THEN 'unique_user' WHEN kind < 70 THEN 'failed_tunnel'
         WHEN kind < 75 THEN 'discovery' WHEN kind < 78 THEN 'remote_server_list' ELSE 'upgrade' END,
    cell,
    CASE WHEN kind < 40 THEN d END,
    CASE WHEN kind < 40 THEN (CASE WHEN d < 1 THEN 0 ELSE 1 + CAST(floor(ln(d) / ln(${DURATION_BUCKET_BASE})) AS INTEGER) END) END,
    CASE WHEN kind < 40 THEN h % 1000000 END,
    CASE WHEN kind < 40 THEN h % 10000000 END,
    CASE WHEN kind < 40 THEN h % 1000000 + h % 10000000 END,
    CASE WHEN kind >= 60 AND kind < 70 THEN CASE h % 4 ${ERRORS.map((e, i) => `WHEN ${i} THEN '${e}'`).join(' ')} END END,
    CASE WHEN kind >= 70 AND kind < 75 THEN 1 + h % 3 END
  FROM k;
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${domainEvents}),
  g AS (SELECT i, (i * 2654435761) % 4294967296 AS h FROM n)
  INSERT INTO stats_domain_bytes (date, cell_id, domain, bytes)
  SELECT '${DATE}', 1 + (h / 97) % ${cells}, 'domain' || (h % 50) || '.example', h % 1000000 FROM g;
  INSERT INTO stats_dirty_dates (date, generation) VALUES ('${DATE}', 1);
  COMMIT;`);
const genSeconds = (performance.now() - tGen) / 1000;
console.log(
  `generated ${fmt(rawEvents)} raw events + ${fmt(domainEvents)} domain rows for ${DATE} over ${fmt(cells)} cells ` +
    `in ${genSeconds.toFixed(1)} s`,
);

const cpuBase = process.cpuUsage();
const tBase = performance.now();
const groups = raw
  .prepare(`SELECT count(*) AS n FROM stats_events WHERE date = ? GROUP BY cell_id`)
  .all(DATE).length;
const baseSeconds = (performance.now() - tBase) / 1000;
const baseCpu = cpuSeconds(cpuBase);
raw.close();

const store = await createStatsStore(await openSqlDb(path));
const cpuRollup = process.cpuUsage();
const t = performance.now();
const summary = await store.rollup(DATE);
const seconds = (performance.now() - t) / 1000;
const rollupCpu = cpuSeconds(cpuRollup);
await store.close();
if (summary.events !== EVENTS) throw new Error(`rollup read ${summary.events} events, expected ${EVENTS}`);

console.log(
  `baseline: SELECT count(*) ... GROUP BY cell_id over the raw events: ${baseSeconds.toFixed(1)} s ` +
    `(${baseCpu.toFixed(1)} CPU-s) ` +
    `(${fmt(rawEvents / baseSeconds)} rows/s, ${fmt(groups)} groups)`,
);
console.log(
  `rollup(${DATE}): ${seconds.toFixed(1)} s (${rollupCpu.toFixed(1)} CPU-s) for ${fmt(summary.events)} events ` +
    `(${fmt(summary.events / seconds)} events/s); ` +
    `${fmt(summary.dailyRows)} daily, ${fmt(summary.domainRows)} domain, ${fmt(summary.failureRows)} failure rows; ` +
    `${(seconds / baseSeconds).toFixed(2)}x the baseline's time, ${(rollupCpu / baseCpu).toFixed(2)}x its CPU ` +
    `(target < 60 s for 10,000,000)`,
);
