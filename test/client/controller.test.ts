// The client controller against real tunnel servers on loopback: establishment over SSH and OSSH, racing dead
// candidates, server affinity, host key pinning, and the API requests a server sees. Local proxies and curl
// carry the traffic, as for a user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger, type Logger } from '../../src/common/logger.ts';
import {
  reconnectDelayMs,
  startHttpProxy,
  startSocksProxy,
  ServerStore,
  TunnelController,
  usableTunnelProtocols,
  type ControllerOptions,
  type ControllerStatus,
  type StatusData,
} from '../../src/client/index.ts';
import {
  ClientConfigSchema,
  decodeServerEntry,
  getServerEntryTag,
  type ClientConfig,
} from '../../src/protocol/index.ts';
import {
  closedPort,
  makeTestEntry,
  startMiniTunnelServer,
  startSilentListener,
  testHostKey,
  testSigningKey,
  TEST_PROPAGATION_CHANNEL_ID,
  TEST_SPONSOR_ID,
  type MiniServer,
} from '../helpers/mini-tunnel-server.ts';
import { expectedSha256, startOrigin } from '../helpers/origin.ts';
import { tempDir } from '../helpers/tmp.ts';
import { curl } from './proxy-fixtures.ts';
import { createHash } from 'node:crypto';

function clientConfig(entries: string[], extra: Record<string, unknown> = {}): ClientConfig {
  return ClientConfigSchema.parse({
    PropagationChannelId: TEST_PROPAGATION_CHANNEL_ID,
    SponsorId: TEST_SPONSOR_ID,
    ServerEntrySignaturePublicKey: testSigningKey().publicKey,
    EmbeddedServerEntries: entries,
    ...extra,
  });
}

/** A logger whose lines the test can read. */
function captureLogger(): { lines: string[]; logger: Logger } {
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => lines.push(line) } });
  return { lines, logger };
}

type Hooks = { after(fn: () => unknown): void };

function controller(t: Hooks, opts: ControllerOptions): { c: TunnelController; states: ControllerStatus[] } {
  const c = new TunnelController(opts);
  const states: ControllerStatus[] = [];
  c.on('state', (s) => states.push(s));
  t.after(() => c.stop());
  return { c, states };
}

