// Two changes to ssh2 1.17's per-connection cipher objects, installed on each Protocol instance (never on the
// shared module), each checked against ssh2's own behaviour before it is used:
//
// 1. Inbound packet size. ssh2's deciphers refuse any packet longer than 35000 bytes, the RFC 4253 minimum.
//    Go's crypto/ssh and OpenSSH accept 256 KiB, and Psiphon relies on it: a psiphon-status request carries up
//    to 64 KiB of persistent stats, a handshake reply can carry tactics and discovery entries. For ssh2's
//    native-binding deciphers (AES-GCM, ChaCha20-Poly1305, CTR/CBC + HMAC) we replace `decrypt` with the same
//    state machine accepting up to SSH_MAX_PACKET_LENGTH; it keeps using the instance's native context.
// 2. Padding. ssh2 calls crypto.randomFillSync for the 4-35 padding bytes of every packet, which measured 13%
//    of a busy server's CPU. We replace `allocPacket` with one that lays the packet out exactly as ssh2 does
//    (learnt by probing the original for every length residue) and takes padding from a random pool that is
//    refilled from the CSPRNG in 64 KiB steps; pool bytes are used once.
//
// Protocol swaps its cipher objects at every key exchange, so the hooks are property setters on the instance.

import { randomFillSync } from 'node:crypto';
import type Protocol from 'ssh2/lib/protocol/Protocol.js';
import ssh2Crypto from 'ssh2/lib/protocol/crypto.js';
import { SSH_MAX_PACKET_LENGTH } from './wire.ts';

/** Size of the random pool for packet padding; one refill serves thousands of packets. */
export const PADDING_POOL_SIZE = 64 * 1024;
/** Payload lengths probed to learn a cipher's packet layout: two periods of the largest block size (16). */
const LAYOUT_PROBE_LENGTHS = 32;
const LAYOUT_PERIOD = 16;

/** Whether ssh2's native crypto binding loaded: without it throughput halves and the tuning below is skipped. */
export const ssh2BindingAvailable: boolean = ssh2Crypto.bindingAvailable;

/** Random bytes handed out once each, refilled from the CSPRNG when used up. */
export class RandomPool {
  private readonly pool: Buffer;
  private pos: number;
  constructor(size = PADDING_POOL_SIZE) {
    this.pool = Buffer.allocUnsafe(size);
    this.pos = size;
  }
  fill(dst: Buffer, offset: number, length: number): void {
    if (length > this.pool.length) {
      randomFillSync(dst, offset, length);
      return;
    }
    if (this.pos + length > this.pool.length) {
      randomFillSync(this.pool);
      this.pos = 0;
    }
    this.pool.copy(dst, offset, this.pos, this.pos + length);
    // Never hand the same bytes out twice.
    this.pos += length;
  }
}

const paddingPool = new RandomPool();

interface PacketLayout {
  /** Padding length by payload length modulo LAYOUT_PERIOD. */
  padding: number[];
  /** Bytes reserved after the padding (MAC or AEAD tag), written by encrypt(). */
  trailer: number;
}

/**
 * Learns how `allocPacket` lays out packets: [uint32 packet_length][byte padding_length][payload][padding]
 * [trailer]. Returns null when the layout is not the one we can reproduce.
 */
export function probePacketLayout(allocPacket: (payloadLen: number) => Buffer): PacketLayout | null {
  const padding: number[] = [];
  let trailer = -1;
  for (let len = 0; len < LAYOUT_PROBE_LENGTHS; len++) {
    const packet = allocPacket(len);
    if (packet.length < 5) return null;
    const pad = packet[4]!;
    const packetLength = packet.readUInt32BE(0);
    if (pad < 4 || packetLength !== 1 + len + pad) return null;
    const extra = packet.length - (4 + packetLength);
    if (extra < 0 || (trailer !== -1 && extra !== trailer)) return null;
    trailer = extra;
    if (len < LAYOUT_PERIOD) padding.push(pad);
    else if (padding[len - LAYOUT_PERIOD] !== pad) return null;
  }
  return { padding, trailer };
}

/** An allocPacket equivalent to the probed one, with padding from the pool. */
export function makePooledAllocPacket(layout: PacketLayout): (payloadLen: number) => Buffer {
  const { padding, trailer } = layout;
  return (payloadLen: number): Buffer => {
    const pad = padding[payloadLen % LAYOUT_PERIOD]!;
    const packet = Buffer.allocUnsafe(5 + payloadLen + pad + trailer);
    packet.writeUInt32BE(1 + payloadLen + pad, 0);
    packet[4] = pad;
    paddingPool.fill(packet, 5 + payloadLen, pad);
    return packet;
  };
}

