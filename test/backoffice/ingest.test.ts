// Batch ingest over real HTTPS on loopback: exactly once, refusals with the protocol's statuses, nothing partial
// stored, and nothing of a body in the logs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateStatsKey, recordStatsKey } from '../../src/stats/stats-key.ts';
import {
  INGEST_PATH,
  HOST_HEADER,
  FILE_HEADER,
  OFFSET_HEADER,
  BATCH_CONTENT_TYPE,
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
} from '../../src/stats/ingest-protocol.ts';
import { HEALTH_PATH, startBackoffice } from '../../src/backoffice/server.ts';
import { createSelfSignedIdentity } from '../../src/common/self-signed-cert.ts';
import { isPosternError } from '../../src/common/errors.ts';
import { silentLogger } from '../../src/common/logger.ts';
import { CANARY_CITY, FILE, httpsRequest, ndjson, startHarness, tunnelEvent } from './fixtures.ts';

test('a batch is taken exactly once: again is a duplicate, a gap is 409 with the expected offset', async (t) => {
  const h = await startHarness(t);
  const first = ndjson([tunnelEvent('srv-a'), tunnelEvent('srv-a', { duration_ms: 5 })]);
  const r1 = await h.post(first);
  assert.equal(r1.status, 200, r1.text);
  assert.deepEqual(r1.json(), { status: 'ingested', events: 2, expired: 0, nextOffset: first.length });
  assert.equal(h.store.raw.length, 2);

  const again = await h.post(first);
  assert.equal(again.status, 200);
  assert.deepEqual(again.json(), { status: 'duplicate', nextOffset: first.length });
  assert.equal(h.store.raw.length, 2, 'a duplicate adds nothing');

  const second = ndjson([tunnelEvent('srv-a', { bytes: 1 })]);
  const gap = await h.post(second, { offset: first.length + 100 });
  assert.equal(gap.status, 409);
  assert.deepEqual(gap.json(), { status: 'out-of-order', nextOffset: first.length });
  assert.equal(h.store.raw.length, 2);

  const r2 = await h.post(second, { offset: first.length });
  assert.equal(r2.status, 200);
  assert.deepEqual(r2.json(), {
    status: 'ingested',
    events: 1,
    expired: 0,
    nextOffset: first.length + second.length,
  });
  assert.equal(h.store.raw.length, 3);

  // Another file of the same host, and the same file name from another host, are counted separately.
  const other = await h.post(first, { file: 'events-1764410400000-0000000002.jsonl' });
  assert.equal(other.json()['status'], 'ingested');
  const fromB = await h.post(ndjson([tunnelEvent('srv-b')]), { key: h.keys['srv-b'], host: 'srv-b' });
  assert.equal(fromB.json()['status'], 'ingested');
  assert.equal(h.store.raw.length, 6);
});

test('events past retention are acknowledged but not kept', async (t) => {
  const h = await startHarness(t);
  const old = tunnelEvent('srv-a', { timestamp: '2026-01-01T10:00:00Z', start_time: '2026-01-01T10:00:00Z' });
  const r = await h.post(ndjson([old, tunnelEvent('srv-a')]));
  assert.equal(r.status, 200);
  assert.deepEqual(r.json(), {
    status: 'ingested',
    events: 1,
    expired: 1,
    nextOffset: r.json()['nextOffset'],
  });
});

test('a malformed line refuses the whole batch with 400 naming the line and the rule; nothing is stored', async (t) => {
  const h = await startHarness(t);
  const good = JSON.stringify(tunnelEvent('srv-a')) + '\n';
  const cases: Array<[string, Buffer | string, RegExp]> = [
    ['not JSON', good + '{"event_name":\n', /^line 2: not JSON$/],
    ['no final newline', good + good.trimEnd(), /^line 2: does not end in \\n$/],
    ['empty line', good + '\n' + good, /^line 2: empty line$/],
    [
      'invalid UTF-8',
      Buffer.concat([Buffer.from(good), Buffer.from([0xff, 0xfe, 0x0a])]),
      /^line 2: not UTF-8$/,
    ],
    ['a JSON array', good + '[]\n', /^line 2: an event must be a JSON object$/],
    ['unknown event', good + '{"event_name":"nope"}\n', /^line 2: unknown or missing event_name$/],
    [
      'an undeclared field',
      good + JSON.stringify({ ...tunnelEvent('srv-a'), client_ip: '192.0.2.1' }) + '\n',
      /^line 2: server_tunnel: .*undeclared field\(s\) client_ip/,
    ],
    [
      'a wrong type',
      good + good + JSON.stringify(tunnelEvent('srv-a', { bytes: '12' })) + '\n',
      /^line 3: server_tunnel: bytes: /,
    ],
    [
      'a minute-precise time',
      JSON.stringify(tunnelEvent('srv-a', { timestamp: '2026-11-29T10:17:00Z' })) + '\n',
      /^line 1: server_tunnel: timestamp: must be an hour/,
    ],
    [
      'an event of another host',
      good + JSON.stringify(tunnelEvent('srv-b')) + '\n',
      /^line 2: host_id is not the host that sent the batch$/,
    ],
    ['an empty body', '', /empty/],
  ];
  for (const [what, body, re] of cases) {
    const r = await h.post(body);
    assert.equal(r.status, 400, `${what}: ${r.text}`);
    const j = r.json();
    assert.equal(j['status'], 'malformed', what);
    assert.match(String(j['error']), re, what);
    assert.ok(!String(j['error']).includes('192.0.2.1'), 'the answer does not echo values');
  }
  assert.equal(h.store.ingestCalls, 0, 'the store never saw a refused batch');
  assert.equal(h.store.raw.length, 0);
  assert.equal(await h.store.nextOffset('srv-a', FILE), 0);
});

