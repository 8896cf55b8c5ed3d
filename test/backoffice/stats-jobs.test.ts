// The scheduled rollup and retention jobs, driven by a ManualClock: what runs when, what is logged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../src/common/clock.ts';
import { RETENTION_INTERVAL_MS, StatsJobs, describeDeleted } from '../../src/backoffice/stats-jobs.ts';
import type { IngestBatch } from '../../src/stats/ingest-protocol.ts';
import { MemoryStatsStore } from '../helpers/memory-stats-store.ts';
import { CANARY_CITY, FILE, capturingLogger, tunnelEvent } from './fixtures.ts';

const MINUTE = 60_000;
const ROLLUP_MS = 5 * MINUTE;

function setup(start = '2026-11-29T12:00:00Z') {
  const clock = new ManualClock(new Date(start));
  const store = new MemoryStatsStore({ clock, retentionDays: 60 });
  const { log, lines } = capturingLogger();
  const jobs = new StatsJobs({ store, clock, log, retentionDays: 60, rollupIntervalMs: ROLLUP_MS });
  const calls = { rollup: [] as string[], retention: 0 };
  const rollup = store.rollup.bind(store);
  store.rollup = async (date) => {
    calls.rollup.push(date);
    return rollup(date);
  };
  const del = store.deleteExpired.bind(store);
  store.deleteExpired = async (now, days) => {
    calls.retention++;
    return del(now, days);
  };
  let offset = 0;
  const ingest = async (timestamps: string[]) => {
    const events = timestamps.map((ts) => tunnelEvent('srv-a', { timestamp: ts, start_time: ts }));
    const batch: IngestBatch = { hostId: 'srv-a', file: FILE, offset, endOffset: offset + 10, events };
    offset += 10;
    const r = await store.ingest(batch);
    assert.equal(r.status, 'ingested');
  };
  return { clock, store, jobs, lines, calls, ingest };
}

test('the first tick deletes expired rows and rolls up; later ticks follow the intervals', async () => {
  const s = setup();
  await s.ingest(['2026-11-28T10:00:00Z', '2026-11-29T10:00:00Z']);
  const first = await s.jobs.tick();
  assert.deepEqual(first, { rolledUp: ['2026-11-28', '2026-11-29'], retention: true });
  assert.equal(s.calls.retention, 1);

  // Nothing is due a minute later, even with new events.
  await s.ingest(['2026-11-29T11:00:00Z']);
  s.clock.advance(MINUTE);
  assert.deepEqual(await s.jobs.tick(), { rolledUp: [], retention: false });

  // At the rollup interval: only the date that received events, and no retention yet.
  s.clock.advance(ROLLUP_MS - MINUTE);
  assert.deepEqual(await s.jobs.tick(), { rolledUp: ['2026-11-29'], retention: false });
  assert.deepEqual(await s.jobs.tick(), { rolledUp: [], retention: false }, 'not twice in the same moment');

  // A day after the first retention run, it runs again.
  s.clock.set(new Date('2026-11-29T12:00:00Z').getTime() + RETENTION_INTERVAL_MS - 1);
  assert.equal((await s.jobs.tick()).retention, false);
  s.clock.advance(1);
  assert.equal((await s.jobs.tick()).retention, true);
  assert.equal(s.calls.retention, 2);
});

test('retention deletes raw rows past the cutoff and logs counts only', async () => {
  const s = setup('2026-11-29T12:00:00Z');
  await s.ingest(['2026-10-01T10:00:00Z', '2026-10-01T11:00:00Z', '2026-11-29T10:00:00Z']);
  s.clock.set(new Date('2026-12-01T12:00:00Z'));
  await s.jobs.tick();
  assert.equal(s.store.raw.length, 1);
  const line = s.lines.find((l) => l.includes('retention:'));
  assert.ok(line, s.lines.join(''));
  assert.match(
    JSON.parse(line)['msg'] as string,
    /^retention: deleted 2 server_tunnel rows older than 2026-10-02$/,
  );
  const rollupLine = s.lines.find((l) => l.includes('rollup 2026-11-29'));
  assert.ok(rollupLine);
  assert.match(JSON.parse(rollupLine)['msg'] as string, /1 events -> 1 daily, 0 domain, 0 failure rows/);
  assert.ok(!s.lines.join('').includes(CANARY_CITY), 'no event values in the logs');
});

test('a failing store is logged without its message and retried at the next interval', async () => {
  const s = setup();
  await s.ingest(['2026-11-29T10:00:00Z']);
  s.store.failWith = new Error(`disk I/O error near ${CANARY_CITY}`);
  assert.deepEqual(await s.jobs.tick(), { rolledUp: [], retention: false });
  assert.ok(s.lines.some((l) => l.includes('retention failed, will retry')));
  assert.ok(s.lines.some((l) => l.includes('rollup failed, will retry')));
  assert.ok(!s.lines.join('').includes(CANARY_CITY));
  s.store.failWith = undefined;
  assert.deepEqual(await s.jobs.tick(), { rolledUp: [], retention: false }, 'waits for the interval');
  s.clock.advance(ROLLUP_MS);
  assert.deepEqual(await s.jobs.tick(), { rolledUp: ['2026-11-29'], retention: true });
});

test('concurrent ticks share one run', async () => {
  const s = setup();
  await s.ingest(['2026-11-29T10:00:00Z']);
  const [a, b] = await Promise.all([s.jobs.tick(), s.jobs.tick()]);
  assert.deepEqual(a, b);
  assert.equal(s.calls.retention, 1);
  assert.deepEqual(s.calls.rollup, ['2026-11-29']);
});

test('stop ends the schedule: no work after it', async () => {
  const s = setup();
  s.jobs.start();
  await s.jobs.stop();
  const before = s.calls.retention;
  s.clock.advance(RETENTION_INTERVAL_MS * 2);
  await s.jobs.tick();
  assert.equal(s.calls.retention, before);
});

test('describeDeleted lists kinds with rows, in a stable order', () => {
  assert.equal(
    describeDeleted({ server_tunnel: 1234, domain_dest_bytes: 56, upgrade: 0 }),
    '56 domain_dest_bytes, 1234 server_tunnel',
  );
  assert.equal(describeDeleted({ server_tunnel: 0 }), 'no');
});