async function server(t: Hooks, opts: Parameters<typeof startMiniTunnelServer>[0] = {}): Promise<MiniServer> {
  const s = await startMiniTunnelServer(opts);
  t.after(() => s.kill());
  return s;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test(
  'the tunnel comes up over OSSH and SSH, and SOCKS5 and HTTP fetches arrive intact',
  { timeout: 15_000 },
  async (t) => {
    const origin = await startOrigin();
    t.after(() => origin.close());
    for (const protocol of ['OSSH', 'SSH'] as const) {
      const srv = await server(t, {
        ip: '127.0.0.1',
        protocols: [protocol],
        region: 'CA',
        clientRegion: 'NL',
      });
      const { c, states } = controller(t, { config: clientConfig([srv.encodedEntry]) });
      c.start();
      assert.equal(c.status.state, 'establishing');
      await c.whenConnected(5_000);
      assert.deepEqual(
        { ...states.at(-1) },
        {
          state: 'connected',
          protocol,
          serverRegion: 'CA',
          clientRegion: 'NL',
          serverId: states.at(-1)!.serverId,
        },
      );

      const socks = await startSocksProxy({ dialer: c });
      const http = await startHttpProxy({ dialer: c });
      t.after(() => Promise.all([socks.close(), http.close()]));
      const size = 3 * 1024 * 1024 + 17;
      const viaSocks = await curl([
        '--socks5-hostname',
        `127.0.0.1:${socks.address.port}`,
        origin.url(`/bytes/${size}`),
      ]);
      assert.equal(viaSocks.code, 0, viaSocks.stderr);
      assert.equal(sha256(viaSocks.stdout), expectedSha256(size));
      const viaHttp = await curl([
        '--proxy',
        `http://127.0.0.1:${http.address.port}`,
        origin.url(`/bytes/${size}`),
      ]);
      assert.equal(viaHttp.code, 0, viaHttp.stderr);
      assert.equal(sha256(viaHttp.stdout), expectedSha256(size));
      assert.equal(srv.counters.forwards, 2);

      // What the server saw: our session and sponsor in the password, a handshake over this protocol, connected.
      assert.equal(srv.sessions.length, 1);
      assert.equal(srv.sessions[0]!.sessionId, c.sessionId);
      assert.match(c.sessionId, /^[0-9a-f]{32}$/);
      assert.equal(srv.sessions[0]!.sponsorId, TEST_SPONSOR_ID);
      assert.equal(srv.counters.handshakes.length, 1);
      assert.equal(srv.sessions[0]!.handshake?.relayProtocol, protocol);
      await waitFor(() => srv.counters.connected.length === 1);
      const totals = c.totalBytes();
      assert.ok(totals.bytesDown >= 2 * size, `counted ${totals.bytesDown} bytes down`);
      await socks.close();
      await http.close();
      await c.stop();
      assert.equal(c.status.state, 'stopped');
      await srv.kill();
    }
  },
);

test(
  'with 9 of 10 candidates dead (silent or closed), the tunnel is up in well under a second or two',
  { timeout: 15_000 },
  async (t) => {
    const entries: string[] = [];
    for (let i = 0; i < 5; i++) {
      const ip = `127.0.0.${10 + i}`;
      const silent = await startSilentListener(ip);
      t.after(() => silent.close());
      entries.push(makeTestEntry({ ip, ports: { OSSH: silent.port } }).encoded);
    }
    for (let i = 0; i < 4; i++) {
      const ip = `127.0.0.${20 + i}`;
      entries.push(makeTestEntry({ ip, ports: { OSSH: await closedPort(ip) } }).encoded);
    }
    const good = await server(t, { ip: '127.0.0.30', protocols: ['OSSH'] });
    entries.push(good.encodedEntry);
    const { c } = controller(t, { config: clientConfig(entries) });
    const started = Date.now();
    c.start();
    await c.whenConnected(5_000);
    const took = Date.now() - started;
    assert.ok(took < 2_000, `took ${took} ms`);
    assert.equal(good.counters.handshakes.length, 1);
    // The silent servers are not waited for: their dials were aborted when the good one won.
    const ok = await c.dial(good.ip, good.ports.OSSH!).catch((e: unknown) => e);
    assert.ok(!(ok instanceof Error), 'a forward opens once connected');
  },
);

test(
  'the last good server is tried first on the next run, alone for a grace period',
  { timeout: 15_000 },
  async (t) => {
    const dir = tempDir(t);
    const a = await server(t, { ip: '127.0.0.41', protocols: ['OSSH'], region: 'DE' });
    const b = await server(t, { ip: '127.0.0.42', protocols: ['SSH'], region: 'FR' });
    const config = clientConfig([a.encodedEntry, b.encodedEntry]);

    const first = controller(t, { config, dataDir: dir });
    first.c.start();
    await first.c.whenConnected(5_000);
    const winner = first.c.status.serverRegion === 'DE' ? a : b;
    const loser = winner === a ? b : a;
    await first.c.stop();

    const file = JSON.parse(readFileSync(join(dir, 'server-entries.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    assert.deepEqual(Object.keys(file).sort(), ['entries', 'lastConnected', 'lastGoodServer', 'version']);
    assert.equal(file['lastGoodServer'], winner.entry.tag);

    for (let run = 0; run < 3; run++) {
      const acceptedByLoser = loser.counters.accepted;
      const next = controller(t, { config, dataDir: dir });
      next.c.start();
      await next.c.whenConnected(5_000);
      assert.equal(next.c.status.serverRegion, winner === a ? 'DE' : 'FR');
      assert.equal(loser.counters.accepted, acceptedByLoser, 'the other server is not even dialled');
      await next.c.stop();
    }
    // The connected request of later runs carried the timestamp the server gave the first one.
    assert.ok(winner.counters.connected.length >= 2);
  },
);

test(
  'a host key that does not match the entry fails that candidate; the others are still tried',
  { timeout: 15_000 },
  async (t) => {
    const dir = tempDir(t);
    const impostor = await server(t, {
      ip: '127.0.0.51',
      protocols: ['OSSH'],
      hostKey: testHostKey(1),
      entryHostKeyBlobB64: testHostKey(0).publicKeyBlobB64,
    });
    const good = await server(t, { ip: '127.0.0.52', protocols: ['OSSH'] });
    const config = clientConfig([impostor.encodedEntry, good.encodedEntry]);
    // Make the impostor the server tried first (alone), so its failure is certain to be seen.
    const seed = controller(t, { config, dataDir: dir });
    seed.c.store.markSucceeded(impostor.entry);
    const { lines, logger } = captureLogger();
    const { c } = controller(t, { config, dataDir: dir, logger });
    assert.equal(c.store.lastGoodServer(), impostor.entry.tag);
    c.start();
    await c.whenConnected(5_000);
    assert.equal(c.status.serverId, good.entry.tag!.slice(0, 8));
    assert.equal(impostor.counters.accepted, 1);
    assert.equal(impostor.counters.authenticated, 0, 'no password was sent to the impostor');
    assert.ok(lines.some((l) => /unexpected SSH host key/.test(l)));
    assert.equal(c.store.lastGoodServer(), good.entry.tag);
  },
);

test(
  'only one candidate and it is an impostor: no tunnel, and dials fail as tunnel-down',
  { timeout: 15_000 },
  async (t) => {
    const impostor = await server(t, {
      ip: '127.0.0.53',
      protocols: ['SSH'],
      hostKey: testHostKey(1),
      entryHostKeyBlobB64: testHostKey(0).publicKeyBlobB64,
    });
    const { lines, logger } = captureLogger();
    const { c, states } = controller(t, {
      config: clientConfig([impostor.encodedEntry]),
      logger,
      timing: { backoffBaseMs: 50, backoffMaxMs: 100, dialWaitForTunnelMs: 300 },
    });
    c.start();
    await assert.rejects(c.dial('127.0.0.1', 9), (e: unknown) => {
      assert.equal((e as { failure?: string }).failure, 'tunnel-down');
      return true;
    });
    assert.ok(impostor.counters.accepted >= 2, 'rounds go on');
    assert.ok(lines.some((l) => /no tunnel from 1 candidate\(s\): 1 wrong host key/.test(l)));
    assert.deepEqual(
      states.map((s) => s.state),
      ['establishing'],
    );
  },
);

test(
  'thirty blackholed servers ahead of the good one do not hold the dial pool for their timeouts',
  { timeout: 15_000 },
  async (t) => {
    const entries: string[] = [];
    for (let i = 0; i < 30; i++) {
      const ip = `127.0.4.${10 + i}`;
      const silent = await startSilentListener(ip);
      t.after(() => silent.close());
      entries.push(makeTestEntry({ ip, ports: { OSSH: silent.port } }).encoded);
    }
    const good = await server(t, { ip: '127.0.4.200', protocols: ['OSSH'] });
    // Every silent dial would take the full 20 s connect timeout; the good one is always dialled last.
    const config = clientConfig([...entries, good.encodedEntry]);
    const store = ServerStore.open({
      embeddedEntries: config.EmbeddedServerEntries,
      signaturePublicKey: config.ServerEntrySignaturePublicKey,
    });
    store.candidates = () => store.entries();
    assert.equal(
      getServerEntryTag(store.entries().at(-1)!),
      getServerEntryTag(decodeServerEntry(good.encodedEntry)),
    );
    const { c } = controller(t, { config, store });
    const started = Date.now();
    c.start();
    await c.whenConnected(8_000);
    const took = Date.now() - started;
    assert.ok(took < 3_000, `took ${took} ms`);
  },
);

test(
  'each candidate has its deadlines: SSH that never starts, a handshake never answered',
  { timeout: 15_000 },
  async (t) => {
    const silent = await startSilentListener('127.0.0.54');
    t.after(() => silent.close());
    const mute = await server(t, { ip: '127.0.0.55', protocols: ['SSH'], ignoreHandshake: true });
    const { lines, logger } = captureLogger();
    const { c } = controller(t, {
      config: clientConfig([
        makeTestEntry({ ip: '127.0.0.54', ports: { SSH: silent.port } }).encoded,
        mute.encodedEntry,
      ]),
      logger,
      timing: { tunnelConnectTimeoutMs: 300, apiRequestTimeoutMs: 300, backoffBaseMs: 5_000 },
    });
    const started = Date.now();
    c.start();
    const summary = /no tunnel from 2 candidate\(s\): ([^"]*)"/;
    await waitFor(() => lines.some((l) => summary.test(l)));
    assert.ok(Date.now() - started < 1_500);
    const found = summary.exec(lines.find((l) => summary.test(l))!)![1]!;
    assert.deepEqual(found.split(', ').sort(), ['1 timed out (API handshake)', '1 timed out (SSH)']);
    assert.equal(mute.counters.authenticated, 1);
    assert.equal(c.status.state, 'establishing');
  },
);

test(
  'status requests carry what the reporter hands over, periodically and once more at stop',
  { timeout: 15_000 },
  async (t) => {
    const srv = await server(t, { ip: '127.0.0.61', protocols: ['OSSH'] });
    let pending: StatusData | undefined = { hostBytes: { 'example.org': 1234, '(OTHER)': 99 } };
    const putBack: StatusData[] = [];
    const { c } = controller(t, {
      config: clientConfig([srv.encodedEntry]),
      statusReporter: {
        take: () => {
          const d = pending;
          pending = undefined;
          return d;
        },
        putBack: (d) => putBack.push(d),
      },
      timing: { statusPeriodMinMs: 100, statusPeriodMaxMs: 150 },
    });
    c.start();
    await c.whenConnected(5_000);
    await waitFor(() => srv.counters.statuses.length === 1);
    assert.deepEqual(srv.counters.statuses[0]!.hostBytes, { 'example.org': 1234, '(OTHER)': 99 });
    assert.equal(putBack.length, 0);
    // Sent again at stop (the last report), and nothing new means no request.
    pending = { hostBytes: { 'example.org': 1 } };
    await c.stop();
    assert.equal(srv.counters.statuses.length, 2);
  },
);

test('protocol selection: offered ∩ LimitTunnelProtocols ∩ implemented', () => {
  const both = makeTestEntry({ ip: '192.0.2.1', ports: { SSH: 22, OSSH: 443 } }).fields;
  const osshOnly = makeTestEntry({ ip: '192.0.2.2', ports: { OSSH: 443 } }).fields;
  assert.deepEqual(usableTunnelProtocols(both, []), ['SSH', 'OSSH']);
  assert.deepEqual(usableTunnelProtocols(both, ['OSSH']), ['OSSH']);
  assert.deepEqual(usableTunnelProtocols(osshOnly, ['SSH']), []);
  assert.deepEqual(usableTunnelProtocols(both, ['QUIC-OSSH']), []);
  const meek = { ...both, capabilities: ['UNFRONTED-MEEK', 'OSSH'], meekServerPort: 80 };
  assert.deepEqual(usableTunnelProtocols(meek, []), ['OSSH'], 'offered but not implemented: not used');
});

test('reconnect delays double up to the cap and are shortened by jitter only', () => {
  const timing = { backoffBaseMs: 1000, backoffMaxMs: 60_000, backoffJitter: 0.5 };
  const none = () => 0;
  assert.deepEqual(
    [0, 1, 2, 3, 6, 7, 100].map((n) => reconnectDelayMs(n, timing, none)),
    [1000, 2000, 4000, 8000, 60_000, 60_000, 60_000],
  );
  for (let n = 0; n < 20; n++) {
    const d = reconnectDelayMs(n, timing);
    const full = Math.min(60_000, 1000 * 2 ** n);
    assert.ok(d <= full && d >= full * 0.5, `round ${n}: ${d}`);
  }
});

async function waitFor(predicate: () => boolean, ms = 5_000): Promise<void> {
  const until = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
