// The tunnel server's event log: events (server_tunnel, unique_user, domain_dest_bytes, ...) appended as JSON
// lines to a local spool that a shipper sends to the back office. Files are named
// `events-<startUnixMs:13>-<seq:10>.jsonl`, so sorting the names gives the order they were written in; every
// file but the newest is complete, and a shipper may delete a file once it has shipped it.
//
// Durability: append() resolves only after its line is fsynced (events are batched: a short window or a
// number of events, whichever comes first; flush() forces it). After a crash, a torn last line is cut off on
// the next open. Disk use is capped: over the cap new events are refused, counted and logged, never
// silently lost. As a last line of defence, an event with any field that looks like an IP address is
// refused (and counted): events carry region codes, never addresses. The writer adds nothing to an event.
import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { mkdir, open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { PosternError, describeError } from '../common/errors.ts';
import { acquirePidLock } from '../common/pid-lock.ts';
import { RealClock, type Clock } from '../common/clock.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import { containsIpAddress, redactString } from '../common/redact.ts';

export const DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024;
export const DEFAULT_MAX_FILE_AGE_MS = 10 * 60_000;
export const DEFAULT_MAX_TOTAL_BYTES = 512 * 1024 * 1024;
export const DEFAULT_BATCH_WINDOW_MS = 50;
export const DEFAULT_BATCH_MAX_EVENTS = 256;
/** One serialized event, newline included. */
export const MAX_EVENT_BYTES = 64 * 1024;
export const MAX_EVENT_DEPTH = 8;
/** Values (strings, numbers, keys ...) one event may hold; bounds the walk before serialising. */
export const MAX_EVENT_VALUES = 10_000;
/** Events waiting for their batch; beyond this (disk stalled) new events are refused. */
export const MAX_PENDING_EVENTS = 20_000;
export const MAX_EVENT_NAME_LENGTH = 64;
/** When over the cap, the folder is re-measured (a shipper may have deleted files) at most this often. */
export const USAGE_RESCAN_INTERVAL_MS = 1_000;
/** Refusals are logged at most once per reason per interval, with the count since the last line. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;
/** Reading backwards for the last newline during recovery, this many bytes at a time. */
const RECOVERY_CHUNK_BYTES = 64 * 1024;

export const SPOOL_FILE_PATTERN = /^events-(\d{13})-(\d{10})\.jsonl$/;
export const SPOOL_LOCK_FILE = '.lock';
const SPOOL_DIR_MODE = 0o700;
const SPOOL_FILE_MODE = 0o600;

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type SpoolEvent = { event_name: string } & { [key: string]: JsonValue };

export type RefusalReason =
  'ip-like' | 'invalid' | 'too-large' | 'spool-full' | 'backlog' | 'closed' | 'io-error';

export interface SpoolMetrics {
  eventsWritten: number;
  batchesWritten: number;
  bytesWritten: number;
  /** Events refused, by reason; every refusal is also a rejected append() and a (rate-limited) log line. */
  refused: Record<RefusalReason, number>;
  /** Bytes of torn last lines cut off when the spool was opened. */
  recoveredPartialBytes: number;
  /** Bytes in spool files, as last measured plus what this writer added since. */
  bytesOnDisk: number;
}

export interface EventSpoolOptions {
  dir: string;
  clock?: Clock;
  logger?: Logger;
  maxFileBytes?: number;
  maxFileAgeMs?: number;
  maxTotalBytes?: number;
  batchWindowMs?: number;
  batchMaxEvents?: number;
}

export interface SpoolFileInfo {
  name: string;
  path: string;
  startMs: number;
  seq: number;
  size: number;
}

export function spoolFileName(startMs: number, seq: number): string {
  return `events-${String(startMs).padStart(13, '0')}-${String(seq).padStart(10, '0')}.jsonl`;
}

/** The spool's files in the order they were written (oldest first). */
export async function listSpoolFiles(dir: string): Promise<SpoolFileInfo[]> {
  const out: SpoolFileInfo[] = [];
  for (const name of await readdir(dir)) {
    const m = SPOOL_FILE_PATTERN.exec(name);
    if (!m) continue;
    const path = join(dir, name);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      continue; // deleted by a shipper meanwhile
    }
    out.push({ name, path, startMs: Number(m[1]), seq: Number(m[2]), size });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface SpoolFileRead {
  /** Parsed complete lines. */
  events: unknown[];
  /** Offset just past the last complete line: where the next read should start. */
  nextOffset: number;
  /** Bytes after the last newline (a line being written, or torn by a crash); not returned as an event. */
  partialTailBytes: number;
  /** Complete lines that are not JSON objects. */
  badLines: number;
}

/** Reads the complete lines of one spool file from `fromOffset` (for a shipper, and for tests). */
export async function readSpoolFile(path: string, fromOffset = 0): Promise<SpoolFileRead> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const len = Math.max(0, size - fromOffset);
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await fh.read(buf, got, len - got, fromOffset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    const data = buf.subarray(0, got);
    const lastNl = data.lastIndexOf(0x0a);
    const complete = lastNl < 0 ? Buffer.alloc(0) : data.subarray(0, lastNl + 1);
    const events: unknown[] = [];
    let badLines = 0;
    for (const line of complete.toString('utf8').split('\n')) {
      if (line.length === 0) continue;
      try {
        const v: unknown = JSON.parse(line);
        if (v === null || typeof v !== 'object' || Array.isArray(v)) badLines++;
        else events.push(v);
      } catch {
        badLines++;
      }
    }
    return {
      events,
      nextOffset: fromOffset + complete.length,
      partialTailBytes: got - complete.length,
      badLines,
    };
  } finally {
    await fh.close();
  }
}

/** Every complete event in the spool, oldest file first. */
export async function readSpool(
  dir: string,
): Promise<{ files: (SpoolFileInfo & SpoolFileRead)[]; events: unknown[] }> {
  const files: (SpoolFileInfo & SpoolFileRead)[] = [];
  const events: unknown[] = [];
  for (const f of await listSpoolFiles(dir)) {
    const r = await readSpoolFile(f.path);
    files.push({ ...f, ...r });
    events.push(...r.events);
  }
  return { files, events };
}

type Validation = { ok: true } | { ok: false; reason: 'ip-like' | 'invalid'; message: string };

/** Checks that an event is plain JSON of bounded shape with no IP-like string anywhere (keys included). */
export function validateEvent(event: unknown): Validation {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    return { ok: false, reason: 'invalid', message: 'an event is a JSON object' };
  }
  const name = (event as { event_name?: unknown }).event_name;
  if (typeof name !== 'string' || !/^[a-z0-9_]+$/.test(name) || name.length > MAX_EVENT_NAME_LENGTH) {
    return { ok: false, reason: 'invalid', message: 'event_name must be lower_snake_case, 1-64 characters' };
  }
  let values = 0;
  const walk = (v: unknown, path: string, depth: number): Validation => {
    if (++values > MAX_EVENT_VALUES)
      return { ok: false, reason: 'invalid', message: 'event has too many values' };
    if (typeof v === 'string') {
      if (containsIpAddress(v)) {
        return {
          ok: false,
          reason: 'ip-like',
          message: `field ${redactString(path)} looks like an IP address`,
        };
      }
      return { ok: true };
    }
    if (typeof v === 'number') {
      return Number.isFinite(v)
        ? { ok: true }
        : { ok: false, reason: 'invalid', message: `${path} is not finite` };
    }
    if (typeof v === 'boolean' || v === null) return { ok: true };
    if (typeof v !== 'object') {
      return { ok: false, reason: 'invalid', message: `${redactString(path)} is a ${typeof v}, not JSON` };
    }
    if (depth >= MAX_EVENT_DEPTH)
      return { ok: false, reason: 'invalid', message: 'event is nested too deeply' };
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const r = walk(v[i], `${path}[${i}]`, depth + 1);
        if (!r.ok) return r;
      }
      return { ok: true };
    }
    const proto: unknown = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) {
      return { ok: false, reason: 'invalid', message: `${redactString(path)} is not a plain object` };
    }
    for (const [k, x] of Object.entries(v)) {
      const p = path ? `${path}.${k}` : k;
      if (containsIpAddress(k)) {
        return {
          ok: false,
          reason: 'ip-like',
          message: `a key in ${redactString(p)} looks like an IP address`,
        };
      }
      const r = walk(x, p, depth + 1);
      if (!r.ok) return r;
    }
    return { ok: true };
  };
  return walk(event, '', 0);
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface OpenFile {
  fh: FileHandle;
  name: string;
  startMs: number;
  size: number;
}

