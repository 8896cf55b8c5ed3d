// The sponsor's share of the statistics: what a sponsor may see of its own users, in the portal and in CSV
// exports. Only aggregates by date, sponsor and region (summed over platforms and protocols); a cell with fewer
// than k unique users is suppressed together with its domain rows, and the report says how many were
// suppressed, never their values. Domain bytes are per (date, region, domain), never per session.
//
// Optional differential privacy (epsilon given):
// - Unique users of a cell get Laplace noise of scale 1/epsilon. Sensitivity 1: a client counts as a unique
//   user at most once a day by construction (the server decides it from the client's hour-truncated last
//   connection), so one person changes a cell's count by at most 1.
// - Sessions get Laplace noise of scale SESSIONS_PER_USER_DAY_CAP/epsilon. This is DP only for people with at
//   most that many sessions a day: nothing caps sessions upstream, so a heavier user is less protected.
// - Noisy counts are rounded and clamped at 0 (post-processing: it does not weaken the guarantee).
// - Each cell's two counts each spend epsilon: a person present in one cell of one day costs 2 x epsilon.
// - The noise is the same every time the same count is released: each draw comes from an HMAC of (sponsor,
//   date, region, count, epsilon) under a secret the store keeps (StatsStore.sponsorNoiseKey). Were it drawn
//   afresh per call, a job exporting "the last 30 days" every day would release each day 30 times with
//   independent noise, and averaging those would take the noise away. The same count at a different epsilon
//   is a new release with its own draw (correlated draws at two scales would give the true value away), so
//   the budget adds up over the epsilons a day is released at: keep to one.
// What is NOT differentially private:
// - Suppression: a cell is shown or hidden on its exact unique-user count (this is what guarantees the k
//   promise), so whether a cell appears reveals whether it had at least k users.
// - Bytes (cell totals and domain bytes): one person's bytes are unbounded, so no finite noise calibrates them.
//   With epsilon they are rounded to BYTES_ROUNDING_UNIT, which coarsens small volumes but proves nothing.
// Without epsilon every value is exact (still only shown for cells of at least k users).
import { createHmac, randomBytes } from 'node:crypto';
import { PosternError } from '../common/errors.ts';
import { MAX_ID_LENGTH } from './events.ts';
import { DEFAULT_SPONSOR_K, type StatsStore } from './store.ts';

/** Sensitivity of the session count: the sessions one person is assumed to have in a day at most. */
export const SESSIONS_PER_USER_DAY_CAP = 20;
/** With noise on, byte totals are rounded to the nearest multiple of this (1 MB). */
export const BYTES_ROUNDING_UNIT = 1_000_000;
/** Largest epsilon accepted: above it the noise is too small to protect anyone. */
export const MAX_EPSILON = 10;
/** Longest date range one report covers. */
export const MAX_REPORT_DAYS = 366;
/** Largest k accepted (a threshold above it would hide everything). */
export const MAX_K = 1_000_000;

const DATE_PATTERN = /^\d{4}-\d{2}-\d{2}$/;
const DAY_MS = 86_400_000;

export interface SponsorReportOptions {
  sponsorId: string;
  /** Inclusive, YYYY-MM-DD */
  from: string;
  /** Inclusive, YYYY-MM-DD */
  to: string;
  /** Cells with fewer unique users are suppressed (DEFAULT_SPONSOR_K) */
  k?: number;
  /** Turns on Laplace noise with this privacy budget per count (see the module comment) */
  epsilon?: number;
  /**
   * The secret behind consistent noise; by default the store's sponsorNoiseKey (when it has one). Without either,
   * every call draws fresh noise.
   */
  noiseKey?: Uint8Array;
  /** A uniform source in [0, 1) instead of the keyed draws: tests pass a seeded one. */
  random?: () => number;
}

/** One (date, region) of the sponsor's users. */
export interface SponsorCell {
  date: string;
  region: string;
  uniqueUsers: number;
  sessions: number;
  bytes: number;
}

export interface SponsorDomainRow {
  date: string;
  region: string;
  domain: string;
  bytes: number;
}

