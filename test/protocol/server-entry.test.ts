// Server entries: the shared Go vectors, entries made by psiphon-tunnel-core, entries Postern made and the
// reference accepted, signatures, tags, capability → protocol mapping, and hostile input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { isPosternError } from '../../src/common/errors.ts';
import { generateEd25519KeyPair } from '../../src/protocol/keys.ts';
import { goJsonMarshal, goJsonUnmarshal } from '../../src/protocol/go-json.ts';
import {
  MAX_ENCODED_SERVER_ENTRY_LENGTH,
  decodeServerEntry,
  decodeServerEntryList,
  encodeServerEntry,
  getServerEntryTag,
  isValidServerEntryIpAddress,
  isValidServerEntrySource,
  isValidServerEntryTimestamp,
  serverEntryCapabilities,
  serverEntryDiagnosticId,
  serverEntryDialPort,
  serverEntrySignedJson,
  serverEntryTag,
  signServerEntry,
  supportedTunnelProtocols,
  validateServerEntryFields,
  verifyServerEntrySignature,
  withDerivedServerEntryTag,
  type ServerEntryFields,
} from '../../src/protocol/server-entry.ts';
import {
  SUPPORTED_TUNNEL_PROTOCOLS,
  capabilityForTunnelProtocol,
  isKnownTunnelProtocol,
} from '../../src/protocol/tunnel-protocols.ts';

const FIXTURES = new URL('../fixtures/psiphon-formats/', import.meta.url);
function fixture<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(name, FIXTURES), 'utf8')) as T;
}

interface SharedVectors {
  entrySigningPublicKey: string;
  entrySigningPrivateKey: string;
  serverEntries: Array<{
    name: string;
    fieldsJson: string;
    signedJson: string;
    encodedServerEntry: string;
    tag: string;
  }>;
}
interface MadeEntry {
  name: string;
  signedJson: string;
  encodedServerEntry: string;
  tag: string;
  supportedProtocols: string[];
  dialPorts: Record<string, number>;
}
interface PosternMade {
  entrySigningPublicKey: string;
  entrySigningPrivateKey: string;
  entries: Array<MadeEntry & { fieldsJson: string; derivedTag: boolean }>;
}
interface ReferenceMade {
  entrySigningPublicKey: string;
  entries: Array<MadeEntry & { fieldsJson: string }>;
  ipAddressCases: Array<{ input: string; valid: boolean }>;
  timestampCases: Array<{ input: string; valid: boolean }>;
  decodeCases: Array<{ name: string; hex: string; decodeOk: boolean; valid: boolean; typesOk: boolean }>;
}

const shared = fixture<SharedVectors>('shared/server-entries.json');
const posternMade = fixture<PosternMade>('postern-made-entries.json');
const referenceMade = fixture<ReferenceMade>('reference-made-entries.json');

const TIMESTAMP = '2026-11-29T16:00:00Z';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isPosternError(e)) return e.code;
    throw e;
  }
  return 'OK';
}

function throwsWith(fn: () => unknown, errCode: string, message: RegExp): void {
  assert.throws(fn, (e: unknown) => isPosternError(e) && e.code === errCode && message.test(e.message));
}

/** Data as it may arrive from outside, whatever the declared types say. */
function hostile(fields: Record<string, unknown>): ServerEntryFields {
  return fields as ServerEntryFields;
}

function jsonPart(hex: string): string {
  const text = Buffer.from(hex, 'hex').toString('utf8');
  return text.split(' ').slice(4).join(' ');
}

