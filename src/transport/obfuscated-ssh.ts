// OSSH: the SSH byte stream obfuscated with the seed-keyed RC4 of obfuscator.ts until the first SSH_MSG_NEWKEYS
// in each direction, then passed through untouched (SSH's own encryption takes over). The client sends the
// preamble before its first bytes; the server answers with random lines before its identification line; both
// sides add random padding to every handshake packet, so sizes say little (the reader trims it back to a multiple
// of 8 for the SSH layer). The wrapper tracks SSH framing only for that and to find NEWKEYS. A server that cannot
// parse a fresh preamble answers nothing: it reads and drops bytes until its deadline (counted from the accept),
// then closes, and reports the irregular connection (without the peer's address).

import { randomBytes, randomInt } from 'node:crypto';
import net from 'node:net';
import { Duplex } from 'node:stream';
import type { Clock } from '../common/clock.ts';
import { RealClock } from '../common/clock.ts';
import { describeError, PosternError } from '../common/errors.ts';
import {
  makeClientPreamble,
  makePrefixTerminator,
  makeTerminatedPrefix,
  OSSH_MAX_PADDING,
  OSSH_PREAMBLE_HEADER_LENGTH,
  OSSH_PREFIX_SEARCH_WINDOW,
  OSSH_SERVER_TO_CLIENT_IV,
  PreambleRejectedError,
  ServerPreambleParser,
  TerminatorSearch,
  type IrregularReason,
  type OsshPrefix,
  type ServerPreamble,
} from './obfuscator.ts';
import type { Rc4 } from './rc4.ts';
import type { DuplicateSeed, SeedHistory } from './seed-history.ts';

/** Longest line (with CRLF) before or as the peer's identification line. */
export const SSH_MAX_LINE_LENGTH = 1024;
/** uint32 packet_length + byte padding_length. */
export const SSH_PACKET_PREFIX_LENGTH = 5;
/** OpenSSH's largest packet. */
export const SSH_MAX_PACKET_LENGTH = 256 * 1024;
export const SSH_MSG_NEWKEYS = 21;
/** RFC 4253 §6: unencrypted packets are a multiple of 8 bytes long, with at least 4 bytes of padding. */
export const SSH_PLAIN_BLOCK_SIZE = 8;
export const SSH_MIN_PADDING_LENGTH = 4;
/** RFC 4253 §6: padding_length is one byte. */
export const SSH_MAX_PADDING_LENGTH = 255;
/** Padding granularity for legacy peers (Ganymed) that insist on RFC 4253's block-size multiples. */
export const SSH_PADDING_MULTIPLE = 16;
/** The server's padding lines are at most this long (with CRLF), for old clients. */
export const OSSH_SERVER_PADDING_MAX_LINE_LENGTH = 512;
/** Most bytes of extra lines accepted before the identification line (the server sends at most 8192). */
export const OSSH_MAX_EXTRA_LINES_BYTES = 2 * OSSH_MAX_PADDING;
/** How long a server waits for a preamble, and how long it keeps reading and dropping after refusing one. */
export const OSSH_ACCEPT_TIMEOUT_MS = 30_000;

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n', 'latin1');
const SSH_IDENTIFICATION_START = Buffer.from('SSH-', 'latin1');
const LEGACY_PADDING_MARKER = Buffer.from('Ganymed', 'latin1');
const MIN_SERVER_PADDING_LINE = CRLF.length;

export type ObfuscatedSshMode = 'client' | 'server';
type ReadState = 'prefix' | 'lines' | 'packets' | 'done';
type WriteState = 'opening' | 'line' | 'packets' | 'done';

interface PacketPrefix {
  packetLength: number;
  paddingLength: number;
  payloadLength: number;
}

function parsePacketPrefix(prefix: Buffer): PacketPrefix {
  const packetLength = prefix.readUInt32BE(0);
  if (packetLength < 1 || packetLength > SSH_MAX_PACKET_LENGTH) {
    throw new PosternError('BAD_FRAMING', `invalid SSH packet length ${packetLength}`);
  }
  const paddingLength = prefix[4]!;
  if (paddingLength >= packetLength) {
    throw new PosternError(
      'BAD_FRAMING',
      `SSH padding length ${paddingLength} >= packet length ${packetLength}`,
    );
  }
  return { packetLength, paddingLength, payloadLength: packetLength - paddingLength - 1 };
}