test('bad headers are 400 and store nothing', async (t) => {
  const h = await startHarness(t);
  const body = ndjson([tunnelEvent('srv-a')]);
  for (const [what, over] of [
    ['file name', { file: 'passwd' }],
    ['file path', { file: '../events-1764410400000-0000000001.jsonl' }],
    ['negative offset', { offset: '-1' }],
    ['leading zero', { offset: '01' }],
    ['fraction', { offset: '1.5' }],
    ['huge offset', { offset: '99999999999999999' }],
    ['JSON content type', { type: 'application/json' }],
    ['text content type', { type: 'text/plain' }],
    ['form content type', { type: 'application/x-www-form-urlencoded' }],
  ] as const) {
    const r = await h.post(body, over);
    assert.equal(r.status, 400, `${what}: ${r.text}`);
    assert.equal(r.json()['status'], 'malformed', what);
    if (what.includes('content type')) assert.match(String(r.json()['error']), /Content-Type must be/, what);
  }
  const noFile = await httpsRequest(h.bo.url, h.ca, {
    method: 'POST',
    path: INGEST_PATH,
    headers: {
      authorization: `Bearer ${h.keys['srv-a']}`,
      'content-type': BATCH_CONTENT_TYPE,
      [HOST_HEADER]: 'srv-a',
      [OFFSET_HEADER]: '0',
    },
    body,
  });
  assert.equal(noFile.status, 400);
  assert.match(String(noFile.json()['error']), /postern-file/);
  assert.equal(h.store.ingestCalls, 0);
});

test('a wrong key, a key of another host or no key is 401, answered before the body is read', async (t) => {
  const h = await startHarness(t);
  const body = ndjson([tunnelEvent('srv-a')]);
  const cases: Array<[string, Parameters<typeof h.post>[1]]> = [
    ['no key', { key: null }],
    ['unknown key', { key: generateStatsKey() }],
    ['not a key', { key: 'hunter2' }],
    ["srv-b's key for srv-a", { key: h.keys['srv-b'], host: 'srv-a' }],
    ["srv-a's key claiming srv-b", { key: h.keys['srv-a'], host: 'srv-b' }],
  ];
  for (const [what, over] of cases) {
    const r = await h.post(body, over);
    assert.equal(r.status, 401, `${what}: ${r.text}`);
    assert.equal(r.json()['status'], 'unauthorized', what);
    assert.equal(r.headers['www-authenticate'], 'Bearer');
  }
  // Headers announce 4 MiB that never come: the answer must not wait for them.
  const r = await httpsRequest(h.bo.url, h.ca, {
    method: 'POST',
    path: INGEST_PATH,
    headers: {
      authorization: `Bearer ${generateStatsKey()}`,
      'content-type': BATCH_CONTENT_TYPE,
      'content-length': MAX_BATCH_BYTES,
      [HOST_HEADER]: 'srv-a',
      [FILE_HEADER]: FILE,
      [OFFSET_HEADER]: '0',
    },
    withholdBody: true,
  });
  assert.equal(r.status, 401);
  assert.equal(h.store.ingestCalls, 0);
});

test('a host added to stats-keys.json after start can ship without a restart; a removed one cannot', async (t) => {
  const h = await startHarness(t);
  const keyC = generateStatsKey();
  const body = ndjson([tunnelEvent('srv-c')]);
  assert.equal((await h.post(body, { key: keyC, host: 'srv-c' })).status, 401);
  recordStatsKey(h.netDir, 'srv-c', keyC);
  const r = await h.post(body, { key: keyC, host: 'srv-c' });
  assert.equal(r.status, 200, r.text);
  const keyA2 = generateStatsKey();
  recordStatsKey(h.netDir, 'srv-a', keyA2); // re-keyed: the old key stops working at once
  assert.equal((await h.post(ndjson([tunnelEvent('srv-a')]))).status, 401);
  assert.equal((await h.post(ndjson([tunnelEvent('srv-a')]), { key: keyA2 })).status, 200);
});

