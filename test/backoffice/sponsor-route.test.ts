// The sponsor's share over HTTPS: date x region only, small cells suppressed, k only raised, epsilon only lowered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SPONSOR_REPORT_PATH,
  SPONSOR_CELL_COLUMNS,
  SUPPRESSED_CELLS_HEADER,
  K_HEADER,
  EPSILON_HEADER,
} from '../../src/backoffice/sponsor-route.ts';
import { DAY, ndjson, startHarness, tunnelBase, tunnelEvent, type Harness } from './fixtures.ts';

const domainBytes = (region: string, domain: string, bytes: number) => ({
  event_name: 'domain_dest_bytes',
  schema_version: 1,
  timestamp: `${DAY}T10:00:00Z`,
  host_id: 'srv-a',
  sponsor_id: 'SPONSOR1',
  client_platform: 'Android',
  client_region: region,
  client_asn: '64500',
  domain,
  bytes,
});

/** SPONSOR1: 12 users in CA (shown at k=10), 3 in DE (suppressed); SPONSOR2: 20 users in CA. */
async function seed(h: Harness): Promise<void> {
  const user = (sponsor: string, region: string) => ({
    ...tunnelBase('srv-a'),
    sponsor_id: sponsor,
    client_region: region,
    event_name: 'unique_user',
  });
  const events = [
    ...Array.from({ length: 12 }, (_, i) =>
      // Two platforms: the sponsor sees them summed.
      i % 2 ? user('SPONSOR1', 'CA') : { ...user('SPONSOR1', 'CA'), client_platform: 'iOS' },
    ),
    ...Array.from({ length: 3 }, () => user('SPONSOR1', 'DE')),
    ...Array.from({ length: 20 }, () => user('SPONSOR2', 'CA')),
    tunnelEvent('srv-a'),
    tunnelEvent('srv-a', { client_region: 'DE' }),
    domainBytes('CA', 'example.com', 2_400_000),
    domainBytes('DE', 'secret.example', 100),
  ];
  const r = await h.post(ndjson(events));
  assert.equal(r.status, 200, r.text);
  await h.bo.jobs.tick();
}

const q = (extra = '') => `${SPONSOR_REPORT_PATH}?sponsor=SPONSOR1&from=${DAY}&to=${DAY}${extra}`;

test('only date x region of that sponsor, cells under k suppressed with their domains', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  const r = await h.get(q());
  assert.equal(r.status, 200, r.text);
  const j = r.json();
  assert.equal(j['k'], 10);
  assert.equal(j['noise'], null);
  assert.deepEqual(j['cells'], [{ date: DAY, region: 'CA', uniqueUsers: 12, sessions: 1, bytes: 10_000 }]);
  assert.deepEqual(j['domains'], [{ date: DAY, region: 'CA', domain: 'example.com', bytes: 2_400_000 }]);
  assert.deepEqual(j['suppressed'], { cells: 1, domainRows: 1 });
  assert.ok(!r.text.includes('secret.example'), 'a suppressed cell hides its domains');
  assert.ok(!r.text.includes('SPONSOR2') && !r.text.includes('Android'), 'no other sponsor, no platform');

  const raised = (await h.get(q('&k=13'))).json();
  assert.deepEqual(raised['cells'], [], 'k raised past 12 hides CA too');
  const lowered = await h.get(q('&k=2'));
  assert.equal(lowered.status, 400);
  assert.match(String(lowered.json()['error']), /k may only be raised/);
});

test('CSV of cells or domains, with suppression and k in headers', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  const cells = await h.get(q('&format=csv'));
  assert.equal(cells.status, 200, cells.text);
  assert.equal(cells.text, `${SPONSOR_CELL_COLUMNS.join(',')}\r\n${DAY},CA,12,1,10000\r\n`);
  assert.equal(cells.headers[SUPPRESSED_CELLS_HEADER], '1');
  assert.equal(cells.headers[K_HEADER], '10');
  assert.equal(cells.headers[EPSILON_HEADER], undefined);
  const domains = await h.get(q('&format=csv&part=domains'));
  assert.equal(domains.text, `date,region,domain,bytes\r\n${DAY},CA,example.com,2400000\r\n`);
});

test('with epsilon: noise is declared, bytes are rounded, suppression still on exact counts', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  const j = (await h.get(q('&epsilon=1'))).json();
  const noise = j['noise'] as Record<string, number>;
  assert.equal(noise['epsilon'], 1);
  assert.equal(noise['uniqueUsersScale'], 1);
  const cells = j['cells'] as Array<Record<string, number>>;
  assert.equal(cells.length, 1);
  assert.equal(cells[0]!['bytes'], 0, '10 kB rounds to 0 MB');
  assert.deepEqual(j['domains'], [{ date: DAY, region: 'CA', domain: 'example.com', bytes: 2_000_000 }]);
  assert.ok(Number.isInteger(cells[0]!['uniqueUsers']) && cells[0]!['uniqueUsers']! >= 0);
});

test('sponsor reports need the operator token and a valid query', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  assert.equal((await h.get(q(), null)).status, 401);
  assert.equal((await h.get(q(), 'wrong-token-wrong-token')).status, 401);
  for (const bad of [
    `${SPONSOR_REPORT_PATH}?from=${DAY}&to=${DAY}`,
    q('&epsilon=0'),
    q('&epsilon=11'),
    q('&k=0'),
    q('&part=sessions'),
    `${SPONSOR_REPORT_PATH}?sponsor=SPONSOR1&from=${DAY}&to=2026-11-01`,
  ]) {
    const r = await h.get(bad);
    assert.equal(r.status, 400, `${bad}: ${r.text}`);
    assert.equal(r.json()['status'], 'malformed');
  }
});

test("the service's epsilon puts noise on every report; a request may lower it, not raise it", async (t) => {
  const h = await startHarness(t, { sponsorMaximumEpsilon: 0.5, sponsorMinimumK: 5 });
  await seed(h);
  const j = (await h.get(q())).json();
  assert.equal((j['noise'] as Record<string, number>)['epsilon'], 0.5);
  assert.equal(j['k'], 5);
  assert.equal((await h.get(q('&epsilon=0.1'))).json()['noise'] !== null, true);
  const r = await h.get(q('&epsilon=1'));
  assert.equal(r.status, 400);
  assert.match(String(r.json()['error']), /epsilon may only be lowered/);
});

test('the same report twice has the same noise: repeated exports cannot be averaged', async (t) => {
  const h = await startHarness(t);
  await seed(h);
  // Twelve users with noise of scale 2: fresh draws would differ between most calls (the rounded noise repeats
  // with probability about 0.17), so eight identical answers show the noise is fixed, not absent or redrawn.
  const first = (await h.get(q('&epsilon=0.5'))).json();
  assert.equal((first['noise'] as Record<string, number>)['epsilon'], 0.5);
  for (let i = 0; i < 7; i++)
    assert.deepEqual((await h.get(q('&epsilon=0.5'))).json()['cells'], first['cells']);
});
