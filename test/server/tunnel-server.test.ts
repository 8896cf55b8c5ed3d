// The tunnel server end to end over real sockets: SSH and OSSH listeners, Psiphon auth, the handshake API,
// port forwards under the destination policy, and the events it writes (which never hold an address).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { ManualClock } from '../../src/common/clock.ts';
import { silentLogger } from '../../src/common/logger.ts';
import { initNetwork, generateServer, addSponsor } from '../../src/ops/index.ts';
import { ServerConfigSchema } from '../../src/protocol/server-config.ts';
import { decodeServerEntry } from '../../src/protocol/server-entry.ts';
import { dialObfuscatedSsh } from '../../src/transport/index.ts';
import { connectSsh, encodeSshPasswordPayload, type SshClientConnection } from '../../src/ssh/index.ts';
import { ApiClient, makeSessionId, parseHandshakeResult } from '../../src/client/api-client.ts';
import { FakeGeoIp } from '../../src/server/geoip-fake.ts';
import { TunnelServer } from '../../src/server/tunnel-server.ts';
import type { StatsEvent } from '../../src/stats/events.ts';
import { findUndeclaredEventFields } from '../../src/privacy/index.ts';
import { startOrigin, expectedSha256 } from '../helpers/origin.ts';
import { tempDir } from '../helpers/tmp.ts';

const SPONSOR = '1111222233334444';

async function setup(t: { after(fn: () => void | Promise<void>): void }, allow = ['127.0.0.0/8']) {
  const dir = tempDir(t);
  const clock = new ManualClock(Date.UTC(2026, 10, 29, 17, 42, 13));
  const net = await initNetwork({ dir: join(dir, 'net'), clock, rsaBits: 1024 });
  await addSponsor(
    net.store,
    {
      id: SPONSOR,
      name: 'S',
      homePages: ['https://example.org/home'],
      domainRegexes: ['^(.*\\.)?localhost$=localhost'],
    },
    clock,
  );
  const g = await generateServer(
    net,
    { region: 'CA', ip: '127.0.0.1', out: join(dir, 'srv'), protocols: ['OSSH', 'SSH'], hostKeyBits: 1024 },
    clock,
  );
  await net.close();
  // Listen on ports the system picks, so tests never collide.
  const config = {
    ...ServerConfigSchema.parse(JSON.parse(readFileSync(g.configPath, 'utf8'))),
    TunnelProtocolPorts: { OSSH: 0, SSH: 0 },
  };
  const events: StatsEvent[] = [];
  const server = new TunnelServer({
    config,
    configDir: join(g.configPath, '..'),
    geoip: new FakeGeoIp({
      '127.0.0.0/8': { region: 'CA', city: 'Toronto', isp: 'Example ISP', asn: '64500' },
    }),
    events: { record: (e) => events.push(e) },
    clock,
    log: silentLogger(),
    allowDestinations: allow,
  });
  const ports = await server.start();
  t.after(() => server.stop());
  const entry = decodeServerEntry(g.encodedEntry);
  return { server, ports, entry, events, clock };
}

async function openTunnel(
  protocol: 'SSH' | 'OSSH',
  port: number,
  entry: Record<string, unknown>,
  password = String(entry['sshPassword']),
): Promise<{ ssh: SshClientConnection; socket: Socket }> {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
  const stream: Duplex =
    protocol === 'OSSH'
      ? dialObfuscatedSsh(socket, { obfuscationKeyword: String(entry['sshObfuscatedKey']) })
      : socket;
  const ssh = await connectSsh(stream, {
    username: String(entry['sshUsername']),
    password: encodeSshPasswordPayload({
      sessionId: makeSessionId(),
      sshPassword: password,
      clientCapabilities: ['server-requests'],
      sponsorId: SPONSOR,
    }),
    expectedHostKeyBlob: Buffer.from(String(entry['sshHostKey']), 'base64'),
    clientVersion: 'SSH-2.0-Test',
    encryptThenMac: protocol === 'SSH',
  });
  return { ssh, socket };
}

