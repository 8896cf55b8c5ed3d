// The stats shipper: sends a tunnel server's event spool to the back office (ingest-protocol.ts) and deletes
// each spool file once the back office has acknowledged all of it. It resumes after any crash: the offset the
// back office last acknowledged per file is kept in `shipper-state.json` in the spool folder, and when that file
// is lost or stale the back office's own cursor (its duplicate / out-of-order answers carry nextOffset) says
// where to go on. A batch is a byte range of whole lines sent as is, so sending one twice costs nothing.
//
// Memory stays bounded whatever the spool holds: one batch buffer of at most maxBatchBytes, filled from the
// file in READ_CHUNK_BYTES reads. Logs name spool files and counts, never an event's content, and never the
// back office's address (it may be an IP address).
import { X509Certificate } from 'node:crypto';
import { Agent, request } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { checkServerIdentity as tlsCheckServerIdentity } from 'node:tls';
import { mkdirSync, unlinkSync } from 'node:fs';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { PosternError, describeError, isPosternError } from '../common/errors.ts';
import { RealClock, type Clock } from '../common/clock.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import { readJsonFile } from '../common/config.ts';
import { writeJsonAtomic, PRIVATE_FILE_MODE } from '../common/files.ts';
import { acquirePidLock } from '../common/pid-lock.ts';
import { listSpoolFiles, MAX_EVENT_BYTES } from '../server/event-spool.ts';
import {
  BATCH_CONTENT_TYPE,
  FILE_HEADER,
  HOST_HEADER,
  INGEST_PATH,
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
  OFFSET_HEADER,
} from './ingest-protocol.ts';
import { parseStatsKey } from './stats-key.ts';

export const SHIPPER_STATE_FILE = 'shipper-state.json';
export const SHIPPER_LOCK_FILE = '.shipper-lock';
export const REJECTED_DIR = 'rejected';
/** How often a caught-up shipper looks for new events. */
export const DEFAULT_POLL_INTERVAL_MS = 5_000;
/** First retry delay after a failure; doubles per consecutive failure up to BACKOFF_MAX_MS. */
export const BACKOFF_BASE_MS = 1_000;
export const BACKOFF_MAX_MS = 5 * 60_000;
/** Bytes read from a spool file per read() call while filling a batch. */
export const READ_CHUNK_BYTES = 64 * 1024;
/** A request whose socket is silent this long is abandoned (and retried after a backoff). */
export const REQUEST_TIMEOUT_MS = 60_000;
/** Longest reply body read from the back office; its answers are a few dozen bytes. */
export const MAX_REPLY_BYTES = 64 * 1024;
/** stop() lets an in-flight request finish for this long before aborting it. */
export const STOP_GRACE_MS = 5_000;
/** Out-of-order answers followed for one file in one pass before giving up (a back office that bounces). */
export const MAX_REDIRECTS_PER_FILE = 8;
/** The state file holds one short entry per spool file; anything bigger is not ours. */
export const MAX_STATE_FILE_BYTES = 1024 * 1024;
/** Longest piece of a back-office error message copied into a log line. */
const MAX_LOGGED_ERROR_CHARS = 200;
const STATE_VERSION = 1;
/** Upper bound for the interval options (poll, backoff, request timeout): a day. */
const MAX_OPTION_MS = 24 * 3_600_000;
const REJECTED_DIR_MODE = 0o700;
const SPOOL_DIR_MODE = 0o700;

export interface StatsShipperOptions {
  spoolDir: string;
  /** https://host:port (a path prefix is allowed) */
  backOfficeUrl: string;
  hostId: string;
  /** The server's stats key (base64url), sent as the bearer token */
  key: string;
  /** The back office's certificate (PEM): the only one trusted, and the one it must present */
  backOfficeCertificate: string;
  clock?: Clock;
  logger?: Logger;
  /** Largest batch body; MAX_EVENT_BYTES ≤ this ≤ MAX_BATCH_BYTES (default MAX_BATCH_BYTES) */
  maxBatchBytes?: number;
  /** Most events per batch; 1 ≤ this ≤ MAX_BATCH_EVENTS (default MAX_BATCH_EVENTS) */
  maxBatchEvents?: number;
  pollIntervalMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  requestTimeoutMs?: number;
  /** Jitter source in [0, 1); tests pin it */
  random?: () => number;
}

