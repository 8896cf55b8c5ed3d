// `postern stats report`: the operator's view of the statistics, read from the back office's database (the one
// its BO.json names). Pending days are rolled up first, so what was ingested a moment ago shows. Tables on a
// terminal, JSON or CSV for scripts; `--sponsor-view` prints exactly what a sponsor may be given (date, sponsor
// and region only, small cells suppressed, optional noise).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { RealClock } from '../common/clock.ts';
import { PosternError } from '../common/errors.ts';
import {
  loadBackofficeConfig,
  backofficePaths,
  configBase,
  BACKOFFICE_CONFIG_FILE,
} from '../backoffice/config.ts';
import { toCsv } from '../backoffice/csv.ts';
import { DAILY_COLUMNS, DOMAIN_COLUMNS, FAILURE_COLUMNS } from '../backoffice/stats-routes.ts';
import { openStatsStore } from '../stats/sql-stats-store.ts';
import { sponsorReport } from '../stats/sponsor-view.ts';
import { DEFAULT_SPONSOR_K, type StatsStore } from '../stats/store.ts';
import { DEFAULT_DATA_DIR } from './defaults.ts';

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DAY_MS = 86_400_000;

interface ReportOptions extends StoreLocation {
  date?: string;
  from?: string;
  to?: string;
  sponsor?: string;
  format: 'table' | 'json' | 'csv';
  sponsorView?: boolean;
  k: string;
  epsilon?: string;
}

/** today / yesterday / YYYY-MM-DD, in UTC as every event date is. */
export function parseReportDate(value: string, now: Date, flag: string): string {
  if (value === 'today') return now.toISOString().slice(0, 10);
  if (value === 'yesterday') return new Date(now.getTime() - DAY_MS).toISOString().slice(0, 10);
  if (DATE.test(value) && !Number.isNaN(Date.parse(`${value}T00:00:00Z`))) return value;
  throw new PosternError('BAD_ARGUMENT', `${flag} must be today, yesterday or YYYY-MM-DD, not '${value}'`);
}

/** Plain columns, left-aligned text and right-aligned numbers. */
export function formatTable(columns: readonly string[], rows: readonly object[]): string {
  if (rows.length === 0) return '  (no rows)\n';
  const cells = rows.map((r) => columns.map((c) => String((r as Record<string, unknown>)[c] ?? '')));
  const numeric = columns.map((c) =>
    rows.every((r) => typeof (r as Record<string, unknown>)[c] === 'number'),
  );
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: readonly string[]) =>
    '  ' + vals.map((v, i) => (numeric[i] ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ');
  return [line(columns), ...cells.map(line)].join('\n').replace(/ +$/gm, '') + '\n';
}

/** Where a stats command finds the statistics database. */
export interface StoreLocation {
  config?: string;
  data: string;
  database?: string;
}

function upConfig(o: StoreLocation): string {
  return join(resolve(o.data), 'backoffice', BACKOFFICE_CONFIG_FILE);
}

function findConfig(o: StoreLocation): string | undefined {
  if (o.config) return resolve(o.config);
  const file = upConfig(o);
  return existsSync(file) ? file : undefined;
}

/** Opens the statistics store named by --database, --config or the `postern up` data folder. */
export async function openStore(o: StoreLocation, clock: RealClock): Promise<StatsStore> {
  if (o.database) return openStatsStore(o.database, { clock });
  const file = findConfig(o);
  if (!file) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `no back office config at ${upConfig(o)}: pass --data (the folder \`postern up\` uses), --config BO.json or --database`,
    );
  }
  const config = loadBackofficeConfig(file, {});
  const paths = backofficePaths(config, configBase(file));
  if (!/^postgres(?:ql)?:\/\//i.test(paths.statsDatabase) && !existsSync(paths.statsDatabase)) {
    throw new PosternError('NOT_FOUND', `no statistics yet: ${paths.statsDatabase} does not exist`);
  }
  return openStatsStore(paths.statsDatabase, { clock, retentionDays: config.RetentionDays });
}

/** The options that say where the statistics database is (see StoreLocation). */
export function withStoreOptions(cmd: Command): Command {
  return cmd
    .option(
      '--config <FILE>',
      `the back office's ${BACKOFFICE_CONFIG_FILE} (default: the one \`postern up\` made)`,
    )
    .option('--data <DIR>', 'the data folder of `postern up`', DEFAULT_DATA_DIR)
    .option('--database <TARGET>', 'the statistics database instead: a SQLite file or a postgres:// URL');
}

