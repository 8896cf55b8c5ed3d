import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { isPosternError } from '../../src/common/errors.ts';
import { containsIpAddress } from '../../src/common/redact.ts';
import {
  API_PARAMS_NEVER_LOGGED,
  CONNECTED_REQUEST_PARAMS,
  HANDSHAKE_REQUEST_PARAMS,
  MAX_API_PARAMS_SIZE,
  STATUS_REQUEST_PARAMS,
  apiLogFields,
  decodeAlertRequest,
  decodeApiParams,
  decodeConnectedResponse,
  decodeHandshakeResponse,
  decodeSpeedTestResponse,
  decodeStatusResponse,
  detectApiEncoding,
  encodeApiParams,
  encodeConnectedResponse,
  encodeHandshakeResponse,
  encodeSpeedTestResponse,
  encodeStatusResponse,
  goAtoi,
  goFormatFloatF,
  goParseFloat,
  isDomain,
  isGoRawStdBase64,
  isGoStdBase64,
  isIso8601Date,
  normalizeClientPlatform,
  packAuthorizations,
  truncateTimestampToHour,
  unpackAuthorizations,
  validateApiParams,
  type ApiEncoding,
  type ApiParamSpec,
  type ApiParams,
  type HandshakeResponse,
} from '../../src/protocol/api.ts';
import {
  verifyAuthorization,
  type AuthorizationVerificationKeyRing,
} from '../../src/protocol/authorization.ts';
import { CborFloat, decodeCbor, encodeCbor } from '../../src/protocol/cbor.ts';
import { goJsonMarshal, type JsonValue } from '../../src/protocol/go-json.ts';

interface RequestVector {
  name: string;
  request: string;
  kind: 'handshake' | 'connected' | 'status';
  encoding: ApiEncoding;
  payload_hex: string;
  decoded: JsonValue;
  reference_validation_error: string;
  reference_log_fields?: Record<string, JsonValue>;
}

interface Vectors {
  verification_key_ring: AuthorizationVerificationKeyRing;
  authorization: string;
  authorization_id: string;
  packed_authorizations_hex: string;
  requests: RequestVector[];
  handshake_responses: {
    name: string;
    encoding: ApiEncoding;
    input: Record<string, JsonValue>;
    payload_hex: string;
  }[];
  connected_response_json: string;
  status_response_json: string;
  speed_test_response_hex: string;
  speed_test_timestamp: string;
}

const vectors = JSON.parse(
  readFileSync(new URL('../fixtures/api/reference-vectors.json', import.meta.url), 'utf8'),
) as Vectors;

const SPECS: Record<RequestVector['kind'], readonly ApiParamSpec[]> = {
  handshake: HANDSHAKE_REQUEST_PARAMS,
  connected: CONNECTED_REQUEST_PARAMS,
  status: STATUS_REQUEST_PARAMS,
};

function isTyped(e: unknown, ...codes: string[]): boolean {
  return isPosternError(e) && codes.includes(e.code);
}

test('requests the reference client encoded decode to what the reference server decodes', () => {
  assert.ok(vectors.requests.length >= 9);
  for (const v of vectors.requests) {
    const payload = Buffer.from(v.payload_hex, 'hex');
    assert.equal(detectApiEncoding(payload), v.encoding, v.name);
    const params = decodeApiParams(payload);
    assert.equal(goJsonMarshal(params), goJsonMarshal(v.decoded), `${v.name}/${v.encoding}`);
    assert.equal(v.reference_validation_error, '', `${v.name} is valid for the reference`);
    validateApiParams(params, SPECS[v.kind]);
  }
});

test('re-encoding what was decoded gives the reference client bytes back', () => {
  for (const v of vectors.requests) {
    // Go writes the speed-test sample struct in field order in JSON; a map is sorted. CBOR sorts both.
    if (v.encoding === 'json' && goJsonMarshal(v.decoded).includes('speed_test_samples":[')) continue;
    // The reference client's JSON carries server_secret, which has no packed key; JSON needs none.
    const params = decodeApiParams(Buffer.from(v.payload_hex, 'hex'));
    assert.equal(
      encodeApiParams(params, v.encoding).toString('hex'),
      v.payload_hex,
      `${v.name}/${v.encoding}`,
    );
  }
});

