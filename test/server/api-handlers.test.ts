import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { ManualClock } from '../../src/common/clock.ts';
import { containsIpAddress } from '../../src/common/redact.ts';
import {
  ApiClient,
  buildHandshakeParams,
  type ApiClientOptions,
  type TunnelDialInfo,
} from '../../src/client/api-client.ts';
import {
  compileDomainRegexes,
  statsNameForHost,
  decodeConnectedResponse,
  decodeHandshakeResponse,
  decodeSpeedTestResponse,
  decodeStatusResponse,
  encodeApiParams,
  type ApiEncoding,
} from '../../src/protocol/api.ts';
import {
  generateAuthorizationKeyPair,
  issueAuthorization,
  type AuthorizationVerificationKeyRing,
} from '../../src/protocol/authorization.ts';
import { PsinetSchema, type Psinet } from '../../src/protocol/psinet.ts';
import {
  createApiHandler,
  createApiSession,
  domainNameMatcher,
  replaceTemplatePattern,
  substituteHomepageParameters,
  type ApiHandlerDeps,
  type ApiSession,
  type ConnectedEvent,
  type HandshakeEvent,
  type StatusReport,
} from '../../src/server/api-handlers.ts';

const SPONSOR = '0123456789ABCDEF';
const OTHER_SPONSOR = 'FEDCBA9876543210';
const vectors = JSON.parse(
  readFileSync(new URL('../fixtures/api/reference-vectors.json', import.meta.url), 'utf8'),
) as {
  verification_key_ring: AuthorizationVerificationKeyRing;
  authorization: string;
  requests: { name: string; request: string; encoding: ApiEncoding; payload_hex: string }[];
};

function psinet(overrides: Record<string, unknown> = {}): Psinet {
  return PsinetSchema.parse({
    sponsors: {
      [SPONSOR]: {
        id: SPONSOR,
        home_pages: {
          None: [{ region: 'None', url: 'https://example.com/default?client_region=XX&client_asn=XX' }],
          NL: [
            { region: 'NL', url: 'https://example.nl/a?client_platform=XX&device_region=XX' },
            { region: 'NL', url: 'https://example.nl/b' },
          ],
        },
        mobile_home_pages: { None: [{ region: 'None', url: 'https://m.example.com/' }] },
        https_request_regexes: [
          { regex: '^(?:.*\\.)?(example\\.com)$', replace: '$1' },
          { regex: '^(?:.*\\.)?news\\.example$', replace: 'news' },
        ],
      },
      [OTHER_SPONSOR]: { id: OTHER_SPONSOR, home_pages: {} },
    },
    client_versions: { Android: [{ version: '100' }, { version: '178' }], Other: [{ version: '2' }] },
    default_sponsor_id: SPONSOR,
    valid_server_entry_tags: { dGFn: true, b2xk: false },
    ...overrides,
  });
}

interface Harness {
  clock: ManualClock;
  db: { current: Psinet };
  handshakes: HandshakeEvent[];
  connecteds: ConnectedEvent[];
  statuses: StatusReport[];
  failures: string[];
  handle: (session: ApiSession, name: string, payload: Uint8Array) => Buffer | null;
}

function harness(extra: Partial<ApiHandlerDeps> = {}): Harness {
  const clock = new ManualClock(Date.UTC(2026, 2, 4, 5, 6, 7));
  const db = { current: psinet() };
  const h: Harness = {
    clock,
    db,
    handshakes: [],
    connecteds: [],
    statuses: [],
    failures: [],
    handle: () => null,
  };
  const handler = createApiHandler({
    psinet: () => db.current,
    clock,
    authorizationKeys: () => vectors.verification_key_ring,
    ownEncodedServerEntries: () => new Map([['dGFnLQ==', '3139322e302e322e31']]),
    onHandshake: (_s, e) => h.handshakes.push(e),
    onConnected: (_s, e) => h.connecteds.push(e),
    onStatus: (_s, r) => h.statuses.push(r),
    onRequestFailed: (_s, name, e) => h.failures.push(`${name}: ${e.code} ${e.message}`),
    ...extra,
  });
  h.handle = (s, n, p) => handler.handle(s, n, p);
  return h;
}

