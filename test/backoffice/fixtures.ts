// Shared pieces of the back office tests: an HTTPS client that pins the service's certificate, a logger that
// keeps its lines, valid events, and a running service on loopback over an in-memory store.
import { request } from 'node:https';
import { Writable } from 'node:stream';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ManualClock } from '../../src/common/clock.ts';
import { createLogger, type Logger } from '../../src/common/logger.ts';
import { createSelfSignedIdentity } from '../../src/common/self-signed-cert.ts';
import { generateStatsKey, recordStatsKey } from '../../src/stats/stats-key.ts';
import type { StatsEvent } from '../../src/stats/events.ts';
import type { StatsStore } from '../../src/stats/store.ts';
import {
  INGEST_PATH,
  HOST_HEADER,
  FILE_HEADER,
  OFFSET_HEADER,
  BATCH_CONTENT_TYPE,
} from '../../src/stats/ingest-protocol.ts';
import {
  startBackoffice,
  type BackofficeOptions,
  type RunningBackoffice,
} from '../../src/backoffice/server.ts';
import { StatsKeysFileLookup } from '../../src/backoffice/host-keys.ts';
import { MemoryStatsStore } from '../helpers/memory-stats-store.ts';
import { tempDir } from '../helpers/tmp.ts';

export interface HttpsAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => Record<string, unknown>;
}

export function httpsRequest(
  url: string,
  ca: string,
  opts: {
    method?: string;
    path: string;
    headers?: Record<string, string | number>;
    body?: Buffer | string;
    /** Send the headers only, never the body (to see what the server answers before reading it). */
    withholdBody?: boolean;
  },
): Promise<HttpsAnswer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname.replace(/^\[|\]$/g, ''),
        port: Number(u.port),
        method: opts.method ?? 'GET',
        path: opts.path,
        headers: opts.headers,
        ca,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json: () => JSON.parse(text) as Record<string, unknown>,
          });
          if (opts.withholdBody) req.destroy();
        });
      },
    );
    req.on('error', reject);
    if (opts.withholdBody) {
      req.flushHeaders();
      return;
    }
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

export function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { log: createLogger({ destination: sink, level: 'debug' }), lines };
}

/** A city name no code would write by itself: if it shows up in a log, a body value leaked. */
export const CANARY_CITY = 'Canaryville-7d3f';
export const DAY = '2026-11-29';

/** The fields every event about a client's tunnel carries. */
export function tunnelBase(host: string): Record<string, unknown> {
  return {
    schema_version: 1,
    timestamp: `${DAY}T10:00:00Z`,
    host_id: host,
    sponsor_id: 'SPONSOR1',
    propagation_channel_id: 'CHANNEL1',
    client_version: '170',
    client_platform: 'Android',
    relay_protocol: 'OSSH',
    client_region: 'CA',
    client_city: CANARY_CITY,
    client_isp: 'Some ISP',
    client_asn: '64500',
    client_aso: 'Some AS',
  };
}

export function tunnelEvent(host: string, over: Record<string, unknown> = {}): StatsEvent {
  return {
    ...tunnelBase(host),
    event_name: 'server_tunnel',
    session_id: 'abcdef0123456789',
    handshake_completed: true,
    start_time: `${DAY}T10:00:00Z`,
    duration_ms: 60_000,
    bytes_up_tcp: 1000,
    bytes_down_tcp: 9000,
    bytes: 10_000,
    port_forwards: 3,
    port_forwards_refused: 0,
    peak_concurrent_port_forwards: 2,
    ...over,
  } as StatsEvent;
}

export function ndjson(events: readonly unknown[]): Buffer {
  return Buffer.from(events.map((e) => JSON.stringify(e) + '\n').join(''), 'utf8');
}

export const FILE = 'events-1764410400000-0000000001.jsonl';

export interface Harness<S extends StatsStore = MemoryStatsStore> {
  bo: RunningBackoffice;
  store: S;
  clock: ManualClock;
  ca: string;
  netDir: string;
  keys: Record<string, string>;
  operatorToken: string;
  lines: string[];
  post(
    body: Buffer | string,
    h?: { key?: string | null; host?: string; file?: string; offset?: number | string; type?: string },
  ): Promise<HttpsAnswer>;
  get(path: string, token?: string | null): Promise<HttpsAnswer>;
}

type After = { after(fn: () => Promise<void> | void): void };

/** A back office on 127.0.0.1 (port chosen by the system) for two hosts, srv-a and srv-b, on a memory store. */
export function startHarness(t: After, options: Partial<BackofficeOptions> = {}): Promise<Harness> {
  return startHarnessWith(t, async (clock) => new MemoryStatsStore({ clock }), options);
}

/** The same on a store of the caller's (given the test's clock and a folder for its files). */
export async function startHarnessWith<S extends StatsStore>(
  t: After,
  openStore: (clock: ManualClock, dir: string) => Promise<S>,
  options: Partial<BackofficeOptions> = {},
): Promise<Harness<S>> {
  const dir = tempDir(t);
  const netDir = join(dir, 'network');
  mkdirSync(netDir);
  const keys = { 'srv-a': generateStatsKey(), 'srv-b': generateStatsKey() };
  for (const [host, key] of Object.entries(keys)) recordStatsKey(netDir, host, key);
  const clock = new ManualClock(new Date(`${DAY}T12:00:00Z`));
  const store = await openStore(clock, dir);
  const { log, lines } = capturingLogger();
  const identity = createSelfSignedIdentity({ commonName: 'test', ipAddresses: ['127.0.0.1'] });
  const operatorToken = 'operator-token-for-tests-0123456789';
  const bo = await startBackoffice({
    listen: { host: '127.0.0.1', port: 0 },
    tls: identity,
    store,
    hostKeys: new StatsKeysFileLookup(netDir, log),
    operatorToken,
    clock,
    log,
    retentionDays: 60,
    rollupIntervalMs: 60_000,
    jobs: false,
    ...options,
  });
  t.after(async () => {
    await bo.stop();
    await store.close();
  });
  const ca = identity.certPem;
  return {
    bo,
    store,
    clock,
    ca,
    netDir,
    keys,
    operatorToken,
    lines,
    post: (body, h = {}) => {
      const headers: Record<string, string | number> = {
        'content-type': h.type ?? BATCH_CONTENT_TYPE,
        [HOST_HEADER]: h.host ?? 'srv-a',
        [FILE_HEADER]: h.file ?? FILE,
        [OFFSET_HEADER]: String(h.offset ?? 0),
      };
      const key = h.key === undefined ? keys['srv-a'] : h.key;
      if (key !== null) headers['authorization'] = `Bearer ${key}`;
      return httpsRequest(bo.url, ca, { method: 'POST', path: INGEST_PATH, headers, body });
    },
    get: (path, token) => {
      const tok = token === undefined ? operatorToken : token;
      return httpsRequest(bo.url, ca, {
        path,
        headers: tok === null ? {} : { authorization: `Bearer ${tok}` },
      });
    },
  };
}