test('shared vectors: signed JSON, encoded entry and tag are reproduced byte for byte', () => {
  assert.equal(shared.serverEntries.length, 5);
  for (const v of shared.serverEntries) {
    const fields = goJsonUnmarshal(v.fieldsJson) as ServerEntryFields;
    assert.equal(serverEntrySignedJson(fields), v.signedJson, v.name);
    const signed = signServerEntry(fields, shared.entrySigningPublicKey, shared.entrySigningPrivateKey);
    // These vectors write ip/port/secret in the legacy prefix even without a certificate.
    assert.equal(encodeServerEntry(signed, { fullPrefix: true }), v.encodedServerEntry, v.name);
    assert.equal(serverEntryTag('s3cr3t', fields.ipAddress!), v.tag, v.name);

    const decoded = decodeServerEntry(v.encodedServerEntry);
    verifyServerEntrySignature(decoded, shared.entrySigningPublicKey);
    assert.equal(goJsonMarshal(decoded), jsonPart(v.encodedServerEntry));
  }
});

test('entries made by the reference decode, verify, and re-encode to the same bytes', () => {
  assert.ok(referenceMade.entries.length >= 5);
  for (const e of referenceMade.entries) {
    const fields = decodeServerEntry(e.encodedServerEntry);
    verifyServerEntrySignature(fields, referenceMade.entrySigningPublicKey);
    assert.equal(serverEntrySignedJson(fields), e.signedJson, e.name);
    assert.equal(goJsonMarshal(fields), e.fieldsJson, e.name);
    assert.equal(encodeServerEntry(fields), e.encodedServerEntry, e.name);
    assert.equal(getServerEntryTag(fields), e.tag, e.name);
    assert.deepEqual(supportedTunnelProtocols(fields), e.supportedProtocols, e.name);
    for (const [p, port] of Object.entries(e.dialPorts)) assert.equal(serverEntryDialPort(fields, p), port);
  }
});

test('entries Postern made (and the reference verified) are reproduced exactly', () => {
  for (const e of posternMade.entries) {
    let fields = JSON.parse(e.fieldsJson) as ServerEntryFields;
    if (e.derivedTag) fields = withDerivedServerEntryTag(fields);
    const signed = signServerEntry(
      fields,
      posternMade.entrySigningPublicKey,
      posternMade.entrySigningPrivateKey,
    );
    assert.equal(serverEntrySignedJson(signed), e.signedJson, e.name);
    assert.equal(encodeServerEntry(signed), e.encodedServerEntry, e.name);
    assert.equal(getServerEntryTag(signed), e.tag, e.name);
    assert.deepEqual(supportedTunnelProtocols(signed), e.supportedProtocols, e.name);
    for (const [p, port] of Object.entries(e.dialPorts)) assert.equal(serverEntryDialPort(signed, p), port);
    verifyServerEntrySignature(decodeServerEntry(e.encodedServerEntry), posternMade.entrySigningPublicKey);
  }
});

test("decoding agrees with the reference's DecodeServerEntryFields + ValidateServerEntryFields", () => {
  // Accepted by the reference's validation but refused here: fields its ServerEntry cannot hold
  // (typesOk false), and two documented extra rules.
  const stricter = new Set([
    '0 0 0 0 {"ipAddress":"1.2.3.4","region":null}',
    '0 0 0 0 {"ipAddress":"1.2.3.4","sshPort":70000}',
  ]);
  assert.ok(referenceMade.decodeCases.length > 30);
  for (const c of referenceMade.decodeCases) {
    const opts = { source: 'EMBEDDED', timestamp: TIMESTAMP };
    const single = code(() => decodeServerEntry(c.hex, opts));
    if (!c.decodeOk) {
      assert.notEqual(single, 'OK', c.name);
      // The reference's list decoders give up on an entry that does not decode (blank lines aside).
      if (c.hex !== '' && !c.hex.includes('\n')) {
        assert.notEqual(
          code(() => decodeServerEntryList(c.hex, opts)),
          'OK',
          c.name,
        );
      }
      continue;
    }
    const accepted = c.valid && c.typesOk && !stricter.has(c.name);
    assert.equal(single === 'OK', accepted, `${c.name}: ${single}`);
    if (!accepted) assert.equal(single, 'BAD_SERVER_ENTRY');
    // Entries that decode but fail validation are skipped, not fatal.
    const list = decodeServerEntryList(c.hex, opts);
    assert.equal(list.entries.length + list.rejected, 1, c.name);
  }
});