test('packed authorizations match the reference byte for byte and still verify after unpacking', () => {
  const packed = Buffer.from(vectors.packed_authorizations_hex, 'hex');
  assert.equal(
    packAuthorizations([vectors.authorization]).toString('hex'),
    vectors.packed_authorizations_hex,
  );
  const [auth] = unpackAuthorizations(packed);
  assert.equal(auth, vectors.authorization);
  const verified = verifyAuthorization(auth!, vectors.verification_key_ring, new Date(Date.UTC(2030, 0, 1)));
  assert.equal(verified.id.toString('hex'), vectors.authorization_id);
  assert.deepEqual(unpackAuthorizations(encodeCbor([])), []);
  assert.deepEqual(unpackAuthorizations(encodeCbor(null)), []);
});

test('handshake log fields are the reference server fields minus the ones Postern never logs', () => {
  for (const v of vectors.requests.filter((r) => r.kind === 'handshake')) {
    const ours = apiLogFields(decodeApiParams(Buffer.from(v.payload_hex, 'hex')), HANDSHAKE_REQUEST_PARAMS);
    const expected = Object.fromEntries(
      Object.entries(v.reference_log_fields ?? {}).filter(([k]) => !API_PARAMS_NEVER_LOGGED.has(k)),
    );
    assert.deepEqual(ours, expected, `${v.name}/${v.encoding}`);
    assert.equal(containsIpAddress(JSON.stringify(ours)), false, 'no IP address in log fields');
  }
  // What the full vector carried and Postern drops, so the test above can fail.
  const full = vectors.requests.find((r) => r.name === 'handshake-full' && r.encoding === 'cbor')!;
  const fields = apiLogFields(
    decodeApiParams(Buffer.from(full.payload_hex, 'hex')),
    HANDSHAKE_REQUEST_PARAMS,
  );
  for (const dropped of ['dns_preferred', 'padding', 'pad_response', 'speed_test_samples']) {
    assert.ok(dropped in (full.reference_log_fields ?? {}), dropped);
    assert.ok(!(dropped in fields), dropped);
  }
  assert.equal(fields['is_replay'], true);
  assert.equal(fields['client_version'], 177);
  assert.deepEqual(fields['split_tunnel_regions'], ['CA', 'US']);
});

function fromReferenceInput(input: Record<string, JsonValue>): HandshakeResponse {
  const out: HandshakeResponse = {};
  const s = (k: string): string | undefined =>
    typeof input[k] === 'string' ? (input[k] as string) : undefined;
  const list = (k: string): string[] | undefined =>
    Array.isArray(input[k]) ? (input[k] as string[]) : undefined;
  const n = (k: string): number | undefined =>
    typeof input[k] === 'number' ? (input[k] as number) : undefined;
  out.homepages = list('homepages');
  out.upgradeClientVersion = s('upgrade_client_version');
  out.httpsRequestRegexes = input['https_request_regexes'] as Record<string, string>[] | undefined;
  out.encodedServerList = list('encoded_server_list');
  out.clientRegion = s('client_region');
  out.clientAddress = s('client_address');
  out.serverTimestamp = s('server_timestamp');
  out.activeAuthorizationIds = list('active_authorization_ids');
  if (input['tactics_payload'] !== undefined)
    out.tacticsPayload = Buffer.from(JSON.stringify(input['tactics_payload']));
  out.tacticsPayloadCompression = n('tactics_payload_compression');
  out.upstreamBytesPerSecond = n('upstream_bytes_per_second');
  out.downstreamBytesPerSecond = n('downstream_bytes_per_second');
  out.steeringIp = s('steering_ip');
  out.padding = s('padding');
  for (const k of Object.keys(out) as (keyof HandshakeResponse)[]) if (out[k] === undefined) delete out[k];
  return out;
}

