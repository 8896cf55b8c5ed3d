// IP → autonomous system lookups from a CSV range list (the ip-location-db "asn" format:
// `range_start,range_end,as_number,"as organization"`, bounds as addresses or as decimal numbers), for
// networks without a MaxMind ISP/ASN database. The rows are packed into typed arrays (about 16 bytes per
// IPv4 row, 40 per IPv6 row, organisation names shared) and searched by bisection: loaded once, bounded,
// no per-lookup allocation beyond the answer.
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { PosternError } from '../common/errors.ts';
import { parseIp, parseIpv4Number, type IpAddress } from './ip-address.ts';

/** The bundled IPv4 file is 24 MB; this leaves room for growth but stops a wrong file early. */
export const MAX_ASN_CSV_BYTES = 256 * 1024 * 1024;
export const MAX_ASN_ROWS = 4_000_000;
export const MAX_AS_ORGANIZATION_LENGTH = 256;
/** Parsing yields to the event loop this often, so a hot reload does not stall live tunnels. */
const ROWS_PER_SLICE = 25_000;

export interface AsnAnswer {
  asn: number;
  organization: string;
}

interface FamilyTable {
  count: number;
  /** IPv4: one word per row; IPv6: four words per row, most significant first. */
  starts: Uint32Array;
  ends: Uint32Array;
  asns: Uint32Array;
  orgs: Uint32Array;
}

export interface AsnTableStats {
  ipv4Rows: number;
  ipv6Rows: number;
  organizations: number;
  /** Rows that overlapped the row before and were clipped (the earlier row wins). */
  overlapsClipped: number;
  /** Bytes held by the typed arrays (organisation strings not counted). */
  arrayBytes: number;
}

export class AsnRangeTable {
  private constructor(
    private readonly v4: FamilyTable,
    private readonly v6: FamilyTable,
    private readonly orgNames: readonly string[],
    readonly stats: AsnTableStats,
  ) {}

  lookup(a: IpAddress): AsnAnswer | null {
    const b = a.bytes;
    if (a.family === 4) {
      const x = (((b[0] ?? 0) << 24) | ((b[1] ?? 0) << 16) | ((b[2] ?? 0) << 8) | (b[3] ?? 0)) >>> 0;
      const t = this.v4;
      let lo = 0;
      let hi = t.count - 1;
      let found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        if ((t.starts[mid] ?? 0) <= x) {
          found = mid;
          lo = mid + 1;
        } else {
          hi = mid - 1;
        }
      }
      if (found < 0 || x > (t.ends[found] ?? 0)) return null;
      return this.answer(t, found);
    }
    const w = words6(b);
    const t = this.v6;
    let lo = 0;
    let hi = t.count - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (compare6(t.starts, mid, w) <= 0) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (found < 0 || compare6(t.ends, found, w) < 0) return null;
    return this.answer(t, found);
  }

  private answer(t: FamilyTable, i: number): AsnAnswer {
    return { asn: t.asns[i] ?? 0, organization: this.orgNames[t.orgs[i] ?? 0] ?? '' };
  }

  /** Loads one CSV file (IPv4 rows, IPv6 rows, or both). Throws BAD_CONFIG with the line that is wrong. */
  static async load(path: string): Promise<AsnRangeTable> {
    const st = await stat(path);
    if (st.size > MAX_ASN_CSV_BYTES) {
      throw new PosternError(
        'TOO_LARGE',
        `${path}: ${st.size} bytes is over the ${MAX_ASN_CSV_BYTES}-byte limit`,
      );
    }
    const text = (await readFile(path)).toString('utf8');
    return AsnRangeTable.parse(text, path);
  }

  /** Parses CSV text; `name` is used in error messages and to tell numeric IPv6 files ("...ipv6...") apart. */
  static async parse(text: string, name = 'ASN CSV'): Promise<AsnRangeTable> {
    let lines = 0;
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) lines++;
    lines++;
    if (lines > MAX_ASN_ROWS + 1) {
      throw new PosternError('TOO_LARGE', `${name}: ${lines} lines is over the ${MAX_ASN_ROWS}-row limit`);
    }
    const b = new Builder(lines, /ipv6/i.test(basename(name)) ? 6 : /ipv4/i.test(basename(name)) ? 4 : null);
    let pos = 0;
    let lineNo = 0;
    while (pos < text.length) {
      let end = text.indexOf('\n', pos);
      if (end < 0) end = text.length;
      lineNo++;
      let line = text.slice(pos, end);
      pos = end + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line.length === 0) continue;
      const err = b.addLine(line);
      if (err) throw new PosternError('BAD_CONFIG', `${name} line ${lineNo}: ${err}`);
      if (lineNo % ROWS_PER_SLICE === 0) await yieldToLoop();
    }
    if (b.v4.count + b.v6.count === 0) throw new PosternError('BAD_CONFIG', `${name}: no rows`);
    return b.finish((v4, v6, orgs, stats) => new AsnRangeTable(v4, v6, orgs, stats));
  }
}

