// A minimal MaxMind DB (format 2.0) writer for tests: a 24-bit-record search tree over the given networks,
// a data section of maps/strings/unsigned integers, and the metadata block. Enough to produce small files in
// either the MaxMind layout or the DB-IP Lite layout, so GeoIP tests control their data.
import { parseIp } from '../../src/server/ip-address.ts';

export type MmdbValue = string | number | boolean | MmdbValue[] | { [k: string]: MmdbValue };

export interface MmdbNetwork {
  /** "a.b.c.d/len" or "x::/len". In an IPv6 tree, IPv4 networks go under ::/96 as MaxMind's do. */
  cidr: string;
  data: Record<string, MmdbValue>;
}

function encodeHeader(type: number, size: number): Buffer {
  const parts: number[] = [];
  let sizeBits: number;
  const extra: number[] = [];
  if (size < 29) sizeBits = size;
  else if (size < 29 + 256) {
    sizeBits = 29;
    extra.push(size - 29);
  } else if (size < 285 + 65536) {
    sizeBits = 30;
    const v = size - 285;
    extra.push(v >> 8, v & 0xff);
  } else {
    sizeBits = 31;
    const v = size - 65821;
    extra.push((v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
  }
  if (type <= 7) parts.push((type << 5) | sizeBits);
  else parts.push(sizeBits, type - 7);
  return Buffer.from([...parts, ...extra]);
}

function encodeUint(type: number, n: number | bigint): Buffer {
  const bytes: number[] = [];
  let v = BigInt(n);
  while (v > 0n) {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
  }
  return Buffer.concat([encodeHeader(type, bytes.length), Buffer.from(bytes)]);
}

export function encodeValue(v: MmdbValue | bigint): Buffer {
  if (typeof v === 'bigint') return encodeUint(9, v);
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return Buffer.concat([encodeHeader(2, b.length), b]);
  }
  if (typeof v === 'boolean') return encodeHeader(14, v ? 1 : 0);
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) {
      const b = Buffer.alloc(8);
      b.writeDoubleBE(v);
      return Buffer.concat([encodeHeader(3, 8), b]);
    }
    return encodeUint(v <= 0xffff ? 5 : 6, v);
  }
  if (Array.isArray(v)) return Buffer.concat([encodeHeader(11, v.length), ...v.map(encodeValue)]);
  const entries = Object.entries(v);
  return Buffer.concat([
    encodeHeader(7, entries.length),
    ...entries.flatMap(([k, x]) => [encodeValue(k), encodeValue(x)]),
  ]);
}

interface TrieNode {
  children: [TrieNode | number | null, TrieNode | number | null];
}

export function buildMmdb(
  networks: MmdbNetwork[],
  opts: { ipVersion?: 4 | 6; databaseType?: string } = {},
): Buffer {
  const ipVersion = opts.ipVersion ?? 6;
  const root: TrieNode = { children: [null, null] };
  const dataParts: Buffer[] = [];
  let dataLen = 0;
  for (const n of networks) {
    const [addr, lenText] = n.cidr.split('/');
    const ip = parseIp(addr ?? '');
    if (!ip) throw new Error(`bad cidr ${n.cidr}`);
    let prefix = Number(lenText);
    let bytes = ip.bytes;
    if (ip.family === 4 && ipVersion === 6) {
      bytes = new Uint8Array(16);
      bytes.set(ip.bytes, 12);
      prefix += 96;
    } else if (ip.family === 6 && ipVersion === 4) {
      throw new Error('IPv6 network in an IPv4 tree');
    }
    const offset = dataLen;
    const enc = encodeValue(n.data);
    dataParts.push(enc);
    dataLen += enc.length;
    let node = root;
    for (let i = 0; i < prefix; i++) {
      const bit = (((bytes[i >> 3] ?? 0) >> (7 - (i & 7))) & 1) as 0 | 1;
      if (i === prefix - 1) {
        node.children[bit] = offset;
      } else {
        let next: TrieNode | number | null = node.children[bit];
        if (next === null || typeof next === 'number') {
          next = { children: [null, null] };
          node.children[bit] = next;
        }
        node = next;
      }
    }
  }
  // Number the nodes breadth first.
  const order: TrieNode[] = [];
  const ids = new Map<TrieNode, number>();
  const queue: TrieNode[] = [root];
  while (queue.length) {
    const n = queue.shift() as TrieNode;
    ids.set(n, order.length);
    order.push(n);
    for (const c of n.children) if (c !== null && typeof c !== 'number') queue.push(c);
  }
  const nodeCount = order.length;
  const tree = Buffer.alloc(nodeCount * 6);
  order.forEach((n, i) => {
    n.children.forEach((c, side) => {
      const v = c === null ? nodeCount : typeof c === 'number' ? nodeCount + 16 + c : (ids.get(c) as number);
      tree.writeUIntBE(v, i * 6 + side * 3, 3);
    });
  });
  const metadata = encodeValue({
    node_count: nodeCount,
    record_size: 24,
    ip_version: ipVersion,
    database_type: opts.databaseType ?? 'Test-City',
    languages: ['en'],
    binary_format_major_version: 2,
    binary_format_minor_version: 0,
    build_epoch: 1767225600,
    description: { en: 'test data' },
  });
  return Buffer.concat([
    tree,
    Buffer.alloc(16),
    ...dataParts,
    Buffer.from([0xab, 0xcd, 0xef]),
    Buffer.from('MaxMind.com', 'ascii'),
    metadata,
  ]);
}
