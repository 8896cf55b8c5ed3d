import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../src/common/clock.ts';
import { isPosternError } from '../../src/common/errors.ts';
import type { StatsEvent } from '../../src/stats/events.ts';
import { createStatsStore } from '../../src/stats/sql-stats-store.ts';
import {
  BYTES_ROUNDING_UNIT,
  SESSIONS_PER_USER_DAY_CAP,
  cryptoRandom,
  laplaceNoise,
  sponsorReport,
} from '../../src/stats/sponsor-view.ts';
import { DEFAULT_SPONSOR_K, type DailyRollupRow, type StatsStore } from '../../src/stats/store.ts';
import { DATABASE_BACKENDS, withTestDatabase } from '../helpers/databases.ts';
import { batchOf, domainBytes, tunnel, uniqueUser } from './stats-event-factory.ts';

const DAY = '2026-03-09';
const NOW = new Date('2026-03-10T12:00:00Z');

/** Deterministic uniform numbers in [0, 1), so a statistical test gives the same answer every run. */
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

function repeat<T>(n: number, f: (i: number) => T): T[] {
  return Array.from({ length: n }, (_, i) => f(i));
}

/** SPONSOR1: US 12 users; CN 6 + 5 users on two platforms and protocols (11); IR 3 users. SPONSOR2: US 50. */
function scenario(): StatsEvent[] {
  const s1 = { sponsor: 'SPONSOR1' };
  return [
    ...repeat(12, () => uniqueUser(DAY, { ...s1, region: 'US' })),
    ...repeat(30, (i) => tunnel(DAY, { ...s1, region: 'US' }, { up: 1_000_000, down: 2_400_000 + i })),
    ...repeat(6, () => uniqueUser(DAY, { ...s1, region: 'CN', platform: 'Android', protocol: 'OSSH' })),
    ...repeat(5, () => uniqueUser(DAY, { ...s1, region: 'CN', platform: 'iOS', protocol: 'TLS-OSSH' })),
    ...repeat(7, () =>
      tunnel(DAY, { ...s1, region: 'CN', platform: 'Android', protocol: 'OSSH' }, { up: 1, down: 2 }),
    ),
    ...repeat(4, () =>
      tunnel(DAY, { ...s1, region: 'CN', platform: 'iOS', protocol: 'TLS-OSSH' }, { up: 1, down: 2 }),
    ),
    ...repeat(3, () => uniqueUser(DAY, { ...s1, region: 'IR' })),
    ...repeat(9, () => tunnel(DAY, { ...s1, region: 'IR' })),
    ...repeat(50, () => uniqueUser(DAY, { sponsor: 'SPONSOR2', region: 'US' })),
    ...repeat(60, () => tunnel(DAY, { sponsor: 'SPONSOR2', region: 'US' })),
    domainBytes(DAY, 'example.com', 700_000, { ...s1, region: 'US', platform: 'Android' }),
    domainBytes(DAY, 'example.com', 900_000, { ...s1, region: 'US', platform: 'iOS' }),
    domainBytes(DAY, 'news.example', 10, { ...s1, region: 'CN' }),
    domainBytes(DAY, 'example.com', 5, { ...s1, region: 'IR' }),
    domainBytes(DAY, 'rare.example', 5, { ...s1, region: 'IR' }),
    domainBytes(DAY, 'example.com', 123, { sponsor: 'SPONSOR2', region: 'US' }),
  ];
}