interface CipherLike {
  allocPacket: (payloadLen: number) => Buffer;
}

function isCipherLike(v: unknown): v is CipherLike {
  return (
    typeof v === 'object' && v !== null && typeof (v as { allocPacket?: unknown }).allocPacket === 'function'
  );
}

/** Replaces a cipher object's allocPacket with the pooled one when its layout is understood. */
export function tuneCipher(cipher: unknown): boolean {
  if (!isCipherLike(cipher)) return false;
  const original = cipher.allocPacket.bind(cipher);
  const layout = probePacketLayout(original);
  if (!layout) return false;
  cipher.allocPacket = makePooledAllocPacket(layout);
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Deciphers. Field names and the state machines follow ssh2 1.17's lib/protocol/crypto.js; only the length
// limit differs. Each is installed only when the instance has exactly the fields it uses.

type PayloadHandler = (payload: Buffer) => unknown;

interface GcmDecipherState {
  inSeqno: number;
  _onPayload: PayloadHandler;
  _instance: { decrypt(packet: Uint8Array, len: number, tag: Buffer): void };
  _len: number;
  _lenBytes: number;
  _packet: Uint8Array | null;
  _pktLen: number;
  _tag: Buffer;
  _tagPos: number;
}

interface ChaChaDecipherState {
  inSeqno: number;
  _onPayload: PayloadHandler;
  _instance: {
    decryptLen(lenBuf: Buffer, seqno: number): number;
    decrypt(packet: Uint8Array, mac: Buffer, seqno: number): void;
  };
  _len: number;
  _lenBuf: Buffer;
  _lenPos: number;
  _packet: Uint8Array | null;
  _pktLen: number;
  _mac: Buffer;
  _macPos: number;
}

interface GenericDecipherState {
  inSeqno: number;
  _onPayload: PayloadHandler;
  _instance: {
    decryptBlock(block: Buffer): void;
    decrypt(packet: Uint8Array, seqno: number, block: Buffer, mac: Buffer): void;
  };
  _block: Buffer;
  _blockPos: number;
  _len: number;
  _packet: Uint8Array | null;
  _pktLen: number;
  _mac: Buffer;
  _macPos: number;
  _macActualLen: number;
  _macETM: boolean;
}

function view(data: Uint8Array, start: number, length: number): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset + start, length);
}

function payloadOf(packet: Uint8Array): Buffer {
  // [padding_length][payload][padding]
  return Buffer.from(packet.buffer, packet.byteOffset + 1, packet.length - packet[0]! - 1);
}

function badLength(len: number): Error {
  return new Error(`Bad packet length: ${len}`);
}

/** The payload handler's return value tells the caller where to resume, as in ssh2. */
function afterPayload(ret: unknown, p: number): number | undefined {
  if (ret === undefined) return undefined;
  return ret === false ? p : (ret as number);
}

function decryptGcm(this: GcmDecipherState, data: Buffer, p: number, dataLen: number): number | undefined {
  while (p < dataLen) {
    if (this._lenBytes < 4) {
      let nb = Math.min(4 - this._lenBytes, dataLen - p);
      this._lenBytes += nb;
      while (nb--) this._len = this._len * 256 + data[p++]!;
      if (this._lenBytes < 4) return undefined;
      if (this._len > SSH_MAX_PACKET_LENGTH || this._len < 16 || (this._len & 15) !== 0)
        throw badLength(this._len);
    }
    if (this._pktLen < this._len) {
      if (p >= dataLen) return undefined;
      const nb = Math.min(this._len - this._pktLen, dataLen - p);
      const encrypted = p !== 0 || nb !== dataLen ? view(data, p, nb) : data;
      if (nb === this._len) {
        this._packet = encrypted;
      } else {
        if (!this._packet) this._packet = Buffer.allocUnsafe(this._len);
        this._packet.set(encrypted, this._pktLen);
      }
      p += nb;
      this._pktLen += nb;
      if (this._pktLen < this._len || p >= dataLen) return undefined;
    }
    {
      const nb = Math.min(16 - this._tagPos, dataLen - p);
      this._tag.set(p !== 0 || nb !== dataLen ? view(data, p, nb) : data, this._tagPos);
      p += nb;
      this._tagPos += nb;
      if (this._tagPos < 16) return undefined;
    }
    const packet = this._packet!;
    this._instance.decrypt(packet, this._len, this._tag);
    const payload = payloadOf(packet);
    this.inSeqno = (this.inSeqno + 1) >>> 0;
    this._len = 0;
    this._lenBytes = 0;
    this._packet = null;
    this._pktLen = 0;
    this._tagPos = 0;
    const next = afterPayload(this._onPayload(payload), p);
    if (next !== undefined) return next;
  }
  return undefined;
}