export interface SponsorNoise {
  epsilon: number;
  /** Laplace scale of the unique-user noise (1 / epsilon) */
  uniqueUsersScale: number;
  /** Laplace scale of the session noise (SESSIONS_PER_USER_DAY_CAP / epsilon) */
  sessionsScale: number;
  sessionsPerUserDayCap: number;
  /** Bytes are rounded to multiples of this */
  bytesUnit: number;
}

export interface SponsorReport {
  sponsorId: string;
  from: string;
  to: string;
  k: number;
  /** null: exact values */
  noise: SponsorNoise | null;
  cells: SponsorCell[];
  domains: SponsorDomainRow[];
  /** How many cells (fewer than k unique users) and domain rows of those cells were left out; no values. */
  suppressed: { cells: number; domainRows: number };
}

/** Uniform in [0, 1) from 53 random bits of the operating system's generator. */
export function cryptoRandom(): number {
  const b = randomBytes(8);
  const high = b.readUInt32BE(0) >>> 11; // 21 bits
  const low = b.readUInt32BE(4); // 32 bits
  return (high * 2 ** 32 + low) / 2 ** 53;
}

/**
 * Uniform in (0, 1) determined by `key` and `parts`: 53 bits of HMAC-SHA-256 (the next 53 in the rare case
 * they are all zero).
 */
export function keyedUniform(key: Uint8Array, parts: readonly string[]): number {
  const mac = createHmac('sha256', key).update(JSON.stringify(parts)).digest();
  for (let at = 0; at + 8 <= mac.length; at += 8) {
    const high = mac.readUInt32BE(at) >>> 11; // 21 bits
    const low = mac.readUInt32BE(at + 4); // 32 bits
    const u = (high * 2 ** 32 + low) / 2 ** 53;
    if (u > 0) return u;
  }
  return 0.5; // 256 zero bits: not going to happen, but never an infinite draw
}

/** One draw of Laplace(0, scale) by inverting its distribution function. */
export function laplaceNoise(scale: number, random: () => number = cryptoRandom): number {
  let u = random();
  // 0 would give an infinite draw; a source returning it (or garbage) gets another try, a few times.
  for (let tries = 0; !(u > 0 && u < 1) && tries < 16; tries++) u = random();
  if (!(u > 0 && u < 1))
    throw new PosternError('BAD_ARGUMENT', 'the random source must return numbers in [0, 1)');
  return u < 0.5 ? scale * Math.log(2 * u) : -scale * Math.log(2 * (1 - u));
}

function checkDate(d: string, what: string): number {
  const t = typeof d === 'string' && DATE_PATTERN.test(d) ? Date.parse(`${d}T00:00:00Z`) : Number.NaN;
  if (Number.isNaN(t)) throw new PosternError('BAD_ARGUMENT', `${what} must be a date as YYYY-MM-DD`);
  return t;
}

function checkOptions(o: SponsorReportOptions): { k: number; epsilon: number | undefined } {
  if (typeof o.sponsorId !== 'string' || o.sponsorId.length === 0 || o.sponsorId.length > MAX_ID_LENGTH) {
    throw new PosternError('BAD_ARGUMENT', `the sponsor ID must be 1 to ${MAX_ID_LENGTH} characters`);
  }
  const from = checkDate(o.from, 'from');
  const to = checkDate(o.to, 'to');
  if (to < from) throw new PosternError('BAD_ARGUMENT', "'to' is before 'from'");
  if ((to - from) / DAY_MS + 1 > MAX_REPORT_DAYS) {
    throw new PosternError('BAD_ARGUMENT', `a report covers at most ${MAX_REPORT_DAYS} days`);
  }
  const k = o.k ?? DEFAULT_SPONSOR_K;
  if (!Number.isInteger(k) || k < 1 || k > MAX_K) {
    throw new PosternError('BAD_ARGUMENT', `k must be a whole number from 1 to ${MAX_K}`);
  }
  const epsilon = o.epsilon;
  if (epsilon !== undefined && !(Number.isFinite(epsilon) && epsilon > 0 && epsilon <= MAX_EPSILON)) {
    throw new PosternError('BAD_ARGUMENT', `epsilon must be a number above 0 and at most ${MAX_EPSILON}`);
  }
  return { k, epsilon };
}

function roundTo(n: number, unit: number): number {
  return Math.round(n / unit) * unit;
}

