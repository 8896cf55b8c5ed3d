// The OSSH preamble (Psiphon's "obfuscated SSH" seed message): the client opens with a random seed and, under
// RC4 keys derived from that seed and the server's obfuscation keyword, a magic value and random padding. The
// server parses it from hostile bytes, incrementally, and refuses wrong magic, oversized padding and replayed
// seeds. An optional prefix (arbitrary bytes ended by a keyed terminator) may precede the message.
// Knows nothing of SSH; obfuscated-ssh.ts builds the stream wrapper on top.

import { createHash, hkdfSync, randomBytes, randomInt } from 'node:crypto';
import { describeError, PosternError } from '../common/errors.ts';
import { Rc4 } from './rc4.ts';
import type { DuplicateSeed, SeedHistory } from './seed-history.ts';

export const OSSH_SEED_LENGTH = 16;
export const OSSH_KEY_LENGTH = 16;
export const OSSH_HASH_ITERATIONS = 6000;
export const OSSH_MAX_PADDING = 8192;
/**
 * The reference server seeds its own random choices from the first 32 padding bytes of the client, so clients
 * always send at least that many (prng.SEED_LENGTH).
 */
export const OSSH_PADDING_SEED_LENGTH = 32;
export const OSSH_MIN_CLIENT_PADDING = OSSH_PADDING_SEED_LENGTH;
export const OSSH_MAGIC = 0x0bf5ca7e;
export const OSSH_CLIENT_TO_SERVER_IV = 'client_to_server';
export const OSSH_SERVER_TO_CLIENT_IV = 'server_to_client';
/** Seed, magic and padding length: what the server must read before it knows anything. */
export const OSSH_PREAMBLE_HEADER_LENGTH = OSSH_SEED_LENGTH + 8;
export const OSSH_PREFIX_TERMINATOR_LENGTH = 16;
/** Longest prefix accepted before the terminator. */
export const OSSH_PREFIX_MAX_LENGTH = 65536;
/** Longest prefix spec name in the prefix header. */
export const OSSH_PREFIX_MAX_HEADER_LENGTH = 4096;
const OSSH_PREFIX_HEADER_VERSION = 1;
const OSSH_PREFIX_HEADER_FIXED_LENGTH = 4;
/** How far after the first 24 bytes the server looks for a prefix terminator. */
export const OSSH_PREFIX_SEARCH_WINDOW =
  OSSH_PREFIX_MAX_LENGTH + OSSH_PREFIX_TERMINATOR_LENGTH - OSSH_PREAMBLE_HEADER_LENGTH;

export const OSSH_SEED_TYPE = 'obfuscator-seed';

/** Why a server refused a connection: the `reason` of an irregular-tunnel event. */
export type IrregularReason =
  'bad-magic' | 'replayed-seed' | 'bad-padding-length' | 'no-prefix-terminator' | 'bad-prefix-header';

/** A refused preamble. `code` is REPLAYED_SEED for a replay, BAD_PREAMBLE otherwise. */
export class PreambleRejectedError extends PosternError {
  readonly reason: IrregularReason;
  readonly duplicate: DuplicateSeed | null;
  constructor(reason: IrregularReason, message: string, duplicate: DuplicateSeed | null = null) {
    super(reason === 'replayed-seed' ? 'REPLAYED_SEED' : 'BAD_PREAMBLE', message);
    this.name = 'PreambleRejectedError';
    this.reason = reason;
    this.duplicate = duplicate;
  }
}

function keywordBytes(keyword: string): Buffer {
  if (typeof keyword !== 'string' || keyword.length === 0) {
    throw new PosternError('BAD_ARGUMENT', 'the obfuscation keyword must be a non-empty string');
  }
  return Buffer.from(keyword, 'utf8');
}

// SHA-1 of a 20-byte message is a single padded block, so the 6000 iterations of the key derivation run on
// five words without allocating; node:crypto's per-call overhead made this about four times slower, and a server
// pays for it on every connection, probes included.
const SHA1_SCHEDULE = new Int32Array(80);
const SHA1_INITIAL: readonly [number, number, number, number, number] = [
  0x67452301,
  0xefcdab89 | 0,
  0x98badcfe | 0,
  0x10325476,
  0xc3d2e1f0 | 0,
];
const SHA1_DIGEST_BITS = 160;
const SHA1_PAD_WORD = 0x80000000 | 0;

