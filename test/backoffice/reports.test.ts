// The operator's report APIs over HTTPS: JSON and CSV, date and sponsor filters, the operator token required.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DAILY_REPORT_PATH,
  DOMAINS_REPORT_PATH,
  FAILURES_REPORT_PATH,
  DAILY_COLUMNS,
  MAX_REPORT_DAYS,
} from '../../src/backoffice/stats-routes.ts';
import { csvField, toCsv } from '../../src/backoffice/csv.ts';
import { DAY, ndjson, startHarness, tunnelBase, tunnelEvent, type Harness } from './fixtures.ts';

const domainBytes = (domain: string, bytes: number) => ({
  event_name: 'domain_dest_bytes',
  schema_version: 1,
  timestamp: `${DAY}T10:00:00Z`,
  host_id: 'srv-a',
  sponsor_id: 'SPONSOR1',
  client_platform: 'Android',
  client_region: 'CA',
  client_asn: '64500',
  domain,
  bytes,
});

async function seed(h: Harness): Promise<void> {
  const events = [
    tunnelEvent('srv-a'),
    tunnelEvent('srv-a', { duration_ms: 120_000 }),
    tunnelEvent('srv-a', { sponsor_id: 'SPONSOR2', client_region: 'DE' }),
    { ...tunnelBase('srv-a'), event_name: 'unique_user' },
    { ...tunnelBase('srv-a'), event_name: 'failed_tunnel', tunnel_error: 'timeout' },
    domainBytes('example.com', 500),
    domainBytes('example.com', 250),
    domainBytes('(OTHER)', 7),
  ];
  const r = await h.post(ndjson(events));
  assert.equal(r.status, 200, r.text);
  await h.bo.jobs.tick();
}

const q = (path: string, extra = '') => `${path}?from=${DAY}&to=${DAY}${extra}`;

test('daily, domains and failures reports in JSON', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  const daily = await h.get(q(DAILY_REPORT_PATH));
  assert.equal(daily.status, 200, daily.text);
  assert.match(String(daily.headers['content-type']), /^application\/json/);
  const dj = daily.json();
  assert.equal(dj['report'], 'daily');
  assert.equal(dj['from'], DAY);
  assert.equal(dj['sponsorId'], null);
  const rows = dj['rows'] as Array<Record<string, unknown>>;
  const ca = rows.find((r) => r['sponsorId'] === 'SPONSOR1' && r['region'] === 'CA');
  assert.ok(ca, daily.text);
  assert.equal(ca['sessions'], 2);
  assert.equal(ca['uniqueUsers'], 1);
  assert.equal(ca['durationSumMs'], 180_000);
  assert.equal(ca['bytes'], 20_000);
  assert.equal(ca['failures'], 1);
  assert.deepEqual(Object.keys(ca).sort(), [...DAILY_COLUMNS].sort(), 'exactly the declared columns');

  const domains = (await h.get(q(DOMAINS_REPORT_PATH))).json()['rows'] as Array<Record<string, unknown>>;
  assert.deepEqual(domains.map((r) => [r['domain'], r['bytes']]).sort(), [
    ['(OTHER)', 7],
    ['example.com', 750],
  ]);
  const failures = (await h.get(q(FAILURES_REPORT_PATH))).json()['rows'] as Array<Record<string, unknown>>;
  assert.equal(failures.length, 1);
  assert.equal(failures[0]!['errorCode'], 'timeout');
  assert.equal(failures[0]!['count'], 1);
});

test('the sponsor filter keeps only that sponsor; other dates are empty', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  const only2 = (await h.get(q(DAILY_REPORT_PATH, '&sponsor=SPONSOR2'))).json();
  assert.equal(only2['sponsorId'], 'SPONSOR2');
  const rows = only2['rows'] as Array<Record<string, unknown>>;
  assert.equal(rows.length, 1);
  assert.equal(rows[0]!['region'], 'DE');
  const before = (await h.get(`${DAILY_REPORT_PATH}?from=2026-11-01&to=2026-11-28`)).json();
  assert.deepEqual(before['rows'], []);
});