function decryptChaCha(
  this: ChaChaDecipherState,
  data: Buffer,
  p: number,
  dataLen: number,
): number | undefined {
  while (p < dataLen) {
    if (this._lenPos < 4) {
      let nb = Math.min(4 - this._lenPos, dataLen - p);
      while (nb--) this._lenBuf[this._lenPos++] = data[p++]!;
      if (this._lenPos < 4) return undefined;
      this._len = this._instance.decryptLen(this._lenBuf, this.inSeqno);
      if (this._len > SSH_MAX_PACKET_LENGTH || this._len < 8 || (this._len & 7) !== 0)
        throw badLength(this._len);
      if (p >= dataLen) return undefined;
    }
    if (this._pktLen < this._len) {
      const nb = Math.min(this._len - this._pktLen, dataLen - p);
      const encrypted = p !== 0 || nb !== dataLen ? view(data, p, nb) : data;
      if (nb === this._len) {
        this._packet = encrypted;
      } else {
        if (!this._packet) this._packet = Buffer.allocUnsafe(this._len);
        this._packet.set(encrypted, this._pktLen);
      }
      p += nb;
      this._pktLen += nb;
      if (this._pktLen < this._len || p >= dataLen) return undefined;
    }
    {
      const nb = Math.min(16 - this._macPos, dataLen - p);
      this._mac.set(p !== 0 || nb !== dataLen ? view(data, p, nb) : data, this._macPos);
      p += nb;
      this._macPos += nb;
      if (this._macPos < 16) return undefined;
    }
    const packet = this._packet!;
    this._instance.decrypt(packet, this._mac, this.inSeqno);
    const payload = payloadOf(packet);
    this.inSeqno = (this.inSeqno + 1) >>> 0;
    this._len = 0;
    this._lenPos = 0;
    this._packet = null;
    this._pktLen = 0;
    this._macPos = 0;
    const next = afterPayload(this._onPayload(payload), p);
    if (next !== undefined) return next;
  }
  return undefined;
}

function decryptGeneric(
  this: GenericDecipherState,
  data: Buffer,
  p: number,
  dataLen: number,
): number | undefined {
  while (p < dataLen) {
    if (this._blockPos < this._block.length) {
      const nb = Math.min(this._block.length - this._blockPos, dataLen - p);
      this._block.set(
        p !== 0 || nb !== dataLen || nb < data.length ? view(data, p, nb) : data,
        this._blockPos,
      );
      p += nb;
      this._blockPos += nb;
      if (this._blockPos < this._block.length) return undefined;
      let need: number;
      if (this._macETM) {
        this._len = need = this._block.readUInt32BE(0);
      } else {
        // The first block is encrypted: decrypt it to learn the length.
        this._instance.decryptBlock(this._block);
        this._len = this._block.readUInt32BE(0);
        need = 4 + this._len - this._block.length;
      }
      if (this._len > SSH_MAX_PACKET_LENGTH || this._len < 5 || (need & (this._block.length - 1)) !== 0) {
        throw badLength(this._len);
      }
      if (!this._macETM) {
        this._pktLen = this._block.length - 4;
        if (this._pktLen) {
          this._packet = Buffer.allocUnsafe(this._len);
          this._packet.set(view(this._block, 4, this._pktLen), 0);
        }
      }
      if (p >= dataLen) return undefined;
    }
    if (this._pktLen < this._len) {
      const nb = Math.min(this._len - this._pktLen, dataLen - p);
      const encrypted = p !== 0 || nb !== dataLen ? view(data, p, nb) : data;
      if (nb === this._len) {
        this._packet = encrypted;
      } else {
        if (!this._packet) this._packet = Buffer.allocUnsafe(this._len);
        this._packet.set(encrypted, this._pktLen);
      }
      p += nb;
      this._pktLen += nb;
      if (this._pktLen < this._len || p >= dataLen) return undefined;
    }
    {
      const nb = Math.min(this._macActualLen - this._macPos, dataLen - p);
      this._mac.set(p !== 0 || nb !== dataLen ? view(data, p, nb) : data, this._macPos);
      p += nb;
      this._macPos += nb;
      if (this._macPos < this._macActualLen) return undefined;
    }
    const packet = this._packet!;
    this._instance.decrypt(packet, this.inSeqno, this._block, this._mac);
    const payload = payloadOf(packet);
    this.inSeqno = (this.inSeqno + 1) >>> 0;
    this._blockPos = 0;
    this._len = 0;
    this._packet = null;
    this._pktLen = 0;
    this._macPos = 0;
    const next = afterPayload(this._onPayload(payload), p);
    if (next !== undefined) return next;
  }
  return undefined;
}