function iterateSha1(digest: Buffer, iterations: number): Buffer {
  const w = SHA1_SCHEDULE;
  let h0 = digest.readInt32BE(0);
  let h1 = digest.readInt32BE(4);
  let h2 = digest.readInt32BE(8);
  let h3 = digest.readInt32BE(12);
  let h4 = digest.readInt32BE(16);
  const [i0, i1, i2, i3, i4] = SHA1_INITIAL;
  for (let n = 0; n < iterations; n++) {
    w[0] = h0;
    w[1] = h1;
    w[2] = h2;
    w[3] = h3;
    w[4] = h4;
    w[5] = SHA1_PAD_WORD;
    for (let t = 6; t < 15; t++) w[t] = 0;
    w[15] = SHA1_DIGEST_BITS;
    for (let t = 16; t < 80; t++) {
      const x = w[t - 3]! ^ w[t - 8]! ^ w[t - 14]! ^ w[t - 16]!;
      w[t] = (x << 1) | (x >>> 31);
    }
    let a = i0;
    let b = i1;
    let c = i2;
    let d = i3;
    let e = i4;
    let t = 0;
    for (; t < 20; t++) {
      const tmp = (((a << 5) | (a >>> 27)) + ((b & c) | (~b & d)) + e + 0x5a827999 + w[t]!) | 0;
      e = d;
      d = c;
      c = (b << 30) | (b >>> 2);
      b = a;
      a = tmp;
    }
    for (; t < 40; t++) {
      const tmp = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + 0x6ed9eba1 + w[t]!) | 0;
      e = d;
      d = c;
      c = (b << 30) | (b >>> 2);
      b = a;
      a = tmp;
    }
    for (; t < 60; t++) {
      const tmp =
        (((a << 5) | (a >>> 27)) + ((b & c) | (b & d) | (c & d)) + e + (0x8f1bbcdc | 0) + w[t]!) | 0;
      e = d;
      d = c;
      c = (b << 30) | (b >>> 2);
      b = a;
      a = tmp;
    }
    for (; t < 80; t++) {
      const tmp = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + (0xca62c1d6 | 0) + w[t]!) | 0;
      e = d;
      d = c;
      c = (b << 30) | (b >>> 2);
      b = a;
      a = tmp;
    }
    h0 = (a + i0) | 0;
    h1 = (b + i1) | 0;
    h2 = (c + i2) | 0;
    h3 = (d + i3) | 0;
    h4 = (e + i4) | 0;
  }
  const out = Buffer.alloc(20);
  out.writeInt32BE(h0, 0);
  out.writeInt32BE(h1, 4);
  out.writeInt32BE(h2, 8);
  out.writeInt32BE(h3, 12);
  out.writeInt32BE(h4, 16);
  return out;
}

/** The RC4 key for one direction: SHA-1(seed ‖ keyword ‖ iv), re-hashed 6000 times, first 16 bytes. */
export function deriveObfuscationKey(seed: Uint8Array, keyword: string, iv: string): Buffer {
  if (seed.length !== OSSH_SEED_LENGTH) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `an obfuscation seed is ${OSSH_SEED_LENGTH} bytes, got ${seed.length}`,
    );
  }
  const first = createHash('sha1').update(seed).update(keywordBytes(keyword)).update(iv, 'latin1').digest();
  return iterateSha1(first, OSSH_HASH_ITERATIONS).subarray(0, OSSH_KEY_LENGTH);
}

/** The prefix terminator: HKDF-SHA256 keyed by the keyword, salted with the first 24 bytes of the prefix. */
export function makePrefixTerminator(keyword: string, header: Uint8Array, iv: string): Buffer {
  if (header.length < OSSH_PREAMBLE_HEADER_LENGTH) {
    throw new PosternError('BAD_ARGUMENT', `a prefix is at least ${OSSH_PREAMBLE_HEADER_LENGTH} bytes`);
  }
  return Buffer.from(
    hkdfSync(
      'sha256',
      keywordBytes(keyword),
      header.subarray(0, OSSH_PREAMBLE_HEADER_LENGTH),
      Buffer.from(iv, 'latin1'),
      OSSH_PREFIX_TERMINATOR_LENGTH,
    ),
  );
}