test("ipAddress and localTimestamp checks agree with Go's net.ParseIP and time.Parse(RFC3339)", () => {
  for (const c of referenceMade.ipAddressCases) {
    assert.equal(isValidServerEntryIpAddress(c.input), c.valid, JSON.stringify(c.input));
  }
  for (const c of referenceMade.timestampCases) {
    assert.equal(isValidServerEntryTimestamp(c.input), c.valid, JSON.stringify(c.input));
  }
  assert.ok(
    isValidServerEntrySource('DSL-abc') &&
      isValidServerEntrySource('PUSH-') &&
      isValidServerEntrySource('REMOTE'),
  );
  assert.ok(
    !isValidServerEntrySource('remote') && !isValidServerEntrySource('PUSH') && !isValidServerEntrySource(''),
  );
});

const keys = generateEd25519KeyPair();
const baseFields: ServerEntryFields = {
  ipAddress: '192.0.2.1',
  webServerPort: '0',
  webServerSecret: '0',
  webServerCertificate: '0',
  sshPort: 22,
  sshUsername: 'user',
  sshPassword: 'pass',
  sshObfuscatedPort: 443,
  sshObfuscatedKey: 'key',
  capabilities: ['handshake', 'SSH', 'OSSH'],
  region: 'CA',
  futureField: { nested: [1, 'two', null, { deep: true }] },
};

test('sign then verify; any change to a signed field breaks the signature', () => {
  const signed = signServerEntry(baseFields, keys.publicKey, keys.privateKey);
  verifyServerEntrySignature(signed, keys.publicKey);
  verifyServerEntrySignature(decodeServerEntry(encodeServerEntry(signed)), keys.publicKey);
  assert.equal(baseFields.signature, undefined, 'signing returns a copy');

  throwsWith(
    () => verifyServerEntrySignature({ ...signed, sshPort: 23 }, keys.publicKey),
    'BAD_SIGNATURE',
    /does not match/,
  );
  throwsWith(
    () => verifyServerEntrySignature({ ...signed, futureField: 1 }, keys.publicKey),
    'BAD_SIGNATURE',
    /does not match/,
  );
  const other = generateEd25519KeyPair();
  throwsWith(() => verifyServerEntrySignature(signed, other.publicKey), 'BAD_SIGNATURE', /another key/);
  const { signature, ...unsigned } = signed;
  throwsWith(() => verifyServerEntrySignature(unsigned, keys.publicKey), 'BAD_SIGNATURE', /no signature/);
  throwsWith(
    () => verifyServerEntrySignature(hostile({ ...signed, signature: 7 }), keys.publicKey),
    'BAD_SIGNATURE',
    /string/,
  );
  throwsWith(
    () => verifyServerEntrySignature({ ...signed, signature: signature!.slice(4) }, keys.publicKey),
    'BAD_SIGNATURE',
    /bytes/,
  );
  throwsWith(
    () => verifyServerEntrySignature({ ...signed, signature: `${signature!.slice(1)}!` }, keys.publicKey),
    'BAD_SIGNATURE',
    /base64/,
  );
  // Flip one bit of the Ed25519 signature itself.
  const raw = Buffer.from(signature!, 'base64');
  raw[20] = raw[20]! ^ 0x01;
  throwsWith(
    () => verifyServerEntrySignature({ ...signed, signature: raw.toString('base64') }, keys.publicKey),
    'BAD_SIGNATURE',
    /does not match/,
  );
  assert.equal(
    code(() => signServerEntry(baseFields, other.publicKey, keys.privateKey)),
    'BAD_KEY',
    'a private key that is not the public key’s',
  );
});