/** HTTP/1.0 GET over a port-forward channel: the status, and the SHA-256 and length of the body. */
function getThrough(
  channel: Duplex,
  host: string,
  port: number,
  path: string,
): Promise<{ status: number; sha: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let head: Buffer | null = Buffer.alloc(0);
    let status = 0;
    let bytes = 0;
    channel.on('data', (d: Buffer) => {
      if (head === null) {
        h.update(d);
        bytes += d.length;
        return;
      }
      head = Buffer.concat([head, d]);
      const i = head.indexOf('\r\n\r\n');
      if (i < 0) return;
      status = Number(/^HTTP\/1\.\d (\d{3})/.exec(head.subarray(0, i).toString('latin1'))?.[1] ?? 0);
      const body = head.subarray(i + 4);
      head = null;
      h.update(body);
      bytes += body.length;
    });
    channel.once('end', () => resolve({ status, sha: h.digest('hex'), bytes }));
    channel.once('error', reject);
    channel.write(`GET ${path} HTTP/1.0\r\nHost: ${host}:${port}\r\n\r\n`);
  });
}

for (const protocol of ['OSSH', 'SSH'] as const) {
  test(`${protocol}: handshake, a 20 MB download intact, and a server_tunnel event without any address`, async (t) => {
    const { ports, entry, events } = await setup(t);
    const origin = await startOrigin();
    t.after(() => origin.close());
    const { ssh } = await openTunnel(protocol, ports[protocol] as number, entry);
    const api = new ApiClient({
      propagationChannelId: 'ABCDEF0123456789',
      sponsorId: SPONSOR,
      clientVersion: '1',
      clientPlatform: 'Postern',
    });
    const hs = api.handshakeRequest({ tunnelProtocol: protocol, dialDurationMs: 5 });
    const result = parseHandshakeResult(await ssh.request(hs.name, hs.payload), hs.responseEncoding);
    assert.equal(result.clientRegion, 'CA');
    assert.deepEqual(result.homepages, ['https://example.org/home']);

    const N = 20 * 1024 * 1024;
    const channel = await ssh.openDirectTcpip('127.0.0.1', origin.port);
    const got = await getThrough(channel, '127.0.0.1', origin.port, `/bytes/${N}`);
    assert.equal(got.status, 200);
    assert.equal(got.bytes, N);
    assert.equal(got.sha, expectedSha256(N));

    ssh.close();
    await new Promise((r) => setTimeout(r, 200));
    const tunnelEvent = events.find((e) => e.event_name === 'server_tunnel');
    assert.ok(tunnelEvent, `events: ${JSON.stringify(events)}`);
    assert.equal(tunnelEvent['relay_protocol'], protocol);
    assert.equal(tunnelEvent['client_region'], 'CA');
    assert.equal(tunnelEvent['sponsor_id'], SPONSOR);
    assert.equal(tunnelEvent['peak_concurrent_port_forwards'], 1);
    assert.ok(Number(tunnelEvent['bytes_down_tcp']) >= N, JSON.stringify(tunnelEvent));
    assert.equal(tunnelEvent['start_time'], '2026-11-29T17:00:00.000Z', 'times are cut to the hour');
    assert.doesNotMatch(JSON.stringify(events), /127\.0\.0\.1|::1/, 'no address in any event');
    // Every field of every event is declared in the data inventory.
    for (const e of events) assert.deepEqual(findUndeclaredEventFields(e.event_name, e), [], e.event_name);
  });
}

test('forwards to loopback are refused unless allowed; forwards before the handshake are refused', async (t) => {
  const { ports, entry } = await setup(t, []);
  const origin = await startOrigin();
  t.after(() => origin.close());
  const { ssh } = await openTunnel('SSH', ports['SSH'] as number, entry);
  await assert.rejects(ssh.openDirectTcpip('127.0.0.1', origin.port), /refused/i, 'before handshake');
  const api = new ApiClient({
    propagationChannelId: 'ABCDEF0123456789',
    sponsorId: SPONSOR,
    clientVersion: '1',
    clientPlatform: 'Postern',
  });
  const hs = api.handshakeRequest({ tunnelProtocol: 'SSH', dialDurationMs: 5 });
  await ssh.request(hs.name, hs.payload);
  await assert.rejects(ssh.openDirectTcpip('127.0.0.1', origin.port), /refused/i, 'loopback not allowed');
  await assert.rejects(ssh.openDirectTcpip('10.1.2.3', 80), /refused/i, 'private not allowed');
  ssh.close();
});