export interface ShipperMetrics {
  /** Batches the back office took (ingested) */
  batchesSent: number;
  eventsSent: number;
  bytesSent: number;
  /** Batches it already had (answered duplicate) */
  duplicateBatches: number;
  /** Failed attempts (network, 401, 413, 5xx, bad replies) that were or will be retried */
  retries: number;
  filesDeleted: number;
  filesRejected: number;
  lastAckAt: Date | null;
  /** Largest number of bytes the batch reader held at once */
  readerPeakBytes: number;
}

export type ShipFailure = 'network' | 'unauthorized' | 'too-large' | 'server-error' | 'bad-reply' | 'stopped';

export interface ShipReport {
  batches: number;
  events: number;
  bytes: number;
  duplicates: number;
  filesDeleted: number;
  filesRejected: number;
  /** Set when the pass ended early on a failure; the caller backs off and tries again */
  failure?: ShipFailure;
}

/** Exponential backoff with equal jitter: between half and all of min(max, base·2^(failures−1)). */
export function backoffDelayMs(
  failures: number,
  random: () => number = Math.random,
  baseMs = BACKOFF_BASE_MS,
  maxMs = BACKOFF_MAX_MS,
): number {
  if (failures <= 0) return 0;
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(failures - 1, 30));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(ceiling / 2 + (r * ceiling) / 2);
}

export type BatchRead =
  | { kind: 'lines'; body: Buffer; lines: number; endOffset: number }
  /** No whole line from the offset (end of file, or a line still being written) */
  | { kind: 'empty' }
  /** A line longer than the batch buffer: it can never be sent */
  | { kind: 'line-too-long' };

/**
 * Reads whole lines of a spool file into one buffer allocated once, so the memory it holds never exceeds its
 * capacity however large the file. The body it returns is a view into that buffer, valid until the next read.
 */
export class BoundedLineReader {
  readonly capacity: number;
  private readonly buf: Buffer;
  private readonly chunk: number;
  private peak = 0;

  constructor(capacity: number, chunkBytes = READ_CHUNK_BYTES) {
    if (!Number.isInteger(capacity) || capacity <= 0) {
      throw new PosternError('BAD_ARGUMENT', 'reader capacity must be a positive integer');
    }
    this.capacity = capacity;
    this.buf = Buffer.allocUnsafe(capacity);
    this.chunk = Math.max(1, Math.min(chunkBytes, capacity));
  }

  /** The most bytes held at once so far. */
  get peakBytes(): number {
    return this.peak;
  }

  async read(path: string, offset: number, maxLines: number): Promise<BatchRead> {
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if ((e as { code?: unknown }).code === 'ENOENT') return { kind: 'empty' };
      throw e;
    }
    try {
      let filled = 0;
      let lines = 0;
      let end = 0;
      let scan = 0;
      while (filled < this.capacity && lines < maxLines) {
        const want = Math.min(this.chunk, this.capacity - filled);
        const { bytesRead } = await fh.read(this.buf, filled, want, offset + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
        this.peak = Math.max(this.peak, filled);
        while (lines < maxLines) {
          const nl = this.buf.indexOf(0x0a, scan);
          if (nl < 0 || nl >= filled) {
            scan = filled;
            break;
          }
          lines++;
          end = nl + 1;
          scan = end;
        }
      }
      if (lines === 0) return filled >= this.capacity ? { kind: 'line-too-long' } : { kind: 'empty' };
      return { kind: 'lines', body: this.buf.subarray(0, end), lines, endOffset: offset + end };
    } finally {
      await fh.close();
    }
  }
}

const StateSchema = z.object({
  version: z.literal(STATE_VERSION),
  files: z.record(z.string(), z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)),
});

