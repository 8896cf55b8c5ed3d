// A tunnel that dies: the server killed mid-download (the download fails at once, dials wait briefly then fail,
// and the tunnel comes back with the server), and a server that hangs without closing anything (found by the
// periodic keep-alive, or by the probe after a port forward times out).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  DialError,
  startSocksProxy,
  TunnelController,
  type ControllerOptions,
  type ControllerStatus,
  type StatusData,
} from '../../src/client/index.ts';
import { ClientConfigSchema, type ClientConfig } from '../../src/protocol/index.ts';
import {
  startMiniTunnelServer,
  testSigningKey,
  TEST_PROPAGATION_CHANNEL_ID,
  TEST_SPONSOR_ID,
  type MiniServer,
} from '../helpers/mini-tunnel-server.ts';
import { expectedSha256, startOrigin } from '../helpers/origin.ts';
import { curl } from './proxy-fixtures.ts';

type Hooks = { after(fn: () => unknown): void };

function clientConfig(entries: string[]): ClientConfig {
  return ClientConfigSchema.parse({
    PropagationChannelId: TEST_PROPAGATION_CHANNEL_ID,
    SponsorId: TEST_SPONSOR_ID,
    ServerEntrySignaturePublicKey: testSigningKey().publicKey,
    EmbeddedServerEntries: entries,
  });
}

function controller(t: Hooks, opts: ControllerOptions): { c: TunnelController; states: ControllerStatus[] } {
  const c = new TunnelController(opts);
  const states: ControllerStatus[] = [];
  c.on('state', (s) => states.push(s));
  t.after(() => c.stop());
  return { c, states };
}

async function server(t: Hooks, opts: Parameters<typeof startMiniTunnelServer>[0]): Promise<MiniServer> {
  const s = await startMiniTunnelServer(opts);
  t.after(() => s.kill());
  return s;
}