/** One writer per folder: a lock file holding the writer's pid; a lock left by a dead process is taken over. */
function acquireLock(dir: string): string {
  return acquirePidLock(
    join(dir, SPOOL_LOCK_FILE),
    (pid) => `event spool ${dir} is in use by process ${pid}`,
    SPOOL_FILE_MODE,
  );
}

async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // Some filesystems refuse fsync on a directory; nothing more can be done there.
  }
}

/** Cuts a torn last line off a spool file; returns how many bytes were removed. */
async function truncatePartialTail(path: string): Promise<number> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    if (size === 0) return 0;
    const last = Buffer.alloc(1);
    await fh.read(last, 0, 1, size - 1);
    if (last[0] === 0x0a) return 0;
    let keep = 0;
    const buf = Buffer.alloc(RECOVERY_CHUNK_BYTES);
    for (let end = size; end > 0;) {
      const start = Math.max(0, end - RECOVERY_CHUNK_BYTES);
      const { bytesRead } = await fh.read(buf, 0, end - start, start);
      const nl = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (nl >= 0) {
        keep = start + nl + 1;
        break;
      }
      end = start;
    }
    await fh.truncate(keep);
    await fh.sync();
    return size - keep;
  } finally {
    await fh.close();
  }
}

export class EventSpoolWriter {
  private readonly dir: string;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly maxFileBytes: number;
  private readonly maxFileAgeMs: number;
  private readonly maxTotalBytes: number;
  private readonly batchWindowMs: number;
  private readonly batchMaxEvents: number;
  private readonly lockPath: string;

