// Which tunnel server a stats key belongs to. The back office knows only each key's SHA-256 (stats-keys.json
// in the network folder, written by `postern server generate`); it re-reads the file when it changes, so a new
// or re-keyed server can ship without a restart. Digests are compared in constant time against every entry.
import { timingSafeEqual } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { Logger } from '../common/logger.ts';
import { describeError } from '../common/errors.ts';
import { readStatsKeys, statsKeysPath } from '../stats/stats-key.ts';

export interface HostKeyLookup {
  /** The host ID whose key has this SHA-256 (lower-case hex), or undefined. */
  hostForKey(keySha256Hex: string): Promise<string | undefined>;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Finds `digestHex` among the entries without an early exit, so timing does not tell how much matched. */
export function findHostByDigest(
  entries: ReadonlyArray<readonly [string, Buffer]>,
  digestHex: string,
): string | undefined {
  if (!SHA256_HEX.test(digestHex)) return undefined;
  const d = Buffer.from(digestHex, 'hex');
  let found: string | undefined;
  for (const [host, digest] of entries) {
    if (timingSafeEqual(digest, d) && found === undefined) found = host;
  }
  return found;
}

/** Reads `<network dir>/stats-keys.json`, again whenever its inode, size or mtime changes. */
export class StatsKeysFileLookup implements HostKeyLookup {
  private readonly path: string;
  private version = '';
  private entries: Array<readonly [string, Buffer]> = [];

  constructor(
    private readonly networkDir: string,
    private readonly log: Logger,
  ) {
    this.path = statsKeysPath(networkDir);
  }

  async hostForKey(keySha256Hex: string): Promise<string | undefined> {
    await this.refresh();
    return findHostByDigest(this.entries, keySha256Hex);
  }

  /** Number of hosts currently known (for the log line at start). */
  async hostCount(): Promise<number> {
    await this.refresh();
    return this.entries.length;
  }

  private async refresh(): Promise<void> {
    let version: string;
    try {
      const s = await stat(this.path, { bigint: true });
      version = `${s.ino}:${s.size}:${s.mtimeNs}`;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      version = 'missing';
    }
    if (version === this.version) return;
    this.version = version;
    if (version === 'missing') {
      this.entries = [];
      this.log.warn(`no ${this.path} yet: every batch is refused until servers are generated`);
      return;
    }
    try {
      const file = readStatsKeys(this.networkDir);
      this.entries = Object.entries(file.hosts).map(
        ([host, hex]) => [host, Buffer.from(hex, 'hex')] as const,
      );
      this.log.info({ hosts: this.entries.length }, 'stats keys loaded');
    } catch (e) {
      // Fail closed: a registry we cannot read must not keep a revoked key working.
      this.entries = [];
      this.log.error(`cannot read ${this.path}, refusing every batch until it is fixed: ${describeError(e)}`);
    }
  }
}