/**
 * The server's lines before its identification line: 2-8192 bytes of NUL-filled lines of at most 512 bytes, each
 * ending in CRLF (RFC 4253 §4.2 lets a server send other lines first; clients ignore them).
 */
export function makeIdentificationLinePadding(
  length = randomInt(MIN_SERVER_PADDING_LINE, OSSH_MAX_PADDING + 1),
): Buffer {
  if (!Number.isSafeInteger(length) || length < MIN_SERVER_PADDING_LINE || length > OSSH_MAX_PADDING) {
    throw new PosternError('BAD_ARGUMENT', `identification padding of ${length} bytes`);
  }
  const padding = Buffer.alloc(length);
  let remaining = length;
  let start = 0;
  while (remaining > 0) {
    let line = Math.min(remaining, OSSH_SERVER_PADDING_MAX_LINE_LENGTH);
    // Leave room for a whole CRLF on the last line.
    const after = remaining - line;
    if (after > 0 && after < MIN_SERVER_PADDING_LINE) line -= MIN_SERVER_PADDING_LINE - after;
    padding[start + line - 2] = CR;
    padding[start + line - 1] = LF;
    start += line;
    remaining -= line;
  }
  return padding;
}

function chooseExtraPadding(paddingLength: number, legacy: boolean): number {
  if (!legacy) {
    // Vary sizes as much as possible; both ends accept padding beyond RFC 4253's block-size rule.
    const possible = SSH_MAX_PADDING_LENGTH - paddingLength;
    return possible > 0 ? randomInt(possible + 1) : 0;
  }
  const steps = Math.floor((SSH_MAX_PADDING_LENGTH - paddingLength) / SSH_PADDING_MULTIPLE);
  return steps > 0 ? randomInt(steps) * SSH_PADDING_MULTIPLE : 0;
}

interface StreamInit {
  mode: ObfuscatedSshMode;
  readCipher: Rc4;
  writeCipher: Rc4;
  /** Bytes sent ahead of the first write (client: preamble; server: prefix and padding lines). */
  opening: () => Buffer;
  /** Client that sent a prefix: the server's reply starts with a prefix keyed by this keyword. */
  expectPrefixKeyword: string | null;
  paddingLength: number | null;
  prefixSpecName: string | null;
  paddingSeed: Buffer | null;
  initialData: Buffer | null;
}

/**
 * A Duplex carrying the plain SSH stream over an OSSH-obfuscated socket. Once both directions are past NEWKEYS
 * it forwards chunks without copying, and `detach()` hands back the socket itself.
 */
export class ObfuscatedSshStream extends Duplex {
  readonly mode: ObfuscatedSshMode;
  /** The client's own preamble padding, or the server's identification-line padding once sent. */
  paddingLength: number | null;
  /** The prefix spec name the client sent (server side), or null. */
  readonly prefixSpecName: string | null;
  /** Server side: the first 32 bytes of the client's preamble padding, or null if it sent fewer. */
  readonly paddingSeed: Buffer | null;

  private readonly socket: Duplex;
  private readCipher: Rc4 | null;
  private writeCipher: Rc4 | null;
  private opening: (() => Buffer) | null;
  private readState: ReadState;
  private writeState: WriteState = 'opening';
  private legacyPadding = false;
  private socketPaused = false;
  private socketEnded = false;
  private detached = false;
  private pendingWrite: ((error?: Error | null) => void) | null = null;