const NextOffset = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const ReplySchema = z.discriminatedUnion('status', [
  z.object({ status: z.literal('ingested'), nextOffset: NextOffset }),
  z.object({ status: z.literal('duplicate'), nextOffset: NextOffset }),
  z.object({ status: z.literal('out-of-order'), nextOffset: NextOffset }),
  z.object({ status: z.literal('malformed'), error: z.string() }),
  z.object({ status: z.literal('unauthorized'), error: z.string() }),
  z.object({ status: z.literal('too-large'), error: z.string() }),
]);

type Outcome =
  | { kind: 'ack'; duplicate: boolean; nextOffset: number }
  | { kind: 'redirect'; nextOffset: number }
  | { kind: 'malformed'; error: string }
  | { kind: 'failure'; failure: ShipFailure; detail: string };

/** One shipper per spool folder (two would race on the state file); a lock left by a dead process is taken. */
function acquireShipperLock(dir: string): string {
  return acquirePidLock(
    join(dir, SHIPPER_LOCK_FILE),
    (pid) => `a stats shipper (process ${pid}) is already shipping ${dir}`,
  );
}

function parseBackOfficeUrl(text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new PosternError('BAD_CONFIG', 'the back office URL is not a valid URL (https://HOST:PORT)');
  }
  if (u.protocol !== 'https:') throw new PosternError('BAD_CONFIG', 'the back office URL must use https://');
  if (u.username || u.password || u.search || u.hash) {
    throw new PosternError(
      'BAD_CONFIG',
      'the back office URL must not hold credentials, a query or a fragment',
    );
  }
  return u;
}

function checkLimit(name: string, v: number | undefined, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new PosternError('BAD_ARGUMENT', `${name} must be an integer from ${min} to ${max}`);
  }
  return v;
}

function emptyReport(): ShipReport {
  return { batches: 0, events: 0, bytes: 0, duplicates: 0, filesDeleted: 0, filesRejected: 0 };
}

/**
 * What went wrong reaching the back office, by error code where there is one (ECONNREFUSED,
 * ERR_TLS_CERT_ALTNAME_INVALID, ...): system messages name the host and address dialled.
 */
function networkErrorText(e: unknown): string {
  if (isPosternError(e)) return e.message;
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,64}$/.test(code)
    ? `cannot reach the back office (${code})`
    : 'cannot reach the back office';
}

export class StatsShipper {
  private readonly dir: string;
  private readonly url: URL;
  private readonly hostId: string;
  private readonly key: string;
  private readonly ca: string;
  private readonly fingerprint: string;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly maxBatchEvents: number;
  private readonly pollIntervalMs: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly requestTimeoutMs: number;
  private readonly random: () => number;
  private readonly reader: BoundedLineReader;
  private readonly agent: Agent;

  private lockPath: string | null = null;
  private state: Record<string, number> | null = null;
  /** Newest files the back office refused: moved aside once the writer has moved on to another file. */
  private readonly refusedNewest = new Map<string, string>();
  private loop: Promise<void> | null = null;
  /** The pass running now (passes never overlap: they share the state file) */
  private pass: Promise<unknown> = Promise.resolve();
  private stopping = false;
  private inFlight: AbortController | null = null;
  private wake: (() => void) | null = null;
  private failures = 0;
  private readonly m: ShipperMetrics = {
    batchesSent: 0,
    eventsSent: 0,
    bytesSent: 0,
    duplicateBatches: 0,
    retries: 0,
    filesDeleted: 0,
    filesRejected: 0,
    lastAckAt: null,
    readerPeakBytes: 0,
  };

