// A loopback HTTP origin for tunnel tests and benchmarks. GET /bytes/N answers N deterministic pseudo-random
// bytes (so a client can check them without the server keeping a copy); POST /sha256 answers the SHA-256 of
// the body. Used as "the open web" on a machine with no network.
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';

export const ORIGIN_CHUNK = 64 * 1024;

/** The same bytes for the same offset, cheap to make: a fixed 64 KiB block repeated, varied per block index. */
const BASE = (() => {
  const b = Buffer.alloc(ORIGIN_CHUNK);
  let x = 0x9e3779b9;
  for (let i = 0; i < b.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
})();

export function originBlock(index: number): Buffer {
  const b = Buffer.from(BASE);
  b.writeUInt32BE(index >>> 0, 0);
  return b;
}

/** SHA-256 (hex) of the body GET /bytes/N answers. */
export function expectedSha256(n: number): string {
  const h = createHash('sha256');
  let left = n;
  for (let i = 0; left > 0; i++) {
    const block = originBlock(i);
    h.update(left >= block.length ? block : block.subarray(0, left));
    left -= block.length;
  }
  return h.digest('hex');
}

export interface Origin {
  server: Server;
  host: string;
  port: number;
  url(path: string): string;
  close(): Promise<void>;
}

export async function startOrigin(host = '127.0.0.1'): Promise<Origin> {
  const server = createServer((req, res) => {
    const m = /^\/bytes\/(\d{1,12})$/.exec(req.url ?? '');
    if (req.method === 'GET' && m) {
      const n = Number(m[1]);
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': n });
      let sent = 0;
      let i = 0;
      const pump = () => {
        while (sent < n) {
          const block = originBlock(i++);
          const part = n - sent >= block.length ? block : block.subarray(0, n - sent);
          sent += part.length;
          if (!res.write(part)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    if (req.method === 'POST' && req.url === '/sha256') {
      const h = createHash('sha256');
      req.on('data', (d: Buffer) => h.update(d));
      req.on('end', () => res.end(h.digest('hex')));
      return;
    }
    res.writeHead(404).end();
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : 0;
  const h = host.includes(':') ? `[${host}]` : host;
  return {
    server,
    host,
    port,
    url: (path: string) => `http://${h}:${port}${path}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