test('handshake responses: ours are byte-identical to the reference server and parse its bytes', () => {
  assert.equal(vectors.handshake_responses.length, 6);
  for (const v of vectors.handshake_responses) {
    const expected = fromReferenceInput(v.input);
    assert.equal(
      encodeHandshakeResponse(expected, v.encoding).toString('hex'),
      v.payload_hex,
      `${v.name}/${v.encoding}`,
    );
    const parsed = decodeHandshakeResponse(Buffer.from(v.payload_hex, 'hex'), v.encoding);
    if (expected.tacticsPayload !== undefined) {
      assert.deepEqual(
        JSON.parse(parsed.tacticsPayload!.toString()),
        JSON.parse(expected.tacticsPayload.toString()),
      );
      delete parsed.tacticsPayload;
      delete expected.tacticsPayload;
    }
    assert.deepEqual(parsed, expected, `${v.name}/${v.encoding}`);
  }
  const full = decodeHandshakeResponse(
    Buffer.from(
      vectors.handshake_responses.find((r) => r.name === 'full' && r.encoding === 'cbor')!.payload_hex,
      'hex',
    ),
    'cbor',
  );
  assert.deepEqual(full.httpsRequestRegexes?.[0], { regex: '^(?:.*\\.)?(example\\.com)$', replace: '$1' });
  assert.equal(full.downstreamBytesPerSecond, 2 ** 40);
});

test('connected and status responses match the reference JSON', () => {
  const connected = encodeConnectedResponse({ connectedTimestamp: '2026-03-04T05:00:00Z', padding: '  ' });
  assert.equal(connected.toString(), vectors.connected_response_json);
  assert.deepEqual(decodeConnectedResponse(connected), {
    connectedTimestamp: '2026-03-04T05:00:00Z',
    padding: '  ',
  });
  const status = encodeStatusResponse({ invalidServerEntryTags: ['dGFn'], padding: ' ' });
  assert.equal(status.toString(), vectors.status_response_json);
  assert.deepEqual(decodeStatusResponse(status).invalidServerEntryTags, ['dGFn']);
  assert.equal(encodeStatusResponse({ invalidServerEntryTags: [] }).toString(), '{}');
});

test('speed test (keep-alive) replies carry a Go binary time the reference reads', () => {
  const reference = Buffer.from(vectors.speed_test_response_hex, 'hex');
  assert.equal(
    decodeSpeedTestResponse(reference).toISOString().replace('.000Z', 'Z'),
    vectors.speed_test_timestamp,
  );
  const at = new Date(vectors.speed_test_timestamp);
  const ours = encodeSpeedTestResponse(new Date(at.getTime() + 1_234_567), 8);
  assert.equal(ours.length, reference.length);
  assert.equal(ours.subarray(0, 16).toString('hex'), reference.subarray(0, 16).toString('hex'));
  assert.equal(decodeSpeedTestResponse(ours).getTime(), at.getTime());
});

test('round trips in both encodings keep every parameter', () => {
  const params: ApiParams = {
    propagation_channel_id: 'ABCDEF0123456789',
    sponsor_id: '0123456789ABCDEF',
    client_version: '42',
    client_platform: 'Postern_linux',
    client_features: ['a', 'b'],
    relay_protocol: 'OSSH',
    dial_port_number: '-1',
    network_latency_multiplier: '0.007812',
    missing_server_entry_signature: 'dGFnLQ==',
    authorizations: [vectors.authorization],
    statusData: { host_bytes: { 'example.com': 5 }, check_server_entry_tags: null },
    psiphon_api_response_version: '1',
    last_connected: 'None',
  };
  for (const encoding of ['json', 'cbor'] as const) {
    const decoded = decodeApiParams(encodeApiParams(params, encoding));
    assert.equal(goJsonMarshal(decoded), goJsonMarshal(params), encoding);
  }
  // Packing cannot carry a name without a key, nor a value its converter cannot hold.
  assert.throws(
    () => encodeApiParams({ server_secret: 'x' }, 'cbor'),
    (e) => isTyped(e, 'BAD_ARGUMENT'),
  );
  assert.throws(
    () => encodeApiParams({ sponsor_id: 'XYZ' }, 'cbor'),
    (e) => isTyped(e, 'BAD_ARGUMENT'),
  );
  assert.throws(
    () => encodeApiParams({ client_version: '1.5' }, 'cbor'),
    (e) => isTyped(e, 'BAD_ARGUMENT'),
  );
});