  constructor(opts: StatsShipperOptions) {
    this.dir = opts.spoolDir;
    this.url = parseBackOfficeUrl(opts.backOfficeUrl);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(opts.hostId)) {
      throw new PosternError('BAD_CONFIG', 'the host ID may hold only letters, digits, ".", "_" and "-"');
    }
    this.hostId = opts.hostId;
    parseStatsKey(opts.key);
    this.key = opts.key;
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(opts.backOfficeCertificate);
    } catch (e) {
      throw new PosternError(
        'BAD_CONFIG',
        `the back office certificate is not a PEM certificate: ${describeError(e)}`,
        { cause: e },
      );
    }
    this.ca = opts.backOfficeCertificate;
    this.fingerprint = cert.fingerprint256;
    this.clock = opts.clock ?? new RealClock();
    this.log = opts.logger ?? silentLogger();
    const maxBatchBytes = checkLimit(
      'maxBatchBytes',
      opts.maxBatchBytes,
      MAX_EVENT_BYTES,
      MAX_BATCH_BYTES,
      MAX_BATCH_BYTES,
    );
    this.maxBatchEvents = checkLimit(
      'maxBatchEvents',
      opts.maxBatchEvents,
      1,
      MAX_BATCH_EVENTS,
      MAX_BATCH_EVENTS,
    );
    this.pollIntervalMs = checkLimit(
      'pollIntervalMs',
      opts.pollIntervalMs,
      1,
      MAX_OPTION_MS,
      DEFAULT_POLL_INTERVAL_MS,
    );
    this.backoffBaseMs = checkLimit('backoffBaseMs', opts.backoffBaseMs, 1, MAX_OPTION_MS, BACKOFF_BASE_MS);
    this.backoffMaxMs = checkLimit(
      'backoffMaxMs',
      opts.backoffMaxMs,
      this.backoffBaseMs,
      MAX_OPTION_MS,
      BACKOFF_MAX_MS,
    );
    this.requestTimeoutMs = checkLimit(
      'requestTimeoutMs',
      opts.requestTimeoutMs,
      1,
      MAX_OPTION_MS,
      REQUEST_TIMEOUT_MS,
    );
    this.random = opts.random ?? Math.random;
    this.reader = new BoundedLineReader(maxBatchBytes);
    // One connection, kept alive between batches; TLS options live on the agent so reused sockets were
    // verified the same way.
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      ca: [this.ca],
      // The pinned certificate may be a CA-signed leaf: let it be the trust anchor by itself (Node >= 20.18).
      allowPartialTrustChain: true,
      rejectUnauthorized: true,
      checkServerIdentity: (host: string, peer: PeerCertificate) => this.checkPeer(host, peer),
    });
  }

  metrics(): ShipperMetrics {
    return { ...this.m, readerPeakBytes: this.reader.peakBytes };
  }

  /** Runs the shipping loop until stop(). */
  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.takeLock();
    this.loop = this.run();
  }

  /**
   * Stops the loop: an in-flight request gets STOP_GRACE_MS (or `graceMs`) to finish, then is aborted (the
   * back office took all of it or none; the next run learns which). Releases the folder's lock.
   */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    this.stopping = true;
    this.wake?.();
    // The loop, or a pass a caller started with shipOnce(): either ends at its next batch boundary.
    const work = Promise.all([this.loop ?? Promise.resolve(), this.pass]);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      work.then(() => false),
      new Promise<boolean>((res) => {
        timer = setTimeout(() => res(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) this.inFlight?.abort();
    await work;
    this.loop = null;
    this.agent.destroy();
    this.releaseLock();
  }

  /**
   * For a clean shutdown, after the writer has closed the spool: stops the loop, then makes one last pass so the
   * final events (the tunnels that the shutdown closed) reach the back office now rather than at the next start.
   * Gives up after `timeoutMs`; whatever is left ships on the next run.
   */
  async drain(timeoutMs = STOP_GRACE_MS): Promise<ShipReport> {
    await this.stop();
    this.stopping = false;
    const timer = setTimeout(() => {
      this.stopping = true;
      this.inFlight?.abort();
    }, timeoutMs);
    try {
      return await this.shipOnce();
    } finally {
      clearTimeout(timer);
      await this.stop(0);
    }
  }

  /**
   * One pass over the spool: ships every whole line not yet acknowledged, oldest file first, deletes the files
   * that are complete and fully acknowledged, moves refused ones aside. Stops at the first failure (reported
   * in `failure`). Takes the folder's lock if this shipper does not hold it yet; stop() releases it.
   */
  shipOnce(): Promise<ShipReport> {
    const run = this.pass.then(() =>
      this.shipPass().catch((e: unknown) => {
        if (isPosternError(e)) throw e;
        throw new PosternError('IO', `stats shipper: spool ${this.dir}: ${describeError(e)}`, { cause: e });
      }),
    );
    this.pass = run.catch(() => undefined);
    return run;
  }

  private async shipPass(): Promise<ShipReport> {
    if (this.stopping && !this.loop) return { ...emptyReport(), failure: 'stopped' };
    this.takeLock();
    const report = emptyReport();
    const state = this.loadState();
    const files = await listSpoolFiles(this.dir);
    const present = new Set(files.map((f) => f.name));
    let pruned = false;
    for (const name of Object.keys(state)) {
      if (!present.has(name)) {
        delete state[name];
        pruned = true;
      }
    }
    if (pruned) this.saveState();
    for (const name of this.refusedNewest.keys()) if (!present.has(name)) this.refusedNewest.delete(name);
    const newest = files.at(-1)?.name;

    for (const f of files) {
      if (this.stopping) return { ...report, failure: 'stopped' };
      const isNewest = f.name === newest;
      const refused = this.refusedNewest.get(f.name);
      if (refused !== undefined) {
        if (!isNewest) {
          await this.moveAside(f.name, refused);
          report.filesRejected++;
        }
        continue;
      }
      let offset = state[f.name] ?? 0;
      let redirects = 0;
      let done = false;
      while (!done) {
        if (this.stopping) return { ...report, failure: 'stopped' };
        const batch = await this.reader.read(f.path, offset, this.maxBatchEvents);
        if (batch.kind === 'empty') break;
        if (batch.kind === 'line-too-long') {
          if (!isNewest) {
            await this.moveAside(
              f.name,
              `a line longer than ${this.reader.capacity} bytes at offset ${offset}`,
            );
            report.filesRejected++;
          }
          done = true;
          continue;
        }
        const outcome = await this.send(f.name, offset, batch.body);
        switch (outcome.kind) {
          case 'ack': {
            this.failures = 0;
            this.m.lastAckAt = this.clock.now();
            if (outcome.duplicate) {
              report.duplicates++;
              this.m.duplicateBatches++;
            } else {
              report.batches++;
              report.events += batch.lines;
              report.bytes += batch.body.length;
              this.m.batchesSent++;
              this.m.eventsSent += batch.lines;
              this.m.bytesSent += batch.body.length;
            }
            if (outcome.nextOffset <= offset) {
              return this.fail(report, 'bad-reply', 'the back office acknowledged a batch without moving on');
            }
            offset = outcome.nextOffset;
            this.setOffset(f.name, offset);
            break;
          }
          case 'redirect': {
            this.failures = 0;
            if (outcome.nextOffset === offset || ++redirects > MAX_REDIRECTS_PER_FILE) {
              return this.fail(report, 'bad-reply', `the back office keeps redirecting ${f.name}`);
            }
            this.log.info(
              { file: f.name, from: offset, to: outcome.nextOffset },
              'stats shipper: resuming where the back office expects',
            );
            offset = outcome.nextOffset;
            this.setOffset(f.name, offset);
            break;
          }
          case 'malformed': {
            this.failures = 0;
            const reason = `refused at offset ${offset} (${batch.lines} lines): ${outcome.error}`;
            // A line the back office refuses will be refused every time, and the cursor for this file can never
            // pass it: retrying would block this file for ever. The file is moved aside (kept, for the operator
            // to inspect, repair and move back: the back office's cursor still stands at this batch) and
            // shipping goes on with the next file. The newest file may still be written to, so it is moved
            // only once the writer has gone on to another file.
            if (isNewest) {
              this.refusedNewest.set(f.name, reason);
              this.log.warn(
                { file: f.name, offset, lines: batch.lines },
                'stats shipper: the back office refused a batch of the newest spool file; it is set aside when the server moves on',
              );
            } else {
              await this.moveAside(f.name, reason);
              report.filesRejected++;
            }
            done = true;
            break;
          }
          case 'failure':
            if (outcome.failure === 'stopped') return { ...report, failure: 'stopped' };
            return this.fail(report, outcome.failure, outcome.detail);
        }
      }
      if (!isNewest && !done && offset >= f.size) {
        if (offset > f.size) {
          this.log.warn(
            { file: f.name, size: f.size, acknowledged: offset },
            'stats shipper: the back office acknowledged more than the file holds; treating it as shipped',
          );
        }
        await this.deleteShipped(f.name);
        report.filesDeleted++;
      }
    }
    return report;
  }

  private fail(report: ShipReport, failure: ShipFailure, detail: string): ShipReport {
    this.m.retries++;
    this.log.warn(
      { failure, detail: detail.slice(0, MAX_LOGGED_ERROR_CHARS) },
      'stats shipper: sending failed',
    );
    return { ...report, failure };
  }

  private checkPeer(host: string, peer: PeerCertificate): Error | undefined {
    const err = tlsCheckServerIdentity(host, peer);
    if (err) return err;
    if (peer.fingerprint256 !== this.fingerprint) {
      return new PosternError('REFUSED', 'the back office presented a certificate other than the pinned one');
    }
    return undefined;
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      let delay = this.pollIntervalMs;
      try {
        const r = await this.shipOnce();
        if (r.failure === 'stopped') break;
        if (r.failure) {
          this.failures++;
          delay = backoffDelayMs(this.failures, this.random, this.backoffBaseMs, this.backoffMaxMs);
        } else if (r.batches > 0 || r.duplicates > 0 || r.filesDeleted > 0) {
          delay = 0; // there may be more already
        }
      } catch (e) {
        // Local trouble (the spool folder, the state file): log, back off and try again.
        this.failures++;
        this.m.retries++;
        this.log.error({ error: describeError(e) }, 'stats shipper: pass failed');
        delay = backoffDelayMs(this.failures, this.random, this.backoffBaseMs, this.backoffMaxMs);
      }
      if (delay > 0 && !this.stopping) await this.sleep(delay);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((res) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        res();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }

  private takeLock(): void {
    if (this.lockPath) return;
    try {
      // The shipper may start before the server has written anything: the folder is made as the writer makes it.
      mkdirSync(this.dir, { recursive: true, mode: SPOOL_DIR_MODE });
    } catch (e) {
      throw new PosternError('IO', `cannot create the event spool ${this.dir}: ${describeError(e)}`, {
        cause: e,
      });
    }
    this.lockPath = acquireShipperLock(this.dir);
  }

  private releaseLock(): void {
    if (!this.lockPath) return;
    try {
      unlinkSync(this.lockPath);
    } catch {
      // already gone
    }
    this.lockPath = null;
  }

  private loadState(): Record<string, number> {
    if (this.state) return this.state;
    const path = join(this.dir, SHIPPER_STATE_FILE);
    let files: Record<string, number> = {};
    try {
      const r = StateSchema.safeParse(readJsonFile(path, MAX_STATE_FILE_BYTES));
      if (r.success) files = { ...r.data.files };
      else
        this.log.warn('stats shipper: the state file is not valid; the back office will say where to resume');
    } catch (e) {
      if (!((e as { cause?: { code?: unknown } }).cause?.code === 'ENOENT')) {
        this.log.warn(
          { error: describeError(e) },
          'stats shipper: cannot read the state file; the back office will say where to resume',
        );
      }
    }
    this.state = files;
    return files;
  }

  private setOffset(file: string, offset: number): void {
    const st = this.loadState();
    st[file] = offset;
    this.saveState();
  }

  private saveState(): void {
    writeJsonAtomic(
      join(this.dir, SHIPPER_STATE_FILE),
      { version: STATE_VERSION, files: this.state ?? {} },
      PRIVATE_FILE_MODE,
    );
  }

  private async deleteShipped(name: string): Promise<void> {
    try {
      await unlink(join(this.dir, name));
    } catch (e) {
      if ((e as { code?: unknown }).code !== 'ENOENT') throw e;
    }
    if (this.state && name in this.state) {
      delete this.state[name];
      this.saveState();
    }
    this.m.filesDeleted++;
    this.log.info({ file: name }, 'stats shipper: file shipped and deleted');
  }

  private async moveAside(name: string, reason: string): Promise<void> {
    const dir = join(this.dir, REJECTED_DIR);
    await mkdir(dir, { recursive: true, mode: REJECTED_DIR_MODE });
    let target = join(dir, name);
    for (let i = 1; ; i++) {
      try {
        await stat(target);
        target = join(dir, `${name}.${i}`);
      } catch {
        break;
      }
    }
    await rename(join(this.dir, name), target);
    this.refusedNewest.delete(name);
    if (this.state && name in this.state) {
      delete this.state[name];
      this.saveState();
    }
    this.m.filesRejected++;
    this.log.error(
      { file: name, movedTo: `${REJECTED_DIR}/`, reason: reason.slice(0, MAX_LOGGED_ERROR_CHARS) },
      'stats shipper: the back office refused a spool file; it is kept aside and shipping goes on',
    );
  }

  private async send(file: string, offset: number, body: Buffer): Promise<Outcome> {
    let res: { status: number; text: string };
    const ac = new AbortController();
    this.inFlight = ac;
    try {
      res = await this.post(file, offset, body, ac.signal);
    } catch (e) {
      if (this.stopping && ac.signal.aborted)
        return { kind: 'failure', failure: 'stopped', detail: 'stopped' };
      return {
        kind: 'failure',
        failure: 'network',
        detail: networkErrorText(e),
      };
    } finally {
      this.inFlight = null;
    }
    let parsed: z.infer<typeof ReplySchema> | null = null;
    try {
      const r = ReplySchema.safeParse(JSON.parse(res.text));
      if (r.success) parsed = r.data;
    } catch {
      // not JSON: judged by the status code below
    }
    if (res.status === 200 && (parsed?.status === 'ingested' || parsed?.status === 'duplicate')) {
      return { kind: 'ack', duplicate: parsed.status === 'duplicate', nextOffset: parsed.nextOffset };
    }
    if (res.status === 409 && parsed?.status === 'out-of-order') {
      return { kind: 'redirect', nextOffset: parsed.nextOffset };
    }
    if (res.status === 400 && parsed?.status === 'malformed')
      return { kind: 'malformed', error: parsed.error };
    if (res.status === 401) {
      return {
        kind: 'failure',
        failure: 'unauthorized',
        detail: "the back office refused this server's stats key",
      };
    }
    if (res.status === 413) {
      return {
        kind: 'failure',
        failure: 'too-large',
        detail: 'the back office refused the batch as too large',
      };
    }
    if (res.status >= 500) {
      return { kind: 'failure', failure: 'server-error', detail: `the back office answered ${res.status}` };
    }
    return {
      kind: 'failure',
      failure: 'bad-reply',
      detail: `unexpected answer ${res.status} from the back office`,
    };
  }

  private post(
    file: string,
    offset: number,
    body: Buffer,
    signal: AbortSignal,
  ): Promise<{ status: number; text: string }> {
    const prefix = this.url.pathname.replace(/\/+$/, '');
    return new Promise((resolve, reject) => {
      const req = request(
        {
          protocol: 'https:',
          hostname: this.url.hostname.replace(/^\[|\]$/g, ''),
          port: this.url.port || 443,
          path: `${prefix}${INGEST_PATH}`,
          method: 'POST',
          agent: this.agent,
          ca: [this.ca],
          allowPartialTrustChain: true,
          rejectUnauthorized: true,
          checkServerIdentity: (host: string, peer: PeerCertificate) => this.checkPeer(host, peer),
          signal,
          headers: {
            authorization: `Bearer ${this.key}`,
            'content-type': BATCH_CONTENT_TYPE,
            'content-length': String(body.length),
            [HOST_HEADER]: this.hostId,
            [FILE_HEADER]: file,
            [OFFSET_HEADER]: String(offset),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            size += d.length;
            if (size > MAX_REPLY_BYTES) {
              res.destroy(new PosternError('TOO_LARGE', 'the back office sent an oversized reply'));
              return;
            }
            chunks.push(d);
          });
          res.on('error', reject);
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
          );
        },
      );
      req.setTimeout(this.requestTimeoutMs, () =>
        req.destroy(new PosternError('TIMEOUT', 'the back office did not answer in time')),
      );
      req.on('error', reject);
      req.end(body);
    });
  }
}