  // Read side: the server's prefix (client only), lines, then packet framing.
  private readonly expectPrefixKeyword: string | null;
  private readonly prefixHeader = Buffer.alloc(OSSH_PREAMBLE_HEADER_LENGTH);
  private prefixHeaderLength = 0;
  private prefixSearch: TerminatorSearch | null = null;
  private readonly line = Buffer.alloc(SSH_MAX_LINE_LENGTH);
  private lineLength = 0;
  private extraLinesBytes = 0;
  private readonly readPrefix = Buffer.alloc(SSH_PACKET_PREFIX_LENGTH);
  private readPrefixLength = 0;
  private readKeepRemaining = 0;
  private readDropRemaining = 0;
  private readCheckType = false;
  private readIsNewKeys = false;

  // Write side: the identification line, then packet framing.
  private pendingLine: Buffer | null = null;
  private readonly writePrefix = Buffer.alloc(SSH_PACKET_PREFIX_LENGTH);
  private writePrefixLength = 0;
  private writeBodyRemaining = 0;
  private writeExtraPadding = 0;
  private writeCheckType = false;
  private writeIsNewKeys = false;

  private readonly onData = (chunk: Buffer): void => this.handleData(chunk);
  private readonly onEnd = (): void => {
    this.socketEnded = true;
    this.push(null);
  };
  private readonly onError = (error: Error): void => {
    this.destroy(error);
  };
  private readonly onClose = (): void => this.handleClose();
  private readonly onDrain = (): void => {
    const callback = this.pendingWrite;
    this.pendingWrite = null;
    callback?.();
  };

  constructor(socket: Duplex, init: StreamInit) {
    const halfOpen = (socket as { allowHalfOpen?: unknown }).allowHalfOpen;
    super({ allowHalfOpen: typeof halfOpen === 'boolean' ? halfOpen : true });
    this.socket = socket;
    this.mode = init.mode;
    this.readCipher = init.readCipher;
    this.writeCipher = init.writeCipher;
    this.opening = init.opening;
    this.expectPrefixKeyword = init.expectPrefixKeyword;
    this.readState = init.expectPrefixKeyword === null ? 'lines' : 'prefix';
    this.paddingLength = init.paddingLength;
    this.prefixSpecName = init.prefixSpecName;
    this.paddingSeed = init.paddingSeed;
    // Bytes that came with the preamble are parsed before anyone can listen for errors, so bad framing in
    // them throws here and the server refuses the connection instead of handing out a failed stream.
    if (init.initialData !== null && init.initialData.length > 0) this.deobfuscate(init.initialData);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
  }

  /** True once both directions are past NEWKEYS and bytes pass through unchanged. */
  get obfuscationFinished(): boolean {
    return this.readState === 'done' && this.writeState === 'done';
  }

  /**
   * Hands back the underlying socket once obfuscation has finished in both directions, with any bytes this
   * stream had buffered put back in front of it; this stream is then closed without closing the socket.
   */
  detach(): Duplex {
    if (!this.obfuscationFinished) {
      throw new PosternError(
        'BAD_ARGUMENT',
        'cannot detach an OSSH stream before NEWKEYS in both directions',
      );
    }
    if (this.writableLength > 0 || this.pendingWrite !== null) {
      throw new PosternError(
        'BAD_ARGUMENT',
        'cannot detach an OSSH stream with writes pending; wait for drain',
      );
    }
    if (this.destroyed) throw new PosternError('BAD_ARGUMENT', 'the OSSH stream is already closed');
    if (this.readableLength > 0 && this.listenerCount('data') > 0) {
      // read() would also emit the buffered bytes to the 'data' listeners, delivering them twice.
      throw new PosternError(
        'BAD_ARGUMENT',
        'cannot detach a flowing OSSH stream with unread data; pause it first',
      );
    }
    const buffered: Buffer[] = [];
    for (let chunk: unknown = this.read(); chunk !== null; chunk = this.read()) {
      if (Buffer.isBuffer(chunk)) buffered.push(chunk);
    }
    this.detachListeners();
    this.detached = true;
    const socket = this.socket;
    if (buffered.length > 0) socket.unshift(Buffer.concat(buffered));
    if (this.socketPaused) socket.resume();
    this.destroy();
    return socket;
  }