test('round trips of arbitrary parameter maps (fast-check)', () => {
  const hex = fc.uint8Array({ maxLength: 12 }).map((b) => Buffer.from(b).toString('hex'));
  const intString = fc.integer({ min: -1e9, max: 1e9 }).map(String);
  const arbitraryParams = fc.record(
    {
      client_platform: fc.string({ maxLength: 40 }),
      device_region: fc.string({ maxLength: 8 }),
      client_features: fc.array(fc.string({ maxLength: 10 }), { maxLength: 4 }),
      session_id: hex,
      sponsor_id: hex.map((h) => h.toUpperCase()),
      client_version: intString,
      pad_response: intString,
      server_entry_tag: fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b).toString('base64')),
      light_proxy_id: fc
        .uint8Array({ maxLength: 20 })
        .map((b) => Buffer.from(b).toString('base64').replace(/=+$/, '')),
      record_probability: fc.double({ noNaN: true, min: -1e6, max: 1e6 }).map(goFormatFloatF),
    },
    { requiredKeys: [] },
  );
  fc.assert(
    fc.property(arbitraryParams, fc.constantFrom<ApiEncoding>('json', 'cbor'), (params, encoding) => {
      const decoded = decodeApiParams(encodeApiParams(params, encoding));
      assert.equal(goJsonMarshal(decoded), goJsonMarshal(params));
    }),
    { numRuns: 200 },
  );
});

test('hostile request payloads give typed errors only, never a crash', () => {
  const reference = vectors.requests.map((r) => Buffer.from(r.payload_hex, 'hex'));
  const check = (bytes: Uint8Array): void => {
    try {
      const params = decodeApiParams(bytes);
      assert.equal(typeof params, 'object');
      try {
        validateApiParams(params, HANDSHAKE_REQUEST_PARAMS);
      } catch (e) {
        assert.ok(isTyped(e, 'BAD_API_REQUEST'), String(e));
      }
      apiLogFields(params, HANDSHAKE_REQUEST_PARAMS);
    } catch (e) {
      assert.ok(isTyped(e, 'BAD_API_REQUEST', 'TOO_LARGE'), String(e));
    }
  };
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (b) => check(b)),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (b) => check(Buffer.concat([Buffer.of(0, 1), b]))),
    { numRuns: 300 },
  );
  // Valid payloads with bytes flipped, cut short or extended.
  fc.assert(
    fc.property(
      fc.constantFrom(...reference),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
      fc.nat(),
      (payload, flips, cut) => {
        const b = Buffer.from(payload);
        for (const [i, v] of flips) b[2 + (i % (b.length - 2))] = v;
        check(b);
        check(b.subarray(0, cut % b.length));
      },
    ),
    { numRuns: 400 },
  );
  assert.throws(
    () => decodeApiParams(Buffer.alloc(MAX_API_PARAMS_SIZE + 1, 0x20)),
    (e) => isTyped(e, 'TOO_LARGE'),
  );
  // Deep nesting, huge declared lengths, tags, indefinite lengths, duplicate keys, non-integer keys.
  const deep = Buffer.concat([Buffer.of(0, 1, 0xa1, 0x0a), Buffer.alloc(100, 0x81), Buffer.of(0x00)]);
  for (const bad of [
    deep,
    Buffer.of(0, 1, 0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
    Buffer.of(0, 1, 0xa1, 0x0a, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
    Buffer.of(0, 1, 0xc1, 0x00),
    Buffer.of(0, 1, 0xbf, 0xff),
    Buffer.of(0, 1, 0xa2, 0x09, 0x61, 0x61, 0x09, 0x61, 0x62),
    Buffer.of(0, 1, 0xa1, 0x61, 0x61, 0x00),
    Buffer.of(0, 1, 0xa1, 0x08, 0x61, 0x31), // client_version must be an integer when packed
    Buffer.of(0, 1, 0xa1, 0x07, 0x61, 0x31), // sponsor_id must be bytes when packed
    Buffer.of(0, 1, 0xa1, 0x09, 0x41, 0x31), // a plain text parameter cannot be bytes
    Buffer.of(0, 1, 0xa1, 0x18, 0x8e, 0x41, 0x5b), // statusData must hold a JSON object
    Buffer.of(0, 1, 0xa1, 0x01, 0x41, 0x01), // authorizations must be a CBOR list
    Buffer.of(0, 1, 0x61, 0xff), // invalid UTF-8
    Buffer.from('[1,2]'),
    Buffer.from('{"a":'),
  ]) {
    assert.throws(
      () => decodeApiParams(bad),
      (e) => isTyped(e, 'BAD_API_REQUEST'),
      bad.toString('hex'),
    );
  }
  assert.deepEqual(decodeApiParams(Buffer.from('null')), {});
  // An unknown packed key (a newer client's parameter) is skipped, as by the reference.
  assert.deepEqual(decodeApiParams(Buffer.of(0, 1, 0xa1, 0x19, 0x03, 0xe8, 0x01)), {});
});

