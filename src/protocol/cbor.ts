// A small, strict CBOR (RFC 8949) codec for the messages Postern exchanges with psiphon-tunnel-core: packed
// API parameters, handshake responses, packed authorizations. The reference encodes with fxamacker/cbor's
// CTAP2 canonical mode (definite lengths, map keys sorted by their encoded bytes, integers in their shortest
// form, floats always as float64, no tags); `encodeCbor` writes exactly that, so the same value gives the same
// bytes on both sides.
//
// The decoder takes hostile bytes: every length is checked against the bytes that remain before anything is
// allocated, nesting is bounded, text must be valid UTF-8, map keys must be integers or text and appear once,
// and whatever the reference never writes (tags, indefinite lengths, simple values other than
// false/true/null/undefined) is refused. Floats decode to `CborFloat` so that a float and an integer of the
// same value stay distinguishable, as they are to the reference.
import { PosternError } from '../common/errors.ts';

/** fxamacker/cbor's default limit on nested arrays and maps, which the reference's decoder applies. */
export const MAX_CBOR_NESTING_DEPTH = 32;

/** A float64 value; used to force float encoding of an integral number and returned for every decoded float. */
export class CborFloat {
  constructor(readonly value: number) {}
}

export type CborKey = number | bigint | string;
export type CborValue =
  number | bigint | string | Uint8Array | boolean | null | CborFloat | CborValue[] | Map<CborKey, CborValue>;

const MAJOR_UNSIGNED = 0;
const MAJOR_NEGATIVE = 1;
const MAJOR_BYTES = 2;
const MAJOR_TEXT = 3;
const MAJOR_ARRAY = 4;
const MAJOR_MAP = 5;
const MAJOR_TAG = 6;
const MAJOR_SIMPLE = 7;

const SIMPLE_FALSE = 20;
const SIMPLE_TRUE = 21;
const SIMPLE_NULL = 22;
const SIMPLE_UNDEFINED = 23;
const AI_ONE_BYTE = 24;
const AI_TWO_BYTES = 25;
const AI_FOUR_BYTES = 26;
const AI_EIGHT_BYTES = 27;
const AI_INDEFINITE = 31;

const UINT64_MAX = (1n << 64n) - 1n;

