import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  ApiClient,
  buildConnectedParams,
  buildHandshakeParams,
  handleServerRequest,
  makeSessionId,
  makeStatusData,
  parseConnectedResult,
  parseHandshakeResult,
  parseStatusResult,
  type ApiClientOptions,
  type TunnelDialInfo,
} from '../../src/client/api-client.ts';
import { isPosternError } from '../../src/common/errors.ts';
import {
  HANDSHAKE_REQUEST_PARAMS,
  compileDomainRegexes,
  decodeApiParams,
  encodeConnectedResponse,
  encodeStatusResponse,
  statsNameForHost,
  validateApiParams,
} from '../../src/protocol/api.ts';

const vectors = JSON.parse(
  readFileSync(new URL('../fixtures/api/reference-vectors.json', import.meta.url), 'utf8'),
) as {
  authorization: string;
  handshake_responses: { name: string; encoding: 'json' | 'cbor'; payload_hex: string }[];
};

const OPTIONS: ApiClientOptions = {
  propagationChannelId: 'ABCDEF0123456789',
  sponsorId: '0123456789ABCDEF',
  clientVersion: '7',
  clientPlatform: 'Postern_linux',
  clientBuildRev: 'abc123',
  deviceRegion: 'DE',
};
const DIAL: TunnelDialInfo = {
  tunnelProtocol: 'OSSH',
  dialDurationMs: 1234.7,
  candidateNumber: 2,
  serverEntryRegion: 'NL',
  serverEntrySource: 'REMOTE',
  serverEntryTimestamp: '2026-03-04T05:06:07Z',
  dialPortNumber: 443,
};

test('session IDs are 16 random bytes in lower-case hex', () => {
  const a = makeSessionId();
  assert.match(a, /^[0-9a-f]{32}$/);
  assert.notEqual(a, makeSessionId());
});

test('handshake parameters are what the reference client sends, and pass the server checks', () => {
  const params = buildHandshakeParams({ ...OPTIONS, authorizations: [vectors.authorization, 'junk'] }, DIAL);
  validateApiParams(params, HANDSHAKE_REQUEST_PARAMS);
  assert.equal(params['relay_protocol'], 'OSSH');
  assert.equal(params['dial_duration'], '1234');
  assert.equal(params['candidate_number'], '2');
  assert.equal(params['established_tunnels_count'], '0');
  assert.equal(params['server_entry_timestamp'], '2026-03-04T05:00:00Z', 'cut to the hour');
  assert.equal(params['dial_port_number'], '443');
  assert.equal(params['is_replay'], undefined);
  assert.equal(params['psiphon_api_response_version'], '1');
  assert.deepEqual(params['authorizations'], [vectors.authorization]);
  assert.equal(params['device_location'], undefined);
  const padding = params['padding'];
  assert.ok(padding === undefined || (typeof padding === 'string' && /^ {0,1024}$/.test(padding)));
  const pad = Number(params['pad_response']);
  assert.ok(pad >= 0 && pad <= 1024);

  const quiet = buildHandshakeParams(
    {
      ...OPTIONS,
      upstreamPadding: { min: 0, max: 0 },
      downstreamPadding: { min: 0, max: 0 },
      cborHandshakeResponse: false,
    },
    { ...DIAL, isReplay: true },
  );
  assert.equal(quiet['padding'], undefined);
  assert.equal(quiet['pad_response'], undefined);
  assert.equal(quiet['psiphon_api_response_version'], undefined);
  assert.equal(quiet['is_replay'], '1');
  assert.deepEqual(quiet['authorizations'], []);

  assert.throws(
    () => buildHandshakeParams({ ...OPTIONS, sponsorId: 'not-hex' }, DIAL),
    (e) => isPosternError(e, 'BAD_ARGUMENT') && /sponsor_id/.test(e.message),
  );
  assert.throws(
    () => buildHandshakeParams(OPTIONS, { ...DIAL, tunnelProtocol: 'CARRIER-PIGEON' }),
    (e) => isPosternError(e, 'BAD_ARGUMENT') && /relay_protocol/.test(e.message),
  );
  assert.throws(() =>
    buildConnectedParams(
      { ...OPTIONS, clientVersion: '1.2' },
      { lastConnected: undefined, establishmentDurationMs: 1 },
    ),
  );
});

