// A small read-only HTTP server for a folder of published objects (remote server lists), standing in for
// object storage on a single machine. It serves GET and HEAD of files directly in the folder, nothing else,
// and logs no client address.
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Object names are flat, like the published list files; anything else is refused before touching the disk. */
const OBJECT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface ListServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export async function startListServer(dir: string, host: string, port: number): Promise<ListServer> {
  const server = createServer((req, res) => {
    void (async () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD' }).end();
        return;
      }
      const name = decodeURIComponent((req.url ?? '/').split('?')[0]?.slice(1) ?? '');
      if (!OBJECT_NAME.test(name)) {
        res.writeHead(404).end();
        return;
      }
      let body: Buffer;
      try {
        body = await readFile(join(dir, name));
      } catch {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, {
        'Content-Type': 'application/octet-stream',
        'Content-Length': body.length,
        'Cache-Control': 'no-cache',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolveListen());
  });
  const addr = server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  const h = host.includes(':') ? `[${host}]` : host;
  return {
    server,
    url: `http://${h}:${boundPort}/`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
