// Real sockets for the local proxy tests: a loopback origin with a few routes, an HTTPS origin with a
// self-signed certificate, curl as a child process, raw socket exchanges, and dialers that fail on purpose or
// hand back plain Duplex streams (as a tunnel does) instead of sockets.
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { DirectDialer, type DialOptions, type TunnelDialer } from '../../src/client/index.ts';

export const BLOB_SIZE = 10 * 1024 * 1024;

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface TestOrigin {
  host: string;
  port: number;
  /** http://host:port, brackets around IPv6. */
  base: string;
  /** Client connections the origin has accepted. */
  connections(): number;
  close(): Promise<void>;
}

/**
 * Routes: GET /blob (the shared 10 MB blob, Content-Length), GET /chunked (the blob without Content-Length),
 * POST /sha256 (JSON: digest and size of the body, and how it was framed), anything /echo... (JSON: method,
 * url, raw headers), /status/N (an empty answer with that status), /hop (a response with hop-by-hop headers),
 * /drop (answers, then closes the idle connection).
 * An Upgrade request gets 101 and then an echo of whatever follows.
 */
export async function startTestOrigin(blob: Buffer, host = '127.0.0.1'): Promise<TestOrigin> {
  let accepted = 0;
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    if (url === '/blob') {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': blob.length });
      res.end(blob);
    } else if (url === '/chunked') {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      for (let off = 0; off < blob.length; off += 1024 * 1024)
        res.write(blob.subarray(off, off + 1024 * 1024));
      res.end();
    } else if (url === '/sha256' && req.method === 'POST') {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
      });
      req.on('end', () =>
        res.end(
          JSON.stringify({
            sha256: h.digest('hex'),
            bytes: n,
            contentLength: req.headers['content-length'] ?? null,
            transferEncoding: req.headers['transfer-encoding'] ?? null,
          }),
        ),
      );
    } else if (url.startsWith('/echo')) {
      req.resume();
      req.on('end', () => res.end(JSON.stringify({ method: req.method, url, rawHeaders: req.rawHeaders })));
    } else if (url === '/drop') {
      // Answers as if keeping the connection, then closes it while idle (as origins do after a while).
      res.end('dropping');
      res.on('finish', () => setTimeout(() => req.socket.end(), 50));
    } else if (url.startsWith('/status/')) {
      res.writeHead(Number(url.slice('/status/'.length)), { ETag: '"x"' });
      res.end();
    } else if (url === '/hop') {
      res.writeHead(200, [
        'Connection',
        'X-Bar',
        'X-Bar',
        'hop',
        'Keep-Alive',
        'timeout=5',
        'Proxy-Authenticate',
        'Basic',
        'X-End-To-End',
        'kept',
        'Content-Length',
        '2',
      ]);
      res.end('ok');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  server.on('connection', () => accepted++);
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `X-Seen-Url: ${req.url}\r\nX-Seen-Upgrade: ${req.headers.upgrade}\r\n\r\n`,
    );
    if (head.length) socket.write(head);
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    host,
    port,
    base: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    connections: () => accepted,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** An HTTPS origin on 127.0.0.1 with a fresh self-signed certificate (openssl CLI) for localhost. */
export async function startTlsOrigin(): Promise<{ port: number; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'postern-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    const server = https.createServer(
      { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
      (req, res) => res.end(`secure hello ${req.url}`),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return {
      port: (server.address() as net.AddressInfo).port,
      close: () =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface CurlResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs curl without blocking the event loop (the proxy under test lives in this process). */
export function curl(args: string[], timeoutMs = 20_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', String(timeoutMs / 1000), ...args]);
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
  });
}

/** Connects to the proxy, sends `chunks` (with pauses between when asked) and collects what comes back
 * until the proxy closes the connection or `timeoutMs` passes. */
export function rawExchange(
  port: number,
  chunks: Buffer[],
  opts: { gapMs?: number; timeoutMs?: number; end?: boolean } = {},
): Promise<{ data: Buffer; closed: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect({ host: '127.0.0.1', port });
    const got: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ data: Buffer.concat(got), closed, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 2000);
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('connect', async () => {
      for (const c of chunks) {
        if (socket.destroyed) return;
        socket.write(c);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
      if (opts.end) socket.end();
    });
  });
}

/** A forward as a tunnel gives it: a plain Duplex, none of net.Socket's methods. */
class PlainDuplex extends Duplex {
  private sawEnd = false;
  constructor(private readonly socket: net.Socket) {
    super({ allowHalfOpen: true });
    socket.on('data', (d: Buffer) => {
      if (!this.push(d)) socket.pause();
    });
    socket.on('end', () => {
      this.sawEnd = true;
      this.push(null);
    });
    socket.on('error', (e) => this.destroy(e));
    socket.on('close', () => {
      if (!this.sawEnd) this.destroy();
    });
  }
  override _read(): void {
    this.socket.resume();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.socket.write(chunk, cb);
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}

/** Dials directly but hands back PlainDuplex streams; counts dials. */
export class PlainDuplexDialer implements TunnelDialer {
  dials = 0;
  private readonly direct = new DirectDialer();
  async dial(host: string, port: number, opts?: DialOptions): Promise<Duplex> {
    this.dials++;
    const socket = (await this.direct.dial(host, port, opts)) as net.Socket;
    return new PlainDuplex(socket);
  }
}

/** Rejects every dial with `error`, or never settles when `error` is null (honouring abort). */
export class FailingDialer implements TunnelDialer {
  constructor(private readonly error: unknown) {}
  dial(_host: string, _port: number, opts?: DialOptions): Promise<Duplex> {
    if (this.error !== null) return Promise.reject(this.error);
    return new Promise((_resolve, reject) => {
      opts?.signal?.addEventListener('abort', () => reject(opts.signal?.reason));
    });
  }
}

/** A dialer that ignores its abort signal and never settles. */
export class HangingDialer implements TunnelDialer {
  dial(): Promise<Duplex> {
    return new Promise(() => {});
  }
}

export function makeBlob(): Buffer {
  return randomBytes(BLOB_SIZE);
}

/** Resolves once `predicate` holds, polling; rejects after `ms`. */
export async function eventually(predicate: () => boolean, ms = 2000): Promise<void> {
  const until = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
