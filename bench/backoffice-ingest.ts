// Ingest throughput of the back office's HTTPS route (fastify) against a bare node:https handler doing the same
// work (key lookup, header checks, parseBatchBody) in the same run, to show what the framework costs. The store is
// a no-op, so the numbers are the HTTP + parsing ceiling, not the database's.
//   node --import tsx bench/backoffice-ingest.ts [--batches 40] [--events 2000] [--rounds 3]
import { createServer, request, Agent } from 'node:https';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { ManualClock } from '../src/common/clock.ts';
import { silentLogger } from '../src/common/logger.ts';
import { createSelfSignedIdentity } from '../src/common/self-signed-cert.ts';
import { generateStatsKey, statsKeyDigest } from '../src/stats/stats-key.ts';
import {
  INGEST_PATH,
  HOST_HEADER,
  FILE_HEADER,
  OFFSET_HEADER,
  BATCH_CONTENT_TYPE,
  MAX_BATCH_BYTES,
  BATCH_FILE_PATTERN,
  type IngestBatch,
  type IngestResult,
} from '../src/stats/ingest-protocol.ts';
import type { StatsStore } from '../src/stats/store.ts';
import { startBackoffice } from '../src/backoffice/server.ts';
import { findHostByDigest, type HostKeyLookup } from '../src/backoffice/host-keys.ts';
import { parseBatchBody } from '../src/backoffice/stats-routes.ts';

const { values } = parseArgs({
  options: {
    batches: { type: 'string', default: '40' },
    events: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
  },
});
const BATCHES = Number(values.batches);
const EVENTS = Number(values.events);
const ROUNDS = Number(values.rounds);

const HOST = 'srv-bench';
const KEY = generateStatsKey();
const entries = [[HOST, Buffer.from(statsKeyDigest(KEY), 'hex')] as const];
const hostKeys: HostKeyLookup = { hostForKey: async (d) => findHostByDigest(entries, d) };
const FILE = 'events-1764410400000-0000000001.jsonl';

const noopStore = {
  async ingest(b: IngestBatch): Promise<IngestResult> {
    return { status: 'ingested', events: b.events.length, expired: 0, nextOffset: b.endOffset };
  },
} as unknown as StatsStore;

const event = {
  event_name: 'server_tunnel',
  schema_version: 1,
  timestamp: '2026-11-29T10:00:00Z',
  host_id: HOST,
  sponsor_id: 'SPONSOR1',
  propagation_channel_id: 'CHANNEL1',
  client_version: '170',
  client_platform: 'Android',
  relay_protocol: 'OSSH',
  client_region: 'CA',
  client_city: 'Toronto',
  client_isp: 'Some ISP',
  client_asn: '64500',
  client_aso: 'Some AS',
  session_id: 'abcdef0123456789',
  handshake_completed: true,
  start_time: '2026-11-29T10:00:00Z',
  duration_ms: 60000,
  bytes_up_tcp: 1000,
  bytes_down_tcp: 9000,
  bytes: 10000,
  port_forwards: 3,
  port_forwards_refused: 0,
  peak_concurrent_port_forwards: 2,
};
const body = Buffer.from((JSON.stringify(event) + '\n').repeat(EVENTS));
const identity = createSelfSignedIdentity({ commonName: 'bench', ipAddresses: ['127.0.0.1'] });

/** The same checks as the route, by hand on node:https. */
async function bareServer(): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer({ key: identity.keyPem, cert: identity.certPem }, (req, res) => {
    void (async () => {
      const answer = (code: number, v: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(v));
      };
      const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
      let host: string | undefined;
      try {
        host = m ? await hostKeys.hostForKey(statsKeyDigest(m[1]!)) : undefined;
      } catch {
        host = undefined;
      }
      if (!host || req.headers[HOST_HEADER] !== host) return answer(401, { status: 'unauthorized' });
      const file = String(req.headers[FILE_HEADER] ?? '');
      const offset = Number(req.headers[OFFSET_HEADER]);
      if (!BATCH_FILE_PATTERN.test(file) || !Number.isSafeInteger(offset))
        return answer(400, { status: 'malformed' });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of req as AsyncIterable<Buffer>) {
        size += c.length;
        if (size > MAX_BATCH_BYTES) return answer(413, { status: 'too-large' });
        chunks.push(c);
      }
      const buf = Buffer.concat(chunks);
      const events = parseBatchBody(buf, host);
      const r = await noopStore.ingest({
        hostId: host,
        file,
        offset,
        endOffset: offset + buf.length,
        events,
      });
      answer(200, r);
    })().catch(() => {
      res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { url: `https://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

async function fastifyServer(): Promise<{ url: string; close(): Promise<void> }> {
  const bo = await startBackoffice({
    listen: { host: '127.0.0.1', port: 0 },
    tls: identity,
    store: noopStore,
    hostKeys,
    operatorToken: 'bench-operator-token-0123456789',
    clock: new ManualClock(),
    log: silentLogger(),
    retentionDays: 60,
    rollupIntervalMs: 60_000,
    jobs: false,
  });
  return { url: bo.url, close: () => bo.stop() };
}

async function send(url: string, agent: Agent): Promise<number> {
  const u = new URL(url);
  const start = process.hrtime.bigint();
  for (let i = 0; i < BATCHES; i++) {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        {
          host: u.hostname,
          port: Number(u.port),
          method: 'POST',
          path: INGEST_PATH,
          agent,
          ca: identity.certPem,
          headers: {
            authorization: `Bearer ${KEY}`,
            'content-type': BATCH_CONTENT_TYPE,
            'content-length': body.length,
            [HOST_HEADER]: HOST,
            [FILE_HEADER]: FILE,
            [OFFSET_HEADER]: String(i * body.length),
          },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    if (status !== 200) throw new Error(`status ${status}`);
  }
  const s = Number(process.hrtime.bigint() - start) / 1e9;
  return (BATCHES * EVENTS) / s;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rates: Record<'bare' | 'fastify', number[]> = { bare: [], fastify: [] };
for (let r = 0; r < ROUNDS; r++) {
  for (const kind of r % 2 === 0 ? (['bare', 'fastify'] as const) : (['fastify', 'bare'] as const)) {
    const s = kind === 'bare' ? await bareServer() : await fastifyServer();
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    await send(s.url, agent); // warm-up
    rates[kind].push(await send(s.url, agent));
    agent.destroy();
    await s.close();
  }
}
const bare = median(rates.bare);
const fast = median(rates.fastify);
process.stdout.write(
  `ingest over HTTPS, ${BATCHES} batches of ${EVENTS} events (${(body.length / 1024).toFixed(0)} KiB), median of ${ROUNDS}:\n` +
    `  node:https ${bare.toFixed(0)} events/s; fastify ${fast.toFixed(0)} events/s: fastify/node:https = ${(fast / bare).toFixed(3)}x\n`,
);