for (const backend of DATABASE_BACKENDS) {
  describe(`sponsor report on ${backend.name}`, { skip: backend.skip }, () => {
    it('shows only date x region of its own sponsor, sums platforms, and suppresses small cells with their domains', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await createStatsStore(await tdb.open(), { clock: new ManualClock(NOW) });
        await store.ingest(batchOf(scenario(), 0));
        await store.rollup(DAY);

        const report = await sponsorReport(store, { sponsorId: 'SPONSOR1', from: DAY, to: DAY });
        assert.equal(report.k, DEFAULT_SPONSOR_K);
        assert.equal(report.noise, null);
        assert.deepEqual(report.cells, [
          { date: DAY, region: 'CN', uniqueUsers: 11, sessions: 11, bytes: 33 },
          {
            date: DAY,
            region: 'US',
            uniqueUsers: 12,
            sessions: 30,
            bytes: 30 * 3_400_000 + (29 * 30) / 2,
          },
        ]);
        // Per (date, region, domain), summed over platforms; never a platform, protocol or session.
        assert.deepEqual(report.domains, [
          { date: DAY, region: 'CN', domain: 'news.example', bytes: 10 },
          { date: DAY, region: 'US', domain: 'example.com', bytes: 1_600_000 },
        ]);
        assert.deepEqual(report.suppressed, { cells: 1, domainRows: 2 });
        const text = JSON.stringify(report);
        assert.ok(!text.includes('IR'), 'nothing of the suppressed cell is shown');
        assert.ok(!text.includes('rare.example'));
        assert.ok(!text.includes('SPONSOR2') && !text.includes('Android') && !text.includes('OSSH'));

        // A lower k shows the small cell too; a higher one hides everything, and says so.
        const k3 = await sponsorReport(store, { sponsorId: 'SPONSOR1', from: DAY, to: DAY, k: 3 });
        assert.deepEqual(
          k3.cells.map((c) => [c.region, c.uniqueUsers]),
          [
            ['CN', 11],
            ['IR', 3],
            ['US', 12],
          ],
        );
        assert.deepEqual(k3.suppressed, { cells: 0, domainRows: 0 });
        const k100 = await sponsorReport(store, { sponsorId: 'SPONSOR1', from: DAY, to: DAY, k: 100 });
        assert.deepEqual([k100.cells, k100.domains, k100.suppressed], [[], [], { cells: 3, domainRows: 4 }]);
      }));

    it('adds noise to users and sessions and rounds bytes when epsilon is given, never below k', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await createStatsStore(await tdb.open(), { clock: new ManualClock(NOW) });
        await store.ingest(batchOf(scenario(), 0));
        await store.rollup(DAY);
        const report = await sponsorReport(store, {
          sponsorId: 'SPONSOR1',
          from: DAY,
          to: DAY,
          epsilon: 0.5,
          random: seeded(1),
        });
        assert.deepEqual(report.noise, {
          epsilon: 0.5,
          uniqueUsersScale: 2,
          sessionsScale: SESSIONS_PER_USER_DAY_CAP * 2,
          sessionsPerUserDayCap: SESSIONS_PER_USER_DAY_CAP,
          bytesUnit: BYTES_ROUNDING_UNIT,
        });
        // Same cells as without noise: suppression is decided on the exact counts.
        assert.deepEqual(
          report.cells.map((c) => c.region),
          ['CN', 'US'],
        );
        assert.deepEqual(report.suppressed, { cells: 1, domainRows: 2 });
        for (const c of report.cells) {
          assert.ok(Number.isInteger(c.uniqueUsers) && c.uniqueUsers >= 0);
          assert.ok(Number.isInteger(c.sessions) && c.sessions >= 0);
          assert.equal(c.bytes % BYTES_ROUNDING_UNIT, 0);
        }
        assert.equal(report.cells[1]!.bytes, 102_000_000);
        assert.deepEqual(
          report.domains.map((d) => d.bytes),
          [0, 2_000_000],
        );
      }));
  });
}