test('flipping any one byte of an encoded entry is caught by decoding or by the signature', () => {
  const hex = encodeServerEntry(signServerEntry(baseFields, keys.publicKey, keys.privateKey));
  const bytes = Buffer.from(hex, 'hex');
  const jsonStart = bytes.indexOf('{');
  for (let i = jsonStart; i < bytes.length; i++) {
    const mutated = Buffer.from(bytes);
    mutated[i] = mutated[i]! ^ 0x04;
    let outcome: string;
    try {
      verifyServerEntrySignature(decodeServerEntry(mutated.toString('hex')), keys.publicKey);
      outcome = 'OK';
    } catch (e) {
      assert.ok(isPosternError(e), String(e));
      outcome = e.code;
    }
    // A flip inside JSON whitespace-free text either breaks the syntax, a field, or the signature; the only
    // harmless flips are none: every byte of the compact JSON is meaningful.
    assert.notEqual(
      outcome,
      'OK',
      `byte ${i} (${String.fromCharCode(bytes[i]!)}) flipped and still verified`,
    );
  }
});

test('unknown fields survive decode → encode, and the signature still verifies', () => {
  const hex = encodeServerEntry(signServerEntry(baseFields, keys.publicKey, keys.privateKey));
  const decoded = decodeServerEntry(hex);
  assert.deepEqual(decoded['futureField'], { nested: [1, 'two', null, { deep: true }] });
  assert.equal(encodeServerEntry(decoded), hex);
  verifyServerEntrySignature(decoded, keys.publicKey);
});

test('local fields are not signed; an explicit tag is, a local derived tag is not', () => {
  const explicit = signServerEntry({ ...baseFields, tag: 'network-tag' }, keys.publicKey, keys.privateKey);
  const local = decodeServerEntry(encodeServerEntry(explicit), { source: 'REMOTE', timestamp: TIMESTAMP });
  assert.equal(local.localSource, 'REMOTE');
  assert.equal(local.localTimestamp, TIMESTAMP);
  verifyServerEntrySignature(local, keys.publicKey);
  throwsWith(
    () => verifyServerEntrySignature({ ...explicit, tag: 'other' }, keys.publicKey),
    'BAD_SIGNATURE',
    /does not match/,
  );
  // An explicit tag is kept when a derived one is offered.
  assert.equal(withDerivedServerEntryTag(explicit).tag, 'network-tag');

  const untagged = signServerEntry(baseFields, keys.publicKey, keys.privateKey);
  const derived = withDerivedServerEntryTag(untagged);
  assert.equal(derived.tag, serverEntryTag('0', '192.0.2.1'));
  assert.equal(derived.isLocalDerivedTag, true);
  assert.equal(getServerEntryTag(untagged), derived.tag);
  verifyServerEntrySignature(derived, keys.publicKey);
  verifyServerEntrySignature({ ...derived, tag: 'anything', localSource: 'DSL-x' }, keys.publicKey);
  assert.equal(withDerivedServerEntryTag(derived, 'replacement').tag, 'replacement');
  assert.equal(serverEntryDiagnosticId(derived.tag!), derived.tag!.slice(0, 8));
  assert.equal(serverEntryDiagnosticId('short'), '<unknown>');
});