function session(region = 'NL', tunnelProtocol = 'OSSH'): ApiSession {
  return createApiSession({
    sessionId: '00112233445566778899aabbccddeeff',
    sponsorId: SPONSOR,
    geo: { region, city: 'Somewhere', isp: 'Some ISP', asn: '64500' },
    tunnelProtocol,
  });
}

const OPTIONS: ApiClientOptions = {
  propagationChannelId: 'ABCDEF0123456789',
  sponsorId: SPONSOR,
  clientVersion: '1',
  clientPlatform: 'Postern_linux',
  deviceRegion: 'DE',
};
const DIAL: TunnelDialInfo = { tunnelProtocol: 'OSSH', dialDurationMs: 100, dialPortNumber: 443 };

function doHandshake(
  h: Harness,
  s: ApiSession,
  options: Partial<ApiClientOptions> = {},
  dial: Partial<TunnelDialInfo> = {},
) {
  const client = new ApiClient({ ...OPTIONS, ...options });
  const req = client.handshakeRequest({ ...DIAL, ...dial });
  const reply = h.handle(s, req.name, req.payload);
  assert.ok(reply !== null, h.failures.join('; '));
  return { client, response: decodeHandshakeResponse(reply, req.responseEncoding), reply, req };
}

test('our client handshake is accepted in both encodings; home pages for the region with substitution', () => {
  for (const encoding of ['cbor', 'json'] as const) {
    for (const cborHandshakeResponse of [true, false]) {
      const h = harness();
      const s = session('NL');
      const { response, reply, req } = doHandshake(h, s, { encoding, cborHandshakeResponse });
      assert.equal(req.responseEncoding, cborHandshakeResponse ? 'cbor' : 'json');
      assert.equal(reply[0] === 0x7b, !cborHandshakeResponse, 'a JSON reply starts with "{"');
      assert.deepEqual([...(response.homepages ?? [])].sort(), [
        'https://example.nl/a?client_platform=other&device_region=DE',
        'https://example.nl/b',
      ]);
      assert.equal(response.clientRegion, 'NL');
      assert.equal(response.serverTimestamp, '2026-03-04T05:06:07Z');
      assert.equal(response.upgradeClientVersion, '2');
      assert.equal(response.clientAddress, undefined, 'the client address is never echoed');
      assert.deepEqual(response.httpsRequestRegexes?.[0], {
        regex: '^(?:.*\\.)?(example\\.com)$',
        replace: '$1',
      });
      assert.ok(s.handshake !== undefined);
      assert.equal(h.handshakes.length, 1);
    }
  }
});

test('home pages fall back to the "None" list; mobile pages for mobile platforms; unknown sponsor uses the default', () => {
  const h = harness();
  assert.deepEqual(doHandshake(h, session('JP')).response.homepages, [
    'https://example.com/default?client_region=JP&client_asn=64500',
  ]);
  assert.deepEqual(doHandshake(h, session('JP'), { clientPlatform: 'Android_10' }).response.homepages, [
    'https://m.example.com/',
  ]);
  const android = doHandshake(h, session('JP'), {
    clientPlatform: 'Android_10',
    clientVersion: '150',
  }).response;
  assert.equal(android.upgradeClientVersion, '178');
  assert.equal(
    doHandshake(h, session('JP'), { clientPlatform: 'Android_10', clientVersion: '178' }).response
      .upgradeClientVersion,
    undefined,
  );
  // A sponsor with no pages at all gets none (not the default sponsor's).
  assert.equal(doHandshake(h, session('NL'), { sponsorId: OTHER_SPONSOR }).response.homepages, undefined);
  // An unknown sponsor is served as the default sponsor.
  assert.deepEqual(doHandshake(h, session('JP'), { sponsorId: '1111111111111111' }).response.homepages, [
    'https://example.com/default?client_region=JP&client_asn=64500',
  ]);
  assert.equal(
    substituteHomepageParameters(
      'https://x/?client_region=XX&client_region=XX',
      'A B&',
      '1',
      'None',
      'Other',
    ),
    'https://x/?client_region=A+B%26&client_region=XX',
  );
});