export function statsReportCommand(): Command {
  return withStoreOptions(
    new Command('report').description(
      'statistics by date, sponsor, region, platform and protocol (rolls up pending days first)',
    ),
  )
    .option('--date <DATE>', 'one day: today, yesterday or YYYY-MM-DD (UTC)')
    .option('--from <DATE>', 'first day of a range')
    .option('--to <DATE>', 'last day of a range')
    .option('--sponsor <ID>', 'only this sponsor')
    .addOption(new Option('--format <FORMAT>', 'output').choices(['table', 'json', 'csv']).default('table'))
    .option(
      '--sponsor-view',
      'what may be shared with the sponsor: date and region only, small cells suppressed',
    )
    .option(
      '--k <N>',
      'sponsor view: suppress cells with fewer unique users than this',
      String(DEFAULT_SPONSOR_K),
    )
    .option('--epsilon <E>', 'sponsor view: add Laplace noise with this privacy budget per released count')
    .action(async (o: ReportOptions) => {
      const clock = new RealClock();
      const now = clock.now();
      if (o.date && (o.from || o.to))
        throw new PosternError('BAD_ARGUMENT', 'give --date or --from/--to, not both');
      const from = parseReportDate(o.date ?? o.from ?? 'today', now, o.date ? '--date' : '--from');
      const to = parseReportDate(o.date ?? o.to ?? o.from ?? 'today', now, o.date ? '--date' : '--to');
      if (to < from) throw new PosternError('BAD_ARGUMENT', `--to ${to} is before --from ${from}`);
      const store = await openStore(o, clock);
      try {
        for (const date of await store.datesNeedingRollup()) await store.rollup(date);
        const q = { from, to, ...(o.sponsor ? { sponsorId: o.sponsor } : {}) };
        if (o.sponsorView) {
          if (!o.sponsor) throw new PosternError('BAD_ARGUMENT', '--sponsor-view needs --sponsor');
          const k = Number(o.k);
          const epsilon = o.epsilon === undefined ? undefined : Number(o.epsilon);
          const report = await sponsorReport(store, {
            sponsorId: o.sponsor,
            from,
            to,
            k,
            ...(epsilon === undefined ? {} : { epsilon }),
          });
          if (o.format === 'json') process.stdout.write(JSON.stringify(report, null, 2) + '\n');
          else if (o.format === 'csv') {
            process.stdout.write(toCsv(['date', 'region', 'uniqueUsers', 'sessions', 'bytes'], report.cells));
          } else {
            process.stdout.write(
              `Sponsor ${o.sponsor}, ${from} to ${to}: cells with fewer than ${report.k} unique users suppressed` +
                (report.noise ? `, Laplace noise with epsilon ${report.noise.epsilon}` : ', exact values') +
                '\n' +
                formatTable(['date', 'region', 'uniqueUsers', 'sessions', 'bytes'], report.cells) +
                'Domains\n' +
                formatTable(['date', 'region', 'domain', 'bytes'], report.domains),
            );
          }
          return;
        }
        const [daily, domains, failures, servers] = await Promise.all([
          store.daily(q),
          store.domains(q),
          store.failures(q),
          store.serverLoad(),
        ]);
        if (o.format === 'json') {
          process.stdout.write(
            JSON.stringify({ from, to, daily, domains, failures, servers }, null, 2) + '\n',
          );
        } else if (o.format === 'csv') {
          process.stdout.write(
            '# daily\r\n' +
              toCsv(DAILY_COLUMNS, daily) +
              '# domains\r\n' +
              toCsv(DOMAIN_COLUMNS, domains) +
              '# failures\r\n' +
              toCsv(FAILURE_COLUMNS, failures),
          );
        } else {
          process.stdout.write(
            `Statistics ${from === to ? `for ${from}` : `from ${from} to ${to}`} (UTC)\n` +
              'Sessions and bytes\n' +
              formatTable(
                [
                  'date',
                  'sponsorId',
                  'region',
                  'platform',
                  'protocol',
                  'uniqueUsers',
                  'sessions',
                  'durationP50Ms',
                  'durationP90Ms',
                  'bytes',
                  'failures',
                ],
                daily,
              ) +
              'Domain bytes\n' +
              formatTable(DOMAIN_COLUMNS, domains) +
              'Failures\n' +
              formatTable(FAILURE_COLUMNS, failures) +
              'Servers now (latest load report; a session is counted when its tunnel ends)\n' +
              formatTable(['hostId', 'hour', 'establishedTunnels', 'openPortForwards'], servers),
          );
        }
      } finally {
        await store.close();
      }
    });
}