  private current: OpenFile | null = null;
  private seq: number;
  private lastStartMs: number;
  private usedBytes: number;
  private lastRescan = -Infinity;
  private pending: { lines: Buffer[]; bytes: number; waiters: Waiter[] } = {
    lines: [],
    bytes: 0,
    waiters: [],
  };
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly m: SpoolMetrics;
  private readonly refusalLog = new Map<RefusalReason, { at: number; logged: number }>();

  private constructor(
    opts: EventSpoolOptions,
    lockPath: string,
    state: { seq: number; lastStartMs: number; usedBytes: number; recovered: number },
  ) {
    this.dir = opts.dir;
    this.clock = opts.clock ?? new RealClock();
    this.log = opts.logger ?? silentLogger();
    this.maxFileBytes = opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    this.maxFileAgeMs = opts.maxFileAgeMs ?? DEFAULT_MAX_FILE_AGE_MS;
    this.maxTotalBytes = opts.maxTotalBytes ?? DEFAULT_MAX_TOTAL_BYTES;
    this.batchWindowMs = opts.batchWindowMs ?? DEFAULT_BATCH_WINDOW_MS;
    this.batchMaxEvents = opts.batchMaxEvents ?? DEFAULT_BATCH_MAX_EVENTS;
    this.lockPath = lockPath;
    this.seq = state.seq;
    this.lastStartMs = state.lastStartMs;
    this.usedBytes = state.usedBytes;
    this.m = {
      eventsWritten: 0,
      batchesWritten: 0,
      bytesWritten: 0,
      refused: {
        'ip-like': 0,
        invalid: 0,
        'too-large': 0,
        'spool-full': 0,
        backlog: 0,
        closed: 0,
        'io-error': 0,
      },
      recoveredPartialBytes: state.recovered,
      bytesOnDisk: state.usedBytes,
    };
  }

