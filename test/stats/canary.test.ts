// The canary test: tunnels from 500 distinct source addresses (127.x.y.z) fetch URLs with unique paths through a
// real server, its spool and shipper, into a real back office and its database; then every byte the system
// persisted (spool, databases, logs, report exports) is searched for those addresses, paths and URLs. None may
// be there. The statistics themselves must be there, or the search would prove nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync, mkdirSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import pino from 'pino';
import { RealClock } from '../../src/common/clock.ts';
import { createLogger } from '../../src/common/logger.ts';
import { initNetwork, generateServer, addSponsor } from '../../src/ops/index.ts';
import { decodeServerEntry } from '../../src/protocol/server-entry.ts';
import { dialObfuscatedSsh } from '../../src/transport/index.ts';
import { connectSsh, encodeSshPasswordPayload } from '../../src/ssh/index.ts';
import { ApiClient, makeSessionId, parseHandshakeResult } from '../../src/client/api-client.ts';
import { TransferStats } from '../../src/client/transfer-stats.ts';
import { runServer } from '../../src/server/run.ts';
import { startServerShipper } from '../../src/cli/stats.ts';
import { runBackoffice, certificateNames, ensureTlsIdentity } from '../../src/backoffice/index.ts';
import { openStatsStore } from '../../src/stats/sql-stats-store.ts';
import { tempDir } from '../helpers/tmp.ts';
import { DATABASE_BACKENDS, type DatabaseBackend, type TestDatabase } from '../helpers/databases.ts';
import { freePort } from '../../src/common/free-port.ts';

const SOURCES = 500;
const CONCURRENCY = 16;
const SPONSOR = '00000000000000AA';

/** 127.x.y.z, never 127.0.0.1 (which the servers themselves use), all distinct. */
function sourceAddress(i: number): string {
  const n = 0x010203 + i * 7919; // spread over the /8
  return `127.${(n >> 16) & 0xff || 1}.${(n >> 8) & 0xff}.${n & 0xff || 2}`;
}

function startOrigin(): Promise<{ server: Server; port: number; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    res.end(randomBytes(2048));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve({ server, port: typeof a === 'object' && a ? a.port : 0, hits });
    }),
  );
}

/** Every file under dir, recursively. */
function allFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...allFiles(p));
    else out.push(p);
  }
  return out;
}

/** Which of the needles occur in any file under dir (as UTF-8 text, and as UTF-16LE as SQLite may store text). */
function findNeedles(dir: string, needles: readonly string[]): string[] {
  const found = new Set<string>();
  for (const file of allFiles(dir)) {
    const bytes = readFileSync(file);
    for (const n of needles) {
      if (bytes.includes(Buffer.from(n, 'utf8')) || bytes.includes(Buffer.from(n, 'utf16le'))) {
        found.add(`${n} in ${file}`);
      }
    }
  }
  return [...found];
}