test('the reference client handshake vectors are accepted and answered in the encoding asked for', () => {
  for (const v of vectors.requests.filter((r) => r.request === 'psiphon-handshake')) {
    const h = harness();
    const s = session('NL', v.name === 'handshake-minimal' ? 'UNFRONTED-MEEK-OSSH' : 'OSSH');
    const reply = h.handle(s, 'psiphon-handshake', Buffer.from(v.payload_hex, 'hex'));
    assert.ok(reply !== null, `${v.name}/${v.encoding}: ${h.failures.join('; ')}`);
    const full = v.name === 'handshake-full';
    const response = decodeHandshakeResponse(reply, full ? 'cbor' : 'json');
    if (full) {
      // The vector carries a valid authorization and asks for this server's signed entry.
      assert.equal(response.activeAuthorizationIds?.length, 1);
      assert.equal(response.encodedServerList, undefined);
      assert.equal(response.padding?.length, 517);
      assert.deepEqual(s.handshake?.authorizedAccessTypes, ['SPEED_BOOST']);
      assert.deepEqual(s.handshake?.splitTunnelRegions, ['CA', 'US']);
      assert.equal(s.handshake?.deviceRegion, 'US');
      const fields = h.handshakes[0]!.logFields;
      assert.equal(fields['device_location'], undefined);
      assert.equal(fields['dns_preferred'], undefined);
      assert.equal(containsIpAddress(JSON.stringify(fields)), false);
    }
  }
});

test('the server returns its own signed entry when the client holds an unsigned copy', () => {
  const h = harness();
  const { response } = doHandshake(h, session(), {}, { missingSignatureServerEntryTag: 'dGFnLQ==' });
  assert.deepEqual(response.encodedServerList, ['3139322e302e322e31']);
  const other = doHandshake(h, session(), {}, { missingSignatureServerEntryTag: 'b3RoZXI=' }).response;
  assert.equal(other.encodedServerList, undefined);
});

test('authorizations: verified, one per access type, at most 16, none without a key ring or once expired', () => {
  const { signingKey, verificationKey } = generateAuthorizationKeyPair('LIMITED');
  const ring: AuthorizationVerificationKeyRing = {
    Keys: [...vectors.verification_key_ring.Keys, verificationKey],
  };
  const soon = issueAuthorization(signingKey, Buffer.from('seed'), new Date(Date.UTC(2026, 2, 4, 6)));
  const other = issueAuthorization(signingKey, Buffer.from('seed-2'), new Date(Date.UTC(2026, 2, 5)));
  const h = harness({ authorizationKeys: () => ring });
  const s = session();
  const { response } = doHandshake(h, s, { authorizations: [vectors.authorization, soon, other, 'garbage'] });
  // The malformed one never left the client.
  assert.equal(response.activeAuthorizationIds?.length, 2);
  assert.deepEqual(s.handshake?.authorizedAccessTypes, ['SPEED_BOOST', 'LIMITED']);
  assert.equal(s.handshake?.authorizationsExpireAt?.toISOString(), '2026-03-04T06:00:00.000Z');
  assert.deepEqual(h.handshakes[0]!.authorizedAccessTypes, ['SPEED_BOOST', 'LIMITED']);

  // Only the first 16 are looked at (a client cannot make the server verify without bound).
  const withAuthorizations = (authorizations: string[]) => {
    const params = buildHandshakeParams({ ...OPTIONS, cborHandshakeResponse: false }, DIAL);
    const reply = h.handle(
      session(),
      'psiphon-handshake',
      encodeApiParams({ ...params, authorizations }, 'json'),
    );
    return decodeHandshakeResponse(reply!, 'json').activeAuthorizationIds;
  };
  assert.equal(withAuthorizations([...Array<string>(15).fill('garbage'), vectors.authorization])?.length, 1);
  assert.equal(withAuthorizations([...Array<string>(16).fill('garbage'), vectors.authorization]), undefined);
  const noRing = harness({ authorizationKeys: () => undefined });
  assert.equal(
    doHandshake(noRing, session(), { authorizations: [vectors.authorization] }).response
      .activeAuthorizationIds,
    undefined,
  );
  h.clock.set(Date.UTC(2026, 2, 4, 7));
  assert.deepEqual(
    doHandshake(h, session(), { authorizations: [soon] }).response.activeAuthorizationIds,
    undefined,
  );
});

