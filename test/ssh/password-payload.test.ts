// The Psiphon SSH password payload: encoded as the reference client's json.Marshal writes it, decoded as the
// reference server's json.Unmarshal reads it (expected values below were printed by a Go program calling
// encoding/json on protocol.SSHPasswordPayload), and judged like psiphond's passwordCallback.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isPosternError } from '../../src/common/errors.ts';
import {
  constantTimeEquals,
  encodeSshPasswordPayload,
  parseSshPasswordPayload,
  psiphonPasswordAuthenticator,
} from '../../src/ssh/index.ts';

const SID = '0123456789abcdef0123456789abcdef';

test('encoding matches Go json.Marshal byte for byte, including omitempty and HTML escaping', () => {
  assert.equal(
    encodeSshPasswordPayload({
      sessionId: SID,
      sshPassword: 'p<>&"w',
      clientCapabilities: ['server-requests'],
      sponsorId: '0123456789ABCDEF',
    }),
    '{"SessionId":"0123456789abcdef0123456789abcdef","SshPassword":"p\\u003c\\u003e\\u0026\\"w","ClientCapabilities":["server-requests"],"SponsorId":"0123456789ABCDEF"}',
  );
  assert.equal(
    encodeSshPasswordPayload({ sessionId: SID, sshPassword: 'pw', clientCapabilities: [], sponsorId: '' }),
    '{"SessionId":"0123456789abcdef0123456789abcdef","SshPassword":"pw"}',
  );
});

test('decoding follows Go: case-insensitive names, unknown fields ignored, null values skipped, last key wins', () => {
  const p = parseSshPasswordPayload(
    `{"sessionid":"${SID}","SSHPASSWORD":"b","clientcapabilities":null,"extra":1}`,
  );
  assert.deepEqual(p, { sessionId: SID, sshPassword: 'b', clientCapabilities: [], sponsorId: '' });
  const q = parseSshPasswordPayload(`{"SessionId":"x","sessionId":"${SID}","ClientCapabilities":["a",null]}`);
  assert.equal(q.sessionId, SID);
  assert.deepEqual(q.clientCapabilities, ['a', '']);
});

test('the legacy format (hex session ID then the password, 96 characters) is accepted', () => {
  const pw = 'ab'.repeat(32);
  const p = parseSshPasswordPayload(SID + pw);
  assert.equal(p.sessionId, SID);
  assert.equal(p.sshPassword, pw);
});

test('bad payloads are refused with AUTH_FAILED', () => {
  const bad = [
    '',
    '{not json',
    '{"SessionId":5}',
    '[1]',
    'null',
    `{"SessionId":"${SID.slice(1)}"}`,
    `{"SessionId":"${SID.replace('0', 'g')}"}`,
    `{"SessionId":"${SID}","SponsorId":"12"}`,
    `{"SessionId":"${SID}","ClientCapabilities":"server-requests"}`,
    `{"SessionId":"${SID}","SshPassword":"${'x'.repeat(5000)}"}`,
  ];
  for (const input of bad) {
    assert.throws(
      () => parseSshPasswordPayload(input),
      (e) => isPosternError(e, 'AUTH_FAILED'),
      input.slice(0, 40),
    );
  }
});

test('fuzz: any string either decodes to a well-formed payload or fails with AUTH_FAILED', () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.json({ maxDepth: 2 })), (input) => {
      try {
        const p = parseSshPasswordPayload(input);
        assert.equal(p.sessionId.length, 32);
        assert.ok(Array.isArray(p.clientCapabilities));
      } catch (e) {
        assert.ok(isPosternError(e, 'AUTH_FAILED'));
      }
    }),
    { numRuns: 300 },
  );
});

test('the authenticator checks user name and password, and returns the payload', () => {
  const auth = psiphonPasswordAuthenticator('user', 'secret');
  const good = encodeSshPasswordPayload({
    sessionId: SID,
    sshPassword: 'secret',
    clientCapabilities: [],
    sponsorId: '',
  });
  const result = auth('user', good);
  assert.ok(result.ok);
  assert.equal(result.ok && result.value.sessionId, SID);
  assert.equal(auth('other', good).ok, false);
  assert.equal(
    auth(
      'user',
      encodeSshPasswordPayload({
        sessionId: SID,
        sshPassword: 'secreT',
        clientCapabilities: [],
        sponsorId: '',
      }),
    ).ok,
    false,
  );
  assert.equal(auth('user', 'secret').ok, false);
  assert.equal(constantTimeEquals('abc', 'abc'), true);
  assert.equal(constantTimeEquals('abc', 'abcd'), false);
});
