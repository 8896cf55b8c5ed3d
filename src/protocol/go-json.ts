// JSON exactly as Go's encoding/json reads and writes it, for data whose bytes are signed: a server entry's
// signature covers Go's `json.Marshal` of the entry after `json.Unmarshal` into `map[string]interface{}`, and
// the verifier re-marshals what it decoded, so both sides must agree byte for byte.
//
// What that means here:
// - Marshal: object keys sorted by their UTF-8 bytes, compact, numbers formatted as Go formats a float64
//   (the ES number-to-string rule, so `String(n)` except that Go keeps the sign of -0), strings escaped as Go
//   1.22+ does (`\b \f \n \r \t`, other controls as `\u00xx`, `<`, `>`, `&`, U+2028, U+2029 as `\uXXXX`).
// - Unmarshal: every number becomes a float64 (a JS number); numbers out of float64 range are an error; bytes
//   that are not UTF-8 and `\u` escapes of unpaired surrogates become U+FFFD, one per bad byte as Go does;
//   later duplicate keys win; nesting deeper than Go's limit is an error. JS strings with unpaired surrogates
//   are marshalled with U+FFFD in their place, which is what Go holds after decoding the same text.
// Both directions are iterative so hostile nesting cannot overflow the call stack.
import { PosternError } from '../common/errors.ts';

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** Go's encoding/json scanner rejects input nested deeper than this (arrays and objects together). */
export const MAX_JSON_NESTING_DEPTH = 10000;

const HEX_DIGITS = '0123456789abcdef';

// Characters Go escapes in a string, plus surrogates (which need a look at their neighbour).
const NEEDS_ESCAPE = /[\u0000-\u001f"\\<>&\u2028\u2029\ud800-\udfff]/;

/** Go's `json.Marshal` of a string (HTML-safe escaping, Go 1.22+ control escapes). */
export function goJsonQuote(s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return `"${s}"`;
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let rep: string | undefined;
    if (c < 0x20) {
      switch (c) {
        case 0x08:
          rep = '\\b';
          break;
        case 0x0c:
          rep = '\\f';
          break;
        case 0x0a:
          rep = '\\n';
          break;
        case 0x0d:
          rep = '\\r';
          break;
        case 0x09:
          rep = '\\t';
          break;
        default:
          rep = `\\u00${HEX_DIGITS[c >> 4]}${HEX_DIGITS[c & 0xf]}`;
      }
    } else if (c === 0x22) rep = '\\"';
    else if (c === 0x5c) rep = '\\\\';
    else if (c === 0x3c) rep = '\\u003c';
    else if (c === 0x3e) rep = '\\u003e';
    else if (c === 0x26) rep = '\\u0026';
    else if (c === 0x2028) rep = '\\u2028';
    else if (c === 0x2029) rep = '\\u2029';
    else if (c >= 0xd800 && c <= 0xdbff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++; // a valid pair: copied as is
        continue;
      }
      rep = '\ufffd';
    } else if (c >= 0xdc00 && c <= 0xdfff) rep = '\ufffd';
    if (rep !== undefined) {
      out += s.slice(start, i) + rep;
      start = i + 1;
    }
  }
  return out + s.slice(start) + '"';
}

/** Replace unpaired surrogates by U+FFFD: the string Go would hold after decoding the same JSON text. */
export function toWellFormedString(s: string): string {
  if (!/[\ud800-\udfff]/.test(s)) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (d >= 0xdc00 && d <= 0xdfff) {
        out += s[i]! + s[i + 1]!;
        i++;
        continue;
      }
      out += '\ufffd';
    } else if (c >= 0xdc00 && c <= 0xdfff) out += '\ufffd';
    else out += s[i]!;
  }
  return out;
}