test('requests before the handshake, a second handshake, bad parameters and in-proxy tunnels are refused', () => {
  const h = harness();
  const s = session();
  const client = new ApiClient(OPTIONS);
  assert.equal(h.handle(s, 'psiphon-connected', client.connectedRequest(undefined, 1).payload), null);
  assert.equal(h.handle(s, 'psiphon-client-verification', Buffer.alloc(0)), null);
  assert.equal(s.mustDisconnect, false);
  doHandshake(h, s);
  assert.equal(h.handle(s, 'psiphon-handshake', client.handshakeRequest(DIAL).payload), null);
  assert.equal(s.mustDisconnect, true);
  assert.deepEqual(h.handle(s, 'psiphon-client-verification', Buffer.alloc(0)), Buffer.alloc(0));
  for (const name of ['psiphon-osl', 'psiphon-dsl', 'psiphon-alert', 'whatever'])
    assert.equal(h.handle(s, name, Buffer.alloc(0)), null);

  const bad = session();
  const params = {
    ...client.handshakeRequest(DIAL),
    payload: encodeApiParams({ sponsor_id: 'nothex' }, 'json'),
  };
  assert.equal(h.handle(bad, params.name, params.payload), null);
  assert.equal(bad.mustDisconnect, true);
  assert.equal(bad.handshake, undefined);
  assert.ok(h.failures.some((f) => f.includes('missing param')));

  const inproxy = session('NL', 'INPROXY-WEBRTC-OSSH');
  assert.equal(
    h.handle(
      inproxy,
      'psiphon-handshake',
      client.handshakeRequest({ ...DIAL, tunnelProtocol: 'INPROXY-WEBRTC-OSSH' }).payload,
    ),
    null,
  );
});

test('keep-alive requests get a speed-test reply with the hour, at any time', () => {
  const h = harness();
  const reply = h.handle(session(), 'keepalive@openssh.com', Buffer.alloc(3));
  assert.ok(reply !== null);
  assert.ok(reply.length >= 16 && reply.length <= 16 + 256);
  assert.equal(decodeSpeedTestResponse(reply).toISOString(), '2026-03-04T05:00:00.000Z');
});

test('connected: timestamp truncated to the hour, one counted request per day, unique users by last_connected', () => {
  const h = harness();
  const s = session();
  const { client } = doHandshake(h, s);
  const connect = (lastConnected: string | undefined): string => {
    const reply = h.handle(s, 'psiphon-connected', client.connectedRequest(lastConnected, 2500).payload);
    assert.ok(reply !== null, h.failures.join('; '));
    return decodeConnectedResponse(reply).connectedTimestamp!;
  };
  assert.equal(connect(undefined), '2026-03-04T05:00:00Z');
  assert.deepEqual(h.connecteds[0], {
    accepted: true,
    uniqueUser: true,
    connectedTimestamp: '2026-03-04T05:00:00Z',
    uniqueUserFields: h.connecteds[0]!.uniqueUserFields,
    updatedFields: { establishment_duration: 2500 },
  });
  assert.equal(h.connecteds[0]!.uniqueUserFields['sponsor_id'], SPONSOR);
  assert.equal(h.connecteds[0]!.uniqueUserFields['last_connected'], undefined);

  // Later the same day: not counted again, same answer.
  h.clock.advance(3 * 3600_000);
  assert.equal(connect('2026-03-04T05:00:00Z'), '2026-03-04T05:00:00Z');
  assert.equal(h.connecteds[1]!.accepted, false);

  // Next day, having connected yesterday: a unique user for today.
  h.clock.set(Date.UTC(2026, 2, 5, 0, 59, 59));
  assert.equal(connect('2026-03-04T05:00:00Z'), '2026-03-05T00:00:00Z');
  assert.equal(h.connecteds[2]!.uniqueUser, true);

  // A fresh tunnel the same day with today's last_connected: not a new unique user.
  const s2 = session();
  const c2 = doHandshake(h, s2).client;
  h.clock.advance(3600_000);
  const reply = h.handle(s2, 'psiphon-connected', c2.connectedRequest('2026-03-05T00:00:00Z', 1).payload);
  assert.equal(decodeConnectedResponse(reply!).connectedTimestamp, '2026-03-05T01:00:00Z');
  assert.equal(h.connecteds[3]!.uniqueUser, false);
  assert.deepEqual(h.connecteds[3]!.uniqueUserFields, {});
});