test('hostile response payloads give typed errors only', () => {
  for (const encoding of ['json', 'cbor'] as const) {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        try {
          decodeHandshakeResponse(b, encoding);
        } catch (e) {
          assert.ok(isTyped(e, 'BAD_API_RESPONSE'), String(e));
        }
      }),
      { numRuns: 200 },
    );
  }
  for (const f of [
    decodeConnectedResponse,
    decodeStatusResponse,
    decodeAlertRequest,
    decodeSpeedTestResponse,
  ]) {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (b) => {
        try {
          f(b);
        } catch (e) {
          assert.ok(isTyped(e, 'BAD_API_RESPONSE'), String(e));
        }
      }),
      { numRuns: 100 },
    );
  }
  assert.throws(
    () => decodeHandshakeResponse(encodeCbor(new Map([[1, 'not a list']])), 'cbor'),
    (e) => isTyped(e, 'BAD_API_RESPONSE'),
  );
  assert.throws(
    () => decodeHandshakeResponse(Buffer.from('{"homepages":[1]}'), 'json'),
    (e) => isTyped(e, 'BAD_API_RESPONSE'),
  );
});

test('validators follow the reference (Go parsing rules)', () => {
  assert.equal(goAtoi('+5'), 5n);
  assert.equal(goAtoi('9223372036854775807'), 9223372036854775807n);
  assert.equal(goAtoi('9223372036854775808'), undefined);
  assert.equal(goAtoi(''), undefined);
  assert.equal(goAtoi('1_0'), undefined);
  for (const [s, v] of [
    ['1_000', 1000],
    ['0x1p-2', 0.25],
    ['nan', NaN],
    ['-infinity', -Infinity],
    ['.5', 0.5],
    ['5.', 5],
    ['1e-400', 0],
  ] as const) {
    assert.ok(Object.is(goParseFloat(s), v), s);
  }
  for (const s of ['+nan', 'infin', '1e400', '1e', '0x1', '1__0', '_1', ''])
    assert.equal(goParseFloat(s), undefined, s);
  assert.equal(goFormatFloatF(0.0078125), '0.007812');
  assert.equal(goFormatFloatF(1e22), '10000000000000000000000.000000');
  assert.equal(goFormatFloatF(123456789.123456789), '123456789.123457');
  assert.equal(goFormatFloatF(-1e-9), '-0.000000');
  for (const [s, ok] of [
    ['2026-01-01T00:00:00Z', true],
    ['2026-01-01T0:00:00Z', true],
    ['2026-01-01T00:00:00+01:00', false],
    ['2026-01-01T00:00:00+0100', true],
    ['2026-01-01T00:00:00.123456789123Z', true],
    ['2026-01-01T00:00:00,5Z', true],
    ['2026-02-30T00:00:00Z', false],
    ['2026-01-01T24:00:00Z', false],
    ['2026-01-01T00:00:00+2500', false],
    ['2026-01-01T00:00:00.Z', false],
  ] as const) {
    assert.equal(isIso8601Date(s), ok, s);
  }
  assert.equal(isGoStdBase64('QUJD\nRA=='), true);
  assert.equal(isGoStdBase64('QUJDRA'), false);
  assert.equal(isGoRawStdBase64('QUJDRA'), true);
  assert.equal(isGoRawStdBase64('QQ=='), false);
  assert.equal(isDomain('example.com'), true);
  assert.equal(isDomain('-bad.com'), false);
  assert.equal(isDomain('a..b'), false);
  assert.equal(normalizeClientPlatform('Android_10_com.psiphon3'), 'Android');
  assert.equal(normalizeClientPlatform('iOS_17'), 'iOS');
  assert.equal(normalizeClientPlatform('Postern_linux'), 'Other');
  assert.equal(truncateTimestampToHour('2026-03-04T05:06:07Z'), '2026-03-04T05:00:00Z');
  assert.equal(truncateTimestampToHour('2026-03-04T05:36:07+05:30'), '2026-03-04T05:30:00+05:30');
  assert.equal(truncateTimestampToHour('yesterday'), '');
  const invalid = { ...(vectors.requests[0]!.decoded as ApiParams), sponsor_id: '0123' };
  assert.throws(() => validateApiParams(invalid, HANDSHAKE_REQUEST_PARAMS), /invalid param: sponsor_id/);
  const missing = { ...(vectors.requests[0]!.decoded as ApiParams) };
  delete missing['relay_protocol'];
  assert.throws(() => validateApiParams(missing, HANDSHAKE_REQUEST_PARAMS), /missing param: relay_protocol/);
});