  /** Creates the folder if needed, takes its lock, and repairs what a crash left (torn last lines). */
  static async open(opts: EventSpoolOptions): Promise<EventSpoolWriter> {
    for (const [k, v] of Object.entries({
      maxFileBytes: opts.maxFileBytes,
      maxFileAgeMs: opts.maxFileAgeMs,
      maxTotalBytes: opts.maxTotalBytes,
      batchMaxEvents: opts.batchMaxEvents,
    })) {
      if (v !== undefined && !(Number.isInteger(v) && v > 0)) {
        throw new PosternError('BAD_CONFIG', `event spool ${k} must be a positive integer`);
      }
    }
    if (
      opts.batchWindowMs !== undefined &&
      !(Number.isInteger(opts.batchWindowMs) && opts.batchWindowMs >= 0)
    ) {
      throw new PosternError('BAD_CONFIG', 'event spool batchWindowMs must be an integer >= 0');
    }
    const log = opts.logger ?? silentLogger();
    try {
      await mkdir(opts.dir, { recursive: true, mode: SPOOL_DIR_MODE });
    } catch (e) {
      throw new PosternError('IO', `cannot create the event spool ${opts.dir}: ${describeError(e)}`, {
        cause: e,
      });
    }
    const lockPath = acquireLock(opts.dir);
    try {
      let seq = 0;
      let lastStartMs = 0;
      let usedBytes = 0;
      let recovered = 0;
      for (const f of await listSpoolFiles(opts.dir)) {
        seq = Math.max(seq, f.seq + 1);
        lastStartMs = Math.max(lastStartMs, f.startMs);
        let cut: number;
        try {
          cut = await truncatePartialTail(f.path);
        } catch (e) {
          // A shipper deleted it since the listing: it had acknowledged all of it, so there is no tail to cut.
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw e;
        }
        if (cut > 0) {
          recovered += cut;
          log.warn({ file: f.name, bytes: cut }, 'event spool: cut a torn last line left by a crash');
        }
        usedBytes += f.size - cut;
      }
      return new EventSpoolWriter(opts, lockPath, { seq, lastStartMs, usedBytes, recovered });
    } catch (e) {
      unlinkSync(lockPath);
      throw e instanceof PosternError
        ? e
        : new PosternError('IO', `cannot open the event spool ${opts.dir}: ${describeError(e)}`, {
            cause: e,
          });
    }
  }

  /**
   * Queues an event; resolves once it is on disk (fsynced). Rejects, counts and logs when refused:
   * REFUSED (an IP-like field, spool full, backlog, closed), BAD_ARGUMENT (not plain JSON), TOO_LARGE, IO.
   */
  append(event: SpoolEvent): Promise<void> {
    if (this.closed) return this.refuse('closed', 'REFUSED', 'the event spool is closed');
    const v = validateEvent(event);
    if (!v.ok) return this.refuse(v.reason, v.reason === 'ip-like' ? 'REFUSED' : 'BAD_ARGUMENT', v.message);
    const line = Buffer.from(JSON.stringify(event) + '\n', 'utf8');
    if (line.length > MAX_EVENT_BYTES) {
      return this.refuse(
        'too-large',
        'TOO_LARGE',
        `event is ${line.length} bytes; at most ${MAX_EVENT_BYTES}`,
      );
    }
    if (this.pending.lines.length >= MAX_PENDING_EVENTS) {
      return this.refuse(
        'backlog',
        'REFUSED',
        `${MAX_PENDING_EVENTS} events are already waiting for the disk`,
      );
    }
    if (!this.hasRoom(line.length)) {
      return this.refuse('spool-full', 'REFUSED', `the event spool is at its ${this.maxTotalBytes}-byte cap`);
    }
    return new Promise<void>((resolve, reject) => {
      this.pending.lines.push(line);
      this.pending.bytes += line.length;
      this.pending.waiters.push({ resolve, reject });
      if (this.pending.lines.length >= this.batchMaxEvents) {
        void this.flush().catch(() => undefined);
      } else if (!this.timer) {
        this.timer = setTimeout(() => {
          this.timer = null;
          void this.flush().catch(() => undefined);
        }, this.batchWindowMs);
      }
    });
  }

  /** append() for callers that do not wait: a refusal is still counted and logged. */
  record(event: SpoolEvent): void {
    this.append(event).catch(() => undefined);
  }

  /** Writes and fsyncs everything queued so far; rejects with IO if that write failed. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const run = this.chain.then(() => this.writeBatch());
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Flushes, closes the file and releases the folder. Later appends are refused. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.flush();
    } finally {
      if (this.current) {
        await this.current.fh.close().catch(() => undefined);
        this.current = null;
      }
      try {
        unlinkSync(this.lockPath);
      } catch {
        // already gone
      }
    }
  }

  metrics(): SpoolMetrics {
    return { ...this.m, refused: { ...this.m.refused }, bytesOnDisk: this.usedBytes };
  }

  /** The file being written, which a shipper must not delete; null before the first event. */
  get activeFile(): string | null {
    return this.current ? this.current.name : null;
  }

  private hasRoom(bytes: number): boolean {
    if (this.usedBytes + this.pending.bytes + bytes <= this.maxTotalBytes) return true;
    const now = this.clock.now().getTime();
    if (now - this.lastRescan < USAGE_RESCAN_INTERVAL_MS) return false;
    this.lastRescan = now;
    // A shipper may have deleted files since: measure again (synchronously, the folder holds few files).
    this.usedBytes = this.measureSync();
    return this.usedBytes + this.pending.bytes + bytes <= this.maxTotalBytes;
  }

