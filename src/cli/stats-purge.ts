// `postern stats purge --before DATE`: the operator deletes statistics, daily totals included. Retention deletes
// raw rows after RetentionDays on its own and keeps the totals "until the operator deletes them": this is how.
import { Command } from 'commander';
import { RealClock } from '../common/clock.ts';
import { PosternError } from '../common/errors.ts';
import { printResult } from './output.ts';
import { openStore, parseReportDate, withStoreOptions, type StoreLocation } from './stats-report.ts';

const DAY_MS = 86_400_000;

interface PurgeOptions extends StoreLocation {
  before: string;
  json?: boolean;
}

export function statsPurgeCommand(): Command {
  return withStoreOptions(
    new Command('purge').description(
      'delete every statistic dated before a date, daily totals included (cannot be undone)',
    ),
  )
    .requiredOption('--before <DATE>', 'today, yesterday or YYYY-MM-DD (UTC): earlier dates are deleted')
    .option('--json', 'print what was deleted as JSON')
    .action(async (o: PurgeOptions) => {
      const clock = new RealClock();
      const now = clock.now();
      const before = parseReportDate(o.before, now, '--before');
      // A date past tomorrow is a typo (2062 for 2026), not a wish to delete everything.
      const latest = new Date(now.getTime() + DAY_MS).toISOString().slice(0, 10);
      if (before > latest) {
        throw new PosternError(
          'BAD_ARGUMENT',
          `--before ${before} is in the future; to delete everything, give today`,
        );
      }
      const store = await openStore(o, clock);
      try {
        const r = await store.purgeBefore(before);
        const raw = Object.values(r.deleted).reduce((a, b) => a + b, 0);
        const totals = r.rollupsDeleted.daily + r.rollupsDeleted.domains + r.rollupsDeleted.failures;
        printResult(
          !!o.json,
          r,
          () =>
            `deleted statistics before ${r.cutoffDate}: ${raw} raw rows and ${totals} daily total rows ` +
            `(${r.rollupsDeleted.daily} usage, ${r.rollupsDeleted.domains} domain, ${r.rollupsDeleted.failures} failure); ` +
            'late events of those dates will be dropped',
        );
      } finally {
        await store.close();
      }
    });
}