async function canary(
  t: { after(fn: () => void | Promise<void>): void },
  backend: DatabaseBackend,
  tdb: TestDatabase,
): Promise<void> {
  {
    const root = tempDir(t);
    const persisted = join(root, 'persisted'); // everything the system writes lives under here
    mkdirSync(persisted);
    const logFile = join(persisted, 'postern.log');
    closeSync(openSync(logFile, 'w'));
    const log = createLogger({
      name: 'canary',
      level: 'debug',
      destination: pino.destination({ dest: logFile, sync: true }),
    });
    const clock = new RealClock();

    // A network whose sponsor counts bytes for localhost, a back office, and a server shipping to it.
    const netDir = join(persisted, 'network');
    const net = await initNetwork({ dir: netDir, clock, rsaBits: 1024 });
    await addSponsor(
      net.store,
      { id: SPONSOR, name: 'Canary', homePages: [], domainRegexes: ['^(.*\\.)?localhost$=localhost'] },
      clock,
    );
    const boDir = join(persisted, 'backoffice');
    mkdirSync(boDir);
    const boConfig = join(boDir, 'BO.json');
    writeFileSync(
      boConfig,
      JSON.stringify({
        NetworkDirectory: netDir,
        ListenAddress: '127.0.0.1',
        ListenPort: 0,
        RollupIntervalMs: 1000,
        // SQLite: the file lives under `persisted`. PostgreSQL: every row is dumped there before the search.
        ...(backend.name === 'postgres' ? { StatsDatabase: tdb.target } : {}),
      }),
    );
    const tls = ensureTlsIdentity({
      keyFile: join(boDir, 'backoffice-tls-key.pem'),
      certFile: join(boDir, 'backoffice-tls-cert.pem'),
      names: certificateNames('127.0.0.1', []),
      clock,
    });
    const backoffice = await runBackoffice({
      configFile: boConfig,
      clock,
      log,
      openStore: (target, o) => openStatsStore(target, { ...o, ...tdb.options }),
    });
    t.after(() => backoffice.stop());
    const g = await generateServer(
      net,
      {
        region: 'CA',
        ip: '127.0.0.1',
        out: join(persisted, 'server'),
        protocols: ['OSSH'],
        ports: { OSSH: await freePort() },
        hostKeyBits: 1024,
        backOfficeUrl: `https://127.0.0.1:${backoffice.port}`,
        backOfficeCertificate: tls.certPem,
      },
      clock,
    );
    await net.close();
    const server = await runServer({
      configFile: g.configPath,
      allowDestinations: ['127.0.0.0/8'],
      clock,
      log,
      sidecar: (config, dir) => startServerShipper(config, dir, clock, log),
      domainBytesPeriodMs: 1000,
    });
    const origin = await startOrigin();
    t.after(() => {
      origin.server.close();
    });
    const entry = decodeServerEntry(g.encodedEntry);

    const sources = Array.from({ length: SOURCES }, (_, i) => sourceAddress(i));
    assert.equal(new Set(sources).size, SOURCES);
    const paths = sources.map((_, i) => `/canary-${randomBytes(12).toString('hex')}/${i}`);
    const urls = paths.map((p) => `http://localhost:${origin.port}${p}`);

    async function oneUser(i: number): Promise<void> {
      const socket: Socket = connect({
        host: '127.0.0.1',
        port: server.ports['OSSH']!,
        localAddress: sources[i]!,
      });
      await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
      const stream: Duplex = dialObfuscatedSsh(socket, {
        obfuscationKeyword: String(entry['sshObfuscatedKey']),
      });
      const ssh = await connectSsh(stream, {
        username: String(entry['sshUsername']),
        password: encodeSshPasswordPayload({
          sessionId: makeSessionId(),
          sshPassword: String(entry['sshPassword']),
          clientCapabilities: ['server-requests'],
          sponsorId: SPONSOR,
        }),
        expectedHostKeyBlob: Buffer.from(String(entry['sshHostKey']), 'base64'),
        clientVersion: 'SSH-2.0-Canary',
        encryptThenMac: false,
      });
      try {
        const api = new ApiClient({
          propagationChannelId: 'ABCDEF0123456789',
          sponsorId: SPONSOR,
          clientVersion: '3',
          clientPlatform: 'Android_13',
        });
        const hs = api.handshakeRequest({ tunnelProtocol: 'OSSH', dialDurationMs: 3 });
        const result = parseHandshakeResult(await ssh.request(hs.name, hs.payload), hs.responseEncoding);
        const connected = api.connectedRequest(undefined, 10);
        await ssh.request(connected.name, connected.payload);
        // The client's own byte counting: what it sniffs from the request it sends.
        const stats = new TransferStats();
        stats.setRegexes(result.domainRegexes);
        const forward = stats.openForward('localhost');
        const channel = await ssh.openDirectTcpip('localhost', origin.port);
        const request = Buffer.from(
          `GET ${paths[i]} HTTP/1.0\r\nHost: localhost:${origin.port}\r\nReferer: ${urls[i]}\r\n\r\n`,
        );
        forward.sniff(request);
        let down = 0;
        await new Promise<void>((resolve, reject) => {
          channel.on('data', (d: Buffer) => (down += d.length));
          channel.once('end', () => resolve());
          channel.once('error', reject);
          channel.write(request);
        });
        forward.close(request.length, down);
        const data = stats.take();
        assert.ok(data, 'the client has bytes to report');
        const status = api.statusRequest(data)!;
        assert.ok(await ssh.request(status.name, status.payload), 'status accepted');
      } finally {
        ssh.close();
        socket.destroy();
      }
    }

    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < SOURCES) await oneUser(next++);
      }),
    );
    assert.equal(origin.hits.length, SOURCES, 'every unique URL was fetched through the tunnel');
    await new Promise((r) => setTimeout(r, 300)); // the server notices the last tunnels close
    await server.stop(); // writes the closing events and domain buckets, then drains the shipper

    // What the operator gets: a rollup and the report exports, written where persisted data lives.
    const token = readFileSync(join(boDir, 'operator-token'), 'utf8').trim();
    const exportsDir = join(persisted, 'exports');
    mkdirSync(exportsDir);
    const today = new Date().toISOString().slice(0, 10);
    const store = await openStatsStore(backoffice.paths.statsDatabase, { clock, ...tdb.options });
    for (const d of await store.datesNeedingRollup()) await store.rollup(d);
    const daily = await store.daily({ from: today, to: today });
    const domains = await store.domains({ from: today, to: today });
    await store.close();
    const sessions = daily.reduce((s, r) => s + r.sessions, 0);
    const users = daily.reduce((s, r) => s + r.uniqueUsers, 0);
    assert.equal(sessions, SOURCES, `every tunnel counted once: ${JSON.stringify(daily)}`);
    assert.equal(users, SOURCES);
    const localhostBytes = domains.filter((r) => r.domain === 'localhost').reduce((s, r) => s + r.bytes, 0);
    assert.ok(localhostBytes >= SOURCES * 2048, `domain bytes for localhost: ${localhostBytes}`);
    for (const report of ['daily', 'domains', 'failures']) {
      for (const format of ['json', 'csv']) {
        const res = await fetchInsecure(
          `https://127.0.0.1:${backoffice.port}/v1/stats/${report}?from=${today}&to=${today}&format=${format}`,
          token,
          tls.certPem,
        );
        writeFileSync(join(exportsDir, `${report}.${format}`), res);
      }
    }
    await backoffice.stop();

    if (backend.name === 'postgres') {
      // PostgreSQL's files are not ours to read: every row of every table of the test's schema is dumped instead.
      const db = await tdb.open();
      const tables = await db.query<{ t: string }>(
        `SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = current_schema()`,
      );
      const dump: string[] = [];
      for (const { t: table } of tables) {
        for (const row of await db.query(`SELECT * FROM "${table}"`))
          dump.push(`${table} ${JSON.stringify(row)}`);
      }
      assert.ok(
        dump.some((l) => l.startsWith('stats_')),
        'the statistics tables were dumped',
      );
      writeFileSync(join(persisted, 'postgres-dump.txt'), dump.join('\n'));
    }

    // The search must be able to find what it looks for: a control file holding the needles is found.
    const control = join(root, 'control');
    mkdirSync(control);
    writeFileSync(join(control, 'c.txt'), `${sources[7]} ${urls[7]}`);
    assert.equal(findNeedles(control, [sources[7]!, urls[7]!]).length, 2);

    const files = allFiles(persisted);
    assert.ok(
      files.some((f) => f.endsWith(backend.name === 'sqlite' ? 'stats.sqlite' : 'postgres-dump.txt')),
      'the statistics database is searched',
    );
    assert.ok(readFileSync(logFile, 'utf8').length > 0, 'the log is searched and not empty');
    const leaks = findNeedles(persisted, [...sources, ...paths, ...urls]);
    assert.deepEqual(leaks, [], 'no source address, path or URL anywhere');
  }
}

for (const backend of DATABASE_BACKENDS) {
  test(
    `500 source addresses and their unique URLs leave no trace in anything persisted (${backend.name})`,
    { timeout: 240_000, skip: backend.skip },
    async (t) => {
      const tdb = await backend.create();
      t.after(() => tdb.cleanup());
      await canary(t, backend, tdb);
    },
  );
}

/** GET over HTTPS pinning the back office's certificate, with the operator token. */
async function fetchInsecure(url: string, token: string, ca: string): Promise<string> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`${url}: ${res.statusCode}`));
        else resolve(Buffer.concat(chunks).toString('utf8'));
      });
    });
    req.on('error', reject);
    req.end();
  });
}