  /** Synchronous on purpose: it runs inside append(), on the refusal path, at most once a second. */
  private measureSync(): number {
    let total = 0;
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return this.usedBytes;
    }
    for (const name of names) {
      if (!SPOOL_FILE_PATTERN.test(name)) continue;
      try {
        total += statSync(join(this.dir, name)).size;
      } catch {
        // deleted meanwhile
      }
    }
    return total;
  }

  private refuse(
    reason: RefusalReason,
    code: 'REFUSED' | 'BAD_ARGUMENT' | 'TOO_LARGE',
    message: string,
  ): Promise<never> {
    this.countRefusal(reason, 1);
    return Promise.reject(new PosternError(code, `event refused: ${message}`));
  }

  private countRefusal(reason: RefusalReason, n: number): void {
    this.m.refused[reason] += n;
    const now = this.clock.now().getTime();
    const st = this.refusalLog.get(reason) ?? { at: -Infinity, logged: 0 };
    if (now - st.at >= REFUSAL_LOG_INTERVAL_MS) {
      const count = this.m.refused[reason] - st.logged;
      this.log.warn(
        { reason, refused: count, refusedTotal: this.m.refused[reason] },
        'event spool refused events',
      );
      this.refusalLog.set(reason, { at: now, logged: this.m.refused[reason] });
    }
  }

  private async writeBatch(): Promise<void> {
    const batch = this.pending;
    if (batch.lines.length === 0) return;
    this.pending = { lines: [], bytes: 0, waiters: [] };
    try {
      let i = 0;
      while (i < batch.lines.length) {
        const file = await this.fileFor(batch.lines[i]?.length ?? 0);
        // Fill this file up to its size limit (at least one line, however large).
        const chunk: Buffer[] = [];
        let bytes = 0;
        while (i < batch.lines.length) {
          const l = batch.lines[i] as Buffer;
          if (chunk.length > 0 && file.size + bytes + l.length > this.maxFileBytes) break;
          chunk.push(l);
          bytes += l.length;
          i++;
        }
        await this.writeDurably(file, Buffer.concat(chunk, bytes));
      }
    } catch (e) {
      this.countRefusal('io-error', batch.waiters.length);
      this.log.error({ error: describeError(e) }, 'event spool write failed');
      const err = new PosternError('IO', `event spool write failed: ${describeError(e)}`, { cause: e });
      for (const w of batch.waiters) w.reject(err);
      throw err;
    }
    this.m.eventsWritten += batch.lines.length;
    this.m.batchesWritten++;
    this.m.bytesWritten += batch.bytes;
    for (const w of batch.waiters) w.resolve();
  }

  private async writeDurably(file: OpenFile, data: Buffer): Promise<void> {
    const before = file.size;
    try {
      let off = 0;
      while (off < data.length) {
        const { bytesWritten } = await file.fh.write(data, off, data.length - off, before + off);
        off += bytesWritten;
      }
      await file.fh.datasync();
    } catch (e) {
      // Leave no torn line behind: cut back to the last good size, or give up on this file.
      try {
        await file.fh.truncate(before);
      } catch {
        await file.fh.close().catch(() => undefined);
        if (this.current === file) this.current = null;
      }
      throw e;
    }
    file.size += data.length;
    this.usedBytes += data.length;
  }

  /** The file the next line goes to, rotating by age and size. */
  private async fileFor(nextLineBytes: number): Promise<OpenFile> {
    const now = this.clock.now().getTime();
    const cur = this.current;
    if (cur) {
      const tooOld = now - cur.startMs >= this.maxFileAgeMs;
      const tooBig = cur.size > 0 && cur.size + nextLineBytes > this.maxFileBytes;
      if (!tooOld && !tooBig) return cur;
      this.current = null;
      await cur.fh.close();
    }
    // Names must sort in writing order even if the clock steps back.
    const startMs = Math.max(now, this.lastStartMs);
    for (;;) {
      const name = spoolFileName(startMs, this.seq++);
      try {
        const fh = await open(join(this.dir, name), 'wx', SPOOL_FILE_MODE);
        await syncDir(this.dir); // the new name must survive a crash along with what is written to it
        this.lastStartMs = startMs;
        this.current = { fh, name, startMs, size: 0 };
        return this.current;
      } catch (e) {
        if ((e as { code?: unknown }).code !== 'EEXIST') throw e;
      }
    }
  }
}
