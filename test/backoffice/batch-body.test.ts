// parseBatchBody takes hostile bytes: any input gives whole events or a BatchRefused, never another error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BatchRefused, parseBatchBody } from '../../src/backoffice/stats-routes.ts';
import { MAX_BATCH_BYTES } from '../../src/stats/ingest-protocol.ts';
import { ndjson, tunnelEvent } from './fixtures.ts';

function outcome(body: Buffer): 'ok' | 400 | 413 {
  try {
    parseBatchBody(body, 'srv-a');
    return 'ok';
  } catch (e) {
    if (e instanceof BatchRefused) return e.httpStatus;
    throw e;
  }
}

test('random bytes are refused cleanly', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      const r = outcome(Buffer.from(bytes));
      assert.ok(r === 400 || r === 413 || r === 'ok');
    }),
    { numRuns: 300 },
  );
});

test('a valid batch with one line mutated is refused whole, naming that line', () => {
  const events = [
    tunnelEvent('srv-a'),
    tunnelEvent('srv-a', { bytes: 5 }),
    tunnelEvent('srv-a', { bytes: 6 }),
  ];
  const good = ndjson(events);
  assert.equal(parseBatchBody(good, 'srv-a').length, 3);
  const lineStarts = [0];
  for (let i = 0; i < good.length - 1; i++) if (good[i] === 0x0a) lineStarts.push(i + 1);
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: good.length - 2 }),
      fc.integer({ min: 0, max: 255 }),
      (pos, byte) => {
        fc.pre(good[pos] !== byte && good[pos] !== 0x0a && byte !== 0x0a);
        const bad = Buffer.from(good);
        bad[pos] = byte;
        let line = 0;
        while (line + 1 < lineStarts.length && lineStarts[line + 1]! <= pos) line++;
        try {
          parseBatchBody(bad, 'srv-a');
          // Some mutations leave a valid event (a digit for a digit): then nothing may be lost.
          return;
        } catch (e) {
          assert.ok(e instanceof BatchRefused, String(e));
          assert.equal(e.httpStatus, 400);
          assert.match(e.message, new RegExp(`^line ${line + 1}: `));
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('deep nesting, huge numbers and prototype keys are refused, not crashed on', () => {
  const deep = Buffer.from('['.repeat(100_000) + ']'.repeat(100_000) + '\n');
  assert.equal(outcome(deep), 400);
  const proto = Buffer.from(
    JSON.stringify({ ...tunnelEvent('srv-a') }).replace('{', '{"__proto__":{"x":1},') + '\n',
  );
  assert.equal(outcome(proto), 400);
  const huge = Buffer.from(
    JSON.stringify(tunnelEvent('srv-a')).replace('"bytes":10000', '"bytes":1e400') + '\n',
  );
  assert.equal(outcome(huge), 400);
  assert.equal(outcome(Buffer.alloc(MAX_BATCH_BYTES + 1, 0x0a)), 413);
});