test('decode options and validation: local fields, types, letter case, limits', () => {
  const hex = encodeServerEntry(baseFields);
  throwsWith(() => decodeServerEntry(hex, { source: 'NOWHERE' }), 'BAD_SERVER_ENTRY', /localSource/);
  throwsWith(() => decodeServerEntry(hex, { timestamp: 'yesterday' }), 'BAD_SERVER_ENTRY', /localTimestamp/);
  throwsWith(
    () => validateServerEntryFields({ ...baseFields, ipAddress: '999.1.1.1' }),
    'BAD_SERVER_ENTRY',
    /ipAddress/,
  );
  throwsWith(() => validateServerEntryFields({ ...baseFields, sshPort: 1.5 }), 'BAD_SERVER_ENTRY', /sshPort/);
  throwsWith(
    () => validateServerEntryFields(hostile({ ...baseFields, capabilities: ['SSH', 1] })),
    'BAD_SERVER_ENTRY',
    /capab/,
  );
  throwsWith(
    () => validateServerEntryFields({ ...baseFields, SshPort: 'x' }),
    'BAD_SERVER_ENTRY',
    /letter case/,
  );
  throwsWith(() => encodeServerEntry({ ...baseFields, webServerSecret: 'a b' }), 'BAD_SERVER_ENTRY', /space/);
  throwsWith(
    () => encodeServerEntry({ ...baseFields, padding: 'x'.repeat(MAX_ENCODED_SERVER_ENTRY_LENGTH / 2) }),
    'BAD_SERVER_ENTRY',
    /more than/,
  );
  throwsWith(
    () => decodeServerEntry('30'.repeat(MAX_ENCODED_SERVER_ENTRY_LENGTH)),
    'BAD_SERVER_ENTRY',
    /limit/,
  );
  throwsWith(() => decodeServerEntry('xyz0'), 'BAD_HEX', /hex/);
  throwsWith(() => decodeServerEntry(hex.slice(0, -1)), 'BAD_HEX', /hex/);
  throwsWith(() => decodeServerEntry(hex.slice(0, -2)), 'BAD_SERVER_ENTRY', /JSON/);
  // Prefix: "0 0 0 0" without a certificate, the entry's own values with one.
  assert.ok(
    Buffer.from(encodeServerEntry({ ...baseFields, webServerCertificate: undefined }), 'hex')
      .toString()
      .startsWith('0 0 0 0 {'),
  );
  assert.ok(Buffer.from(hex, 'hex').toString().startsWith('192.0.2.1 0 0 0 {'));
});

test('lists: blank lines and CRLF tolerated, invalid entries skipped and counted, undecodable lines fatal', () => {
  const good = encodeServerEntry(baseFields);
  const badIp = encodeServerEntry({ ...baseFields, ipAddress: '::1' }).replace(
    Buffer.from('"::1"').toString('hex'),
    Buffer.from('"::x"').toString('hex'),
  );
  const list = decodeServerEntryList(`${good}\r\n\n${badIp}\n${good}\n`, {
    source: 'REMOTE',
    timestamp: TIMESTAMP,
  });
  assert.equal(list.entries.length, 2);
  assert.equal(list.rejected, 1);
  assert.equal(list.entries[0]!.localSource, 'REMOTE');
  throwsWith(() => decodeServerEntryList(`${good}\nnot-hex\n`), 'BAD_HEX', /line 2/);
  assert.deepEqual(
    { ...decodeServerEntryList(`${good}\nnot-hex\n`, { skipUndecodable: true }), entries: [] },
    { entries: [], rejected: 1 },
  );
});