test('status: bytes for names the regexes can produce; unknown names, negatives and stale regexes dropped', () => {
  const h = harness();
  const s = session();
  const { client, response } = doHandshake(h, s);
  const regexes = compileDomainRegexes(
    (response.httpsRequestRegexes ?? []).map((r) => ({
      regex: r['regex'] ?? '',
      replace: r['replace'] ?? '',
    })),
  );
  const name = statsNameForHost('www.example.com', regexes);
  assert.equal(name, 'example.com');
  const send = (hostBytes: Record<string, number>, extra: Record<string, unknown> = {}) => {
    const req = client.statusRequest({ hostBytes, ...extra })!;
    const reply = h.handle(s, req.name, req.payload);
    assert.ok(reply !== null, h.failures.join('; '));
    return { reply: decodeStatusResponse(reply), report: h.statuses[h.statuses.length - 1]! };
  };
  const { report } = send({
    [name]: 1000,
    news: 5,
    '(OTHER)': 7,
    'tracking.example.org/path': 10,
    'evil.com': 99,
    'example.com ': 1,
    'example.co': -5,
  });
  assert.deepEqual(report.hostBytes, { 'example.com': 1000, news: 5, '(OTHER)': 7 });
  assert.equal(report.droppedHostBytesEntries, 4);
  assert.equal(containsIpAddress(JSON.stringify(report)), false);

  // The sponsor's regexes changed since the handshake: nothing is counted.
  h.db.current = psinet({
    sponsors: { [SPONSOR]: { id: SPONSOR, https_request_regexes: [{ regex: 'x', replace: 'y' }] } },
  });
  assert.deepEqual(send({ 'example.com': 1 }).report.hostBytes, {});
});

test('status: no regexes at handshake means no domain bytes; persistent stats are filtered and capped', () => {
  const h = harness();
  h.db.current = psinet({ sponsors: { [SPONSOR]: { id: SPONSOR } } });
  const s = session();
  const { client } = doHandshake(h, s);
  const failed = {
    session_id: '00112233445566778899aabbccddeeff',
    propagation_channel_id: 'ABCDEF0123456789',
    sponsor_id: SPONSOR,
    client_version: '1',
    client_platform: 'Windows',
    relay_protocol: 'OSSH',
    server_entry_tag: 'b2xk',
    last_connected: 'None',
    client_failed_timestamp: '2026-03-04T05:34:00Z',
    tunnel_error: 'dial tcp 192.0.2.1:443: timeout',
    meek_resolved_ip_address: '192.0.2.3',
  };
  const req = client.statusRequest({
    hostBytes: { '(OTHER)': 5 },
    failedTunnelStats: [
      failed,
      { ...failed, server_entry_tag: 'dGFn', dial_port_number: '0' },
      { bogus: true },
    ],
    checkServerEntryTags: ['dGFn', 'b2xk', 'dW5rbm93bg=='],
  })!;
  const reply = decodeStatusResponse(h.handle(s, req.name, req.payload)!);
  const report = h.statuses[0]!;
  assert.deepEqual(report.hostBytes, {});
  assert.equal(report.droppedHostBytesEntries, 1);
  assert.equal(report.failedTunnelStats.length, 2);
  assert.equal(report.droppedPersistentStats, 1);
  assert.deepEqual([...(reply.invalidServerEntryTags ?? [])].sort(), ['b2xk', 'dGFn', 'dW5rbm93bg==']);
  assert.equal(report.checkedServerEntryTags, 3);
  assert.equal(report.invalidServerEntryTags, 2);
  const first = report.failedTunnelStats[0]!;
  assert.equal(first['server_entry_valid'], false);
  assert.equal(first['session_id'], undefined, 'another session is never linked');
  assert.equal(first['client_failed_timestamp'], '2026-03-04T05:00:00Z');
  assert.equal(containsIpAddress(JSON.stringify(report)), false);

  // Over the per-tunnel cap, records are dropped.
  s.persistentStatsLogCount = 1023;
  const again = client.statusRequest({ hostBytes: {}, failedTunnelStats: [failed, failed] })!;
  h.handle(s, again.name, again.payload);
  assert.equal(h.statuses[1]!.failedTunnelStats.length, 1);
  assert.equal(h.statuses[1]!.droppedPersistentStats, 1);
});