async function waitFor(predicate: () => boolean, ms = 5_000): Promise<void> {
  const until = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test(
  'server killed mid-download: reconnecting, the download fails at once, dials fail while down, and the tunnel returns with the server',
  { timeout: 15_000 },
  async (t) => {
    const origin = await startOrigin();
    t.after(() => origin.close());
    const srv = await server(t, { ip: '127.0.0.71', protocols: ['OSSH'] });
    const { c, states } = controller(t, {
      config: clientConfig([srv.encodedEntry]),
      timing: { backoffBaseMs: 100, backoffMaxMs: 300, dialWaitForTunnelMs: 500 },
    });
    const socks = await startSocksProxy({ dialer: c });
    t.after(() => socks.close());
    const proxy = ['--socks5-hostname', `127.0.0.1:${socks.address.port}`];
    c.start();
    await c.whenConnected(5_000);

    const size = 64 * 1024 * 1024;
    const download = curl([...proxy, '--limit-rate', '16M', origin.url(`/bytes/${size}`)], 30_000);
    await waitFor(() => srv.counters.forwards === 1);
    await new Promise((r) => setTimeout(r, 500));
    await srv.kill();
    const killedAt = Date.now();

    const failed = await download;
    const tookToFail = Date.now() - killedAt;
    assert.notEqual(failed.code, 0, 'the interrupted download is reported as failed');
    assert.ok(failed.stdout.length < size);
    // curl reads slowly (rate-limited): what the kernel had buffered for it still takes a moment to drain.
    assert.ok(tookToFail < 3_000, `curl noticed after ${tookToFail} ms`);
    await waitFor(() => states.some((s) => s.state === 'reconnecting'));
    const reconnecting = states.find((s) => s.state === 'reconnecting')!;
    assert.ok(reconnecting.reason && reconnecting.reason.length > 0);

    // While the server is down: a dial waits briefly, then fails; curl gets a SOCKS failure, not a hang.
    const dialStarted = Date.now();
    await assert.rejects(
      c.dial(origin.host, origin.port),
      (e: unknown) => e instanceof DialError && e.failure === 'tunnel-down',
    );
    const waited = Date.now() - dialStarted;
    assert.ok(waited >= 400 && waited < 1_500, `dial waited ${waited} ms`);
    const refused = await curl([...proxy, origin.url('/bytes/10')], 10_000);
    assert.notEqual(refused.code, 0);
    assert.equal(c.status.state, 'reconnecting');

    await srv.start();
    await c.whenConnected(5_000);
    const again = await curl([...proxy, origin.url('/bytes/1000000')]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(sha256(again.stdout), expectedSha256(1_000_000));
    assert.deepEqual(
      states.map((s) => s.state),
      ['establishing', 'connected', 'reconnecting', 'connected'],
    );
    assert.equal(srv.sessions.length, 2);
    assert.equal(srv.sessions[0]!.sessionId, srv.sessions[1]!.sessionId, 'one session ID for the whole run');
  },
);

test(
  'a server that hangs is found by the periodic keep-alive, and the tunnel is re-established',
  { timeout: 15_000 },
  async (t) => {
    const srv = await server(t, { ip: '127.0.0.72', protocols: ['SSH'] });
    const { c, states } = controller(t, {
      config: clientConfig([srv.encodedEntry]),
      timing: {
        keepAlivePeriodMinMs: 150,
        keepAlivePeriodMaxMs: 200,
        keepAliveInactiveMs: 100,
        keepAliveTimeoutMs: 400,
        backoffBaseMs: 50,
      },
    });
    c.start();
    await c.whenConnected(5_000);
    await waitFor(() => srv.counters.keepAlives >= 2);
    assert.equal(c.status.state, 'connected', 'answered keep-alives keep the tunnel');
    srv.freeze();
    await waitFor(() => states.some((s) => s.state === 'reconnecting'));
    assert.match(states.find((s) => s.state === 'reconnecting')!.reason!, /keep-alive within 400 ms/);
    // The listener still works: a new tunnel comes up.
    await waitFor(() => states.filter((s) => s.state === 'connected').length === 2);
    assert.equal(srv.sessions.length, 2);
  },
);

test(
  'a port forward that times out triggers a keep-alive probe that finds the dead tunnel',
  { timeout: 15_000 },
  async (t) => {
    const srv = await server(t, { ip: '127.0.0.73', protocols: ['SSH'] });
    const { c, states } = controller(t, {
      config: clientConfig([srv.encodedEntry]),
      timing: { portForwardDialTimeoutMs: 300, probeTimeoutMs: 300, backoffBaseMs: 50 },
    });
    c.start();
    await c.whenConnected(5_000);
    srv.freeze();
    await assert.rejects(
      c.dial('127.0.0.1', 9),
      (e: unknown) => e instanceof DialError && e.failure === 'timeout',
    );
    await waitFor(() => states.some((s) => s.state === 'reconnecting'), 2_000);
    assert.match(states.find((s) => s.state === 'reconnecting')!.reason!, /keep-alive within 300 ms/);
  },
);

test('a status request that gets no answer is put back for the next one', { timeout: 15_000 }, async (t) => {
  const srv = await server(t, { ip: '127.0.0.74', protocols: ['SSH'] });
  const putBack: StatusData[] = [];
  let pending: StatusData | undefined;
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
    timing: {
      statusPeriodMinMs: 100,
      statusPeriodMaxMs: 100,
      apiRequestTimeoutMs: 300,
      finalStatusTimeoutMs: 200,
    },
  });
  c.start();
  await c.whenConnected(5_000);
  await waitFor(() => srv.counters.connected.length === 1);
  srv.freeze();
  pending = { hostBytes: { 'example.org': 7 } };
  await waitFor(() => putBack.length === 1);
  assert.deepEqual(putBack[0], { hostBytes: { 'example.org': 7 } });
  assert.equal(srv.counters.statuses.length, 0);
});
