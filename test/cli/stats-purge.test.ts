// `postern stats purge`: the operator deletes statistics before a date, daily totals included; reports then
// show nothing for those dates, and later dates are untouched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ManualClock } from '../../src/common/clock.ts';
import { openStatsStore } from '../../src/stats/sql-stats-store.ts';
import { postern } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';
import { batchOf, domainBytes, tunnel } from '../stats/stats-event-factory.ts';

const DAY_MS = 86_400_000;
const dateBefore = (days: number) => new Date(Date.now() - days * DAY_MS).toISOString().slice(0, 10);

test('stats purge deletes every row before the date and nothing after it', async (t) => {
  const db = join(tempDir(t), 'stats.sqlite');
  const [older, newer] = [dateBefore(3), dateBefore(2)];
  const store = await openStatsStore(db, { clock: new ManualClock(Date.now()) });
  const events = [older, newer].flatMap((d) => [tunnel(d), tunnel(d), domainBytes(d, 'example.com', 5)]);
  await store.ingest(batchOf(events, 0));
  for (const d of [older, newer]) await store.rollup(d);
  await store.close();

  const report = () => {
    const r = postern([
      'stats',
      'report',
      '--database',
      db,
      '--from',
      older,
      '--to',
      newer,
      '--format',
      'json',
    ]);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { daily: Array<{ date: string; sessions: number }> };
  };
  assert.deepEqual(
    report().daily.map((r) => [r.date, r.sessions]),
    [
      [older, 2],
      [newer, 2],
    ],
  );

  const future = postern(['stats', 'purge', '--database', db, '--before', '2099-01-01']);
  assert.equal(future.status, 2);
  assert.match(future.stderr, /in the future/);
  assert.equal(report().daily.length, 2, 'a refused purge deletes nothing');

  const r = postern(['stats', 'purge', '--database', db, '--before', newer, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as {
    cutoffDate: string;
    deleted: Record<string, number>;
    rollupsDeleted: Record<string, number>;
  };
  assert.equal(summary.cutoffDate, newer);
  assert.equal(summary.deleted['server_tunnel'], 2);
  assert.deepEqual(summary.rollupsDeleted, { daily: 1, domains: 1, failures: 0 });
  assert.deepEqual(
    report().daily.map((r) => [r.date, r.sessions]),
    [[newer, 2]],
  );

  const human = postern(['stats', 'purge', '--database', db, '--before', newer]);
  assert.equal(human.status, 0, human.stderr);
  assert.match(human.stdout, /deleted statistics before .*: 0 raw rows and 0 daily total rows/);
});