test('a wrong password is refused; random bytes on the OSSH port get no answer and an irregular_tunnel event', async (t) => {
  const { ports, entry, events } = await setup(t);
  await assert.rejects(openTunnel('SSH', ports['SSH'] as number, entry, 'wrong'));
  const socket = connect({ host: '127.0.0.1', port: ports['OSSH'] as number });
  await new Promise<void>((r) => socket.once('connect', () => r()));
  let answered = 0;
  socket.on('data', (d: Buffer) => (answered += d.length));
  socket.write(Buffer.alloc(200, 0x41));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(answered, 0, 'the server says nothing to a prober');
  socket.destroy();
  // The server still serves others.
  const { ssh } = await openTunnel('OSSH', ports['OSSH'] as number, entry);
  ssh.close();
  await new Promise((r) => setTimeout(r, 50));
  const irregular = events.filter((e) => e.event_name === 'irregular_tunnel');
  for (const e of events) assert.deepEqual(findUndeclaredEventFields(e.event_name, e), [], e.event_name);
  assert.equal(irregular.length, 1);
  assert.equal(irregular[0]?.['client_region'], 'CA');
  assert.doesNotMatch(JSON.stringify(events), /127\.0\.0\.1/);
});

test('status reports become hourly domain buckets, failure codes and list downloads: no URL, no error text', async (t) => {
  const { server, ports, entry, events } = await setup(t);
  const { ssh } = await openTunnel('OSSH', ports['OSSH'] as number, entry);
  const api = new ApiClient({
    propagationChannelId: 'ABCDEF0123456789',
    sponsorId: SPONSOR,
    clientVersion: '7',
    clientPlatform: 'Android_14_com.example',
  });
  const hs = api.handshakeRequest({ tunnelProtocol: 'OSSH', dialDurationMs: 5 });
  parseHandshakeResult(await ssh.request(hs.name, hs.payload), hs.responseEncoding);
  const common = {
    propagation_channel_id: 'ABCDEF0123456789',
    sponsor_id: SPONSOR,
    client_version: '7',
    client_platform: 'Windows',
  };
  for (const bytes of [5000, 7000]) {
    const st = api.statusRequest({
      hostBytes: { localhost: bytes, '(OTHER)': 100 },
      failedTunnelStats:
        bytes === 5000
          ? [
              {
                ...common,
                session_id: '0123456789abcdef0123456789abcdef',
                last_connected: 'None',
                client_failed_timestamp: '2026-11-29T17:12:00Z',
                relay_protocol: 'SSH',
                tunnel_error: 'dial tcp 192.0.2.1:22: i/o timeout',
              },
            ]
          : [],
      remoteServerListStats:
        bytes === 5000
          ? [
              {
                ...common,
                client_download_timestamp: '2026-11-29T17:10:00Z',
                url: 'https://lists.example/secret-path/server_list_compressed',
                etag: '"abc"',
                bytes: '1234',
                duration: '80',
                authenticated: '1',
              },
            ]
          : [],
    })!;
    assert.ok(await ssh.request(st.name, st.payload));
  }
  ssh.close();
  await server.stop(); // flushes the domain buckets
  const domains = events.filter((e) => e.event_name === 'domain_dest_bytes');
  assert.deepEqual(
    domains.map((e) => [e['domain' as keyof StatsEvent], e['bytes' as keyof StatsEvent]]).sort(),
    [
      ['(OTHER)', 200],
      ['localhost', 12000],
    ],
    'two reports summed into one bucket per domain',
  );
  const failed = events.find((e) => e.event_name === 'failed_tunnel');
  assert.equal(failed?.['tunnel_error' as keyof StatsEvent], 'timeout');
  assert.equal(failed?.['relay_protocol'], 'SSH');
  assert.equal(failed?.['client_platform'], 'Windows');
  const list = events.find((e) => e.event_name === 'remote_server_list');
  assert.equal(list?.['bytes' as keyof StatsEvent], 1234);
  assert.equal(list?.['authenticated' as keyof StatsEvent], true);
  const text = JSON.stringify(events);
  assert.doesNotMatch(text, /secret-path|lists\.example|192\.0\.2\.1|i\/o timeout|abc/);
  for (const e of events) assert.deepEqual(findUndeclaredEventFields(e.event_name, e), [], e.event_name);
  assert.equal(server.refusedEventCount, 0);
});
