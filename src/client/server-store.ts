// The client's candidate servers: the signed entries embedded in its config, plus those it stored on earlier
// runs or learned since (discovery, remote lists), every one verified against the network's server entry
// signing key before it is used. The server that last worked is remembered and tried first.
//
// Persisted as one small JSON file in the client's data folder, rewritten atomically. It holds server entries,
// which server worked last, and the hour-truncated timestamp the server returned to the last connected request
// (sent back next time so the server can count daily users without any identifier). Nothing about the user:
// no address of theirs, no destination.
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { RealClock, type Clock } from '../common/clock.ts';
import { describeError, isPosternError } from '../common/errors.ts';
import { readJsonFile } from '../common/config.ts';
import { writeJsonAtomic } from '../common/files.ts';
import type { Logger } from '../common/logger.ts';
import {
  decodeServerEntry,
  encodeServerEntry,
  formatTimestampRfc3339,
  getServerEntryTag,
  serverEntrySignedJson,
  verifyServerEntrySignature,
  SERVER_ENTRY_SOURCE_EMBEDDED,
  type ServerEntryFields,
} from '../protocol/index.ts';

export const SERVER_STORE_FILE = 'server-entries.json';
export const SERVER_STORE_VERSION = 1;
/** Entries kept at most; a list that would grow past this drops the entries it brings beyond it. */
export const MAX_STORED_SERVER_ENTRIES = 5000;
/** Largest store file read (5000 entries of a few KiB each fit with room to spare). */
export const MAX_SERVER_STORE_BYTES = 32 * 1024 * 1024;

const StoreFileSchema = z.object({
  version: z.literal(SERVER_STORE_VERSION),
  /** Tag of the server that last gave a working tunnel */
  lastGoodServer: z.string().nullable(),
  /** What the server answered to the last connected request (an hour-truncated RFC 3339 timestamp) */
  lastConnected: z.string().nullable(),
  /** Hex-encoded signed entries, with their local fields (source, when stored) */
  entries: z.array(z.string()).max(MAX_STORED_SERVER_ENTRIES),
});
type StoreFile = z.infer<typeof StoreFileSchema>;

export interface ServerStoreOptions {
  /** The config's signed entries (hex), stored with source EMBEDDED */
  embeddedEntries: readonly string[];
  /** The network's Ed25519 server entry signing key (base64) */
  signaturePublicKey: string;
  /** Folder of the store file; without one the store lives in memory only */
  dataDir?: string;
  clock?: Clock;
  logger?: Logger;
}

export interface ServerStoreLoadReport {
  /** Entries read back from the store file */
  stored: number;
  /** Entries in the store file that failed to decode or verify (dropped) */
  rejectedStored: number;
  /** Embedded entries in the config */
  embedded: number;
  /** Embedded entries that failed to decode or verify (skipped) */
  rejectedEmbedded: number;
  /** The store file could not be read or parsed, and was started afresh */
  fileReset: boolean;
}

export interface ImportResult {
  /** New servers, or newer entries for known ones */
  added: number;
  rejected: number;
}

/** Local timestamps as the reference writes them: RFC 3339, whole seconds, UTC. */
function localTimestamp(clock: Clock): string {
  return formatTimestampRfc3339(clock.now());
}

function configurationVersion(e: ServerEntryFields): number {
  const v = e.configurationVersion;
  return typeof v === 'number' ? v : 0;
}

/** The server entries this client may dial, with the last good one remembered. */
export class ServerStore {
  readonly report: ServerStoreLoadReport;
  private readonly byIp = new Map<string, ServerEntryFields>();
  private lastGood: string | null = null;
  private lastConnectedTimestamp: string | null = null;
  private readonly file: string | null;
  private readonly clock: Clock;
  private readonly signaturePublicKey: string;
  private readonly logger: Logger | undefined;

  private constructor(opts: ServerStoreOptions) {
    this.file = opts.dataDir === undefined ? null : join(opts.dataDir, SERVER_STORE_FILE);
    this.clock = opts.clock ?? new RealClock();
    this.signaturePublicKey = opts.signaturePublicKey;
    this.logger = opts.logger;
    this.report = { stored: 0, rejectedStored: 0, embedded: 0, rejectedEmbedded: 0, fileReset: false };
  }

  /**
   * Reads the store file (if any), then adds the config's embedded entries. Entries that do not verify are
   * skipped and counted in `report`; an unreadable store file is started afresh (it only caches what the
   * config and the network can give again).
   */
  static open(opts: ServerStoreOptions): ServerStore {
    const store = new ServerStore(opts);
    const saved = store.readFile();
    if (saved !== null) {
      store.lastGood = saved.lastGoodServer;
      store.lastConnectedTimestamp = saved.lastConnected;
      for (const hex of saved.entries) {
        const entry = store.verified(hex, undefined);
        if (entry === null) {
          store.report.rejectedStored++;
          continue;
        }
        store.put(entry);
        store.report.stored++;
      }
    }
    store.report.embedded = opts.embeddedEntries.length;
    const result = store.importEncoded(opts.embeddedEntries, SERVER_ENTRY_SOURCE_EMBEDDED, false);
    store.report.rejectedEmbedded = result.rejected;
    if (store.lastGood !== null && store.findByTag(store.lastGood) === undefined) store.lastGood = null;
    store.save();
    return store;
  }

  get size(): number {
    return this.byIp.size;
  }

  /** Copies of every entry, in no particular order. */
  entries(): ServerEntryFields[] {
    return [...this.byIp.values()].map((e) => ({ ...e }));
  }