test('CBOR codec: canonical encoding and strict decoding', () => {
  assert.equal(
    encodeCbor(
      new Map<number, unknown>([
        [24, 1],
        [2, 'a'],
        [300, null],
      ]),
    ).toString('hex'),
    'a3026161181801190' + '12cf6',
  );
  assert.equal(
    encodeCbor({ replace: 'b', regex: 'a' }).toString('hex'),
    'a26572656765786161677265706c6163656162',
  );
  assert.equal(encodeCbor(new CborFloat(1)).toString('hex'), 'fb3ff0000000000000');
  assert.equal(encodeCbor(1.5).toString('hex'), 'fb3ff8000000000000');
  assert.equal(encodeCbor(-1).toString('hex'), '20');
  assert.equal(encodeCbor(2n ** 64n - 1n).toString('hex'), '1bffffffffffffffff');
  assert.deepEqual(decodeCbor(Buffer.from('f93c00', 'hex')), new CborFloat(1));
  assert.deepEqual(decodeCbor(Buffer.from('1bffffffffffffffff', 'hex')), 2n ** 64n - 1n);
  assert.throws(
    () => decodeCbor(Buffer.from('0000', 'hex')),
    (e) => isTyped(e, 'BAD_CBOR'),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
      try {
        const v = decodeCbor(b);
        // Whatever decodes re-encodes (canonical form may differ from the input).
        decodeCbor(encodeCbor(v));
      } catch (e) {
        assert.ok(isTyped(e, 'BAD_CBOR'), String(e));
      }
    }),
    { numRuns: 500 },
  );
});

test('log fields never carry an IP address, whatever field it hides in', () => {
  const params: ApiParams = {
    propagation_channel_id: 'ABCDEF0123456789',
    sponsor_id: '0123456789ABCDEF',
    client_version: '1',
    client_platform: 'Windows',
    relay_protocol: 'FRONTED-MEEK-OSSH',
    meek_dial_address: '192.0.2.1:443',
    meek_resolved_ip_address: '192.0.2.2',
    meek_sni_server_name: '192.0.2.3',
    meek_host_header: 'front.example',
    steering_ip: '2001:db8::1',
    user_agent: 'Mozilla/5.0 Chrome/120.0.0.0',
    device_location: 'u33dc0',
  };
  validateApiParams(params, HANDSHAKE_REQUEST_PARAMS);
  const fields = apiLogFields(params, HANDSHAKE_REQUEST_PARAMS);
  assert.equal(containsIpAddress(JSON.stringify(fields)), false, JSON.stringify(fields));
  assert.equal(fields['meek_dial_domain'], undefined);
  assert.equal(fields['meek_host_header'], 'front.example');
  assert.equal(fields['device_location'], undefined);
  assert.equal(
    apiLogFields({ ...params, meek_dial_address: 'cdn.example:443' }, HANDSHAKE_REQUEST_PARAMS)[
      'meek_dial_domain'
    ],
    'cdn.example',
  );
});