test('requests are packed CBOR by default and JSON when configured; both decode to the same parameters', () => {
  const cbor = new ApiClient(OPTIONS).handshakeRequest(DIAL);
  assert.equal(cbor.name, 'psiphon-handshake');
  assert.deepEqual([...cbor.payload.subarray(0, 2)], [0, 1]);
  assert.equal(cbor.responseEncoding, 'cbor');
  const json = new ApiClient({ ...OPTIONS, encoding: 'json', cborHandshakeResponse: false }).handshakeRequest(
    DIAL,
  );
  assert.equal(json.payload[0], 0x7b);
  assert.equal(json.responseEncoding, 'json');
  const a = decodeApiParams(cbor.payload);
  const b = decodeApiParams(json.payload);
  for (const p of [a, b]) {
    delete p['padding'];
    delete p['pad_response'];
  }
  delete a['psiphon_api_response_version'];
  assert.deepEqual(a, b);
  // The CBOR form is the smaller one (more room for padding against size fingerprints).
  const plain = { ...OPTIONS, upstreamPadding: { min: 0, max: 0 }, downstreamPadding: { min: 0, max: 0 } };
  assert.ok(
    new ApiClient(plain).handshakeRequest(DIAL).payload.length <
      new ApiClient({ ...plain, encoding: 'json' }).handshakeRequest(DIAL).payload.length,
  );

  const connected = new ApiClient(OPTIONS).connectedRequest(undefined, 99.9);
  const cp = decodeApiParams(connected.payload);
  assert.equal(connected.name, 'psiphon-connected');
  assert.equal(cp['last_connected'], 'None');
  assert.equal(cp['establishment_duration'], '99');
  assert.equal(
    decodeApiParams(new ApiClient(OPTIONS).connectedRequest('2026-03-04T05:00:00Z', 1).payload)[
      'last_connected'
    ],
    '2026-03-04T05:00:00Z',
  );
});

test('status requests carry the reference payload shape, and none is sent when there is nothing to say', () => {
  assert.equal(makeStatusData({ hostBytes: {} }), undefined);
  assert.equal(new ApiClient(OPTIONS).statusRequest({ hostBytes: {} }), undefined);
  const req = new ApiClient(OPTIONS).statusRequest({
    hostBytes: { 'example.com': 10 },
    checkServerEntryTags: ['dGFn'],
  })!;
  assert.equal(req.name, 'psiphon-status');
  const params = decodeApiParams(req.payload);
  assert.deepEqual(params['statusData'], {
    bytes_transferred: 0,
    check_server_entry_tags: ['dGFn'],
    host_bytes: { 'example.com': 10 },
    https_requests: [],
    page_views: [],
  });
  assert.equal(params['relay_protocol'], undefined, 'no dial parameters in status requests');
});

test('handshake responses from the reference server parse into typed results', () => {
  const full = vectors.handshake_responses.find((r) => r.name === 'full' && r.encoding === 'cbor')!;
  const result = parseHandshakeResult(Buffer.from(full.payload_hex, 'hex'), 'cbor');
  assert.deepEqual(result, {
    homepages: ['https://example.com/home?client_region=NL&x=<1>'],
    upgradeClientVersion: '178',
    clientRegion: 'NL',
    serverTimestamp: '2026-03-04T05:06:07Z',
    serverEntryTimestamp: '2026-03-04T05:00:00Z',
    encodedServerList: ['3139322e302e322e31'],
    domainRegexes: [
      { regex: '^(?:.*\\.)?(example\\.com)$', replace: '$1' },
      { regex: 'x', replace: 'y' },
    ],
    activeAuthorizationIds: ['AAEC'],
    upstreamBytesPerSecond: 1000,
    downstreamBytesPerSecond: 2 ** 40,
  });
  const fullJson = vectors.handshake_responses.find((r) => r.name === 'full' && r.encoding === 'json')!;
  assert.deepEqual(parseHandshakeResult(Buffer.from(fullJson.payload_hex, 'hex'), 'json'), result);
  const minimal = vectors.handshake_responses.find((r) => r.name === 'minimal' && r.encoding === 'cbor')!;
  const m = parseHandshakeResult(Buffer.from(minimal.payload_hex, 'hex'), 'cbor');
  assert.deepEqual(m.homepages, []);
  assert.equal(m.upgradeClientVersion, undefined);
  // A tactics payload (which Postern ignores) does not get in the way.
  const tactics = vectors.handshake_responses.find((r) => r.name === 'tactics' && r.encoding === 'cbor')!;
  assert.equal(parseHandshakeResult(Buffer.from(tactics.payload_hex, 'hex'), 'cbor').clientRegion, 'None');
  assert.throws(
    () => parseHandshakeResult(Buffer.from(full.payload_hex, 'hex'), 'json'),
    (e) => isPosternError(e, 'BAD_API_RESPONSE'),
  );
});