const byDateRegion = (a: { date: string; region: string }, b: { date: string; region: string }): number =>
  a.date < b.date ? -1 : a.date > b.date ? 1 : a.region < b.region ? -1 : a.region > b.region ? 1 : 0;

/** The sponsor's report for a date range: see the module comment for what it shows and hides. */
export async function sponsorReport(
  store: Pick<StatsStore, 'daily' | 'domains'> & Partial<Pick<StatsStore, 'sponsorNoiseKey'>>,
  opts: SponsorReportOptions,
): Promise<SponsorReport> {
  const { k, epsilon } = checkOptions(opts);
  const q = { from: opts.from, to: opts.to, sponsorId: opts.sponsorId };

  // Sum over platforms and protocols: the sponsor sees only date x region.
  const cells = new Map<string, SponsorCell>();
  for (const r of await store.daily(q)) {
    if (r.sponsorId !== opts.sponsorId) continue;
    const key = `${r.date}\u0000${r.region}`;
    let c = cells.get(key);
    if (!c) cells.set(key, (c = { date: r.date, region: r.region, uniqueUsers: 0, sessions: 0, bytes: 0 }));
    c.uniqueUsers += r.uniqueUsers;
    c.sessions += r.sessions;
    c.bytes += r.bytes;
  }
  const domains = new Map<string, SponsorDomainRow>();
  for (const r of await store.domains(q)) {
    if (r.sponsorId !== opts.sponsorId) continue;
    const key = `${r.date}\u0000${r.region}\u0000${r.domain}`;
    let d = domains.get(key);
    if (!d) domains.set(key, (d = { date: r.date, region: r.region, domain: r.domain, bytes: 0 }));
    d.bytes += r.bytes;
  }

  // Suppression on the exact count, so no shown cell ever has fewer than k users.
  const shown = new Set<string>();
  let suppressedCells = 0;
  for (const [key, c] of cells) {
    if (c.uniqueUsers >= k) shown.add(key);
    else suppressedCells++;
  }
  const outDomains: SponsorDomainRow[] = [];
  let suppressedDomainRows = 0;
  for (const d of domains.values()) {
    if (shown.has(`${d.date}\u0000${d.region}`)) outDomains.push(d);
    else suppressedDomainRows++;
  }
  const outCells = [...cells.entries()].filter(([key]) => shown.has(key)).map(([, c]) => c);

  let noise: SponsorNoise | null = null;
  if (epsilon !== undefined) {
    noise = {
      epsilon,
      uniqueUsersScale: 1 / epsilon,
      sessionsScale: SESSIONS_PER_USER_DAY_CAP / epsilon,
      sessionsPerUserDayCap: SESSIONS_PER_USER_DAY_CAP,
      bytesUnit: BYTES_ROUNDING_UNIT,
    };
    const key = opts.random !== undefined ? undefined : (opts.noiseKey ?? (await store.sponsorNoiseKey?.()));
    const draw = (c: SponsorCell, count: string): (() => number) => {
      if (opts.random !== undefined) return opts.random;
      if (key === undefined) return cryptoRandom;
      const u = keyedUniform(key, [opts.sponsorId, c.date, c.region, count, String(epsilon)]);
      return () => u;
    };
    for (const c of outCells) {
      const users = laplaceNoise(noise.uniqueUsersScale, draw(c, 'uniqueUsers'));
      const sessions = laplaceNoise(noise.sessionsScale, draw(c, 'sessions'));
      c.uniqueUsers = Math.max(0, Math.round(c.uniqueUsers + users));
      c.sessions = Math.max(0, Math.round(c.sessions + sessions));
      c.bytes = roundTo(c.bytes, BYTES_ROUNDING_UNIT);
    }
    for (const d of outDomains) d.bytes = roundTo(d.bytes, BYTES_ROUNDING_UNIT);
  }

  outCells.sort(byDateRegion);
  outDomains.sort((a, b) => byDateRegion(a, b) || (a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : 0));
  return {
    sponsorId: opts.sponsorId,
    from: opts.from,
    to: opts.to,
    k,
    noise,
    cells: outCells,
    domains: outDomains,
    suppressed: { cells: suppressedCells, domainRows: suppressedDomainRows },
  };
}