test('capabilities map to protocols as in the reference', () => {
  const entry: ServerEntryFields = {
    ipAddress: '192.0.2.2',
    capabilities: [
      'UNFRONTED-MEEK-HTTPS-PASSTHROUGH-v2',
      'QUICv1',
      'OSSH',
      'FRONTED-MEEK-QUIC',
      'INPROXY-WEBRTC-OSSH',
    ],
    meekServerPort: 8443,
    sshObfuscatedQUICPort: 4433,
    sshObfuscatedPort: 22443,
    inproxyOSSHPort: 9443,
  };
  assert.deepEqual(serverEntryCapabilities(entry), entry.capabilities);
  assert.deepEqual(supportedTunnelProtocols(entry), [
    'OSSH',
    'TLS-OSSH',
    'UNFRONTED-MEEK-HTTPS-OSSH',
    'QUIC-OSSH',
  ]);
  assert.equal(serverEntryDialPort(entry, 'TLS-OSSH'), 8443, 'TLS-OSSH shares the meek port');
  assert.equal(serverEntryDialPort(entry, 'SSH'), undefined);
  assert.deepEqual(supportedTunnelProtocols(entry, { quicEnabled: false }), [
    'OSSH',
    'TLS-OSSH',
    'UNFRONTED-MEEK-HTTPS-OSSH',
  ]);
  assert.deepEqual(supportedTunnelProtocols(entry, { excludeIntensive: true }), ['OSSH', 'TLS-OSSH']);
  assert.deepEqual(
    supportedTunnelProtocols(entry, { limitProtocols: ['INPROXY-WEBRTC-OSSH', 'FRONTED-MEEK-QUIC-OSSH'] }),
    ['FRONTED-MEEK-QUIC-OSSH', 'INPROXY-WEBRTC-OSSH'],
  );
  assert.equal(serverEntryDialPort(entry, 'INPROXY-WEBRTC-OSSH'), 9443);
  assert.deepEqual(supportedTunnelProtocols(entry, { useUpstreamProxy: true }), [
    'OSSH',
    'TLS-OSSH',
    'UNFRONTED-MEEK-HTTPS-OSSH',
  ]);
  for (const p of SUPPORTED_TUNNEL_PROTOCOLS) assert.ok(isKnownTunnelProtocol(p));
  assert.equal(
    capabilityForTunnelProtocol('UNFRONTED-MEEK-SESSION-TICKET-OSSH'),
    'UNFRONTED-MEEK-SESSION-TICKET',
  );
  assert.equal(capabilityForTunnelProtocol('INPROXY-WEBRTC-OSSH'), 'INPROXY-WEBRTC-OSSH');
});

test('fuzz: decoding hostile hex throws only BAD_HEX / BAD_SERVER_ENTRY, and what decodes re-encodes', () => {
  const valid = [
    encodeServerEntry(signServerEntry(baseFields, keys.publicKey, keys.privateKey)),
    ...shared.serverEntries.map((v) => v.encodedServerEntry),
    ...referenceMade.entries.map((e) => e.encodedServerEntry),
  ];
  const hexChar = fc.constantFrom(...'0123456789abcdefABCDEFxg \n'.split(''));
  const mutatedHex = fc
    .tuple(
      fc.constantFrom(...valid),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 4 }),
    )
    .map(([hex, flips]) => {
      const b = Buffer.from(hex, 'hex');
      for (const [at, x] of flips) b[at % b.length] = b[at % b.length]! ^ x;
      return b.toString('hex');
    });
  const truncated = fc
    .tuple(fc.constantFrom(...valid), fc.nat())
    .map(([hex, n]) => hex.slice(0, n % (hex.length + 1)));
  const jsonish = fc
    .tuple(fc.constantFrom('0 0 0 0 ', '1.2.3.4 0 0 0 ', '   ', ''), fc.jsonValue({ maxDepth: 3 }))
    .map(([p, v]) => Buffer.from(p + JSON.stringify(v), 'utf8').toString('hex'));
  const input = fc.oneof(fc.string({ unit: hexChar }), mutatedHex, truncated, jsonish, fc.string());
  fc.assert(
    fc.property(input, (hex) => {
      let fields: ServerEntryFields;
      try {
        fields = decodeServerEntry(hex);
      } catch (e) {
        assert.ok(isPosternError(e), `non-Postern error: ${String(e)}`);
        assert.ok(e.code === 'BAD_HEX' || e.code === 'BAD_SERVER_ENTRY', e.code);
        return;
      }
      validateServerEntryFields(fields);
      assert.equal(goJsonMarshal(decodeServerEntry(encodeServerEntry(fields))), goJsonMarshal(fields));
    }),
    { numRuns: 400 },
  );
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.constantFrom(...valid), mutatedHex, truncated), { maxLength: 5 }),
      (lines) => {
        try {
          const r = decodeServerEntryList(lines.join('\n'), { skipUndecodable: true });
          assert.equal(r.entries.length + r.rejected, lines.filter((l) => l.length > 0).length);
        } catch (e) {
          assert.fail(`skipUndecodable list threw ${String(e)}`);
        }
      },
    ),
    { numRuns: 100 },
  );
});
