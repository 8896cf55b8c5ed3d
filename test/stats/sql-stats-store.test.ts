import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ManualClock } from '../../src/common/clock.ts';
import { isPosternError } from '../../src/common/errors.ts';
import type { StatsEvent } from '../../src/stats/events.ts';
import { MAX_BATCH_EVENTS } from '../../src/stats/ingest-protocol.ts';
import {
  DURATION_BUCKET_BASE,
  bucketDurationMs,
  createStatsStore,
  durationBucket,
  openStatsStore,
  percentileFromBuckets,
} from '../../src/stats/sql-stats-store.ts';
import { DEFAULT_RETENTION_DAYS, type StatsStore } from '../../src/stats/store.ts';
import { TABLE_INVENTORY, findUndeclaredColumns } from '../../src/privacy/index.ts';
import { DATABASE_BACKENDS, withTestDatabase, type TestDatabase } from '../helpers/databases.ts';
import {
  batchOf,
  batchesOf,
  discovery,
  domainBytes,
  failed,
  listDownload,
  serverLoad,
  tunnel,
  uniqueUser,
  upgrade,
} from './stats-event-factory.ts';

const DAY_MS = 86_400_000;
const TODAY = '2026-03-10';
const NOW = new Date(`${TODAY}T12:00:00Z`);
const DAY = '2026-03-09';

function dateAt(d: Date): string {
  return d.toISOString().slice(0, 10);
}

function daysBefore(date: string, days: number): string {
  return dateAt(new Date(Date.parse(`${date}T00:00:00Z`) - days * DAY_MS));
}

async function open(tdb: TestDatabase, clock = new ManualClock(NOW)): Promise<StatsStore> {
  return createStatsStore(await tdb.open(), { clock });
}

/** Sessions over every daily row of a date: what a report of the day would show. */
async function sessionsOn(store: StatsStore, date: string): Promise<number> {
  const rows = await store.daily({ from: date, to: date });
  return rows.reduce((n, r) => n + r.sessions, 0);
}

const CRASH_BATCHES = 30;
const CRASH_BATCH_EVENTS = 200;

/** The batches the crash test sends: the child process builds the very same ones. */
function crashBatches(): ReturnType<typeof batchesOf> {
  const events = Array.from({ length: CRASH_BATCHES * CRASH_BATCH_EVENTS }, (_, i) =>
    tunnel(DAY, { region: i % 3 === 0 ? 'IR' : 'US' }, { durationMs: i }),
  );
  return batchesOf(events, CRASH_BATCH_EVENTS);
}

/**
 * Runs a child process that sends every batch (from the first: the store sorts out what it already has) and
 * is killed with SIGKILL `killAfterMs` after it reports its first ingested batch, wherever it then is.
 */
function ingestUntilKilled(tdb: TestDatabase, killAfterMs: number): Promise<number> {
  const here = import.meta.dirname;
  const url = (p: string) => JSON.stringify(pathToFileURL(join(here, p)).href);
  const script = `
    const { openStatsStore } = await import(${url('../../src/stats/sql-stats-store.ts')});
    const { ManualClock } = await import(${url('../../src/common/clock.ts')});
    const { batchesOf, tunnel } = await import(${url('./stats-event-factory.ts')});
    const events = Array.from({ length: ${CRASH_BATCHES * CRASH_BATCH_EVENTS} }, (_, i) =>
      tunnel(${JSON.stringify(DAY)}, { region: i % 3 === 0 ? 'IR' : 'US' }, { durationMs: i }));
    const store = await openStatsStore(process.env.T_TARGET, {
      ...JSON.parse(process.env.T_OPTIONS), clock: new ManualClock(new Date(${JSON.stringify(NOW.toISOString())})) });
    for (const b of batchesOf(events, ${CRASH_BATCH_EVENTS})) {
      const r = await store.ingest(b);
      if (r.status === 'ingested') process.stdout.write('ingested\\n');
    }
    await store.close();`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, T_TARGET: tdb.target, T_OPTIONS: JSON.stringify(tdb.options) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let lines = 0;
    child.stdout.on('data', (d: Buffer) => {
      if (lines === 0) setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      lines += d.toString().split('\n').length - 1;
    });
    child.on('error', reject);
    child.on('close', () => resolve(lines));
  });
}