test('CSV: a header line, one line per row, CRLF, as a download', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  const r = await h.get(q(DAILY_REPORT_PATH, '&format=csv&sponsor=SPONSOR1'));
  assert.equal(r.status, 200, r.text);
  assert.match(String(r.headers['content-type']), /^text\/csv; charset=utf-8/);
  assert.match(
    String(r.headers['content-disposition']),
    /attachment; filename="daily-2026-11-29-2026-11-29-SPONSOR1\.csv"/,
  );
  const lines = r.text.split('\r\n');
  assert.equal(lines.at(-1), '', 'ends in CRLF');
  assert.equal(lines[0], DAILY_COLUMNS.join(','));
  assert.equal(lines.length, 3, r.text);
  const cells = lines[1]!.split(',');
  assert.equal(cells[DAILY_COLUMNS.indexOf('sessions')], '2');
  assert.equal(cells[DAILY_COLUMNS.indexOf('region')], 'CA');
  const domains = await h.get(q(DOMAINS_REPORT_PATH, '&format=csv'));
  assert.match(domains.text, /^date,sponsorId,region,platform,domain,bytes\r\n/);
  assert.match(domains.text, /\r\n2026-11-29,SPONSOR1,CA,Android,example\.com,750\r\n/);
  // An empty report is still a header line.
  const empty = await h.get(`${FAILURES_REPORT_PATH}?from=2026-01-01&to=2026-01-02&format=csv`);
  assert.equal(empty.text, 'date,sponsorId,region,platform,protocol,errorCode,count\r\n');
});

test('RFC 4180 quoting: commas, quotes and line breaks are quoted, quotes doubled', () => {
  assert.equal(csvField('plain'), 'plain');
  assert.equal(csvField('a,b'), '"a,b"');
  assert.equal(csvField('say "hi"'), '"say ""hi"""');
  assert.equal(csvField('two\nlines'), '"two\nlines"');
  assert.equal(csvField('cr\r'), '"cr\r"');
  assert.equal(csvField(null), '');
  assert.equal(csvField(12), '12');
  assert.equal(toCsv(['a', 'b'], [{ a: 'x,y', b: 1, c: 'not a column' }]), 'a,b\r\n"x,y",1\r\n');
});

test('reports need the operator token', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  for (const path of [DAILY_REPORT_PATH, DOMAINS_REPORT_PATH, FAILURES_REPORT_PATH]) {
    for (const token of [null, 'wrong-token-wrong-token', h.keys['srv-a']!, h.operatorToken + 'x']) {
      const r = await h.get(q(path), token);
      assert.equal(r.status, 401, `${path} with ${token === null ? 'no token' : 'a wrong token'}`);
      assert.equal(r.json()['status'], 'unauthorized');
      assert.ok(!r.text.includes('example.com') && !r.text.includes('SPONSOR'), 'no data in a refusal');
    }
  }
  // A stats key opens only ingest, and the operator token does not open ingest.
  const r = await h.post(ndjson([tunnelEvent('srv-a')]), { key: h.operatorToken });
  assert.equal(r.status, 401);
});

test('bad report queries are 400 with a reason', async (t) => {
  const h = await startHarness(t);
  const bad: Array<[string, RegExp]> = [
    [DAILY_REPORT_PATH, /from/],
    [`${DAILY_REPORT_PATH}?from=${DAY}`, /to/],
    [`${DAILY_REPORT_PATH}?from=2026-02-30&to=2026-03-01`, /from is not a date/],
    [`${DAILY_REPORT_PATH}?from=29-11-2026&to=${DAY}`, /from/],
    [`${DAILY_REPORT_PATH}?from=${DAY}&to=2026-11-28`, /from is after to/],
    [`${DAILY_REPORT_PATH}?from=2024-01-01&to=${DAY}`, new RegExp(`${MAX_REPORT_DAYS} days`)],
    [`${DAILY_REPORT_PATH}?from=${DAY}&to=${DAY}&format=xml`, /format/],
    [`${DAILY_REPORT_PATH}?from=${DAY}&to=${DAY}&sponsor=a%20b`, /sponsor/],
  ];
  for (const [path, re] of bad) {
    const r = await h.get(path);
    assert.equal(r.status, 400, `${path}: ${r.text}`);
    assert.equal(r.json()['status'], 'malformed');
    assert.match(String(r.json()['error']), re, path);
  }
});