  override _read(): void {
    if (this.socketPaused) {
      this.socketPaused = false;
      this.socket.resume();
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.writeState === 'done') {
      this.forward(chunk, callback);
      return;
    }
    const out: Buffer[] = [];
    try {
      this.transformWrite(chunk, out);
    } catch (e) {
      callback(e instanceof Error ? e : new PosternError('BAD_FRAMING', describeError(e)));
      return;
    }
    this.forwardAll(out, callback);
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    const out: Buffer[] = [];
    try {
      for (const { chunk } of chunks) {
        if (this.writeState === 'done') out.push(chunk);
        else this.transformWrite(chunk, out);
      }
    } catch (e) {
      callback(e instanceof Error ? e : new PosternError('BAD_FRAMING', describeError(e)));
      return;
    }
    this.forwardAll(out, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.detached) {
      this.detachListeners();
      this.socket.destroy();
    }
    const pending = this.pendingWrite;
    this.pendingWrite = null;
    pending?.(error ?? new PosternError('IO', 'the OSSH stream was closed'));
    this.readCipher = null;
    this.writeCipher = null;
    callback(error);
  }

  private detachListeners(): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    this.socket.off('drain', this.onDrain);
  }

  private handleClose(): void {
    const pending = this.pendingWrite;
    this.pendingWrite = null;
    pending?.(new PosternError('IO', 'the connection closed while a write was pending'));
    if (!this.socketEnded || this.readableEnded) {
      this.destroy();
    } else {
      // Let the reader drain what is buffered, then close.
      this.once('end', () => this.destroy());
    }
  }

  private pushChunk(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (!this.push(chunk) && !this.socketPaused) {
      this.socketPaused = true;
      this.socket.pause();
    }
  }

  private forward(chunk: Buffer, callback: (error?: Error | null) => void): void {
    if (this.socket.write(chunk)) callback();
    else this.pendingWrite = callback;
  }

  private forwardAll(out: Buffer[], callback: (error?: Error | null) => void): void {
    if (out.length === 0) {
      callback();
      return;
    }
    if (out.length === 1) {
      this.forward(out[0]!, callback);
      return;
    }
    // Corked writes leave as one writev: no copy, and the handshake's pieces share a segment.
    const socket = this.socket;
    socket.cork();
    let ok = true;
    for (const piece of out) ok = socket.write(piece);
    socket.uncork();
    if (ok) callback();
    else this.pendingWrite = callback;
  }

  // ---- read side ----

  private handleData(chunk: Buffer): void {
    if (this.readState === 'done') {
      this.pushChunk(chunk);
      return;
    }
    try {
      this.deobfuscate(chunk);
    } catch (e) {
      this.destroy(e instanceof Error ? e : new PosternError('BAD_FRAMING', describeError(e)));
    }
  }

  private deobfuscate(chunk: Buffer): void {
    // Socket chunks are ours alone, so they are deciphered in place and pushed as slices, without copying.
    let offset = 0;
    while (offset < chunk.length && this.readState !== 'done') {
      switch (this.readState) {
        case 'prefix':
          offset = this.skipServerPrefix(chunk, offset);
          break;
        case 'lines':
          offset = this.readLines(chunk, offset);
          break;
        case 'packets':
          offset = this.readPackets(chunk, offset);
          break;
      }
    }
    // After NEWKEYS the rest of the chunk is already SSH ciphertext and goes up as is.
    if (offset < chunk.length) this.pushChunk(offset === 0 ? chunk : chunk.subarray(offset));
  }

  private skipServerPrefix(chunk: Buffer, offset: number): number {
    if (this.prefixSearch === null) {
      const n = Math.min(OSSH_PREAMBLE_HEADER_LENGTH - this.prefixHeaderLength, chunk.length - offset);
      chunk.copy(this.prefixHeader, this.prefixHeaderLength, offset, offset + n);
      this.prefixHeaderLength += n;
      if (this.prefixHeaderLength === OSSH_PREAMBLE_HEADER_LENGTH) {
        const terminator = makePrefixTerminator(
          this.expectPrefixKeyword!,
          this.prefixHeader,
          OSSH_SERVER_TO_CLIENT_IV,
        );
        this.prefixSearch = new TerminatorSearch(terminator, OSSH_PREFIX_SEARCH_WINDOW);
      }
      return offset + n;
    }
    const end = this.prefixSearch.push(chunk.subarray(offset));
    if (end === -1) return chunk.length;
    this.prefixSearch = null;
    this.readState = 'lines';
    return offset + end;
  }

  private readLines(chunk: Buffer, offset: number): number {
    const cipher = this.readCipher!;
    const line = this.line;
    while (offset < chunk.length) {
      const b = cipher.xorByte(chunk[offset]!);
      offset++;
      line[this.lineLength++] = b;
      if (b === LF && this.lineLength >= 2 && line[this.lineLength - 2] === CR) {
        const complete = line.subarray(0, this.lineLength);
        this.lineLength = 0;
        if (complete.subarray(0, SSH_IDENTIFICATION_START.length).equals(SSH_IDENTIFICATION_START)) {
          if (complete.includes(LEGACY_PADDING_MARKER)) this.legacyPadding = true;
          this.pushChunk(Buffer.from(complete));
          this.readState = 'packets';
          return offset;
        }
        this.extraLinesBytes += complete.length;
        if (this.extraLinesBytes > OSSH_MAX_EXTRA_LINES_BYTES) {
          throw new PosternError(
            'BAD_FRAMING',
            `more than ${OSSH_MAX_EXTRA_LINES_BYTES} bytes of lines before SSH-`,
          );
        }
      } else if (this.lineLength === SSH_MAX_LINE_LENGTH) {
        throw new PosternError('BAD_FRAMING', `no CRLF within ${SSH_MAX_LINE_LENGTH} bytes of an SSH line`);
      }
    }
    return offset;
  }

  private readPackets(chunk: Buffer, offset: number): number {
    const cipher = this.readCipher!;
    while (offset < chunk.length) {
      if (this.readPrefixLength < SSH_PACKET_PREFIX_LENGTH) {
        const n = Math.min(SSH_PACKET_PREFIX_LENGTH - this.readPrefixLength, chunk.length - offset);
        cipher.xorInPlace(chunk, offset, offset + n);
        chunk.copy(this.readPrefix, this.readPrefixLength, offset, offset + n);
        this.readPrefixLength += n;
        offset += n;
        if (this.readPrefixLength === SSH_PACKET_PREFIX_LENGTH) this.startReadPacket();
        continue;
      }
      if (this.readKeepRemaining > 0) {
        const n = Math.min(this.readKeepRemaining, chunk.length - offset);
        cipher.xorInPlace(chunk, offset, offset + n);
        if (this.readCheckType) {
          this.readIsNewKeys = chunk[offset] === SSH_MSG_NEWKEYS;
          this.readCheckType = false;
        }
        this.pushChunk(chunk.subarray(offset, offset + n));
        offset += n;
        this.readKeepRemaining -= n;
      } else {
        const n = Math.min(this.readDropRemaining, chunk.length - offset);
        cipher.skip(n);
        offset += n;
        this.readDropRemaining -= n;
      }
      if (this.readKeepRemaining === 0 && this.readDropRemaining === 0 && this.endReadPacket()) return offset;
    }
    return offset;
  }

  /**
   * The peer lengthened each packet's padding by a random amount. Trim the excess beyond a multiple of 8 so the
   * SSH layer sees RFC 4253 framing: ssh2 refuses plaintext packets whose length is not a multiple of 8 (the
   * reference's Go SSH accepts them, which is why the reference never trims).
   */
  private startReadPacket(): void {
    const prefix = parsePacketPrefix(this.readPrefix);
    const misalignment = (4 + prefix.packetLength) % SSH_PLAIN_BLOCK_SIZE;
    const trim =
      misalignment !== 0 && prefix.paddingLength - misalignment >= SSH_MIN_PADDING_LENGTH ? misalignment : 0;
    const header = Buffer.allocUnsafe(SSH_PACKET_PREFIX_LENGTH);
    header.writeUInt32BE(prefix.packetLength - trim, 0);
    header[4] = prefix.paddingLength - trim;
    this.pushChunk(header);
    this.readKeepRemaining = prefix.packetLength - 1 - trim;
    this.readDropRemaining = trim;
    this.readCheckType = prefix.payloadLength > 0;
    this.readIsNewKeys = false;
    if (this.readKeepRemaining === 0 && this.readDropRemaining === 0) this.endReadPacket();
  }

  /** Returns true when the packet was NEWKEYS and the rest of the stream passes through. */
  private endReadPacket(): boolean {
    this.readPrefixLength = 0;
    if (!this.readIsNewKeys) return false;
    this.readState = 'done';
    this.readCipher = null;
    if (this.writeState === 'done') this.emit('passthrough');
    return true;
  }

  // ---- write side ----

  private transformWrite(chunk: Buffer, out: Buffer[]): void {
    if (this.writeState === 'opening') {
      const opening = this.opening!();
      this.opening = null;
      if (opening.length > 0) out.push(opening);
      this.writeState = 'line';
    }
    let data = chunk;
    if (this.writeState === 'line') {
      const joined = this.pendingLine === null ? data : Buffer.concat([this.pendingLine, data]);
      const index = joined.indexOf(CRLF);
      const lineEnd = index === -1 ? -1 : index + CRLF.length;
      if (lineEnd === -1 || lineEnd > SSH_MAX_LINE_LENGTH) {
        if (lineEnd > SSH_MAX_LINE_LENGTH || joined.length >= SSH_MAX_LINE_LENGTH) {
          throw new PosternError(
            'BAD_FRAMING',
            `SSH identification line longer than ${SSH_MAX_LINE_LENGTH} bytes`,
          );
        }
        // The caller may reuse its buffer once the write completes, so keep a copy.
        this.pendingLine = Buffer.from(joined);
        return;
      }
      this.pendingLine = null;
      const line = Buffer.from(joined.subarray(0, lineEnd));
      this.writeCipher!.xorInPlace(line);
      out.push(line);
      this.writeState = 'packets';
      data = joined.subarray(lineEnd);
    }
    let offset = 0;
    if (this.writeState === 'packets') offset = this.writePackets(data, out);
    if (this.writeState === 'done' && offset < data.length) out.push(data.subarray(offset));
  }

  private writePackets(data: Buffer, out: Buffer[]): number {
    const cipher = this.writeCipher!;
    let offset = 0;
    while (offset < data.length) {
      if (this.writePrefixLength < SSH_PACKET_PREFIX_LENGTH) {
        const n = Math.min(SSH_PACKET_PREFIX_LENGTH - this.writePrefixLength, data.length - offset);
        data.copy(this.writePrefix, this.writePrefixLength, offset, offset + n);
        this.writePrefixLength += n;
        offset += n;
        if (this.writePrefixLength === SSH_PACKET_PREFIX_LENGTH) {
          const prefix = parsePacketPrefix(this.writePrefix);
          // Only the payload enters SSH's exchange hash, so the padding can be lengthened in flight.
          const extra = chooseExtraPadding(prefix.paddingLength, this.legacyPadding);
          const header = Buffer.allocUnsafe(SSH_PACKET_PREFIX_LENGTH);
          header.writeUInt32BE(prefix.packetLength + extra, 0);
          header[4] = prefix.paddingLength + extra;
          cipher.xorInPlace(header);
          out.push(header);
          this.writeBodyRemaining = prefix.packetLength - 1;
          this.writeExtraPadding = extra;
          this.writeCheckType = prefix.payloadLength > 0;
          this.writeIsNewKeys = false;
          if (this.writeBodyRemaining === 0 && this.endWritePacket(out)) return offset;
        }
        continue;
      }
      const n = Math.min(this.writeBodyRemaining, data.length - offset);
      const body = Buffer.from(data.subarray(offset, offset + n));
      if (this.writeCheckType) {
        this.writeIsNewKeys = body[0] === SSH_MSG_NEWKEYS;
        this.writeCheckType = false;
      }
      cipher.xorInPlace(body);
      out.push(body);
      offset += n;
      this.writeBodyRemaining -= n;
      if (this.writeBodyRemaining === 0 && this.endWritePacket(out)) return offset;
    }
    return offset;
  }

  /** Appends the extra padding; returns true when the packet was NEWKEYS and obfuscation ends. */
  private endWritePacket(out: Buffer[]): boolean {
    if (this.writeExtraPadding > 0) {
      const padding = randomBytes(this.writeExtraPadding);
      this.writeCipher!.xorInPlace(padding);
      out.push(padding);
    }
    this.writePrefixLength = 0;
    if (!this.writeIsNewKeys) return false;
    this.writeState = 'done';
    this.writeCipher = null;
    if (this.readState === 'done') this.emit('passthrough');
    return true;
  }
}

