// A minimal HTTPS back office for shipper tests: it speaks the ingest protocol (src/stats/ingest-protocol.ts)
// with the same per-(host, file) cursor semantics: a batch at the cursor is taken, one wholly before it is a
// duplicate, anything else is out of order. Tests can make it fail, refuse a file, or answer slowly.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createSelfSignedIdentity } from '../../src/common/self-signed-cert.ts';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parseEvent } from '../../src/stats/events.ts';
import {
  BATCH_FILE_PATTERN,
  FILE_HEADER,
  HOST_HEADER,
  INGEST_PATH,
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
  OFFSET_HEADER,
} from '../../src/stats/ingest-protocol.ts';

export interface TestCertificate {
  key: string;
  cert: string;
}

/** A self-signed P-256 certificate for localhost and 127.0.0.1 (made in process, no openssl needed). */
export function makeTestCertificate(): TestCertificate {
  const id = createSelfSignedIdentity({
    commonName: 'localhost',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  return { key: id.keyPem, cert: id.certPem };
}

/**
 * A certificate authority and a server certificate it signed for localhost and 127.0.0.1 (openssl, in `dir`).
 * Pinning the authority makes the TLS chain check pass for the server's certificate, so only the fingerprint
 * check can refuse it.
 */
export function makeCaSignedCertificate(dir: string): { caCert: string; server: TestCertificate } {
  const f = (n: string) => join(dir, n);
  const run = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run([
    'req',
    '-x509',
    ...ec,
    '-subj',
    '/CN=Test CA',
    '-days',
    '2',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
  ]);
  run(['req', '-new', ...ec, '-subj', '/CN=localhost', '-keyout', f('srv.key'), '-out', f('srv.csr')]);
  writeFileSync(f('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  run([
    'x509',
    '-req',
    '-in',
    f('srv.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    f('ext.cnf'),
    '-out',
    f('srv.pem'),
  ]);
  return {
    caCert: readFileSync(f('ca.pem'), 'utf8'),
    server: { key: readFileSync(f('srv.key'), 'utf8'), cert: readFileSync(f('srv.pem'), 'utf8') },
  };
}

export interface IngestReceiverOptions {
  certificate: TestCertificate;
  /** host ID → the stats key it must present */
  keys: Record<string, string>;
  /** Check every line against the event schema (default true) */
  validateEvents?: boolean;
}

export class IngestReceiver {
  readonly server: Server;
  url = '';
  /** (host, file) → offset taken up to */
  readonly cursors = new Map<string, number>();
  /** Every event taken, in order */
  readonly events: unknown[] = [];
  requests = 0;
  /** Answers given, by status */
  readonly answers: Record<string, number> = {};
  bytesReceived = 0;
  /** Answer this many coming requests with `failStatus` before reading them */
  failNext = 0;
  failStatus = 503;
  /** Files whose batches are answered 400 malformed */
  readonly refuseFiles = new Set<string>();
  /** Delay each answer by this many ms (after taking the batch, so a client that gives up loses the reply) */
  slowMs = 0;
  /** Called after each batch is taken */
  onIngest: ((events: number) => void) | null = null;
  private readonly validate: boolean;
  private readonly timers = new Set<NodeJS.Timeout>();

  private constructor(opts: IngestReceiverOptions) {
    this.validate = opts.validateEvents ?? true;
    const keys = opts.keys;
    this.server = createServer({ key: opts.certificate.key, cert: opts.certificate.cert }, (req, res) => {
      this.handle(req, res, keys).catch(() => {
        if (!res.headersSent) reply(res, 500, { status: 'error' });
      });
    });
  }

  static async start(opts: IngestReceiverOptions): Promise<IngestReceiver> {
    const r = new IngestReceiver(opts);
    await new Promise<void>((res) => r.server.listen(0, '127.0.0.1', res));
    r.url = `https://127.0.0.1:${(r.server.address() as AddressInfo).port}`;
    return r;
  }

  cursor(host: string, file: string): number {
    return this.cursors.get(`${host}/${file}`) ?? 0;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.server.closeAllConnections();
    await new Promise<void>((res) => this.server.close(() => res()));
  }

  private async handle(
    req: IncomingMessage,
    res: ServerResponse,
    keys: Record<string, string>,
  ): Promise<void> {
    this.requests++;
    if (req.method !== 'POST' || req.url !== INGEST_PATH) return reply(res, 404, { status: 'not-found' });
    if (this.failNext > 0) {
      this.failNext--;
      return reply(res, this.failStatus, { status: 'error' });
    }
    const host = header(req, HOST_HEADER);
    const auth = header(req, 'authorization');
    if (host === undefined || keys[host] === undefined || auth !== `Bearer ${keys[host]}`) {
      return reply(res, 401, { status: 'unauthorized', error: 'bad key' });
    }
    const file = header(req, FILE_HEADER) ?? '';
    const offsetText = header(req, OFFSET_HEADER) ?? '';
    if (!BATCH_FILE_PATTERN.test(file) || !/^\d{1,15}$/.test(offsetText)) {
      return reply(res, 400, { status: 'malformed', error: 'bad file or offset header' });
    }
    const offset = Number(offsetText);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MAX_BATCH_BYTES) return reply(res, 413, { status: 'too-large', error: 'body too large' });
      chunks.push(c);
    }
    this.bytesReceived += size;
    const body = Buffer.concat(chunks);
    const key = `${host}/${file}`;
    const cursor = this.cursors.get(key) ?? 0;
    const end = offset + body.length;
    if (end <= cursor && offset < cursor)
      return this.answer(res, 200, { status: 'duplicate', nextOffset: cursor });
    if (offset !== cursor) return this.answer(res, 409, { status: 'out-of-order', nextOffset: cursor });
    if (this.refuseFiles.has(file)) return reply(res, 400, { status: 'malformed', error: 'line 1: refused' });
    if (body.length === 0 || body[body.length - 1] !== 0x0a) {
      return reply(res, 400, { status: 'malformed', error: 'the body must be whole lines' });
    }
    const lines = body.toString('utf8').slice(0, -1).split('\n');
    if (lines.length > MAX_BATCH_EVENTS)
      return reply(res, 413, { status: 'too-large', error: 'too many events' });
    const parsed: unknown[] = [];
    for (let i = 0; i < lines.length; i++) {
      try {
        const v: unknown = JSON.parse(lines[i] as string);
        parsed.push(this.validate ? parseEvent(v) : v);
      } catch {
        return reply(res, 400, { status: 'malformed', error: `line ${i + 1}: not a valid event` });
      }
    }
    this.events.push(...parsed);
    this.cursors.set(key, end);
    this.onIngest?.(parsed.length);
    return this.answer(res, 200, { status: 'ingested', events: parsed.length, expired: 0, nextOffset: end });
  }

  private async answer(res: ServerResponse, status: number, body: unknown): Promise<void> {
    if (this.slowMs > 0) {
      await new Promise<void>((r) => {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          r();
        }, this.slowMs);
        this.timers.add(timer);
      });
    }
    if (!res.destroyed) reply(res, status, body);
    const st = (body as { status: string }).status;
    this.answers[st] = (this.answers[st] ?? 0) + 1;
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