test('status requests with a malformed payload are refused without reporting anything', () => {
  const h = harness();
  const s = session();
  doHandshake(h, s);
  const base = {
    propagation_channel_id: 'ABCDEF0123456789',
    sponsor_id: SPONSOR,
    client_version: '1',
    client_platform: 'x',
  };
  for (const statusData of [
    undefined,
    { host_bytes: { 'example.com': 'many' } },
    { failed_tunnel_stats: 5 },
  ]) {
    const payload = encodeApiParams({ ...base, statusData: statusData as never }, 'json');
    assert.equal(h.handle(s, 'psiphon-status', payload), null);
  }
  assert.equal(h.statuses.length, 0);
});

test('replace templates: the names Go expansion can make, and nothing with a path or space', () => {
  assert.equal(replaceTemplatePattern('$1').test('example.com'), true);
  assert.equal(replaceTemplatePattern('$1').test('a/b'), false);
  assert.equal(replaceTemplatePattern('${1}.cdn').test('x.cdn'), true);
  assert.equal(replaceTemplatePattern('$$1').test('$1'), true);
  assert.equal(replaceTemplatePattern('$$1').test('x'), false);
  assert.equal(replaceTemplatePattern('static').test('static'), true);
  assert.equal(replaceTemplatePattern('static').test('statics'), false);
  assert.equal(replaceTemplatePattern('a$').test('a$'), true);
});

test('domain name matcher: literals, fixed points of the mapping, shaped templates', () => {
  const allowed = domainNameMatcher([
    { regex: '^(?:.*\\.)?(example\\.com)$', replace: '$1' },
    { regex: '^[^.]*\\.?google\\.com$', replace: 'google.com' },
    { regex: '^(.*)\\.cdn\\.example$', replace: '${1}-cdn' },
    { regex: '', replace: 'never' },
  ]);
  for (const name of ['example.com', 'google.com', 'img-cdn', '(OTHER)'])
    assert.equal(allowed(name), true, name);
  for (const name of ['evil.com', 'www.example.com', 'never', 'a/b-cdn', '', 'x'.repeat(300)]) {
    assert.equal(allowed(name), false, name);
  }
  // Whatever our client reports for a host under these regexes is accepted.
  const regexes = compileDomainRegexes([{ regex: '^(?:.*\\.)?(example\\.com)$', replace: '$1' }]);
  fc.assert(
    fc.property(fc.domain(), (host) => {
      const matcher = domainNameMatcher([{ regex: '^(?:.*\\.)?(example\\.com)$', replace: '$1' }]);
      assert.equal(matcher(statsNameForHost(host, regexes)), true);
      assert.equal(matcher(statsNameForHost(`${host}.example.com`, regexes)), true);
    }),
    { numRuns: 100 },
  );
});

test('hostile request payloads never crash the handler', () => {
  const h = harness();
  const s = session();
  doHandshake(h, s);
  fc.assert(
    fc.property(
      fc.constantFrom(
        'psiphon-handshake',
        'psiphon-connected',
        'psiphon-status',
        'keepalive@openssh.com',
        'x',
      ),
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }),
        fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.concat([Buffer.of(0, 1), b])),
        fc.json().map((j) => Buffer.from(j)),
      ),
      (name, payload) => {
        const reply = h.handle(s, name, payload);
        assert.ok(reply === null || Buffer.isBuffer(reply));
      },
    ),
    { numRuns: 300 },
  );
});