/** Go's encoding/json formatting of a float64. */
export function goJsonFormatNumber(n: number): string {
  if (!Number.isFinite(n)) {
    throw new PosternError('BAD_JSON', `JSON cannot represent the number ${String(n)}`);
  }
  // Go formats like ES Number::toString ('e' below 1e-6 and from 1e21, shortest digits, "e-7" not "e-07"),
  // but prints negative zero as "-0" where ES prints "0".
  if (n === 0 && Object.is(n, -0)) return '-0';
  return String(n);
}

function isPlainObject(v: object): boolean {
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function compareUtf8(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

type MarshalFrame =
  | { kind: 'array'; items: readonly unknown[]; next: number }
  | { kind: 'object'; entries: Array<[string, unknown]>; next: number };

function objectEntriesSorted(obj: Record<string, unknown>): Array<[string, unknown]> {
  const keyed: Array<{ key: string; bytes: Buffer; value: unknown }> = [];
  for (const rawKey of Object.keys(obj)) {
    const value = obj[rawKey];
    // An absent optional property: Go's map simply would not have the key.
    if (value === undefined) continue;
    const key = toWellFormedString(rawKey);
    keyed.push({ key, bytes: Buffer.from(key, 'utf8'), value });
  }
  keyed.sort((a, b) => compareUtf8(a.bytes, b.bytes));
  for (let i = 1; i < keyed.length; i++) {
    if (keyed[i]!.key === keyed[i - 1]!.key) {
      // Only possible when two keys differ in unpaired surrogates; a Go map could not hold both.
      throw new PosternError(
        'BAD_JSON',
        'two object keys become the same key once unpaired surrogates are replaced',
      );
    }
  }
  return keyed.map((k) => [k.key, k.value]);
}

/**
 * Exactly the text Go's `json.Marshal` writes for the same value held as `map[string]interface{}` /
 * `[]interface{}` / float64 / string / bool / nil. Accepts plain objects, arrays, finite numbers, strings,
 * booleans and null; object properties whose value is `undefined` are left out; anything else throws BAD_JSON.
 */
export function goJsonMarshal(value: unknown): string {
  const out: string[] = [];
  const stack: MarshalFrame[] = [];
  let current: unknown = value;
  let pending = true;
  for (;;) {
    if (pending) {
      pending = false;
      const v = current;
      if (v === null) out.push('null');
      else if (typeof v === 'boolean') out.push(v ? 'true' : 'false');
      else if (typeof v === 'number') out.push(goJsonFormatNumber(v));
      else if (typeof v === 'string') out.push(goJsonQuote(v));
      else if (typeof v === 'object') {
        if (stack.length >= MAX_JSON_NESTING_DEPTH) {
          throw new PosternError('BAD_JSON', `value is nested deeper than ${MAX_JSON_NESTING_DEPTH} levels`);
        }
        if (Array.isArray(v)) {
          out.push('[');
          stack.push({ kind: 'array', items: v, next: 0 });
        } else if (isPlainObject(v)) {
          out.push('{');
          stack.push({ kind: 'object', entries: objectEntriesSorted(v as Record<string, unknown>), next: 0 });
        } else {
          throw new PosternError('BAD_JSON', `cannot marshal a ${v.constructor?.name ?? 'non-plain'} object`);
        }
      } else {
        throw new PosternError('BAD_JSON', `cannot marshal a value of type ${typeof v}`);
      }
    }
    const top = stack[stack.length - 1];
    if (top === undefined) break;
    if (top.kind === 'array') {
      if (top.next < top.items.length) {
        if (top.next > 0) out.push(',');
        if (!(top.next in top.items)) throw new PosternError('BAD_JSON', 'cannot marshal a sparse array');
        current = top.items[top.next++];
        if (current === undefined) throw new PosternError('BAD_JSON', 'cannot marshal undefined in an array');
        pending = true;
      } else {
        out.push(']');
        stack.pop();
      }
    } else if (top.next < top.entries.length) {
      const [key, v] = top.entries[top.next]!;
      if (top.next > 0) out.push(',');
      top.next++;
      out.push(goJsonQuote(key), ':');
      current = v;
      pending = true;
    } else {
      out.push('}');
      stack.pop();
    }
  }
  return out.join('');
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Decode UTF-8 the way Go's `utf8.DecodeRune` walks it: each byte that does not start a valid, shortest-form,
 * non-surrogate sequence becomes one U+FFFD (WHATWG decoders would merge some of these).
 */
export function decodeUtf8LikeGo(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    // fall through to the byte-by-byte walk
  }
  const parts: string[] = [];
  const codes: number[] = [];
  const flush = (): void => {
    parts.push(String.fromCodePoint(...codes));
    codes.length = 0;
  };
  const cont = (i: number, lo = 0x80, hi = 0xbf): number => {
    const b = i < bytes.length ? bytes[i]! : -1;
    return b >= lo && b <= hi ? b & 0x3f : -1;
  };
  let i = 0;
  while (i < bytes.length) {
    const b0 = bytes[i]!;
    let cp = -1;
    let size = 1;
    if (b0 < 0x80) {
      cp = b0;
    } else if (b0 >= 0xc2 && b0 <= 0xdf) {
      const c1 = cont(i + 1);
      if (c1 >= 0) [cp, size] = [((b0 & 0x1f) << 6) | c1, 2];
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      const c1 = cont(i + 1, b0 === 0xe0 ? 0xa0 : 0x80, b0 === 0xed ? 0x9f : 0xbf);
      const c2 = c1 >= 0 ? cont(i + 2) : -1;
      if (c2 >= 0) [cp, size] = [((b0 & 0x0f) << 12) | (c1 << 6) | c2, 3];
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      const c1 = cont(i + 1, b0 === 0xf0 ? 0x90 : 0x80, b0 === 0xf4 ? 0x8f : 0xbf);
      const c2 = c1 >= 0 ? cont(i + 2) : -1;
      const c3 = c2 >= 0 ? cont(i + 3) : -1;
      if (c3 >= 0) [cp, size] = [((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, 4];
    }
    codes.push(cp < 0 ? 0xfffd : cp);
    if (codes.length >= 4096) flush();
    i += size;
  }
  flush();
  return parts.join('');
}

type ParseFrame = { kind: 'array'; value: JsonValue[] } | { kind: 'object'; value: JsonObject; key: string };

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

function setOwn(obj: JsonObject, key: string, value: JsonValue): void {
  // defineProperty, not assignment, so a key such as "__proto__" is stored as data like any other.
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

function hex4(s: string, i: number): number {
  if (i + 4 > s.length) return -1;
  let v = 0;
  for (let j = i; j < i + 4; j++) {
    const c = s.charCodeAt(j);
    let d: number;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x57;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x37;
    else return -1;
    v = (v << 4) | d;
  }
  return v;
}

/**
 * Go's `json.Unmarshal` into `interface{}`: the same JSON grammar, numbers as float64, Go's handling of bad
 * UTF-8 and unpaired surrogates, last duplicate key wins, Go's nesting limit. Throws BAD_JSON.
 */
export function goJsonUnmarshal(input: Uint8Array | string): JsonValue {
  const s = typeof input === 'string' ? toWellFormedString(input) : decodeUtf8LikeGo(input);
  let i = 0;
  function fail(what: string): never {
    const near = i < s.length ? `character ${JSON.stringify(s[i])}` : 'end of input';
    throw new PosternError('BAD_JSON', `invalid JSON: ${what} at offset ${i} (${near})`);
  }
  const skipWs = (): void => {
    for (;;) {
      const c = s.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else return;
    }
  };
  const parseString = (): string => {
    // s[i] is the opening quote
    i++;
    let out = '';
    let start = i;
    for (;;) {
      if (i >= s.length) fail('unterminated string');
      const c = s.charCodeAt(i);
      if (c === 0x22) {
        out += s.slice(start, i);
        i++;
        return out;
      }
      if (c < 0x20) fail('control character in string');
      if (c !== 0x5c) {
        i++;
        continue;
      }
      out += s.slice(start, i);
      const e = s[i + 1];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          i += 2;
          break;
        case 'b':
          out += '\b';
          i += 2;
          break;
        case 'f':
          out += '\f';
          i += 2;
          break;
        case 'n':
          out += '\n';
          i += 2;
          break;
        case 'r':
          out += '\r';
          i += 2;
          break;
        case 't':
          out += '\t';
          i += 2;
          break;
        case 'u': {
          const u = hex4(s, i + 2);
          if (u < 0) fail('bad \\u escape');
          i += 6;
          if (u >= 0xd800 && u <= 0xdfff) {
            // Go: a high surrogate followed by an escaped low one is a pair; anything else is U+FFFD
            // and the following escape is read on its own.
            const low = s[i] === '\\' && s[i + 1] === 'u' ? hex4(s, i + 2) : -1;
            if (u <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
              out += String.fromCharCode(u, low);
              i += 6;
            } else {
              out += '\ufffd';
            }
          } else {
            out += String.fromCharCode(u);
          }
          break;
        }
        default:
          i++;
          fail('bad escape');
      }
      start = i;
    }
  };

  const stack: ParseFrame[] = [];
  let result: { value: JsonValue } | undefined;
  while (result === undefined) {
    // Read one value; containers push a frame and read their first member.
    skipWs();
    let value: JsonValue;
    const c = s[i];
    if (c === '{' || c === '[') {
      if (stack.length >= MAX_JSON_NESTING_DEPTH) fail(`nesting deeper than ${MAX_JSON_NESTING_DEPTH}`);
      i++;
      skipWs();
      if (c === '[') {
        if (s[i] === ']') {
          i++;
          value = [];
        } else {
          stack.push({ kind: 'array', value: [] });
          continue;
        }
      } else if (s[i] === '}') {
        i++;
        value = {};
      } else {
        if (s[i] !== '"') fail('expected a string key');
        const key = parseString();
        skipWs();
        if (s[i] !== ':') fail('expected ":"');
        i++;
        stack.push({ kind: 'object', value: {}, key });
        continue;
      }
    } else if (c === '"') {
      value = parseString();
    } else if (c === 't' && s.startsWith('true', i)) {
      value = true;
      i += 4;
    } else if (c === 'f' && s.startsWith('false', i)) {
      value = false;
      i += 5;
    } else if (c === 'n' && s.startsWith('null', i)) {
      value = null;
      i += 4;
    } else {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(s);
      if (m === null) fail('expected a value');
      const text = m[0];
      const n = Number(text);
      // Go reports numbers outside float64 range as an error when decoding into interface{}.
      if (!Number.isFinite(n)) fail(`number ${text} is out of range`);
      value = n;
      i += text.length;
    }
    // Hand the value to its container, closing every container that ends here.
    for (;;) {
      const top = stack[stack.length - 1];
      if (top === undefined) {
        result = { value };
        break;
      }
      if (top.kind === 'array') top.value.push(value);
      else setOwn(top.value, top.key, value);
      skipWs();
      const d = s[i];
      if (d === ',') {
        i++;
        if (top.kind === 'object') {
          skipWs();
          if (s[i] !== '"') fail('expected a string key');
          top.key = parseString();
          skipWs();
          if (s[i] !== ':') fail('expected ":"');
          i++;
        }
        break;
      }
      if ((top.kind === 'array' && d === ']') || (top.kind === 'object' && d === '}')) {
        i++;
        stack.pop();
        value = top.value;
        continue;
      }
      fail(top.kind === 'array' ? 'expected "," or "]"' : 'expected "," or "}"');
    }
  }
  skipWs();
  if (i < s.length) fail('unexpected data after the top-level value');
  return result.value;
}