/**
 * Bytes a sender puts before the OSSH stream (to look like another protocol), with their spec name, which the
 * client sends in the prefix header so the server can answer in kind.
 */
export interface OsshPrefix {
  bytes: Uint8Array;
  specName: string;
}

/** `prefix` padded with random bytes to at least 24 bytes, followed by its terminator. */
export function makeTerminatedPrefix(keyword: string, prefix: Uint8Array, iv: string): Buffer {
  if (prefix.length > OSSH_PREFIX_MAX_LENGTH) {
    throw new PosternError('BAD_ARGUMENT', `an OSSH prefix is at most ${OSSH_PREFIX_MAX_LENGTH} bytes`);
  }
  const padded =
    prefix.length >= OSSH_PREAMBLE_HEADER_LENGTH
      ? Buffer.from(prefix)
      : Buffer.concat([prefix, randomBytes(OSSH_PREAMBLE_HEADER_LENGTH - prefix.length)]);
  return Buffer.concat([padded, makePrefixTerminator(keyword, padded, iv)]);
}

export interface ClientPreambleOptions {
  keyword: string;
  /** Least padding, at least 32 (the default) and at most 8192. */
  minPadding?: number;
  /** Most padding, at least minPadding and at most 8192 (the default). */
  maxPadding?: number;
  prefix?: OsshPrefix;
  /** A fixed seed instead of a random one, to reproduce test vectors. */
  seed?: Uint8Array;
  /** Fixed padding bytes instead of random ones, to reproduce test vectors (0-8192 bytes). */
  padding?: Uint8Array;
}

export interface ClientPreamble {
  /** Everything the client sends before its SSH identification line. */
  bytes: Buffer;
  seed: Buffer;
  paddingLength: number;
  /** Positioned just after the preamble, ready for the SSH stream. */
  clientToServer: Rc4;
  serverToClient: Rc4;
}

function paddingBound(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < OSSH_MIN_CLIENT_PADDING || value > OSSH_MAX_PADDING) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `${name} must be an integer from ${OSSH_MIN_CLIENT_PADDING} to ${OSSH_MAX_PADDING}, got ${value}`,
    );
  }
  return value;
}

function prefixHeader(specName: string): Buffer {
  const name = Buffer.from(specName, 'utf8');
  if (name.length > OSSH_PREFIX_MAX_HEADER_LENGTH) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `an OSSH prefix spec name is at most ${OSSH_PREFIX_MAX_HEADER_LENGTH} bytes`,
    );
  }
  const header = Buffer.alloc(OSSH_PREFIX_HEADER_FIXED_LENGTH + name.length);
  header.writeUInt16BE(OSSH_PREFIX_HEADER_VERSION, 0);
  header.writeUInt16BE(name.length, 2);
  name.copy(header, OSSH_PREFIX_HEADER_FIXED_LENGTH);
  return header;
}

