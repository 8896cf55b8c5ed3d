// Replay detection for obfuscation seeds: a server remembers the seeds it has accepted for a day, so a censor
// who records a client's first bytes and replays them to probe the server gets no answer. Both maps are bounded
// in entries and time. The peer is kept only as a keyed hash for a short while, to say whether a duplicate came
// from the same peer (for the irregular-tunnel event) without holding addresses in memory.

import { createHmac, randomBytes } from 'node:crypto';
import type { Clock } from '../common/clock.ts';
import { PosternError } from '../common/errors.ts';

/** How long an accepted seed is remembered (the reference's HISTORY_SEED_TTL). */
export const SEED_HISTORY_TTL_MS = 24 * 60 * 60 * 1000;
/** Most seeds remembered; the oldest are forgotten first (HISTORY_SEED_MAX_ENTRIES). */
export const SEED_HISTORY_MAX_ENTRIES = 1_000_000;
/** How long the peer of a seed is remembered, long enough to recognise a retry (HISTORY_CLIENT_IP_TTL). */
export const SEED_HISTORY_PEER_TTL_MS = 2 * 60 * 1000;
/** Most peers remembered (HISTORY_CLIENT_IP_MAX_ENTRIES). */
export const SEED_HISTORY_PEER_MAX_ENTRIES = 10_000;

const PEER_KEY_LENGTH = 32;
const PEER_TAG_LENGTH = 16;

export type DuplicatePeer = 'equal' | 'unequal' | 'unknown';

export interface DuplicateSeed {
  /** What kind of seed was replayed, e.g. "obfuscator-seed". */
  seedType: string;
  /** Time since the seed was first seen. */
  elapsedMs: number;
  /** Whether the replay came from the same peer as the original, if that is still remembered. */
  peer: DuplicatePeer;
}

export interface SeedHistoryResult {
  accepted: boolean;
  /** Set when the seed had been seen before, whether or not it was accepted. */
  duplicate: DuplicateSeed | null;
}

export interface SeedHistoryOptions {
  clock: Clock;
  seedTtlMs?: number;
  maxSeeds?: number;
  peerTtlMs?: number;
  maxPeers?: number;
}

interface PeerEntry {
  tag: string;
  at: number;
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new PosternError('BAD_ARGUMENT', `seed history ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

export class SeedHistory {
  private readonly clock: Clock;
  private readonly seedTtlMs: number;
  private readonly maxSeeds: number;
  private readonly peerTtlMs: number;
  private readonly maxPeers: number;
  // Maps keep insertion order and every entry has the same lifetime, so the first entry is always the
  // oldest: expiry and eviction both pop from the front in O(1).
  private readonly seenAt = new Map<string, number>();
  private readonly peers = new Map<string, PeerEntry>();
  private readonly peerKey = randomBytes(PEER_KEY_LENGTH);

  constructor(options: SeedHistoryOptions) {
    this.clock = options.clock;
    this.seedTtlMs = positiveInteger('seedTtlMs', options.seedTtlMs, SEED_HISTORY_TTL_MS);
    this.maxSeeds = positiveInteger('maxSeeds', options.maxSeeds, SEED_HISTORY_MAX_ENTRIES);
    this.peerTtlMs = positiveInteger('peerTtlMs', options.peerTtlMs, SEED_HISTORY_PEER_TTL_MS);
    this.maxPeers = positiveInteger('maxPeers', options.maxPeers, SEED_HISTORY_PEER_MAX_ENTRIES);
  }

  /** Number of seeds currently remembered. */
  get size(): number {
    return this.seenAt.size;
  }

  /**
   * Records `seed` if it is new. A seen seed is refused; outside strict mode it is accepted when it comes
   * from the same peer as before (a retry of the same connection attempt, as meek does).
   */
  addNew(seedType: string, seed: Uint8Array, peer: string | undefined, strict = true): SeedHistoryResult {
    const now = this.clock.now().getTime();
    this.prune(now);
    const key = Buffer.from(seed.buffer, seed.byteOffset, seed.byteLength).toString('latin1');
    const firstSeen = this.seenAt.get(key);
    if (firstSeen === undefined) {
      if (this.seenAt.size >= this.maxSeeds) this.dropOldest(this.seenAt);
      this.seenAt.set(key, now);
      if (peer !== undefined) {
        if (this.peers.size >= this.maxPeers) this.dropOldest(this.peers);
        this.peers.set(key, { tag: this.peerTag(peer), at: now });
      }
      return { accepted: true, duplicate: null };
    }
    const previous = this.peers.get(key);
    let relation: DuplicatePeer = 'unknown';
    if (previous !== undefined && peer !== undefined) {
      relation = previous.tag === this.peerTag(peer) ? 'equal' : 'unequal';
    } else if (previous !== undefined) {
      relation = 'unequal';
    }
    const duplicate: DuplicateSeed = { seedType, elapsedMs: Math.max(0, now - firstSeen), peer: relation };
    return { accepted: relation === 'equal' && !strict, duplicate };
  }

  private prune(now: number): void {
    for (const [key, at] of this.seenAt) {
      if (now - at <= this.seedTtlMs) break;
      this.seenAt.delete(key);
    }
    for (const [key, entry] of this.peers) {
      if (now - entry.at <= this.peerTtlMs) break;
      this.peers.delete(key);
    }
  }

  private dropOldest(map: Map<string, unknown>): void {
    const first = map.keys().next();
    if (first.done !== true) map.delete(first.value);
  }

  private peerTag(peer: string): string {
    return createHmac('sha256', this.peerKey)
      .update(peer)
      .digest()
      .subarray(0, PEER_TAG_LENGTH)
      .toString('base64');
  }
}
