// The service over the real statistics store (SQLite; PostgreSQL when POSTERN_TEST_PG is set): the answers of
// the ingest protocol, nothing stored from a refused batch, and the operator's report after a rollup.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openStatsStore } from '../../src/stats/sql-stats-store.ts';
import { DAILY_REPORT_PATH } from '../../src/backoffice/stats-routes.ts';
import { DATABASE_BACKENDS } from '../helpers/databases.ts';
import { DAY, FILE, ndjson, startHarnessWith, tunnelBase, tunnelEvent } from './fixtures.ts';

for (const backend of DATABASE_BACKENDS) {
  describe(`back office on the ${backend.name} statistics store`, { skip: backend.skip }, () => {
    it('exactly once, 409 on a gap, 400 stores nothing, and the report shows what was taken', async (t) => {
      const tdb = backend.name === 'sqlite' ? undefined : await backend.create();
      if (tdb) t.after(() => tdb.cleanup());
      const h = await startHarnessWith(t, (clock, dir) =>
        openStatsStore(tdb ? tdb.target : join(dir, 'stats.sqlite'), {
          clock,
          retentionDays: 60,
          ...(tdb ? tdb.options : {}),
        }),
      );
      const first = ndjson([tunnelEvent('srv-a'), { ...tunnelBase('srv-a'), event_name: 'unique_user' }]);
      assert.deepEqual((await h.post(first)).json(), {
        status: 'ingested',
        events: 2,
        expired: 0,
        nextOffset: first.length,
      });
      assert.deepEqual((await h.post(first)).json(), { status: 'duplicate', nextOffset: first.length });
      const gap = await h.post(first, { offset: first.length + 1 });
      assert.equal(gap.status, 409);
      assert.deepEqual(gap.json(), { status: 'out-of-order', nextOffset: first.length });

      const bad = Buffer.concat([
        ndjson([tunnelEvent('srv-a')]),
        Buffer.from('{"event_name":"server_tunnel"}\n'),
      ]);
      const refused = await h.post(bad, { offset: first.length });
      assert.equal(refused.status, 400);
      assert.equal(await h.store.nextOffset('srv-a', FILE), first.length, 'the refused batch moved nothing');

      await h.bo.jobs.tick();
      const r = await h.get(`${DAILY_REPORT_PATH}?from=${DAY}&to=${DAY}&format=csv`);
      assert.equal(r.status, 200, r.text);
      const [header, row] = r.text.split('\r\n');
      const cols = header!.split(',');
      const cells = row!.split(',');
      assert.equal(cells[cols.indexOf('sessions')], '1', r.text);
      assert.equal(cells[cols.indexOf('uniqueUsers')], '1', r.text);
      assert.equal(cells[cols.indexOf('sponsorId')], 'SPONSOR1');
    });
  });
}