describe('sponsor report noise', () => {
  const many: DailyRollupRow[] = [
    {
      date: DAY,
      sponsorId: 'S',
      region: 'US',
      platform: 'Android',
      protocol: 'OSSH',
      uniqueUsers: 1000,
      sessions: 5000,
      durationSumMs: 0,
      durationP50Ms: 0,
      durationP90Ms: 0,
      bytesUp: 0,
      bytesDown: 0,
      bytes: 0,
      failures: 0,
      discoveries: 0,
      listDownloads: 0,
      upgrades: 0,
    },
  ];
  const fixed: Pick<StatsStore, 'daily' | 'domains'> = { daily: async () => many, domains: async () => [] };

  it('is centred on the true value with the spread of its Laplace scale', async () => {
    const random = seeded(2026);
    const epsilon = 0.5;
    const users: number[] = [];
    const sessions: number[] = [];
    for (let i = 0; i < 4000; i++) {
      const r = await sponsorReport(fixed, { sponsorId: 'S', from: DAY, to: DAY, epsilon, random });
      users.push(r.cells[0]!.uniqueUsers - 1000);
      sessions.push(r.cells[0]!.sessions - 5000);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const meanAbs = (xs: number[]) => mean(xs.map(Math.abs));
    // Laplace(b): mean 0, E|X| = b, standard deviation b*sqrt(2); the mean of n draws is within 4 sigma/sqrt(n).
    const bUsers = 1 / epsilon;
    const bSessions = SESSIONS_PER_USER_DAY_CAP / epsilon;
    assert.ok(
      Math.abs(mean(users)) < (4 * bUsers * Math.SQRT2) / Math.sqrt(users.length),
      `users mean ${mean(users)}`,
    );
    assert.ok(
      Math.abs(meanAbs(users) - bUsers) < 0.15 * bUsers + 0.25,
      `users E|X| ${meanAbs(users)} vs ${bUsers}`,
    );
    assert.ok(
      Math.abs(mean(sessions)) < (4 * bSessions * Math.SQRT2) / Math.sqrt(sessions.length),
      `sessions mean ${mean(sessions)}`,
    );
    assert.ok(
      Math.abs(meanAbs(sessions) - bSessions) < 0.1 * bSessions,
      `sessions E|X| ${meanAbs(sessions)}`,
    );
    // Not all the same: it is noise, not an offset.
    assert.ok(new Set(sessions).size > 100);
  });

  it('without epsilon gives exact values; with a larger epsilon, less noise', async () => {
    const exact = await sponsorReport(fixed, { sponsorId: 'S', from: DAY, to: DAY, random: () => 0.99 });
    assert.deepEqual([exact.cells[0]!.uniqueUsers, exact.cells[0]!.sessions], [1000, 5000]);
    const spread = async (epsilon: number) => {
      const random = seeded(9);
      let sum = 0;
      for (let i = 0; i < 500; i++) {
        const r = await sponsorReport(fixed, { sponsorId: 'S', from: DAY, to: DAY, epsilon, random });
        sum += Math.abs(r.cells[0]!.sessions - 5000);
      }
      return sum / 500;
    };
    assert.ok((await spread(2)) * 5 < (await spread(0.2)));
  });

  it('with a noise key, the same count gets the same noise every time, and the draws are still Laplace', async () => {
    const regions = Array.from({ length: 3000 }, (_, i) => `R${i}`);
    const rows = regions.map((region) => ({ ...many[0]!, region }));
    const store: Pick<StatsStore, 'daily' | 'domains'> = { daily: async () => rows, domains: async () => [] };
    const key = Buffer.alloc(32, 7);
    const epsilon = 0.5;
    const report = (k: Uint8Array, e = epsilon) =>
      sponsorReport(store, { sponsorId: 'S', from: DAY, to: DAY, epsilon: e, noiseKey: k });
    const a = await report(key);
    assert.deepEqual((await report(key)).cells, a.cells, 'identical on a second call');
    const other = await report(Buffer.alloc(32, 8));
    const otherEpsilon = await report(key, 0.4);
    const differ = (x: typeof a, y: typeof a) =>
      x.cells.filter((c, i) => c.sessions !== y.cells[i]!.sessions).length;
    assert.ok(differ(a, other) > 2500, 'another key draws other noise');
    assert.ok(differ(a, otherEpsilon) > 2500, 'another epsilon draws other noise');
    // Over 3000 cells (3000 independent keyed draws) the noise is centred with the spread of its scale.
    const users = a.cells.map((c) => c.uniqueUsers - 1000);
    const sessions = a.cells.map((c) => c.sessions - 5000);
    const mean = (xs: number[]) => xs.reduce((p, q) => p + q, 0) / xs.length;
    const bSessions = SESSIONS_PER_USER_DAY_CAP / epsilon;
    assert.ok(Math.abs(mean(sessions)) < (4 * bSessions * Math.SQRT2) / Math.sqrt(sessions.length));
    assert.ok(Math.abs(mean(sessions.map(Math.abs)) - bSessions) < 0.1 * bSessions);
    assert.ok(Math.abs(mean(users.map(Math.abs)) - 1 / epsilon) < 0.15 / epsilon + 0.25);
    // Without a key (and no store key), each call draws afresh.
    const fresh = () => sponsorReport(store, { sponsorId: 'S', from: DAY, to: DAY, epsilon });
    assert.ok(differ(await fresh(), await fresh()) > 2500);
  });

  it('clamps noisy counts at zero', async () => {
    const small: Pick<StatsStore, 'daily' | 'domains'> = {
      daily: async () => [{ ...many[0]!, uniqueUsers: 10, sessions: 0 }],
      domains: async () => [],
    };
    // random() near 0 draws a large negative value.
    const r = await sponsorReport(small, {
      sponsorId: 'S',
      from: DAY,
      to: DAY,
      epsilon: 0.01,
      random: () => 1e-9,
    });
    assert.deepEqual([r.cells[0]!.uniqueUsers, r.cells[0]!.sessions], [0, 0]);
  });

  it('draws Laplace noise from a uniform source, and the default source is uniform in [0, 1)', () => {
    const random = seeded(5);
    const draws = repeat(20_000, () => laplaceNoise(3, random));
    const variance = draws.reduce((s, x) => s + x * x, 0) / draws.length;
    assert.ok(Math.abs(variance - 2 * 9) < 0.1 * 18, `variance ${variance}`);
    assert.ok(draws.filter((x) => x > 0).length / draws.length > 0.48);
    const u = repeat(10_000, () => cryptoRandom());
    assert.ok(u.every((x) => x >= 0 && x < 1));
    assert.ok(Math.abs(u.reduce((a, b) => a + b, 0) / u.length - 0.5) < 0.02);
    assert.throws(
      () => laplaceNoise(1, () => 0),
      (e) => isPosternError(e, 'BAD_ARGUMENT'),
    );
  });

  it('refuses bad options', async () => {
    const bad = (o: object) =>
      assert.rejects(sponsorReport(fixed, { sponsorId: 'S', from: DAY, to: DAY, ...o }), (e) =>
        isPosternError(e, 'BAD_ARGUMENT'),
      );
    await bad({ epsilon: 0 });
    await bad({ epsilon: -1 });
    await bad({ epsilon: Number.NaN });
    await bad({ epsilon: 100 });
    await bad({ k: 0 });
    await bad({ k: 2.5 });
    await bad({ sponsorId: '' });
    await bad({ from: '2026-03-10', to: '2026-03-09' });
    await bad({ from: '2024-01-01', to: '2026-03-09' });
    await bad({ to: 'tomorrow' });
  });
});