function setNoDelay(socket: Duplex): void {
  // Nagle plus delayed ACKs stalls every small handshake message by about 40 ms.
  if (socket instanceof net.Socket) socket.setNoDelay(true);
}

export interface DialObfuscatedSshOptions {
  obfuscationKeyword: string;
  /** Least preamble padding (32-8192, default 32). */
  minPadding?: number;
  /** Most preamble padding (32-8192, default 8192). */
  maxPadding?: number;
  /** Bytes to send before the preamble; the server then answers with a prefix of its own. */
  prefix?: OsshPrefix;
  /** A fixed seed, only to reproduce test vectors: a real client must let it be random. */
  seed?: Uint8Array;
  /** Fixed preamble padding, only to reproduce test vectors. */
  padding?: Uint8Array;
}

/**
 * Client side: wraps a connected (or connecting) socket. Nothing is sent until the first write, which goes out
 * behind the preamble.
 */
export function dialObfuscatedSsh(socket: Duplex, options: DialObfuscatedSshOptions): ObfuscatedSshStream {
  const preamble = makeClientPreamble({
    keyword: options.obfuscationKeyword,
    minPadding: options.minPadding,
    maxPadding: options.maxPadding,
    prefix: options.prefix,
    seed: options.seed,
    padding: options.padding,
  });
  setNoDelay(socket);
  return new ObfuscatedSshStream(socket, {
    mode: 'client',
    readCipher: preamble.serverToClient,
    writeCipher: preamble.clientToServer,
    opening: () => preamble.bytes,
    expectPrefixKeyword: options.prefix === undefined ? null : options.obfuscationKeyword,
    paddingLength: preamble.paddingLength,
    prefixSpecName: options.prefix?.specName ?? null,
    paddingSeed: null,
    initialData: null,
  });
}