function words6(b: Uint8Array): [number, number, number, number] {
  const w = (i: number): number =>
    (((b[i] ?? 0) << 24) | ((b[i + 1] ?? 0) << 16) | ((b[i + 2] ?? 0) << 8) | (b[i + 3] ?? 0)) >>> 0;
  return [w(0), w(4), w(8), w(12)];
}

/** Compares row `row` of a 4-words-per-row array with `w`: negative, zero or positive. */
function compare6(arr: Uint32Array, row: number, w: readonly number[]): number {
  const base = row * 4;
  for (let k = 0; k < 4; k++) {
    const d = (arr[base + k] ?? 0) - (w[k] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function compareWords(a: readonly number[], b: readonly number[]): number {
  for (let k = 0; k < 4; k++) {
    const d = (a[k] ?? 0) - (b[k] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Splits `a,b,c,"d, with ""quotes"""` into exactly four fields; null when it is not that. */
function splitRow(line: string): [string, string, string, string] | null {
  const out: string[] = [];
  let i = 0;
  for (let f = 0; f < 3; f++) {
    const comma = line.indexOf(',', i);
    if (comma < 0) return null;
    out.push(line.slice(i, comma));
    i = comma + 1;
  }
  let last = line.slice(i);
  if (last.startsWith('"')) {
    if (last.length < 2 || !last.endsWith('"')) return null;
    const inner = last.slice(1, -1);
    // Inside quotes, a quote must be doubled.
    if (inner.replace(/""/g, '').includes('"')) return null;
    last = inner.replace(/""/g, '"');
  } else if (last.includes('"')) {
    return null;
  }
  out.push(last);
  return out as [string, string, string, string];
}

const TWO_POW_32 = 2 ** 32;

class Builder {
  readonly v4: FamilyTable;
  readonly v6: FamilyTable;
  private readonly orgIndex = new Map<string, number>();
  private readonly orgs: string[] = [];
  private overlaps = 0;
  private numericFamily: 4 | 6 | null;
  private readonly capacity: number;
  private last4Start: readonly number[] = [];
  private last4End: readonly number[] = [];
  private last6Start: readonly number[] = [];
  private last6End: readonly number[] = [];

  constructor(capacity: number, numericFamily: 4 | 6 | null) {
    this.numericFamily = numericFamily;
    const mk = (words: number): FamilyTable => ({
      count: 0,
      starts: new Uint32Array(capacity * words),
      ends: new Uint32Array(capacity * words),
      asns: new Uint32Array(capacity),
      orgs: new Uint32Array(capacity),
    });
    this.v4 = mk(1);
    // IPv6 arrays grow on demand: most files hold one family only.
    this.v6 = {
      count: 0,
      starts: new Uint32Array(0),
      ends: new Uint32Array(0),
      asns: new Uint32Array(0),
      orgs: new Uint32Array(0),
    };
    this.capacity = capacity;
  }

  private bound(s: string): { family: 4 | 6; words: number[] } | string {
    if (/^\d{1,39}$/.test(s)) {
      if (s.length <= 10 && Number(s) < TWO_POW_32 && this.numericFamily !== 6) {
        this.numericFamily = 4;
        return { family: 4, words: [Number(s)] };
      }
      const n = BigInt(s);
      if (n >= 1n << 128n) return 'number out of range';
      this.numericFamily = 6;
      const w: number[] = [];
      for (let k = 3; k >= 0; k--) w.push(Number((n >> BigInt(32 * k)) & 0xffffffffn));
      return { family: 6, words: w };
    }
    const n4 = parseIpv4Number(s);
    if (n4 >= 0) return { family: 4, words: [n4] };
    const ip = parseIp(s);
    if (!ip || ip.family !== 6) return 'range bound is not an address or a number';
    return { family: 6, words: words6(ip.bytes) };
  }

  /** Returns an error message, or null when the line was taken (or clipped away). */
  addLine(line: string): string | null {
    const f = splitRow(line);
    if (!f) return 'expected 4 comma-separated fields: start,end,asn,organization';
    const start = this.bound(f[0]);
    if (typeof start === 'string') return `start: ${start}`;
    const end = this.bound(f[1]);
    if (typeof end === 'string') return `end: ${end}`;
    if (start.family !== end.family) return 'start and end are of different address families';
    if (!/^\d{1,10}$/.test(f[2]) || Number(f[2]) >= TWO_POW_32) return 'AS number must be 0-4294967295';
    const asn = Number(f[2]);
    const org = f[3].replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, MAX_AS_ORGANIZATION_LENGTH);
    let s = start.words;
    const e = end.words;
    if (compareWords(s, e) > 0) return 'start is after end';
    const t = start.family === 4 ? this.v4 : this.v6;
    const words = start.family === 4 ? 1 : 4;
    if (t.count > 0) {
      const prevStart = start.family === 4 ? this.last4Start : this.last6Start;
      const prevEnd = start.family === 4 ? this.last4End : this.last6End;
      if (compareWords(s, prevStart) < 0) return 'rows must be sorted by start address';
      if (compareWords(s, prevEnd) <= 0) {
        // Overlap: the earlier row keeps its span; this one starts after it (or is dropped).
        this.overlaps++;
        if (compareWords(e, prevEnd) <= 0) return null;
        s = increment(prevEnd);
      }
    }
    if (start.family === 6 && t.count === t.asns.length) this.growV6();
    const i = t.count++;
    t.starts.set(s, i * words);
    t.ends.set(e, i * words);
    if (start.family === 4) {
      this.last4Start = s;
      this.last4End = e;
    } else {
      this.last6Start = s;
      this.last6End = e;
    }
    t.asns[i] = asn;
    let oi = this.orgIndex.get(org);
    if (oi === undefined) {
      // A copy, not a slice: a slice would keep the whole file's text alive.
      const own = Buffer.from(org, 'utf8').toString('utf8');
      oi = this.orgs.length;
      this.orgs.push(own);
      this.orgIndex.set(own, oi);
    }
    t.orgs[i] = oi;
    return null;
  }

  private growV6(): void {
    const t = this.v6;
    const n = Math.min(Math.max(1024, t.asns.length * 2), this.capacity);
    const grow = (a: Uint32Array, words: number): Uint32Array => {
      const b = new Uint32Array(n * words);
      b.set(a);
      return b;
    };
    t.starts = grow(t.starts, 4);
    t.ends = grow(t.ends, 4);
    t.asns = grow(t.asns, 1);
    t.orgs = grow(t.orgs, 1);
  }

  finish<T>(make: (v4: FamilyTable, v6: FamilyTable, orgs: string[], stats: AsnTableStats) => T): T {
    // Copy down to the exact size so the spare capacity is freed.
    const trim = (t: FamilyTable, words: number): FamilyTable => ({
      count: t.count,
      starts: t.starts.slice(0, t.count * words),
      ends: t.ends.slice(0, t.count * words),
      asns: t.asns.slice(0, t.count),
      orgs: t.orgs.slice(0, t.count),
    });
    const v4 = trim(this.v4, 1);
    const v6 = trim(this.v6, 4);
    const bytes = (t: FamilyTable): number =>
      t.starts.byteLength + t.ends.byteLength + t.asns.byteLength + t.orgs.byteLength;
    return make(v4, v6, this.orgs, {
      ipv4Rows: v4.count,
      ipv6Rows: v6.count,
      organizations: this.orgs.length,
      overlapsClipped: this.overlaps,
      arrayBytes: bytes(v4) + bytes(v6),
    });
  }
}

function increment(w: readonly number[]): number[] {
  const out = [...w];
  for (let k = out.length - 1; k >= 0; k--) {
    const v = (out[k] ?? 0) + 1;
    if (v < TWO_POW_32) {
      out[k] = v;
      return out;
    }
    out[k] = 0;
  }
  return out; // wrapped: cannot happen, since start <= prevEnd < end
}