/** The client's opening bytes and the two ciphers that continue from them. */
export function makeClientPreamble(options: ClientPreambleOptions): ClientPreamble {
  keywordBytes(options.keyword);
  const minPadding = paddingBound('minPadding', options.minPadding, OSSH_MIN_CLIENT_PADDING);
  const maxPadding = paddingBound('maxPadding', options.maxPadding, OSSH_MAX_PADDING);
  if (maxPadding < minPadding) {
    throw new PosternError('BAD_ARGUMENT', `maxPadding ${maxPadding} is less than minPadding ${minPadding}`);
  }
  const seed = options.seed === undefined ? randomBytes(OSSH_SEED_LENGTH) : Buffer.from(options.seed);
  if (seed.length !== OSSH_SEED_LENGTH) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `an obfuscation seed is ${OSSH_SEED_LENGTH} bytes, got ${seed.length}`,
    );
  }
  let padding: Buffer;
  if (options.padding !== undefined) {
    if (options.padding.length > OSSH_MAX_PADDING) {
      throw new PosternError('BAD_ARGUMENT', `OSSH padding is at most ${OSSH_MAX_PADDING} bytes`);
    }
    padding = Buffer.from(options.padding);
  } else {
    padding = randomBytes(randomInt(minPadding, maxPadding + 1));
  }
  const clientToServer = new Rc4(deriveObfuscationKey(seed, options.keyword, OSSH_CLIENT_TO_SERVER_IV));
  const serverToClient = new Rc4(deriveObfuscationKey(seed, options.keyword, OSSH_SERVER_TO_CLIENT_IV));

  const prefix =
    options.prefix === undefined
      ? Buffer.alloc(0)
      : makeTerminatedPrefix(options.keyword, options.prefix.bytes, OSSH_CLIENT_TO_SERVER_IV);
  const header = options.prefix === undefined ? Buffer.alloc(0) : prefixHeader(options.prefix.specName);
  const fixed = Buffer.alloc(8);
  fixed.writeUInt32BE(OSSH_MAGIC, 0);
  fixed.writeUInt32BE(padding.length, 4);
  const bytes = Buffer.concat([prefix, seed, fixed, padding, header]);
  // Everything after the seed is under the client-to-server key.
  clientToServer.xorInPlace(bytes, prefix.length + OSSH_SEED_LENGTH);
  return { bytes, seed, paddingLength: padding.length, clientToServer, serverToClient };
}

/**
 * Finds a terminator in a stream fed chunk by chunk, within a bounded number of bytes. Only the last
 * `token.length - 1` bytes are kept between chunks.
 */
export class TerminatorSearch {
  private readonly token: Buffer;
  private readonly maxBytes: number;
  private tail: Buffer = Buffer.alloc(0);
  private scanned = 0;

  constructor(token: Buffer, maxBytes: number) {
    this.token = token;
    this.maxBytes = maxBytes;
  }

  /**
   * Returns the offset in `chunk` just past the terminator, or -1 when more bytes are needed.
   * Throws when the terminator cannot end within the window.
   */
  push(chunk: Buffer): number {
    const tailLength = this.tail.length;
    const joined = tailLength === 0 ? chunk : Buffer.concat([this.tail, chunk]);
    const index = joined.indexOf(this.token);
    if (index !== -1) {
      const end = index + this.token.length - tailLength;
      if (this.scanned + end > this.maxBytes) throw this.exceeded();
      return end;
    }
    this.scanned += chunk.length;
    if (this.scanned >= this.maxBytes) throw this.exceeded();
    const keep = Math.min(joined.length, this.token.length - 1);
    this.tail = Buffer.from(joined.subarray(joined.length - keep));
    return -1;
  }

  private exceeded(): PosternError {
    return new PosternError('BAD_PREAMBLE', `no prefix terminator within ${this.maxBytes} bytes`);
  }
}

export interface ServerPreambleOptions {
  keyword: string;
  /** Replay history; without one, replays are not detected. */
  history?: SeedHistory;
  /** The peer, held by the history only as a keyed hash and only to tell retries from replays. */
  peerAddress?: string;
  /** Look for a prefix terminator when the first bytes are not an OSSH message (the reference does). */
  acceptPrefixes?: boolean;
}

export interface ServerPreamble {
  clientToServer: Rc4;
  serverToClient: Rc4;
  seed: Buffer;
  paddingLength: number;
  /** The first 32 bytes of the client's padding (the reference's server PRNG seed), if it sent that many. */
  paddingSeed: Buffer | null;
  /** The prefix spec name the client sent, or null for an unprefixed stream. */
  prefixSpecName: string | null;
  /** Bytes of the last chunk after the preamble: the start of the client's SSH stream. */
  rest: Buffer;
}

type ServerState = 'header' | 'search' | 'padding' | 'prefix-fixed' | 'prefix-name' | 'done' | 'failed';

/**
 * Parses a client's preamble from bytes as they arrive. `push` returns null until the preamble is complete and
 * throws PreambleRejectedError (with the reason to report) for anything that is not a fresh OSSH preamble.
 */
