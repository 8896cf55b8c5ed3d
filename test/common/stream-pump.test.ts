// The relays' one-direction pump: everything arrives in order, a slow destination pauses the source instead of
// buffering without bound, the end is passed on, and stop() leaves the destination open and the source paused.
import test from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pump } from '../../src/common/stream-pump.ts';

function collector(): { sink: PassThrough; got: Promise<Buffer> } {
  const sink = new PassThrough();
  const chunks: Buffer[] = [];
  sink.on('data', (d: Buffer) => chunks.push(d));
  const got = new Promise<Buffer>((resolve) => sink.on('end', () => resolve(Buffer.concat(chunks))));
  return { sink, got };
}

test('moves every chunk in order and passes the end on', async () => {
  const src = new PassThrough();
  const { sink, got } = collector();
  pump(src, sink);
  const parts = Array.from({ length: 50 }, (_, i) => Buffer.alloc(100 + i, i));
  for (const p of parts) src.write(p);
  src.end();
  assert.deepEqual(await got, Buffer.concat(parts));
});

test('a destination that does not drain pauses the source, and it resumes after the drain', async () => {
  const src = new PassThrough({ highWaterMark: 1024 });
  let release: (() => void) | null = null;
  let received = 0;
  const slow = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, cb) {
      received += chunk.length;
      release = cb;
    },
  });
  pump(src, slow);
  const total = 64 * 1024;
  let accepted = 0;
  while (accepted < total && src.write(Buffer.alloc(1024))) accepted += 1024;
  await new Promise((r) => setImmediate(r));
  // The destination holds one chunk in _write; the source must have stopped flowing rather than pile up.
  assert.equal(src.isPaused(), true);
  assert.ok(received <= 1024, `only the first chunk reached the destination (${received})`);
  const finished = new Promise<void>((r) => slow.on('finish', () => r()));
  src.end();
  // Let the destination take the rest; the source must resume and the end must follow.
  const pumpAll = setInterval(() => {
    const cb = release;
    release = null;
    cb?.();
  }, 1);
  await finished;
  clearInterval(pumpAll);
  assert.ok(received >= 1024);
});

test('stop() stops the flow without ending the destination and pauses the source', async () => {
  const src = new PassThrough();
  const { sink } = collector();
  let ended = false;
  sink.on('finish', () => (ended = true));
  const p = pump(src, sink);
  src.write('a');
  await new Promise((r) => setImmediate(r));
  p.stop();
  src.write('b');
  src.end();
  await new Promise((r) => setImmediate(r));
  assert.equal(ended, false);
  assert.equal(src.isPaused(), true);
  assert.equal(sink.writableEnded, false);
});

test('a source paused by its owner is started, and one that already ended ends the destination', async () => {
  const paused = new PassThrough();
  paused.pause();
  const a = collector();
  pump(paused, a.sink);
  paused.end('x');
  assert.equal((await a.got).toString(), 'x');

  const done = Readable.from([Buffer.from('y')]);
  done.resume();
  await new Promise((r) => done.once('end', r));
  const b = collector();
  pump(done, b.sink);
  assert.equal((await b.got).length, 0);
});