  /**
   * The candidates for one round of establishment: the last good server first, the others in a new random
   * order each time (so that a blocked server does not always go first).
   */
  candidates(random: (n: number) => number = randomInt): ServerEntryFields[] {
    const all = this.entries();
    for (let i = all.length - 1; i > 0; i--) {
      const j = random(i + 1);
      [all[i], all[j]] = [all[j]!, all[i]!];
    }
    if (this.lastGood !== null) {
      const at = all.findIndex((e) => getServerEntryTag(e) === this.lastGood);
      if (at > 0) all.unshift(...all.splice(at, 1));
    }
    return all;
  }

  /** The tag of the server that last gave a working tunnel. */
  lastGoodServer(): string | null {
    return this.lastGood;
  }

  /** Remembers this server as the one to try first next time. */
  markSucceeded(entry: ServerEntryFields): void {
    const tag = getServerEntryTag(entry);
    if (this.findByTag(tag) === undefined || this.lastGood === tag) return;
    this.lastGood = tag;
    this.save();
  }

  /** The timestamp the last connected request returned, sent as last_connected in the next one. */
  lastConnected(): string | undefined {
    return this.lastConnectedTimestamp ?? undefined;
  }

  setLastConnected(timestamp: string): void {
    if (timestamp === '' || timestamp === this.lastConnectedTimestamp) return;
    this.lastConnectedTimestamp = timestamp;
    this.save();
  }

  /**
   * Adds signed hex entries from `source` (DISCOVERY, REMOTE, ...): each is verified; a known server's entry is
   * replaced only by a newer configuration version (or a different signed entry of the same version).
   */
  importEntries(encoded: readonly string[], source: string): ImportResult {
    const result = this.importEncoded(encoded, source, true);
    return result;
  }

  /** Forgets the servers with these tags (the network says they no longer exist). */
  removeByTags(tags: readonly string[]): number {
    const drop = new Set(tags);
    let removed = 0;
    for (const [ip, entry] of this.byIp) {
      if (drop.has(getServerEntryTag(entry))) {
        this.byIp.delete(ip);
        removed++;
      }
    }
    if (this.lastGood !== null && drop.has(this.lastGood)) this.lastGood = null;
    if (removed > 0) this.save();
    return removed;
  }

  private findByTag(tag: string): ServerEntryFields | undefined {
    for (const e of this.byIp.values()) if (getServerEntryTag(e) === tag) return e;
    return undefined;
  }

  private importEncoded(encoded: readonly string[], source: string, persist: boolean): ImportResult {
    const result: ImportResult = { added: 0, rejected: 0 };
    const timestamp = localTimestamp(this.clock);
    for (const hex of encoded) {
      const entry = this.verified(hex, { source, timestamp });
      if (entry === null) {
        result.rejected++;
        continue;
      }
      if (this.put(entry)) result.added++;
    }
    if (persist && result.added > 0) this.save();
    return result;
  }

  /** Stores an entry unless an entry at least as new (and identical when as new) is there; true if stored. */
  private put(entry: ServerEntryFields): boolean {
    const ip = entry.ipAddress!;
    const existing = this.byIp.get(ip);
    if (existing !== undefined) {
      const older = configurationVersion(entry) < configurationVersion(existing);
      // Same version but different signed contents: the operator regenerated the server (new keys); the
      // reference would keep the stale copy, which could then never connect.
      const same =
        configurationVersion(entry) === configurationVersion(existing) &&
        serverEntrySignedJson(entry) === serverEntrySignedJson(existing);
      if (older || same) return false;
    } else if (this.byIp.size >= MAX_STORED_SERVER_ENTRIES) {
      return false;
    }
    this.byIp.set(ip, entry);
    return true;
  }

  private verified(
    hex: string,
    local: { source: string; timestamp: string } | undefined,
  ): ServerEntryFields | null {
    try {
      const entry = decodeServerEntry(hex, local ?? {});
      verifyServerEntrySignature(entry, this.signaturePublicKey);
      return entry;
    } catch (e) {
      if (!isPosternError(e)) throw e;
      this.logger?.debug({ code: e.code }, `skipped a server entry: ${e.message}`);
      return null;
    }
  }

  private readFile(): StoreFile | null {
    // No file yet: the first run.
    if (this.file === null || !existsSync(this.file)) return null;
    let raw: unknown;
    try {
      raw = readJsonFile(this.file, MAX_SERVER_STORE_BYTES);
    } catch (e) {
      this.report.fileReset = true;
      this.logger?.warn(`server store ${this.file} is unreadable, starting afresh: ${describeError(e)}`);
      return null;
    }
    const parsed = StoreFileSchema.safeParse(raw);
    if (!parsed.success) {
      this.report.fileReset = true;
      this.logger?.warn(`server store ${this.file} is not in the expected format, starting afresh`);
      return null;
    }
    return parsed.data;
  }

  private save(): void {
    if (this.file === null) return;
    const data: StoreFile = {
      version: SERVER_STORE_VERSION,
      lastGoodServer: this.lastGood,
      lastConnected: this.lastConnectedTimestamp,
      entries: [...this.byIp.values()].map((e) => encodeServerEntry(e)),
    };
    try {
      writeJsonAtomic(this.file, data);
    } catch (e) {
      // The tunnel works without the cache; the next run just starts from the config again.
      this.logger?.warn(`cannot write the server store ${this.file}: ${describeError(e)}`);
    }
  }
}