/** Deterministic pseudo-random numbers, so a failure can be replayed. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('duration buckets', () => {
  it('report every duration within 1% (plus rounding) of itself', () => {
    for (const ms of [
      1,
      2,
      3,
      10,
      99,
      1000,
      59_999,
      3_600_000,
      86_400_000,
      2 ** 40,
      Number.MAX_SAFE_INTEGER,
    ]) {
      const shown = bucketDurationMs(durationBucket(ms));
      assert.ok(
        Math.abs(shown - ms) <= ms * (Math.sqrt(DURATION_BUCKET_BASE) - 1) + 0.5 + 1e-9 * ms,
        `${ms} -> ${shown}`,
      );
    }
    assert.equal(durationBucket(0), 0);
    assert.equal(bucketDurationMs(0), 0);
    assert.ok(durationBucket(Number.MAX_SAFE_INTEGER) < 1900);
  });

  it('give nearest-rank percentiles within the stated resolution', () => {
    const random = seeded(7);
    const durations = Array.from({ length: 1001 }, () => Math.floor(Math.exp(random() * Math.log(1e7))));
    const counts = new Map<number, number>();
    for (const d of durations) counts.set(durationBucket(d), (counts.get(durationBucket(d)) ?? 0) + 1);
    const sorted = [...durations].sort((a, b) => a - b);
    for (const p of [0.5, 0.9, 0.01, 1]) {
      const exact = sorted[Math.ceil(p * sorted.length) - 1]!;
      const got = percentileFromBuckets([...counts], p);
      assert.ok(Math.abs(got - exact) <= exact * 0.0101 + 1, `p${p * 100}: ${got} vs ${exact}`);
    }
    assert.equal(percentileFromBuckets([], 0.5), 0);
  });
});

for (const backend of DATABASE_BACKENDS) {
  describe(`SQL stats store on ${backend.name}`, { skip: backend.skip }, () => {
    it("keeps each server's latest load report, not the history", () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await open(tdb);
        const load = (host: string, tunnels: number) => ({
          ...serverLoad(DAY),
          host_id: host,
          established_tunnels: tunnels,
        });
        const first = batchOf([load('host-1', 3), load('host-1', 5)], 0, undefined, 'host-1');
        assert.equal((await store.ingest(first)).status, 'ingested');
        assert.equal(
          (await store.ingest(batchOf([load('host-2', 1)], 0, undefined, 'host-2'))).status,
          'ingested',
        );
        assert.equal(
          (await store.ingest(batchOf([load('host-1', 2)], first.endOffset, undefined, 'host-1'))).status,
          'ingested',
        );
        assert.deepEqual(
          (await store.serverLoad()).map((r) => [r.hostId, r.establishedTunnels, r.hour]),
          [
            ['host-1', 2, `${DAY}T10:00:00Z`],
            ['host-2', 1, `${DAY}T10:00:00Z`],
          ],
        );
        await store.close();
      }));

    it('takes each batch exactly once through duplicates, gaps and overlaps', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await open(tdb);
        const events = Array.from({ length: 30 }, (_, i) => tunnel(DAY, {}, { durationMs: 1000 + i }));
        const [b1, b2, b3] = batchesOf(events, 10);
        assert.ok(b1 && b2 && b3);

        assert.deepEqual(await store.ingest(b2), { status: 'out-of-order', nextOffset: 0 });
        assert.deepEqual(await store.ingest(b1), {
          status: 'ingested',
          events: 10,
          expired: 0,
          nextOffset: b1.endOffset,
        });
        assert.deepEqual(await store.ingest(b1), { status: 'duplicate', nextOffset: b1.endOffset });
        assert.deepEqual(await store.ingest(b3), { status: 'out-of-order', nextOffset: b1.endOffset });
        // Overlapping what was taken and going beyond it: neither a duplicate nor the expected batch.
        const overlap = batchOf([...events.slice(5, 20)], b1.offset + 100);
        assert.deepEqual(await store.ingest(overlap), { status: 'out-of-order', nextOffset: b1.endOffset });
        assert.equal((await store.ingest(b2)).status, 'ingested');
        assert.equal((await store.ingest(b3)).status, 'ingested');
        for (const b of [b1, b2, b3, b2]) assert.equal((await store.ingest(b)).status, 'duplicate');
        assert.equal(await store.nextOffset('host-1', b1.file), b3.endOffset);
        assert.equal(await store.nextOffset('host-1', 'events-0000000000009-0000000009.jsonl'), 0);
        assert.equal(await store.nextOffset('host-2', b1.file), 0);

        // Another host's file of the same name has its own cursor.
        const other = batchesOf(events.slice(0, 4), 4, b1.file, 'host-2')[0]!;
        assert.equal((await store.ingest(other)).status, 'ingested');

        assert.deepEqual(await store.datesNeedingRollup(), [DAY]);
        await store.rollup(DAY);
        assert.equal(await sessionsOn(store, DAY), 34);
        assert.deepEqual(await store.datesNeedingRollup(), []);
      }));

    it('counts every event once when batches are re-sent at random, as a shipper restarting would', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await open(tdb);
        const random = seeded(42);
        const events = Array.from({ length: 400 }, () => tunnel(DAY));
        const batches = batchesOf(events, 17);
        let next = 0;
        let attempts = 0;
        while (next < batches.length && attempts < 5000) {
          attempts++;
          // Mostly the next batch, sometimes an old one again, sometimes one too far ahead.
          const pick = Math.min(batches.length - 1, Math.max(0, next + Math.floor(random() * 5) - 2));
          const r = await store.ingest(batches[pick]!);
          if (r.status === 'ingested') next++;
          else if (pick === next) assert.fail(`the expected batch was refused: ${r.status}`);
          assert.equal(r.nextOffset, (batches[next - 1]?.endOffset ?? 0) as number);
        }
        assert.equal(next, batches.length);
        await store.rollup(DAY);
        assert.equal(await sessionsOn(store, DAY), 400);
      }));

    it('counts every event once when two back-office processes take the same batches at once', () =>
      withTestDatabase(backend, async (tdb) => {
        const a = await open(tdb);
        const b = await open(tdb);
        const files = ['events-0000000000001-0000000001.jsonl', 'events-0000000000001-0000000002.jsonl'];
        const batches = files.flatMap((f) =>
          batchesOf(
            Array.from({ length: 60 }, (_, i) => tunnel(DAY, { region: i % 2 ? 'US' : 'IR' })),
            10,
            f,
          ),
        );
        // Both send everything, in order per file, concurrently; one of them rolls up meanwhile.
        const send = async (store: StatsStore) => {
          for (const batch of batches) {
            const r = await store.ingest(batch);
            assert.notEqual(r.status, 'out-of-order');
          }
        };
        await Promise.all([send(a), send(b), a.rollup(DAY), send(a)]);
        for (const d of await b.datesNeedingRollup()) await b.rollup(d);
        assert.equal(await sessionsOn(a, DAY), 120);
        assert.deepEqual(
          (await a.daily({ from: DAY, to: DAY })).map((r) => [r.region, r.sessions]),
          [
            ['IR', 60],
            ['US', 60],
          ],
        );
      }));

    it('counts every event exactly once when the ingesting process is killed at random points', () =>
      withTestDatabase(backend, async (tdb) => {
        const random = seeded(11);
        const progress: number[] = [];
        for (let i = 0; i < 2; i++) progress.push(await ingestUntilKilled(tdb, Math.floor(random() * 30)));
        const store = await open(tdb);
        const reached = await store.nextOffset('host-1', crashBatches()[0]!.file);
        // What a restarted shipper does: go on from the store's cursor.
        let resent = 0;
        for (const b of crashBatches()) {
          if (b.offset < reached) continue;
          assert.equal((await store.ingest(b)).status, 'ingested');
          resent++;
        }
        assert.ok(resent < CRASH_BATCHES, `the killed processes ingested something (${progress.join(', ')})`);
        await store.rollup(DAY);
        const rows = await store.daily({ from: DAY, to: DAY });
        const n = CRASH_BATCHES * CRASH_BATCH_EVENTS;
        assert.deepEqual(
          rows.map((r) => [r.region, r.sessions]),
          [
            ['IR', Math.ceil(n / 3)],
            ['US', n - Math.ceil(n / 3)],
          ],
        );
        // Each event's duration is its index: the sum shows that no event is missing or counted twice.
        assert.equal(
          rows.reduce((sum, r) => sum + r.durationSumMs, 0),
          (n * (n - 1)) / 2,
        );
      }));

    it('keeps nothing of a batch that fails half way, and takes it once it is right', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await open(tdb);
        const events: StatsEvent[] = Array.from({ length: 300 }, () => tunnel(DAY));
        events.push(domainBytes(DAY, 'example.com', 100));
        // What a damaged caller could hand over: a negative counter the schema would have refused.
        const bad = { ...tunnel(TODAY), duration_ms: -5 } as StatsEvent;
        const poisoned = batchOf([...events, bad, uniqueUser(TODAY)], 0);
        await assert.rejects(store.ingest(poisoned));
        assert.equal(await store.nextOffset('host-1', poisoned.file), 0);
        assert.deepEqual(await store.datesNeedingRollup(), []);
        await store.rollup(DAY);
        assert.deepEqual(await store.daily({ from: DAY, to: TODAY }), []);
        assert.deepEqual(await store.domains({ from: DAY, to: TODAY }), []);

        const good = batchOf([...events, tunnel(TODAY), uniqueUser(TODAY)], 0);
        assert.equal((await store.ingest(good)).status, 'ingested');
        await store.rollup(DAY);
        assert.equal(await sessionsOn(store, DAY), 300);
      }));

    it('refuses malformed and oversized batches without storing anything', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await open(tdb);
        const ok = batchOf([tunnel(DAY)], 0);
        const refused = async (b: unknown, code: 'BAD_BATCH' | 'TOO_LARGE') =>
          assert.rejects(store.ingest(b as typeof ok), (e) => isPosternError(e, code));
        await refused({ ...ok, offset: -1 }, 'BAD_BATCH');
        await refused({ ...ok, offset: 1.5 }, 'BAD_BATCH');
        await refused({ ...ok, endOffset: ok.offset - 1 }, 'BAD_BATCH');
        await refused({ ...ok, endOffset: 0 }, 'BAD_BATCH');
        await refused({ ...ok, hostId: '' }, 'BAD_BATCH');
        await refused({ ...ok, hostId: 'h'.repeat(65) }, 'BAD_BATCH');
        await refused({ ...ok, file: 'f'.repeat(256) }, 'BAD_BATCH');
        await refused({ ...ok, events: 'x' }, 'BAD_BATCH');
        const many = Array.from({ length: MAX_BATCH_EVENTS + 1 }, () => ok.events[0]!);
        await refused({ ...ok, events: many, endOffset: 10 * many.length }, 'TOO_LARGE');
        assert.equal(await store.nextOffset('host-1', ok.file), 0);
        assert.deepEqual(await store.datesNeedingRollup(), []);
        // An empty batch at the cursor is taken and moves nothing.
        assert.deepEqual(await store.ingest({ ...ok, events: [], endOffset: 0 }), {
          status: 'ingested',
          events: 0,
          expired: 0,
          nextOffset: 0,
        });
      }));

    it('rolls a day up into sessions, users, durations, bytes, failures, domains, discoveries and downloads', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await open(tdb);
        const random = seeded(3);
        const durations = Array.from({ length: 501 }, () => Math.floor(Math.exp(random() * Math.log(4e6))));
        const us = { sponsor: 'SPONSOR1', region: 'US', platform: 'Android' as const, protocol: 'OSSH' };
        const anon = { sponsor: null, region: 'None', platform: null, protocol: null };
        const events: StatsEvent[] = [
          ...durations.map((d, i) => tunnel(DAY, us, { durationMs: d, up: i, down: 2 * i })),
          ...Array.from({ length: 40 }, () => uniqueUser(DAY, us)),
          failed(DAY, us, 'timeout'),
          failed(DAY, us, 'timeout'),
          failed(DAY, us, 'reset'),
          discovery(DAY, 3, us),
          discovery(DAY, 2, us),
          listDownload(DAY, us),
          upgrade(DAY, us),
          upgrade(DAY, us),
          domainBytes(DAY, 'example.com', 100, us),
          domainBytes(DAY, 'example.com', 250, us),
          domainBytes(DAY, '(OTHER)', 7, us),
          tunnel(DAY, anon, { durationMs: 1234, up: 1, down: 2 }),
          uniqueUser(DAY, anon),
          failed(DAY, anon, 'refused'),
          domainBytes(DAY, 'example.com', 5, anon),
          serverLoad(DAY),
          tunnel(TODAY, us),
        ];
        const r = await store.ingest(batchOf(events, 0));
        assert.deepEqual(r, {
          status: 'ingested',
          events: events.length,
          expired: 0,
          nextOffset: r.nextOffset,
        });
        assert.deepEqual(await store.datesNeedingRollup(), [DAY, TODAY]);

        const summary = await store.rollup(DAY);
        // Every stored event of the day is read; server_load is not kept.
        assert.deepEqual(summary, {
          date: DAY,
          events: events.length - 2,
          dailyRows: 2,
          domainRows: 3,
          failureRows: 3,
        });
        assert.deepEqual(await store.datesNeedingRollup(), [TODAY]);

        const daily = await store.daily({ from: DAY, to: DAY });
        assert.equal(daily.length, 2);
        const [none, main] = daily as [(typeof daily)[0], (typeof daily)[0]];
        assert.deepEqual(
          { ...none },
          {
            date: DAY,
            sponsorId: 'None',
            region: 'None',
            platform: 'None',
            protocol: 'None',
            uniqueUsers: 1,
            sessions: 1,
            durationSumMs: 1234,
            durationP50Ms: bucketDurationMs(durationBucket(1234)),
            durationP90Ms: bucketDurationMs(durationBucket(1234)),
            bytesUp: 1,
            bytesDown: 2,
            bytes: 3,
            failures: 1,
            discoveries: 0,
            listDownloads: 0,
            upgrades: 0,
          },
        );
        const sorted = [...durations].sort((a, b) => a - b);
        const exact = (p: number) => sorted[Math.ceil(p * sorted.length) - 1]!;
        assert.equal(main.sponsorId, 'SPONSOR1');
        assert.equal(main.sessions, 501);
        assert.equal(main.uniqueUsers, 40);
        assert.equal(
          main.durationSumMs,
          durations.reduce((a, b) => a + b, 0),
        );
        assert.ok(
          Math.abs(main.durationP50Ms - exact(0.5)) <= exact(0.5) * 0.0101 + 1,
          `p50 ${main.durationP50Ms} vs ${exact(0.5)}`,
        );
        assert.ok(
          Math.abs(main.durationP90Ms - exact(0.9)) <= exact(0.9) * 0.0101 + 1,
          `p90 ${main.durationP90Ms} vs ${exact(0.9)}`,
        );
        assert.equal(main.bytesUp, (500 * 501) / 2);
        assert.equal(main.bytesDown, 500 * 501);
        assert.equal(main.bytes, main.bytesUp + main.bytesDown);
        assert.equal(main.failures, 3);
        assert.equal(main.discoveries, 5);
        assert.equal(main.listDownloads, 1);
        assert.equal(main.upgrades, 2);

        assert.deepEqual(
          (await store.domains({ from: DAY, to: DAY })).map((d) => [
            d.sponsorId,
            d.region,
            d.platform,
            d.domain,
            d.bytes,
          ]),
          [
            ['None', 'None', 'None', 'example.com', 5],
            ['SPONSOR1', 'US', 'Android', '(OTHER)', 7],
            ['SPONSOR1', 'US', 'Android', 'example.com', 350],
          ],
        );
        assert.deepEqual(
          (await store.failures({ from: DAY, to: DAY })).map((f) => [
            f.sponsorId,
            f.protocol,
            f.errorCode,
            f.count,
          ]),
          [
            ['None', 'None', 'refused', 1],
            ['SPONSOR1', 'OSSH', 'reset', 1],
            ['SPONSOR1', 'OSSH', 'timeout', 2],
          ],
        );

        // Idempotent: the same rows again, not twice as many.
        assert.deepEqual(await store.rollup(DAY), summary);
        assert.deepEqual(await store.daily({ from: DAY, to: DAY }), daily);
        // A late batch for the day marks it again and the next rollup includes it.
        await store.ingest(batchOf([tunnel(DAY, us)], 0, 'events-0000000000002-0000000001.jsonl'));
        assert.deepEqual(await store.datesNeedingRollup(), [DAY, TODAY]);
        await store.rollup(DAY);
        assert.equal(await sessionsOn(store, DAY), 503);
      }));

    it('filters reports by date range and sponsor, in a stable order', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await open(tdb);
        const days = [daysBefore(TODAY, 3), daysBefore(TODAY, 2), daysBefore(TODAY, 1)];
        const events = days.flatMap((d) => [
          tunnel(d, { sponsor: 'b-sponsor', region: 'US' }),
          tunnel(d, { sponsor: 'A-sponsor', region: 'IR' }),
          tunnel(d, { sponsor: 'A-sponsor', region: 'CN' }),
          domainBytes(d, 'Z.example', 1, { sponsor: 'A-sponsor' }),
          domainBytes(d, 'a.example', 1, { sponsor: 'b-sponsor' }),
          failed(d, { sponsor: 'b-sponsor' }),
        ]);
        await store.ingest(batchOf(events, 0));
        for (const d of await store.datesNeedingRollup()) await store.rollup(d);
        const all = await store.daily({ from: days[0]!, to: days[2]! });
        assert.deepEqual(
          all.map((r) => `${r.date}/${r.sponsorId}/${r.region}`),
          days.flatMap((d) => [`${d}/A-sponsor/CN`, `${d}/A-sponsor/IR`, `${d}/b-sponsor/US`]),
        );
        const one = await store.daily({ from: days[1]!, to: days[2]!, sponsorId: 'A-sponsor' });
        assert.deepEqual(
          one.map((r) => `${r.date}/${r.region}`),
          [`${days[1]}/CN`, `${days[1]}/IR`, `${days[2]}/CN`, `${days[2]}/IR`],
        );
        assert.equal(
          (await store.domains({ from: days[0]!, to: days[0]!, sponsorId: 'b-sponsor' })).length,
          1,
        );
        assert.equal(
          (await store.failures({ from: days[0]!, to: days[2]!, sponsorId: 'A-sponsor' })).length,
          0,
        );
        assert.equal(
          (await store.failures({ from: days[0]!, to: days[2]!, sponsorId: 'b-sponsor' })).length,
          3,
        );
        await assert.rejects(store.daily({ from: 'yesterday', to: days[2]! }), (e) =>
          isPosternError(e, 'BAD_ARGUMENT'),
        );
        await assert.rejects(store.rollup('2026-13-45'), (e) => isPosternError(e, 'BAD_ARGUMENT'));
      }));

    it('drops events already past retention at ingest and says how many', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await open(tdb);
        const old = daysBefore(TODAY, 61);
        const recent = daysBefore(TODAY, 59);
        const r = await store.ingest(batchOf([tunnel(old), uniqueUser(old), tunnel(recent)], 0));
        assert.deepEqual(r, { status: 'ingested', events: 1, expired: 2, nextOffset: r.nextOffset });
        assert.deepEqual(await store.datesNeedingRollup(), [recent]);
      }));

    it('deletes raw rows at 61 days but not 59, keeps every rollup, and never rolls a deleted day up again', () =>
      withTestDatabase(backend, async (tdb) => {
        const clock = new ManualClock(NOW);
        const store = await open(tdb, clock);
        const dayA = daysBefore(TODAY, 1);
        const dayB = dateAt(new Date(NOW.getTime() + DAY_MS));
        const dayC = daysBefore(TODAY, 2);
        const eventsOf = (d: string) => [
          tunnel(d),
          tunnel(d),
          uniqueUser(d),
          failed(d),
          domainBytes(d, 'example.com', 10),
          discovery(d, 1),
        ];
        await store.ingest(batchOf([...eventsOf(dayA), ...eventsOf(dayB), ...eventsOf(dayC)], 0));
        const oldFile = batchOf([tunnel(dayA), tunnel(dayC)], 0, 'events-0000000000001-0000000005.jsonl');
        assert.equal((await store.ingest(oldFile)).status, 'ingested');
        await store.rollup(dayA);
        await store.rollup(dayB);
        // dayC is left for retention to roll up before it deletes.

        clock.set(Date.parse(`${dayA}T12:00:00Z`) + 61 * DAY_MS);
        assert.equal(dateAt(new Date(clock.now().getTime() - 59 * DAY_MS)), dayB);
        const summary = await store.deleteExpired(clock.now(), DEFAULT_RETENTION_DAYS);
        assert.equal(summary.cutoffDate, daysBefore(dateAt(clock.now()), 60));
        assert.deepEqual(summary.deleted, {
          server_tunnel: 6,
          unique_user: 2,
          failed_tunnel: 2,
          domain_dest_bytes: 2,
          remote_server_list: 0,
          discovery: 2,
          upgrade: 0,
        });
        // The cursor of a file with only deleted days is gone; sent again, the file counts nothing twice.
        assert.equal(await store.nextOffset('host-1', oldFile.file), 0);
        assert.notEqual(await store.nextOffset('host-1', 'events-0000000000001-0000000001.jsonl'), 0);
        const resent = await store.ingest(oldFile);
        assert.deepEqual(resent, {
          status: 'ingested',
          events: 0,
          expired: 2,
          nextOffset: oldFile.endOffset,
        });
        // Raw rows of dayB remain: a new rollup of it still finds them.
        assert.equal((await store.rollup(dayB)).events, 6);
        // dayA and dayC keep their rollups, and rolling them up again changes nothing.
        for (const d of [dayA, dayC]) {
          assert.equal(await sessionsOn(store, d), 3, d);
          assert.equal((await store.domains({ from: d, to: d }))[0]?.bytes, 10);
          assert.deepEqual(await store.rollup(d), {
            date: d,
            events: 0,
            dailyRows: 1,
            domainRows: 1,
            failureRows: 1,
          });
          assert.equal(await sessionsOn(store, d), 3, d);
        }
        // A late event of a deleted day is expired, even under a longer retention than the one applied.
        const longer = await createStatsStore(await tdb.open(), { clock, retentionDays: 90 });
        const late = await longer.ingest(batchOf([tunnel(dayA)], 0, 'events-0000000000003-0000000001.jsonl'));
        assert.deepEqual(late, { status: 'ingested', events: 0, expired: 1, nextOffset: late.nextOffset });
        assert.equal(await sessionsOn(store, dayA), 3);
        assert.deepEqual(await store.datesNeedingRollup(), []);

        // Nothing more to delete: counts are zero, rollups still there.
        const again = await store.deleteExpired(clock.now(), DEFAULT_RETENTION_DAYS);
        assert.ok(Object.values(again.deleted).every((n) => n === 0));
        assert.equal(await sessionsOn(store, dayA), 3);
      }));

    it('purges every row before a date, rollups included, and expires late events of those dates', () =>
      withTestDatabase(backend, async (tdb) => {
        const clock = new ManualClock(NOW);
        const store = await open(tdb, clock);
        const [d1, d2, d3] = [daysBefore(TODAY, 3), daysBefore(TODAY, 2), daysBefore(TODAY, 1)];
        const eventsOf = (d: string) => [
          tunnel(d),
          uniqueUser(d),
          failed(d),
          domainBytes(d, 'example.com', 10),
        ];
        await store.ingest(batchOf([...eventsOf(d1), ...eventsOf(d2), ...eventsOf(d3)], 0));
        for (const d of [d1, d2]) await store.rollup(d);
        // d3 is left unrolled: purging before d3 must not touch it.

        const summary = await store.purgeBefore(d3);
        assert.equal(summary.cutoffDate, d3);
        assert.equal(summary.deleted['server_tunnel'], 2);
        assert.equal(summary.deleted['domain_dest_bytes'], 2);
        assert.deepEqual(summary.rollupsDeleted, { daily: 2, domains: 2, failures: 2 });
        for (const d of [d1, d2]) {
          assert.deepEqual(await store.daily({ from: d, to: d }), [], d);
          assert.deepEqual(await store.domains({ from: d, to: d }), [], d);
          assert.deepEqual(await store.failures({ from: d, to: d }), [], d);
          // Rolling a purged date up again finds nothing to bring back.
          assert.equal((await store.rollup(d)).events, 0);
          assert.deepEqual(await store.daily({ from: d, to: d }), [], d);
        }
        // A late event of a purged date is expired at ingest; the date after the cutoff is intact.
        const late = await store.ingest(batchOf([tunnel(d1)], 0, 'events-0000000000009-0000000001.jsonl'));
        assert.equal(late.status, 'ingested');
        assert.equal(late.expired, 1);
        assert.deepEqual(await store.datesNeedingRollup(), [d3]);
        await store.rollup(d3);
        assert.equal(await sessionsOn(store, d3), 1);
        assert.equal((await store.domains({ from: d3, to: d3 }))[0]?.bytes, 10);
        // Purging again is harmless, and a bad date is refused.
        const again = await store.purgeBefore(d3);
        assert.deepEqual(again.rollupsDeleted, { daily: 0, domains: 0, failures: 0 });
        await assert.rejects(store.purgeBefore('2026-13-40'), /YYYY-MM-DD/);
      }));

    it('keeps one sponsor noise key, made on first use, across reopening', () =>
      withTestDatabase(backend, async (tdb) => {
        const clock = new ManualClock(NOW);
        const first = await openStatsStore(tdb.target, { ...tdb.options, clock });
        const key = await first.sponsorNoiseKey();
        assert.equal(key.length, 32);
        assert.deepEqual(await first.sponsorNoiseKey(), key);
        await first.close();
        const again = await openStatsStore(tdb.target, { ...tdb.options, clock });
        assert.deepEqual(await again.sponsorNoiseKey(), key);
        await again.close();
      }));

    it('reopens on the same database with its data and refuses a bad retention setting', () =>
      withTestDatabase(backend, async (tdb) => {
        const clock = new ManualClock(NOW);
        const first = await openStatsStore(tdb.target, { ...tdb.options, clock });
        const b = batchOf([tunnel(DAY)], 0);
        await first.ingest(b);
        await first.close();
        const second = await openStatsStore(tdb.target, { ...tdb.options, clock });
        try {
          assert.equal(await second.nextOffset('host-1', b.file), b.endOffset);
          assert.equal((await second.ingest(b)).status, 'duplicate');
          assert.deepEqual(await second.datesNeedingRollup(), [DAY]);
        } finally {
          await second.close();
        }
        await assert.rejects(openStatsStore(tdb.target, { ...tdb.options, retentionDays: 0 }), (e) =>
          isPosternError(e, 'BAD_ARGUMENT'),
        );
      }));

    it('declares every table and column it creates in the data inventory, raw rows kept the default days', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await createStatsStore(db);
        assert.deepEqual(await findUndeclaredColumns(db), []);
        const raw = TABLE_INVENTORY.filter(
          (t) => t.table === 'stats_events' || t.table === 'stats_domain_bytes',
        );
        assert.equal(raw.length, 2);
        for (const t of raw) {
          for (const [c, f] of Object.entries(t.columns)) {
            assert.deepEqual(f.retention, { kind: 'days', days: DEFAULT_RETENTION_DAYS }, `${t.table}.${c}`);
          }
        }
      }));
  });
}