test('oversized batches are 413: by Content-Length, by streamed bytes, and by event count', async (t) => {
  const h = await startHarness(t);
  const line = JSON.stringify(tunnelEvent('srv-a')) + '\n';
  const big = Buffer.from(line.repeat(Math.ceil((MAX_BATCH_BYTES + 1) / line.length)));
  const r1 = await h.post(big);
  assert.equal(r1.status, 413, r1.text);
  assert.equal(r1.json()['status'], 'too-large');

  // Headers that announce the size let the server answer without reading a byte of the body.
  const r2 = await httpsRequest(h.bo.url, h.ca, {
    method: 'POST',
    path: INGEST_PATH,
    headers: {
      authorization: `Bearer ${h.keys['srv-a']}`,
      'content-type': BATCH_CONTENT_TYPE,
      'content-length': MAX_BATCH_BYTES + 1,
      [HOST_HEADER]: 'srv-a',
      [FILE_HEADER]: FILE,
      [OFFSET_HEADER]: '0',
    },
    withholdBody: true,
  });
  assert.equal(r2.status, 413);
  assert.equal(r2.json()['status'], 'too-large');

  // Many short lines: refused by count before any is parsed.
  const many = Buffer.from('x\n'.repeat(MAX_BATCH_EVENTS + 1));
  const r3 = await h.post(many);
  assert.equal(r3.status, 413, r3.text);
  assert.match(String(r3.json()['error']), new RegExp(`${MAX_BATCH_EVENTS} events`));
  assert.equal(h.store.ingestCalls, 0);
});

test('exactly MAX_BATCH_EVENTS small events are taken', async (t) => {
  const h = await startHarness(t);
  const load = {
    event_name: 'server_load',
    schema_version: 1,
    timestamp: '2026-11-29T10:00:00Z',
    host_id: 'srv-a',
    established_tunnels: 1,
    open_port_forwards: 2,
    bytes_since_last: 3,
    rss_bytes: 4,
  };
  const body = ndjson(new Array(MAX_BATCH_EVENTS).fill(load));
  assert.ok(body.length <= MAX_BATCH_BYTES);
  const r = await h.post(body);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json()['events'], MAX_BATCH_EVENTS);
});

test('a failing store is a 500 that says nothing of the cause, and the batch can be sent again', async (t) => {
  const h = await startHarness(t);
  h.store.failWith = new Error(`constraint failed for city ${CANARY_CITY}`);
  const body = ndjson([tunnelEvent('srv-a')]);
  const r = await h.post(body);
  assert.equal(r.status, 500);
  assert.deepEqual(r.json(), { status: 'error', error: 'internal error' });
  h.store.failWith = undefined;
  assert.equal((await h.post(body)).json()['status'], 'ingested');
});

test('health answers without credentials; unknown routes are 404', async (t) => {
  const h = await startHarness(t);
  const r = await h.get(HEALTH_PATH, null);
  assert.equal(r.status, 200);
  assert.deepEqual(r.json(), { status: 'ok' });
  assert.equal((await h.get('/nope', null)).status, 404);
});

test('logs hold counts and statuses, never a value from a body nor a peer address', async (t) => {
  const h = await startHarness(t);
  await h.post(ndjson([tunnelEvent('srv-a')]));
  await h.post(ndjson([tunnelEvent('srv-a')]));
  await h.post(ndjson([tunnelEvent('srv-a'), { ...tunnelEvent('srv-a'), extra: CANARY_CITY }]), {
    offset: 5,
  });
  await h.post(ndjson([{ ...tunnelEvent('srv-a'), client_ip: '192.0.2.1' }]), { offset: 999 });
  await h.post(ndjson([tunnelEvent('srv-a')]), { key: generateStatsKey() });
  h.store.failWith = new Error(`constraint failed for city ${CANARY_CITY}`);
  await h.post(ndjson([tunnelEvent('srv-a')]));
  const all = h.lines.join('');
  assert.ok(h.lines.length >= 5, 'something was logged');
  assert.ok(!all.includes(CANARY_CITY), 'no body value in the logs');
  assert.ok(!all.includes('192.0.2.1'));
  assert.ok(!all.includes('127.0.0.1'), 'no peer address in the logs');
  assert.ok(!all.includes('[ip]'), 'nothing that even needed redacting');
});

test('a port in use is a clear IO error, not a crash', async (t) => {
  const h = await startHarness(t);
  const identity = createSelfSignedIdentity({ commonName: 'test', ipAddresses: ['127.0.0.1'] });
  await assert.rejects(
    startBackoffice({
      listen: { host: '127.0.0.1', port: h.bo.port },
      tls: identity,
      store: h.store,
      hostKeys: { hostForKey: async () => undefined },
      operatorToken: 'operator-token-for-tests-0123456789',
      clock: h.clock,
      log: silentLogger(),
      retentionDays: 60,
      rollupIntervalMs: 60_000,
      jobs: false,
    }),
    (e: unknown) => isPosternError(e, 'IO') && /EADDRINUSE/.test(e.message),
  );
});
