import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import fc from 'fast-check';
import { ManualClock } from '../../src/common/clock.ts';
import { isPosternError } from '../../src/common/errors.ts';
import type { Logger } from '../../src/common/logger.ts';
import {
  EventSpoolWriter,
  MAX_EVENT_BYTES,
  SPOOL_FILE_PATTERN,
  SPOOL_LOCK_FILE,
  USAGE_RESCAN_INTERVAL_MS,
  listSpoolFiles,
  readSpool,
  readSpoolFile,
  spoolFileName,
  type JsonValue,
  type SpoolEvent,
} from '../../src/server/event-spool.ts';
import { tempDir } from '../helpers/tmp.ts';

function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { log: pino<never>({ level: 'trace' }, sink), lines };
}

const ev = (n: number, extra: Record<string, JsonValue> = {}): SpoolEvent => ({
  event_name: 'server_tunnel',
  n,
  client_region: 'CA',
  ...extra,
});

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(p: Promise<T>): { settled: boolean; p: Promise<T> } {
  const s = { settled: false, p };
  p.then(
    () => (s.settled = true),
    () => (s.settled = true),
  );
  return s;
}

const tick = () => new Promise((r) => setImmediate(r));

test('events are appended as JSON lines, in order, in files whose names sort in writing order', async (t) => {
  const dir = tempDir(t);
  const spool = await EventSpoolWriter.open({ dir, clock: new ManualClock(1_767_225_600_000) });
  await Promise.all([0, 1, 2].map((n) => spool.append(ev(n))));
  await spool.close();
  const files = readdirSync(dir);
  assert.deepEqual(files, [spoolFileName(1_767_225_600_000, 0)]);
  assert.match(files[0] as string, SPOOL_FILE_PATTERN);
  assert.equal(
    readFileSync(join(dir, files[0] as string), 'utf8'),
    [0, 1, 2].map((n) => JSON.stringify(ev(n))).join('\n') + '\n',
    'exactly the events, nothing added',
  );
  assert.equal((statSync(join(dir, files[0] as string)).mode & 0o777).toString(8), '600');
});

test('a batch is written when its window closes, when it is full, or on flush()', async (t) => {
  const dir = tempDir(t);
  const spool = await EventSpoolWriter.open({ dir, batchWindowMs: 60_000, batchMaxEvents: 5 });
  t.after(() => spool.close());
  const first = [0, 1, 2].map((n) => track(spool.append(ev(n))));
  await tick();
  await tick();
  assert.ok(
    first.every((x) => !x.settled),
    'nothing resolves before its batch is on disk',
  );
  assert.equal((await readSpool(dir)).events.length, 0);
  await spool.flush();
  assert.ok(first.every((x) => x.settled));
  assert.equal((await readSpool(dir)).events.length, 3);

  const full = [3, 4, 5, 6, 7].map((n) => spool.append(ev(n)));
  await Promise.all(full); // five events fill a batch: no flush() needed
  assert.equal(spool.metrics().batchesWritten, 2);

  const quick = await EventSpoolWriter.open({ dir: tempDir(t), batchWindowMs: 5 });
  await quick.append(ev(0)); // resolves by itself after the window
  assert.equal(quick.metrics().eventsWritten, 1);
  await quick.close();
});

test('files rotate by size and by age; names stay in order when the clock steps back', async (t) => {
  const dir = tempDir(t);
  const clock = new ManualClock(1_000_000);
  const line = JSON.stringify(ev(0, { pad: 'x'.repeat(100) })).length + 1;
  const spool = await EventSpoolWriter.open({ dir, clock, maxFileBytes: line * 3, maxFileAgeMs: 60_000 });
  for (let n = 0; n < 7; n++) await spool.append(ev(n, { pad: 'x'.repeat(100) }));
  let files = await listSpoolFiles(dir);
  assert.deepEqual(
    files.map((f) => f.size / line),
    [3, 3, 1],
  );
  clock.advance(60_000);
  await spool.append(ev(7, { pad: 'x'.repeat(100) }));
  clock.set(500_000); // backwards
  for (let n = 8; n < 12; n++) await spool.append(ev(n, { pad: 'x'.repeat(100) }));
  await spool.close();
  files = await listSpoolFiles(dir);
  assert.equal(files[3]?.startMs, 1_060_000, 'a new file after maxFileAgeMs');
  assert.ok(
    files.every((f, i) => i === 0 || (f.startMs >= files[i - 1]!.startMs && f.seq > files[i - 1]!.seq)),
  );
  const { events } = await readSpool(dir);
  assert.deepEqual(
    events.map((e) => (e as { n: number }).n),
    [...Array(12).keys()],
  );
});