test('connected and status results', () => {
  assert.deepEqual(
    parseConnectedResult(encodeConnectedResponse({ connectedTimestamp: '2026-03-04T05:00:00Z' })),
    {
      connectedTimestamp: '2026-03-04T05:00:00Z',
    },
  );
  assert.deepEqual(parseStatusResult(encodeStatusResponse({ invalidServerEntryTags: ['a', 'b'] })), {
    invalidServerEntryTags: ['a', 'b'],
  });
  assert.deepEqual(parseStatusResult(Buffer.from('{}')), { invalidServerEntryTags: [] });
  assert.throws(
    () => parseConnectedResult(Buffer.from('{"connected_timestamp":5}')),
    (e) => isPosternError(e, 'BAD_API_RESPONSE'),
  );
});

test('server requests: alerts are acknowledged, OSL seeding and others refused', () => {
  const alert = handleServerRequest(
    'psiphon-alert',
    Buffer.from('{"reason":"disallowed-traffic","subject":"x","action":["https://example.com/a"]}'),
  );
  assert.deepEqual(alert, {
    ok: true,
    alert: { reason: 'disallowed-traffic', subject: 'x', actionUrls: ['https://example.com/a'] },
  });
  assert.deepEqual(handleServerRequest('psiphon-alert', Buffer.from('{"action":7}')), { ok: false });
  assert.deepEqual(handleServerRequest('psiphon-osl', Buffer.from('{}')), { ok: false });
  assert.deepEqual(handleServerRequest('psiphon-inproxy-relay', Buffer.alloc(0)), { ok: false });
});

test('hosts are named for stats the way the reference client names them', () => {
  const regexes = compileDomainRegexes([
    { regex: '^(?:.*\\.)?(example\\.com)$', replace: '$1' },
    { regex: '^(?P<sub>[a-z]+)\\.cdn\\.example$', replace: '${sub}-cdn' },
    { regex: '(', replace: 'broken' },
    { regex: 'x', replace: '' },
  ]);
  assert.equal(regexes.length, 2);
  assert.equal(statsNameForHost('www.example.com', regexes), 'example.com');
  assert.equal(statsNameForHost('example.com', regexes), 'example.com');
  assert.equal(statsNameForHost('img.cdn.example', regexes), 'img-cdn');
  assert.equal(statsNameForHost('example.org', regexes), '(OTHER)');
  assert.equal(statsNameForHost('anything', []), '(OTHER)');
});

test("Go's leading inline flags work as a sponsor's regexes use them; what JavaScript cannot match alike is skipped", () => {
  const regexes = compileDomainRegexes([
    { regex: '(?i)^(?:.*\\.)?(youtube\\.com)$', replace: 'youtube.com' },
    { regex: '(?U)^a+', replace: 'ungreedy' },
  ]);
  assert.equal(regexes.length, 1, 'the ungreedy one is skipped');
  assert.equal(statsNameForHost('WWW.YouTube.com', regexes), 'youtube.com');
  assert.equal(statsNameForHost('youtube.org', regexes), '(OTHER)');
});
