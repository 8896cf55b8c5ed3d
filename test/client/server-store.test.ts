// The client's server store: only verified entries, persisted across runs with the last good server first,
// nothing about the user in its file, and a damaged or hostile file costs nothing but the cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { ManualClock } from '../../src/common/clock.ts';
import { ServerStore, SERVER_STORE_FILE } from '../../src/client/index.ts';
import {
  decodeServerEntry,
  encodeServerEntry,
  generateEd25519KeyPair,
  getServerEntryTag,
  verifyServerEntrySignature,
} from '../../src/protocol/index.ts';
import { makeTestEntry, testSigningKey } from '../helpers/mini-tunnel-server.ts';
import { tempDir } from '../helpers/tmp.ts';

const clock = new ManualClock(Date.UTC(2026, 4, 6, 7, 8, 9));
const good = [1, 2, 3].map((n) => makeTestEntry({ ip: `192.0.2.${n}`, ports: { OSSH: 443 } }));

function open(dataDir: string | undefined, embedded: readonly string[]): ServerStore {
  return ServerStore.open({
    embeddedEntries: embedded,
    signaturePublicKey: testSigningKey().publicKey,
    clock,
    ...(dataDir !== undefined ? { dataDir } : {}),
  });
}

test('embedded entries are verified: foreign, tampered, unsigned and undecodable ones are skipped and counted', () => {
  const foreign = makeTestEntry({
    ip: '192.0.2.50',
    ports: { OSSH: 443 },
    signing: generateEd25519KeyPair(),
  });
  const tamperedFields = { ...decodeServerEntry(good[0]!.encoded), ipAddress: '192.0.2.51' };
  const tampered = encodeServerEntry(tamperedFields);
  const unsignedFields = { ...decodeServerEntry(good[1]!.encoded), ipAddress: '192.0.2.52' };
  delete unsignedFields.signature;
  const unsigned = encodeServerEntry(unsignedFields);
  const store = open(undefined, [
    ...good.map((g) => g.encoded),
    foreign.encoded,
    tampered,
    unsigned,
    'not hex',
    Buffer.from('0 0 0 0 {"ipAddress":1}').toString('hex'),
  ]);
  assert.deepEqual(store.report, {
    stored: 0,
    rejectedStored: 0,
    embedded: 8,
    rejectedEmbedded: 5,
    fileReset: false,
  });
  assert.deepEqual(
    store
      .entries()
      .map((e) => e.ipAddress)
      .sort(),
    ['192.0.2.1', '192.0.2.2', '192.0.2.3'],
  );
  for (const e of store.entries()) {
    assert.equal(e.localSource, 'EMBEDDED');
    assert.equal(e.localTimestamp, '2026-05-06T07:08:09Z');
  }
});

