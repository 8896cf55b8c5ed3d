// Per-server stats keys: each tunnel server holds a random key (base64url, in its server.json) that it sends as
// a bearer token with every batch; the back office holds only the key's SHA-256, by host ID, in the network's
// `stats-keys.json`, so a copy of the back office's files does not let anyone ship events as a server.
//
// The digest is over the key's 32 raw bytes (the base64url text decoded), written as lower-case hex.
// stats-keys.json: { "hosts": { "<host id>": "<sha256 hex>" } }, written atomically, mode 0600.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { PosternError } from '../common/errors.ts';
import { readJsonFile, parseWithSchema } from '../common/config.ts';
import { writeJsonAtomic, PRIVATE_FILE_MODE } from '../common/files.ts';

export const STATS_KEY_BYTES = 32;
export const STATS_KEYS_FILE = 'stats-keys.json';
/** The registry holds one short line per server; a file over this is not one we wrote. */
export const MAX_STATS_KEYS_FILE_BYTES = 16 * 1024 * 1024;

const BASE64URL_KEY = /^[A-Za-z0-9_-]{43}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const HOST_ID = /^[A-Za-z0-9._-]{1,64}$/;

export const StatsKeysFileSchema = z.object({
  hosts: z.record(z.string().regex(HOST_ID), z.string().regex(SHA256_HEX)),
});
export type StatsKeysFile = z.infer<typeof StatsKeysFileSchema>;

/** A new random key, base64url without padding (43 characters). */
export function generateStatsKey(): string {
  return randomBytes(STATS_KEY_BYTES).toString('base64url');
}

/** The key's 32 bytes; BAD_KEY when the text is not exactly a base64url 32-byte key. */
export function parseStatsKey(key: string): Buffer {
  if (!BASE64URL_KEY.test(key)) {
    throw new PosternError('BAD_KEY', `a stats key is ${STATS_KEY_BYTES} bytes in base64url (43 characters)`);
  }
  const raw = Buffer.from(key, 'base64url');
  // 43 characters carry 258 bits: the last two must be zero for the text to be the one encoding of the key.
  if (raw.length !== STATS_KEY_BYTES || raw.toString('base64url') !== key) {
    throw new PosternError('BAD_KEY', 'the stats key is not a canonical base64url encoding of 32 bytes');
  }
  return raw;
}

/** SHA-256 (lower-case hex) of the key's raw bytes: what the back office keeps. */
export function statsKeyDigest(key: string): string {
  return createHash('sha256').update(parseStatsKey(key)).digest('hex');
}

/** Constant-time check of a presented key against a stored digest; false for any malformed input. */
export function statsKeyMatches(presented: string, digestHex: string): boolean {
  if (!SHA256_HEX.test(digestHex)) return false;
  let d: string;
  try {
    d = statsKeyDigest(presented);
  } catch {
    return false;
  }
  return timingSafeEqual(Buffer.from(d, 'hex'), Buffer.from(digestHex, 'hex'));
}

export function statsKeysPath(networkDir: string): string {
  return join(networkDir, STATS_KEYS_FILE);
}

/** The registry of key digests; empty when the file does not exist yet. */
export function readStatsKeys(networkDir: string): StatsKeysFile {
  const path = statsKeysPath(networkDir);
  if (!existsSync(path)) return { hosts: {} };
  return parseWithSchema(StatsKeysFileSchema, readJsonFile(path, MAX_STATS_KEYS_FILE_BYTES), path);
}

/** Records (or replaces) a host's key digest. */
export function recordStatsKey(networkDir: string, hostId: string, key: string): void {
  if (!HOST_ID.test(hostId)) throw new PosternError('BAD_ARGUMENT', `host ID "${hostId}" is not valid`);
  const file = readStatsKeys(networkDir);
  const hosts: Record<string, string> = { ...file.hosts, [hostId]: statsKeyDigest(key) };
  writeJsonAtomic(statsKeysPath(networkDir), { hosts }, PRIVATE_FILE_MODE);
}