/** A refused connection, reported without the peer's address. */
export interface IrregularTunnelEvent {
  reason: IrregularReason;
  message: string;
  /** For replayed seeds: when it was first seen and whether from the same peer. */
  duplicate: DuplicateSeed | null;
  at: Date;
}

export interface AcceptObfuscatedSshOptions {
  obfuscationKeyword: string;
  /** Replay history shared by all of a server's OSSH listeners; without one, replays are not detected. */
  history?: SeedHistory;
  /** Stamps irregular events. */
  clock?: Clock;
  /**
   * The peer's address, used only in memory (as a keyed hash) to tell a retry from a replay. Defaults to the
   * socket's remote address.
   */
  peerAddress?: string;
  /** Deadline for the preamble, measured from the call; a refused peer is read and ignored until then. */
  timeoutMs?: number;
  /** Look for a prefixed stream when the first bytes are not an OSSH preamble (default true, as the reference). */
  acceptPrefixes?: boolean;
  onIrregular?: (event: IrregularTunnelEvent) => void;
}

function serverStream(socket: Duplex, keyword: string, result: ServerPreamble): ObfuscatedSshStream {
  let stream: ObfuscatedSshStream | null = null;
  const opening = (): Buffer => {
    // Answer a prefixed stream with a prefix of random bytes (what the reference sends for spec names it has
    // no server spec for), then padding lines under the cipher.
    const prefix =
      result.prefixSpecName === null
        ? null
        : makeTerminatedPrefix(keyword, randomBytes(OSSH_PREAMBLE_HEADER_LENGTH), OSSH_SERVER_TO_CLIENT_IV);
    const padding = makeIdentificationLinePadding();
    if (stream !== null) stream.paddingLength = padding.length;
    result.serverToClient.xorInPlace(padding);
    return prefix === null ? padding : Buffer.concat([prefix, padding]);
  };
  stream = new ObfuscatedSshStream(socket, {
    mode: 'server',
    readCipher: result.clientToServer,
    writeCipher: result.serverToClient,
    opening,
    expectPrefixKeyword: null,
    paddingLength: null,
    prefixSpecName: result.prefixSpecName,
    paddingSeed: result.paddingSeed,
    initialData: result.rest,
  });
  return stream;
}