test('entries, the last good server and the last connected timestamp survive a restart; the file holds nothing else', (t) => {
  const dir = tempDir(t);
  const first = open(
    dir,
    good.map((g) => g.encoded),
  );
  first.markSucceeded(good[1]!.fields);
  first.setLastConnected('2026-05-06T07:00:00Z');
  first.importEntries([makeTestEntry({ ip: '192.0.2.9', ports: { SSH: 22 } }).encoded], 'DISCOVERY');

  const again = open(dir, []);
  assert.equal(again.report.stored, 4);
  assert.equal(again.lastGoodServer(), good[1]!.fields.tag);
  assert.equal(again.lastConnected(), '2026-05-06T07:00:00Z');
  assert.equal(again.entries().find((e) => e.ipAddress === '192.0.2.9')?.localSource, 'DISCOVERY');

  assert.deepEqual(readdirSync(dir), [SERVER_STORE_FILE], 'no temporary files left behind');
  const file = JSON.parse(readFileSync(join(dir, SERVER_STORE_FILE), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(Object.keys(file).sort(), ['entries', 'lastConnected', 'lastGoodServer', 'version']);
  for (const hex of file['entries'] as string[]) {
    verifyServerEntrySignature(decodeServerEntry(hex), testSigningKey().publicKey);
  }
});

test('candidates: the last good server first, the others in a fresh random order each round', () => {
  const many = Array.from({ length: 6 }, (_, i) =>
    makeTestEntry({ ip: `198.51.100.${i + 1}`, ports: { OSSH: 443 } }),
  );
  const store = open(
    undefined,
    many.map((m) => m.encoded),
  );
  store.markSucceeded(many[4]!.fields);
  const seconds = new Set<string>();
  for (let i = 0; i < 60; i++) {
    const c = store.candidates();
    assert.equal(c.length, 6);
    assert.equal(getServerEntryTag(c[0]!), many[4]!.fields.tag);
    seconds.add(c[1]!.ipAddress!);
  }
  assert.equal(seconds.size, 5, 'every other server comes second sometimes');
});

test('a server entry is replaced by a newer version (or a regenerated one), never by an older one', () => {
  const v1 = makeTestEntry({ ip: '203.0.113.1', ports: { OSSH: 443 }, configurationVersion: 1 });
  const store = open(undefined, [v1.encoded]);
  const v0 = makeTestEntry({ ip: '203.0.113.1', ports: { OSSH: 444 }, configurationVersion: 0 });
  assert.deepEqual(store.importEntries([v0.encoded], 'REMOTE'), { added: 0, rejected: 0 });
  assert.deepEqual(
    store.importEntries([v1.encoded], 'REMOTE'),
    { added: 0, rejected: 0 },
    'the same entry again',
  );
  const regenerated = makeTestEntry({ ip: '203.0.113.1', ports: { OSSH: 445 }, configurationVersion: 1 });
  assert.deepEqual(store.importEntries([regenerated.encoded], 'REMOTE'), { added: 1, rejected: 0 });
  assert.equal(store.entries()[0]!.sshObfuscatedPort, 445);
  const v2 = makeTestEntry({ ip: '203.0.113.1', ports: { OSSH: 446 }, configurationVersion: 2 });
  assert.deepEqual(store.importEntries([v2.encoded, 'zz'], 'REMOTE'), { added: 1, rejected: 1 });
  assert.equal(store.size, 1);
  assert.equal(store.entries()[0]!.sshObfuscatedPort, 446);
  assert.equal(store.removeByTags([v2.fields.tag!]), 1);
  assert.equal(store.size, 0);
});

test('a damaged store file is set aside: tampered entries dropped, bad files started afresh, never a crash', (t) => {
  const dir = tempDir(t);
  const first = open(dir, [good[0]!.encoded, good[1]!.encoded]);
  first.markSucceeded(good[0]!.fields);
  const path = join(dir, SERVER_STORE_FILE);
  const file = JSON.parse(readFileSync(path, 'utf8')) as { entries: string[] };
  // Point one stored entry at another address without re-signing it.
  const fields = decodeServerEntry(file.entries[0]!);
  file.entries[0] = encodeServerEntry({ ...fields, ipAddress: '192.0.2.200' });
  writeFileSync(path, JSON.stringify(file));
  const reopened = open(dir, []);
  assert.equal(reopened.report.rejectedStored, 1);
  assert.equal(reopened.size, 1);
  assert.ok(!reopened.entries().some((e) => e.ipAddress === '192.0.2.200'));

  for (const bad of ['{', '[]', '{"version":2,"entries":[]}', 'null', '\u0000\u0001']) {
    writeFileSync(path, bad);
    const s = open(dir, [good[2]!.encoded]);
    assert.equal(s.report.fileReset, true, bad);
    assert.equal(s.size, 1);
  }

  fc.assert(
    fc.property(fc.oneof(fc.json(), fc.string(), fc.uint8Array({ maxLength: 256 })), (content) => {
      writeFileSync(path, typeof content === 'string' ? content : Buffer.from(content));
      const s = open(dir, [good[2]!.encoded]);
      assert.ok(s.entries().some((e) => e.ipAddress === good[2]!.fields.ipAddress));
    }),
    { numRuns: 60 },
  );
});