function bad(message: string): never {
  throw new PosternError('BAD_CBOR', message);
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

function head(major: number, arg: number | bigint): Buffer {
  const n = BigInt(arg);
  if (n < 0n || n > UINT64_MAX) throw new PosternError('BAD_ARGUMENT', 'CBOR argument out of range');
  const m = major << 5;
  if (n < 24n) return Buffer.of(m | Number(n));
  if (n <= 0xffn) return Buffer.of(m | AI_ONE_BYTE, Number(n));
  if (n <= 0xffffn) {
    const b = Buffer.alloc(3);
    b[0] = m | AI_TWO_BYTES;
    b.writeUInt16BE(Number(n), 1);
    return b;
  }
  if (n <= 0xffffffffn) {
    const b = Buffer.alloc(5);
    b[0] = m | AI_FOUR_BYTES;
    b.writeUInt32BE(Number(n), 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = m | AI_EIGHT_BYTES;
  b.writeBigUInt64BE(n, 1);
  return b;
}

function encodeInteger(n: bigint): Buffer {
  if (n >= 0n) return head(MAJOR_UNSIGNED, n);
  return head(MAJOR_NEGATIVE, -1n - n);
}

function encodeFloat64(v: number): Buffer {
  const b = Buffer.alloc(9);
  b[0] = (MAJOR_SIMPLE << 5) | AI_EIGHT_BYTES;
  b.writeDoubleBE(v, 1);
  return b;
}

function isPlainObject(v: object): v is Record<string, unknown> {
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function encodeInto(value: unknown, out: Buffer[], depth: number): void {
  if (depth > MAX_CBOR_NESTING_DEPTH) {
    throw new PosternError('BAD_ARGUMENT', `value is nested deeper than ${MAX_CBOR_NESTING_DEPTH} levels`);
  }
  if (value === null || value === undefined) {
    out.push(Buffer.of((MAJOR_SIMPLE << 5) | SIMPLE_NULL));
  } else if (typeof value === 'boolean') {
    out.push(Buffer.of((MAJOR_SIMPLE << 5) | (value ? SIMPLE_TRUE : SIMPLE_FALSE)));
  } else if (typeof value === 'number') {
    // Integral numbers are CBOR integers (as Go's int types are); anything else is a float64.
    if (Number.isInteger(value) && Math.abs(value) <= Number.MAX_SAFE_INTEGER)
      out.push(encodeInteger(BigInt(value)));
    else out.push(encodeFloat64(value));
  } else if (typeof value === 'bigint') {
    if (value > UINT64_MAX || value < -1n - UINT64_MAX) {
      throw new PosternError('BAD_ARGUMENT', 'integer does not fit in CBOR');
    }
    out.push(encodeInteger(value));
  } else if (typeof value === 'string') {
    const bytes = Buffer.from(value, 'utf8');
    out.push(head(MAJOR_TEXT, bytes.length), bytes);
  } else if (value instanceof CborFloat) {
    out.push(encodeFloat64(value.value));
  } else if (value instanceof Uint8Array) {
    out.push(head(MAJOR_BYTES, value.length), Buffer.from(value.buffer, value.byteOffset, value.length));
  } else if (Array.isArray(value)) {
    out.push(head(MAJOR_ARRAY, value.length));
    for (const item of value as unknown[]) {
      if (item === undefined) throw new PosternError('BAD_ARGUMENT', 'cannot encode undefined in an array');
      encodeInto(item, out, depth + 1);
    }
  } else if (value instanceof Map || (typeof value === 'object' && isPlainObject(value))) {
    const entries: [unknown, unknown][] =
      value instanceof Map ? [...(value as Map<unknown, unknown>)] : Object.entries(value);
    const encoded: { key: Buffer; value: Buffer[] }[] = [];
    for (const [k, v] of entries) {
      if (v === undefined) continue; // like a Go omitempty field: absent
      if (typeof k !== 'string' && typeof k !== 'number' && typeof k !== 'bigint') {
        throw new PosternError('BAD_ARGUMENT', 'CBOR map keys must be integers or strings');
      }
      if (typeof k === 'number' && !Number.isSafeInteger(k)) {
        throw new PosternError('BAD_ARGUMENT', 'CBOR map number keys must be integers');
      }
      const keyParts: Buffer[] = [];
      encodeInto(k, keyParts, depth + 1);
      const valueParts: Buffer[] = [];
      encodeInto(v, valueParts, depth + 1);
      encoded.push({ key: Buffer.concat(keyParts), value: valueParts });
    }
    // CTAP2 canonical order: bytewise lexical order of the encoded keys.
    encoded.sort((a, b) => Buffer.compare(a.key, b.key));
    for (let i = 1; i < encoded.length; i++) {
      if (encoded[i - 1]!.key.equals(encoded[i]!.key)) {
        throw new PosternError('BAD_ARGUMENT', 'CBOR map has the same key twice');
      }
    }
    out.push(head(MAJOR_MAP, encoded.length));
    for (const e of encoded) out.push(e.key, ...e.value);
  } else {
    throw new PosternError('BAD_ARGUMENT', `cannot encode a value of type ${typeof value} as CBOR`);
  }
}

/**
 * CTAP2-canonical CBOR of a value, byte-identical to fxamacker/cbor's `CTAP2EncOptions` encoding of the
 * corresponding Go value. Accepts numbers (integral → integer, else float64), bigints, strings, byte arrays,
 * booleans, null, `CborFloat`, arrays, Maps and plain objects (properties whose value is undefined are left out).
 */
export function encodeCbor(value: unknown): Buffer {
  const out: Buffer[] = [];
  encodeInto(value, out, 0);
  return Buffer.concat(out);
}

// ---------------------------------------------------------------------------------------------------------
// Decoding

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

class Reader {
  pos = 0;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly view: DataView,
    private readonly maxDepth: number,
  ) {}

  remaining(): number {
    return this.bytes.length - this.pos;
  }

  private need(n: number): void {
    if (this.remaining() < n) bad('CBOR data is truncated');
  }

  private byte(): number {
    this.need(1);
    return this.bytes[this.pos++]!;
  }

  /** The argument of a head whose additional info is `ai`; indefinite lengths and reserved values refused. */
  private argument(ai: number): bigint {
    if (ai < AI_ONE_BYTE) return BigInt(ai);
    switch (ai) {
      case AI_ONE_BYTE:
        return BigInt(this.byte());
      case AI_TWO_BYTES: {
        this.need(2);
        const v = this.view.getUint16(this.pos);
        this.pos += 2;
        return BigInt(v);
      }
      case AI_FOUR_BYTES: {
        this.need(4);
        const v = this.view.getUint32(this.pos);
        this.pos += 4;
        return BigInt(v);
      }
      case AI_EIGHT_BYTES: {
        this.need(8);
        const v = this.view.getBigUint64(this.pos);
        this.pos += 8;
        return v;
      }
      case AI_INDEFINITE:
        return bad('indefinite-length CBOR items are not accepted');
      default:
        return bad(`reserved CBOR additional information ${ai}`);
    }
  }

  /** A length that must fit in what remains, `unit` bytes at least per element. */
  private length(ai: number, unit: number): number {
    const n = this.argument(ai);
    if (n > BigInt(Math.floor(this.remaining() / unit))) bad('CBOR length is longer than the data');
    return Number(n);
  }

  value(depth: number): CborValue {
    const initial = this.byte();
    const major = initial >> 5;
    const ai = initial & 0x1f;
    switch (major) {
      case MAJOR_UNSIGNED: {
        const n = this.argument(ai);
        return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
      }
      case MAJOR_NEGATIVE: {
        const n = -1n - this.argument(ai);
        return n >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(n) : n;
      }
      case MAJOR_BYTES: {
        const len = this.length(ai, 1);
        const out = Buffer.from(this.bytes.subarray(this.pos, this.pos + len));
        this.pos += len;
        return out;
      }
      case MAJOR_TEXT: {
        const len = this.length(ai, 1);
        const raw = this.bytes.subarray(this.pos, this.pos + len);
        this.pos += len;
        try {
          return utf8.decode(raw);
        } catch {
          return bad('CBOR text string is not valid UTF-8');
        }
      }
      case MAJOR_ARRAY: {
        if (depth >= this.maxDepth) bad(`CBOR data is nested deeper than ${this.maxDepth} levels`);
        const len = this.length(ai, 1);
        const out: CborValue[] = [];
        for (let i = 0; i < len; i++) out.push(this.value(depth + 1));
        return out;
      }
      case MAJOR_MAP: {
        if (depth >= this.maxDepth) bad(`CBOR data is nested deeper than ${this.maxDepth} levels`);
        const len = this.length(ai, 2);
        const out = new Map<CborKey, CborValue>();
        for (let i = 0; i < len; i++) {
          const key = this.value(depth + 1);
          if (typeof key !== 'number' && typeof key !== 'bigint' && typeof key !== 'string') {
            bad('CBOR map keys must be integers or text');
          }
          if (out.has(key)) bad('CBOR map has the same key twice');
          out.set(key, this.value(depth + 1));
        }
        return out;
      }
      case MAJOR_TAG:
        return bad('CBOR tags are not accepted');
      default:
        return this.simple(ai);
    }
  }

  private simple(ai: number): CborValue {
    switch (ai) {
      case SIMPLE_FALSE:
        return false;
      case SIMPLE_TRUE:
        return true;
      case SIMPLE_NULL:
      case SIMPLE_UNDEFINED:
        return null;
      case AI_TWO_BYTES: {
        this.need(2);
        const v = halfToNumber(this.view.getUint16(this.pos));
        this.pos += 2;
        return new CborFloat(v);
      }
      case AI_FOUR_BYTES: {
        this.need(4);
        const v = this.view.getFloat32(this.pos);
        this.pos += 4;
        return new CborFloat(v);
      }
      case AI_EIGHT_BYTES: {
        this.need(8);
        const v = this.view.getFloat64(this.pos);
        this.pos += 8;
        return new CborFloat(v);
      }
      case AI_INDEFINITE:
        return bad('unexpected CBOR break');
      default:
        return bad(`CBOR simple value ${ai} is not accepted`);
    }
  }
}

export interface CborDecodeOptions {
  /** Nesting limit for arrays and maps; default MAX_CBOR_NESTING_DEPTH. */
  maxDepth?: number;
}

/**
 * Decodes exactly one CBOR item that fills `bytes`. Integers come back as numbers when they are safe integers
 * and as bigints otherwise, floats as `CborFloat`, byte strings as Buffers, maps as Maps. Throws BAD_CBOR.
 */
export function decodeCbor(bytes: Uint8Array, options: CborDecodeOptions = {}): CborValue {
  const maxDepth = options.maxDepth ?? MAX_CBOR_NESTING_DEPTH;
  const reader = new Reader(bytes, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), maxDepth);
  const value = reader.value(0);
  if (reader.remaining() !== 0) bad('CBOR data has trailing bytes');
  return value;
}