/**
 * Server side: reads the client's preamble and resolves with the stream. A connection whose preamble is refused
 * (bad magic, replayed seed, bad padding length, no prefix terminator) gets no answer: its bytes are read and
 * dropped until the deadline, then it is closed and the promise rejects. Timeouts and early closes reject too.
 */
export function acceptObfuscatedSsh(
  socket: Duplex,
  options: AcceptObfuscatedSshOptions,
): Promise<ObfuscatedSshStream> {
  return new Promise<ObfuscatedSshStream>((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? OSSH_ACCEPT_TIMEOUT_MS;
    let parser: ServerPreambleParser;
    try {
      if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
        throw new PosternError('BAD_ARGUMENT', `timeoutMs must be a positive integer, got ${timeoutMs}`);
      }
      parser = new ServerPreambleParser({
        keyword: options.obfuscationKeyword,
        history: options.history,
        peerAddress: options.peerAddress ?? (socket instanceof net.Socket ? socket.remoteAddress : undefined),
        acceptPrefixes: options.acceptPrefixes,
      });
    } catch (e) {
      socket.destroy();
      reject(e);
      return;
    }
    setNoDelay(socket);
    const clock = options.clock ?? new RealClock();
    let settled = false;
    let refused = false;
    let failure: Error | null = null;

    const report = (reason: IrregularReason, message: string, duplicate: DuplicateSeed | null): void => {
      if (options.onIrregular === undefined) return;
      try {
        options.onIrregular({ reason, message, duplicate, at: clock.now() });
      } catch {
        // A failing reporter must not decide the connection's fate.
      }
    };
    const reportStalledSearch = (): void => {
      if (!refused && parser.searchingForPrefix) {
        report('no-prefix-terminator', 'no prefix terminator or valid magic value', null);
      }
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const onData = (chunk: Buffer): void => {
      if (refused) return;
      let result: ServerPreamble | null;
      try {
        result = parser.push(chunk);
      } catch (e) {
        refused = true;
        failure = e instanceof Error ? e : new PosternError('BAD_PREAMBLE', describeError(e));
        if (e instanceof PreambleRejectedError) report(e.reason, e.message, e.duplicate);
        // Keep reading (and dropping) so the peer learns nothing until the deadline closes the connection.
        socket.resume();
        return;
      }
      if (result === null) return;
      settled = true;
      cleanup();
      try {
        resolve(serverStream(socket, options.obfuscationKeyword, result));
      } catch (e) {
        socket.destroy();
        reject(e);
      }
    };
    const onEnd = (): void => {
      reportStalledSearch();
      failure ??= new PosternError(
        'IO',
        'the peer closed the connection before the OSSH preamble was complete',
      );
      socket.destroy();
    };
    const onError = (error: Error): void => {
      failure ??= new PosternError('IO', `connection error during the OSSH preamble: ${error.message}`);
      socket.destroy();
    };
    const onClose = (): void => {
      cleanup();
      if (settled) return;
      settled = true;
      reject(
        failure ?? new PosternError('IO', 'the connection closed before the OSSH preamble was complete'),
      );
    };
    const onTimeout = (): void => {
      reportStalledSearch();
      failure ??= new PosternError('TIMEOUT', `no OSSH preamble within ${timeoutMs} ms`);
      socket.destroy();
    };
    const timer = setTimeout(onTimeout, timeoutMs);
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}