export class ServerPreambleParser {
  private readonly keyword: string;
  private readonly history: SeedHistory | undefined;
  private readonly peerAddress: string | undefined;
  private readonly acceptPrefixes: boolean;
  private state: ServerState = 'header';
  private readonly header = Buffer.alloc(OSSH_PREAMBLE_HEADER_LENGTH);
  private headerLength = 0;
  private prefixed = false;
  private search: TerminatorSearch | null = null;
  private clientToServer: Rc4 | null = null;
  private seed: Buffer | null = null;
  private paddingLength = 0;
  private paddingRemaining = 0;
  private readonly paddingSeed = Buffer.alloc(OSSH_PADDING_SEED_LENGTH);
  private paddingSeedLength = 0;
  private readonly prefixFixed = Buffer.alloc(OSSH_PREFIX_HEADER_FIXED_LENGTH);
  private prefixFixedLength = 0;
  private prefixName: Buffer | null = null;
  private prefixNameLength = 0;

  constructor(options: ServerPreambleOptions) {
    keywordBytes(options.keyword);
    this.keyword = options.keyword;
    this.history = options.history;
    this.peerAddress = options.peerAddress;
    this.acceptPrefixes = options.acceptPrefixes ?? true;
  }

  /** True while looking for a prefix terminator: a peer that stops here has sent something irregular. */
  get searchingForPrefix(): boolean {
    return this.state === 'search';
  }

  push(chunk: Buffer): ServerPreamble | null {
    if (this.state === 'failed') throw new PosternError('BAD_PREAMBLE', 'the preamble was already refused');
    if (this.state === 'done') throw new PosternError('BAD_ARGUMENT', 'the preamble is already complete');
    try {
      return this.consume(chunk);
    } catch (e) {
      this.state = 'failed';
      throw e;
    }
  }

  private consume(chunk: Buffer): ServerPreamble | null {
    let offset = 0;
    while (offset < chunk.length) {
      switch (this.state) {
        case 'header': {
          const n = Math.min(OSSH_PREAMBLE_HEADER_LENGTH - this.headerLength, chunk.length - offset);
          chunk.copy(this.header, this.headerLength, offset, offset + n);
          this.headerLength += n;
          offset += n;
          if (this.headerLength === OSSH_PREAMBLE_HEADER_LENGTH) {
            // onHeader moves the state on; read it afresh.
            const next: ServerState = this.onHeader();
            if (next === 'padding' && this.paddingRemaining === 0) {
              if (!this.prefixed) return this.finish(chunk.subarray(offset));
              this.state = 'prefix-fixed';
            }
          }
          break;
        }
        case 'search': {
          let end: number;
          try {
            end = this.search!.push(chunk.subarray(offset));
          } catch (e) {
            throw new PreambleRejectedError('no-prefix-terminator', describeError(e));
          }
          if (end === -1) return null;
          offset += end;
          this.search = null;
          this.prefixed = true;
          this.headerLength = 0;
          this.state = 'header';
          break;
        }
        case 'padding': {
          const n = Math.min(this.paddingRemaining, chunk.length - offset);
          const seedPart = Math.min(n, OSSH_PADDING_SEED_LENGTH - this.paddingSeedLength);
          if (seedPart > 0) {
            chunk.copy(this.paddingSeed, this.paddingSeedLength, offset, offset + seedPart);
            this.clientToServer!.xorInPlace(
              this.paddingSeed,
              this.paddingSeedLength,
              this.paddingSeedLength + seedPart,
            );
            this.paddingSeedLength += seedPart;
          }
          // The rest of the padding is read and dropped, but the keystream must still advance over it.
          this.clientToServer!.skip(n - seedPart);
          this.paddingRemaining -= n;
          offset += n;
          if (this.paddingRemaining === 0) {
            if (this.prefixed) {
              this.state = 'prefix-fixed';
            } else {
              return this.finish(chunk.subarray(offset));
            }
          }
          break;
        }
        case 'prefix-fixed': {
          const n = Math.min(OSSH_PREFIX_HEADER_FIXED_LENGTH - this.prefixFixedLength, chunk.length - offset);
          chunk.copy(this.prefixFixed, this.prefixFixedLength, offset, offset + n);
          this.clientToServer!.xorInPlace(
            this.prefixFixed,
            this.prefixFixedLength,
            this.prefixFixedLength + n,
          );
          this.prefixFixedLength += n;
          offset += n;
          if (this.prefixFixedLength === OSSH_PREFIX_HEADER_FIXED_LENGTH) {
            const version = this.prefixFixed.readUInt16BE(0);
            const nameLength = this.prefixFixed.readUInt16BE(2);
            if (version !== OSSH_PREFIX_HEADER_VERSION) {
              throw new PreambleRejectedError(
                'bad-prefix-header',
                `unknown prefix header version ${version}`,
              );
            }
            if (nameLength > OSSH_PREFIX_MAX_HEADER_LENGTH) {
              throw new PreambleRejectedError('bad-prefix-header', `prefix spec name of ${nameLength} bytes`);
            }
            this.prefixName = Buffer.alloc(nameLength);
            this.state = 'prefix-name';
            if (nameLength === 0) return this.finish(chunk.subarray(offset));
          }
          break;
        }
        case 'prefix-name': {
          const name = this.prefixName!;
          const n = Math.min(name.length - this.prefixNameLength, chunk.length - offset);
          chunk.copy(name, this.prefixNameLength, offset, offset + n);
          this.clientToServer!.xorInPlace(name, this.prefixNameLength, this.prefixNameLength + n);
          this.prefixNameLength += n;
          offset += n;
          if (this.prefixNameLength === name.length) return this.finish(chunk.subarray(offset));
          break;
        }
        default:
          throw new PosternError('BAD_ARGUMENT', `preamble parser in state ${this.state}`);
      }
    }
    return null;
  }

