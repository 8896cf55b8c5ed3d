// Per-server stats keys: the format of the key, the digest the back office keeps, and the registry file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { isPosternError } from '../../src/common/errors.ts';
import {
  generateStatsKey,
  parseStatsKey,
  readStatsKeys,
  recordStatsKey,
  statsKeyDigest,
  statsKeyMatches,
  statsKeysPath,
} from '../../src/stats/stats-key.ts';
import { tempDir } from '../helpers/tmp.ts';

test('a stats key is 32 random bytes in base64url; its digest is SHA-256 of those bytes', () => {
  const k = generateStatsKey();
  assert.match(k, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(generateStatsKey(), k);
  const raw = parseStatsKey(k);
  assert.equal(raw.length, 32);
  assert.equal(statsKeyDigest(k), createHash('sha256').update(raw).digest('hex'));
  assert.ok(statsKeyMatches(k, statsKeyDigest(k)));
  assert.ok(!statsKeyMatches(generateStatsKey(), statsKeyDigest(k)));
  assert.ok(!statsKeyMatches('garbage', statsKeyDigest(k)));
  assert.ok(!statsKeyMatches(k, 'not-hex'));
});

test('malformed keys are refused with BAD_KEY', () => {
  const k = generateStatsKey();
  for (const bad of ['', k.slice(1), k + 'A', k.replace(/.$/, '+'), Buffer.alloc(32).toString('base64')]) {
    assert.throws(
      () => parseStatsKey(bad),
      (e) => isPosternError(e, 'BAD_KEY'),
      JSON.stringify(bad),
    );
  }
  // A non-canonical last character (unused low bits set) is a different text for the same bytes: refused.
  const canonical = Buffer.alloc(32).toString('base64url');
  assert.equal(canonical.at(-1), 'A');
  assert.throws(
    () => parseStatsKey(canonical.slice(0, -1) + 'B'),
    (e) => isPosternError(e, 'BAD_KEY'),
  );
});

test('stats-keys.json: { hosts: { id: sha256 hex } }, 0600, entries kept, a corrupt file is not overwritten', (t) => {
  const dir = tempDir(t);
  assert.deepEqual(readStatsKeys(dir), { hosts: {} });
  const a = generateStatsKey();
  const b = generateStatsKey();
  recordStatsKey(dir, 'srv-a', a);
  recordStatsKey(dir, 'srv-b', b);
  const path = statsKeysPath(dir);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), {
    hosts: { 'srv-a': statsKeyDigest(a), 'srv-b': statsKeyDigest(b) },
  });
  assert.ok(!readFileSync(path, 'utf8').includes(a), 'the key itself is not in the file');
  writeFileSync(path, '{"hosts": {"srv-a": 5}}');
  assert.throws(
    () => recordStatsKey(dir, 'srv-c', generateStatsKey()),
    (e) => isPosternError(e, 'BAD_CONFIG'),
  );
  assert.equal(readFileSync(path, 'utf8'), '{"hosts": {"srv-a": 5}}');
  assert.throws(
    () => recordStatsKey(dir, 'bad id!', a),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
});
