// Shared pieces of the shipper tests: a spool of numbered events, a receiver with a fresh certificate, and a
// logger that keeps its lines so tests can check what was (not) logged.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/common/logger.ts';
import { spoolFileName } from '../../src/server/event-spool.ts';
import { generateStatsKey } from '../../src/stats/stats-key.ts';
import { StatsShipper, type StatsShipperOptions } from '../../src/stats/shipper.ts';
import { IngestReceiver, makeTestCertificate, type TestCertificate } from '../helpers/ingest-receiver.ts';

export const HOST = 'srv-test-1';

/** A valid event whose `established_tunnels` is its sequence number, so a test can count each one. */
export function seqEvent(seq: number): Record<string, unknown> {
  return {
    event_name: 'server_load',
    schema_version: 1,
    timestamp: '2026-11-29T12:00:00Z',
    host_id: HOST,
    established_tunnels: seq,
    open_port_forwards: 3,
    bytes_since_last: 1234,
    rss_bytes: 5678,
  };
}

export function seqOf(e: unknown): number {
  return (e as { established_tunnels: number }).established_tunnels;
}

/** Writes spool files by hand: `counts[i]` events in the i-th file, numbered from `first`. Returns names. */
export function writeSpool(dir: string, counts: number[], first = 0, startMs = 1_764_000_000_000): string[] {
  const names: string[] = [];
  let seq = first;
  counts.forEach((n, i) => {
    const name = spoolFileName(startMs + i, i);
    let text = '';
    for (let k = 0; k < n; k++) text += JSON.stringify(seqEvent(seq++)) + '\n';
    writeFileSync(join(dir, name), text, { mode: 0o600 });
    names.push(name);
  });
  return names;
}

export interface Harness {
  receiver: IngestReceiver;
  cert: TestCertificate;
  key: string;
  logLines: string[];
  logger: Logger;
  shipper(overrides?: Partial<StatsShipperOptions>): StatsShipper;
}

export async function harness(t: { after(fn: () => unknown): void }, spoolDir: string): Promise<Harness> {
  const cert = makeTestCertificate();
  const key = generateStatsKey();
  const receiver = await IngestReceiver.start({ certificate: cert, keys: { [HOST]: key } });
  t.after(() => receiver.close());
  const logLines: string[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString());
        cb();
      },
    }),
  });
  return {
    receiver,
    cert,
    key,
    logLines,
    logger,
    shipper: (o = {}) =>
      new StatsShipper({
        spoolDir,
        backOfficeUrl: receiver.url,
        hostId: HOST,
        key,
        backOfficeCertificate: cert.cert,
        logger,
        pollIntervalMs: 10,
        backoffBaseMs: 5,
        backoffMaxMs: 40,
        ...o,
      }),
  };
}

/** Asserts each of 0..n-1 arrived exactly once; returns a message naming the first problem, or null. */
export function exactlyOnce(events: unknown[], n: number): string | null {
  const seen = new Map<number, number>();
  for (const e of events) seen.set(seqOf(e), (seen.get(seqOf(e)) ?? 0) + 1);
  for (let i = 0; i < n; i++) {
    const c = seen.get(i) ?? 0;
    if (c !== 1) return `event ${i} arrived ${c} times`;
  }
  if (seen.size !== n) return `${seen.size} distinct events arrived, expected ${n}`;
  return null;
}