  private onHeader(): ServerState {
    const seed = Buffer.from(this.header.subarray(0, OSSH_SEED_LENGTH));
    const clientToServer = new Rc4(deriveObfuscationKey(seed, this.keyword, OSSH_CLIENT_TO_SERVER_IV));
    const fixed = Buffer.from(this.header.subarray(OSSH_SEED_LENGTH));
    clientToServer.xorInPlace(fixed);
    const magic = fixed.readUInt32BE(0);
    // Signed, as in the reference: a "negative" length is refused rather than read as a huge one.
    const paddingLength = fixed.readInt32BE(4);

    if (magic !== OSSH_MAGIC) {
      if (this.prefixed) {
        throw new PreambleRejectedError('bad-magic', 'invalid magic value after the prefix');
      }
      if (!this.acceptPrefixes) {
        throw new PreambleRejectedError('bad-magic', 'invalid magic value');
      }
      // Perhaps a prefixed stream: its terminator is keyed by these first 24 bytes.
      const terminator = makePrefixTerminator(this.keyword, this.header, OSSH_CLIENT_TO_SERVER_IV);
      this.search = new TerminatorSearch(terminator, OSSH_PREFIX_SEARCH_WINDOW);
      this.state = 'search';
      return this.state;
    }

    // Only seeds with a valid magic enter the history, so garbage cannot fill it. The magic is checked before
    // the padding length, which a prober could otherwise learn about byte by byte.
    if (this.history !== undefined) {
      const result = this.history.addNew(OSSH_SEED_TYPE, seed, this.peerAddress, true);
      if (!result.accepted) {
        throw new PreambleRejectedError('replayed-seed', 'duplicate obfuscation seed', result.duplicate);
      }
    }
    if (paddingLength < 0 || paddingLength > OSSH_MAX_PADDING) {
      throw new PreambleRejectedError('bad-padding-length', `invalid padding length ${paddingLength}`);
    }
    this.seed = seed;
    this.clientToServer = clientToServer;
    this.paddingLength = paddingLength;
    this.paddingRemaining = paddingLength;
    this.state = 'padding';
    return this.state;
  }

  private finish(rest: Buffer): ServerPreamble {
    this.state = 'done';
    const seed = this.seed!;
    return {
      clientToServer: this.clientToServer!,
      serverToClient: new Rc4(deriveObfuscationKey(seed, this.keyword, OSSH_SERVER_TO_CLIENT_IV)),
      seed,
      paddingLength: this.paddingLength,
      paddingSeed: this.paddingLength >= OSSH_PADDING_SEED_LENGTH ? Buffer.from(this.paddingSeed) : null,
      prefixSpecName: this.prefixed ? this.prefixName!.toString('utf8') : null,
      rest,
    };
  }
}