test('over the disk cap, events are refused, counted and logged until a shipper frees space', async (t) => {
  const dir = tempDir(t);
  const clock = new ManualClock();
  const { log, lines } = capturingLogger();
  const line = JSON.stringify(ev(0)).length + 1;
  const spool = await EventSpoolWriter.open({
    dir,
    clock,
    logger: log,
    maxTotalBytes: line * 4,
    maxFileBytes: line * 2,
  });
  t.after(() => spool.close());
  for (let n = 0; n < 4; n++) await spool.append(ev(n));
  await assert.rejects(
    spool.append(ev(4)),
    (e: unknown) => isPosternError(e, 'REFUSED') && /cap/.test(e.message),
  );
  await assert.rejects(spool.append(ev(5)));
  assert.equal(spool.metrics().refused['spool-full'], 2);
  assert.match(lines.join(''), /"reason":"spool-full"/);

  // The shipper deletes the oldest (complete) file; space is noticed at the next rescan.
  const [oldest] = await listSpoolFiles(dir);
  rmSync(oldest!.path);
  await assert.rejects(spool.append(ev(6)), 'not rescanned more than once a second');
  clock.advance(USAGE_RESCAN_INTERVAL_MS);
  await spool.append(ev(7));
  assert.equal(spool.metrics().refused['spool-full'], 3);
  const { events } = await readSpool(dir);
  assert.deepEqual(
    events.map((e) => (e as { n: number }).n),
    [2, 3, 7],
  );
});

test('an event with anything shaped like an IP address is refused and counted, and the address is not logged', async (t) => {
  const dir = tempDir(t);
  const { log, lines } = capturingLogger();
  const spool = await EventSpoolWriter.open({ dir, logger: log });
  t.after(() => spool.close());
  const bad: SpoolEvent[] = [
    ev(0, { client_ip: '198.51.100.23' }),
    ev(1, { note: 'from 198.51.100.23:443' }),
    ev(2, { nested: { deep: ['ok', '2001:db8::77'] } }),
    ev(3, { mapped: '::ffff:198.51.100.23' }),
    ev(4, { '198.51.100.23': 'as a key' }),
    ev(5, { peer: 'fe80::1%eth0' }),
  ];
  for (const e of bad) {
    await assert.rejects(
      spool.append(e),
      (err: unknown) => isPosternError(err, 'REFUSED') && /IP address/.test(err.message),
    );
  }
  // Look-alikes that are not addresses pass.
  await spool.append(
    ev(6, {
      client_version: '1.2.3',
      time: '12:30:45',
      t: '2026-01-01T10:00:00Z',
      region: 'IR',
      bytes: 1234,
    }),
  );
  assert.equal(spool.metrics().refused['ip-like'], bad.length);
  assert.equal(spool.metrics().eventsWritten, 1);
  const onDisk = readdirSync(dir)
    .filter((f) => f !== SPOOL_LOCK_FILE)
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('');
  const logged = lines.join('');
  for (const text of [onDisk, logged]) {
    for (const ip of ['198.51.100.23', '2001:db8::77', 'fe80::1']) assert.ok(!text.includes(ip), ip);
  }
  assert.match(logged, /"reason":"ip-like"/);
});

test('events that are not plain bounded JSON are refused with a code, never written', async (t) => {
  const dir = tempDir(t);
  const spool = await EventSpoolWriter.open({ dir });
  t.after(() => spool.close());
  const circular: Record<string, unknown> = { event_name: 'x' };
  circular['self'] = circular;
  let deep: Record<string, unknown> = { v: 1 };
  for (let i = 0; i < 20; i++) deep = { d: deep };
  const cases: [unknown, string][] = [
    [null, 'BAD_ARGUMENT'],
    [[ev(0)], 'BAD_ARGUMENT'],
    ['text', 'BAD_ARGUMENT'],
    [{ n: 1 }, 'BAD_ARGUMENT'],
    [{ event_name: 'Bad Name' }, 'BAD_ARGUMENT'],
    [{ event_name: 'x', v: NaN }, 'BAD_ARGUMENT'],
    [{ event_name: 'x', v: Infinity }, 'BAD_ARGUMENT'],
    [{ event_name: 'x', v: undefined }, 'BAD_ARGUMENT'],
    [{ event_name: 'x', v: () => 1 }, 'BAD_ARGUMENT'],
    [{ event_name: 'x', v: 1n }, 'BAD_ARGUMENT'],
    [{ event_name: 'x', v: new Date(0) }, 'BAD_ARGUMENT'],
    [circular, 'BAD_ARGUMENT'],
    [{ event_name: 'x', ...deep }, 'BAD_ARGUMENT'],
    [{ event_name: 'x', big: 'y'.repeat(MAX_EVENT_BYTES) }, 'TOO_LARGE'],
  ];
  for (const [e, code] of cases) {
    await assert.rejects(
      spool.append(e as SpoolEvent),
      (err: unknown) => isPosternError(err) && err.code === code,
    );
  }
  assert.equal(spool.metrics().refused.invalid + spool.metrics().refused['too-large'], cases.length);
  await spool.flush();
  assert.equal((await readSpool(dir)).events.length, 0);
  await spool.close();
  await assert.rejects(spool.append(ev(1)), (e: unknown) => isPosternError(e, 'REFUSED'));
  assert.equal(spool.metrics().refused.closed, 1);
});