type Fields = Record<string, 'number' | 'buffer' | 'object' | 'function' | 'boolean'>;

function hasFields(v: object, fields: Fields): boolean {
  const rec = v as Record<string, unknown>;
  for (const [name, kind] of Object.entries(fields)) {
    const value = rec[name];
    const ok =
      kind === 'buffer'
        ? Buffer.isBuffer(value)
        : kind === 'object'
          ? typeof value === 'object' && value !== null
          : typeof value === kind;
    if (!ok) return false;
  }
  return true;
}

const COMMON_FIELDS: Fields = {
  inSeqno: 'number',
  _onPayload: 'function',
  _instance: 'object',
  _len: 'number',
};
const DECIPHERS: Record<
  string,
  { fields: Fields; decrypt: (data: Buffer, p: number, len: number) => unknown }
> = {
  AESGCMDecipherBinding: {
    fields: { ...COMMON_FIELDS, _lenBytes: 'number', _pktLen: 'number', _tag: 'buffer', _tagPos: 'number' },
    decrypt: decryptGcm as (data: Buffer, p: number, len: number) => unknown,
  },
  ChaChaPolyDecipherBinding: {
    fields: {
      ...COMMON_FIELDS,
      _lenBuf: 'buffer',
      _lenPos: 'number',
      _pktLen: 'number',
      _mac: 'buffer',
      _macPos: 'number',
    },
    decrypt: decryptChaCha as (data: Buffer, p: number, len: number) => unknown,
  },
  GenericDecipherBinding: {
    fields: {
      ...COMMON_FIELDS,
      _block: 'buffer',
      _blockPos: 'number',
      _pktLen: 'number',
      _mac: 'buffer',
      _macPos: 'number',
      _macActualLen: 'number',
      _macETM: 'boolean',
    },
    decrypt: decryptGeneric as (data: Buffer, p: number, len: number) => unknown,
  },
};

/** Lets a decipher accept packets up to SSH_MAX_PACKET_LENGTH; false when its class is not one we know. */
export function tuneDecipher(decipher: unknown): boolean {
  if (typeof decipher !== 'object' || decipher === null) return false;
  const spec = DECIPHERS[decipher.constructor.name];
  if (!spec || !hasFields(decipher, spec.fields)) return false;
  (decipher as { decrypt: unknown }).decrypt = spec.decrypt;
  return true;
}

export interface TuningReport {
  /** Cipher objects whose padding now comes from the pool. */
  ciphersTuned: number;
  /** Decipher objects that now accept packets up to SSH_MAX_PACKET_LENGTH. */
  deciphersTuned: number;
  /** Cipher objects seen since the hooks were installed (tuned or not). */
  ciphersSeen: number;
  deciphersSeen: number;
}

/**
 * Hooks the instance's cipher slots so every cipher object installed by a key exchange is tuned; `onDecipher`
 * also sees every decipher object as it is installed.
 */
export function tuneProtocol(proto: Protocol, onDecipher?: (decipher: unknown) => void): TuningReport {
  const report: TuningReport = { ciphersTuned: 0, deciphersTuned: 0, ciphersSeen: 0, deciphersSeen: 0 };
  let cipher: unknown = proto._cipher;
  let decipher: unknown = proto._decipher;
  Object.defineProperty(proto, '_cipher', {
    configurable: true,
    enumerable: true,
    get: () => cipher,
    set: (value: unknown) => {
      cipher = value;
      report.ciphersSeen++;
      if (tuneCipher(value)) report.ciphersTuned++;
    },
  });
  Object.defineProperty(proto, '_decipher', {
    configurable: true,
    enumerable: true,
    get: () => decipher,
    set: (value: unknown) => {
      decipher = value;
      report.deciphersSeen++;
      if (tuneDecipher(value)) report.deciphersTuned++;
      onDecipher?.(value);
    },
  });
  return report;
}