test('a torn last line is cut off on open and writing goes on in a new file', async (t) => {
  const dir = tempDir(t);
  const first = await EventSpoolWriter.open({ dir });
  await first.append(ev(0));
  await first.append(ev(1));
  await first.close();
  const [file] = await listSpoolFiles(dir);
  appendFileSync(file!.path, '{"event_name":"server_tunnel","n":2,"cli');
  const before = await readSpoolFile(file!.path);
  assert.equal(before.events.length, 2, 'readers ignore a partial tail');
  assert.equal(before.partialTailBytes, 40);

  const { log, lines } = capturingLogger();
  const second = await EventSpoolWriter.open({ dir, logger: log });
  assert.equal(second.metrics().recoveredPartialBytes, 40);
  assert.match(lines.join(''), /torn last line/);
  await second.append(ev(3));
  await second.close();
  const r = await readSpool(dir);
  assert.equal(r.files.length, 2);
  assert.ok(r.files.every((f) => f.partialTailBytes === 0 && f.badLines === 0));
  assert.deepEqual(
    r.events.map((e) => (e as { n: number }).n),
    [0, 1, 3],
  );

  // A file holding nothing but a partial line is emptied; reading from an offset returns only what follows.
  const lone = join(dir, spoolFileName(9_999_999_999_999, 99));
  writeFileSync(lone, '{"partial');
  const third = await EventSpoolWriter.open({ dir });
  await third.close();
  assert.equal(statSync(lone).size, 0);
  const part = await readSpoolFile(
    r.files[0]!.path,
    r.files[0]!.nextOffset - (JSON.stringify(ev(1)).length + 1),
  );
  assert.deepEqual(part.events, [ev(1)]);
});

test('one writer per folder; a lock left by a dead process is taken over', async (t) => {
  const dir = tempDir(t);
  const a = await EventSpoolWriter.open({ dir });
  await assert.rejects(EventSpoolWriter.open({ dir }), (e: unknown) => isPosternError(e, 'ALREADY_EXISTS'));
  await a.close();
  writeFileSync(join(dir, SPOOL_LOCK_FILE), '2147483646\n'); // no such process
  const b = await EventSpoolWriter.open({ dir });
  await b.close();
});

test('after SIGKILL every acknowledged event is on disk, and a torn tail is repaired on restart', async (t) => {
  const dir = tempDir(t);
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(new URL('./spool-child.ts', import.meta.url)), dir],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const acked = new Set<number>();
  let buf = '';
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.on('exit', (_code, sig) => resolve(sig)),
  );
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const m = /^ack (\d+)$/.exec(buf.slice(0, i));
      if (m) acked.add(Number(m[1]));
      buf = buf.slice(i + 1);
    }
    if (acked.size >= 400 && !child.killed) child.kill('SIGKILL');
  });
  const deadline = setTimeout(() => child.kill('SIGKILL'), 20_000);
  assert.equal(await exited, 'SIGKILL');
  clearTimeout(deadline);
  assert.ok(acked.size >= 400, `only ${acked.size} events acknowledged`);

  // A crash in the middle of a write would leave a torn line: make one at the end of the newest file.
  const files = await listSpoolFiles(dir);
  assert.ok(files.length > 1, 'rotation happened under load');
  appendFileSync(files[files.length - 1]!.path, '{"event_name":"crash_test","n":');

  const spool = await EventSpoolWriter.open({ dir }); // takes over the dead child's lock, repairs the tail
  assert.ok(spool.metrics().recoveredPartialBytes > 0);
  await spool.close();
  const r = await readSpool(dir);
  assert.ok(r.files.every((f) => f.partialTailBytes === 0 && f.badLines === 0));
  const onDisk = new Set(r.events.map((e) => (e as { n: number }).n));
  const missing = [...acked].filter((n) => !onDisk.has(n));
  assert.deepEqual(missing, [], 'acknowledged events missing after the crash');
  assert.equal(onDisk.size, r.events.length, 'no event written twice');
});

test('property: any plain JSON event without address-like strings reads back exactly as appended', async (t) => {
  const dir = tempDir(t);
  const spool = await EventSpoolWriter.open({ dir, batchWindowMs: 0 });
  t.after(() => spool.close());
  const scalar = fc.oneof(fc.string({ maxLength: 30 }), fc.integer(), fc.boolean(), fc.constant(null));
  const value = fc.letrec<{ v: JsonValue }>((tie) => ({
    v: fc.oneof(
      { depthSize: 'small' },
      scalar,
      fc.array(tie('v'), { maxLength: 4 }),
      fc.dictionary(fc.string({ maxLength: 10 }), tie('v'), { maxKeys: 4 }),
    ),
  })).v;
  const written: SpoolEvent[] = [];
  await fc.assert(
    fc.asyncProperty(fc.dictionary(fc.string({ maxLength: 10 }), value, { maxKeys: 5 }), async (fields) => {
      const e = { ...fields, event_name: 'prop_test' } as SpoolEvent;
      try {
        await spool.append(e);
        written.push(e);
      } catch (err) {
        assert.ok(isPosternError(err, 'REFUSED') || isPosternError(err, 'BAD_ARGUMENT'), String(err));
      }
    }),
    { numRuns: 150 },
  );
  assert.deepEqual((await readSpool(dir)).events, JSON.parse(JSON.stringify(written)));
});
