// `postern client run` as a user runs it: a process with proxies on free ports, curl through both, a line per
// state change, and Ctrl-C stopping it cleanly with exit 0. Also the refusals: bad flags and useless configs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { postern, posternSpawn, waitForOutput } from '../helpers/cli.ts';
import {
  startMiniTunnelServer,
  testSigningKey,
  TEST_PROPAGATION_CHANNEL_ID,
  TEST_SPONSOR_ID,
} from '../helpers/mini-tunnel-server.ts';
import { expectedSha256, startOrigin } from '../helpers/origin.ts';
import { tempDir } from '../helpers/tmp.ts';
import { curl } from '../client/proxy-fixtures.ts';
import { freePort } from '../../src/common/free-port.ts';

function writeConfig(dir: string, entries: string[]): string {
  const file = join(dir, 'client.json');
  writeFileSync(
    file,
    JSON.stringify({
      PropagationChannelId: TEST_PROPAGATION_CHANNEL_ID,
      SponsorId: TEST_SPONSOR_ID,
      ServerEntrySignaturePublicKey: testSigningKey().publicKey,
      EmbeddedServerEntries: entries,
    }),
  );
  return file;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test(
  'client run: proxies up, curl through both, Ctrl-C stops it with exit 0',
  { timeout: 15_000 },
  async (t) => {
    const dir = tempDir(t);
    const origin = await startOrigin();
    t.after(() => origin.close());
    const srv = await startMiniTunnelServer({ ip: '127.0.0.81', protocols: ['OSSH', 'SSH'], region: 'CA' });
    t.after(() => srv.kill());
    const config = writeConfig(dir, [srv.encodedEntry]);
    const socksPort = await freePort();
    const httpPort = await freePort();
    const data = join(dir, 'data');
    const child = posternSpawn([
      'client',
      'run',
      '--config',
      config,
      '--socks',
      `127.0.0.1:${socksPort}`,
      '--http',
      `127.0.0.1:${httpPort}`,
      '--protocols',
      'OSSH',
      '--data',
      data,
    ]);
    t.after(() => child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const output = await waitForOutput(child, 'connected via', 10_000);
    assert.match(
      output,
      new RegExp(`SOCKS5 proxy on 127\\.0\\.0\\.1:${socksPort}, HTTP proxy on 127\\.0\\.0\\.1:${httpPort}`),
    );
    assert.match(output, /^establishing$/m);
    assert.match(output, /^connected via OSSH to CA \(client region None\)$/m);

    const size = 2 * 1024 * 1024;
    const path = `/bytes/${size}`;
    const viaSocks = await curl(['--socks5-hostname', `127.0.0.1:${socksPort}`, origin.url(path)]);
    assert.equal(viaSocks.code, 0, viaSocks.stderr);
    assert.equal(sha256(viaSocks.stdout), expectedSha256(size));
    const viaHttp = await curl(['--proxy', `http://127.0.0.1:${httpPort}`, origin.url(path)]);
    assert.equal(viaHttp.code, 0, viaHttp.stderr);
    assert.equal(sha256(viaHttp.stdout), expectedSha256(size));

    let rest = '';
    child.stdout.on('data', (d: Buffer) => (rest += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGINT');
    assert.equal(await exited, 0);
    assert.match(rest, /^stopped$/m);
    assert.ok(existsSync(join(data, 'server-entries.json')));
    // Nothing printed or logged names a destination.
    for (const text of [output, rest, stderr]) {
      assert.ok(!text.includes(path), 'no URL path in the output');
      assert.ok(!text.includes(String(origin.port)), 'no destination port in the output');
    }
  },
);

test('client run --json: state changes as JSON lines', { timeout: 15_000 }, async (t) => {
  const dir = tempDir(t);
  const srv = await startMiniTunnelServer({ ip: '127.0.0.82', protocols: ['SSH'], region: 'DE' });
  t.after(() => srv.kill());
  const config = writeConfig(dir, [srv.encodedEntry]);
  const child = posternSpawn([
    'client',
    'run',
    '--config',
    config,
    '--socks',
    '127.0.0.1:0',
    '--http',
    '127.0.0.1:0',
    '--data',
    join(dir, 'data'),
    '--json',
  ]);
  t.after(() => child.kill('SIGKILL'));
  const output = await waitForOutput(child, '"connected"', 10_000);
  const lines = output
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lines[0]!['event'], 'listening');
  assert.match(String(lines[0]!['socks']), /^127\.0\.0\.1:\d+$/);
  const connected = lines.find((l) => l['state'] === 'connected')!;
  assert.equal(connected['protocol'], 'SSH');
  assert.equal(connected['serverRegion'], 'DE');
  assert.equal(typeof connected['bytesDown'], 'number');
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
});

test('client run refuses what cannot work, saying why', { timeout: 15_000 }, async (t) => {
  const dir = tempDir(t);
  const empty = writeConfig(dir, []);
  const r1 = postern(['client', 'run', '--config', empty, '--data', join(dir, 'd1')]);
  assert.equal(r1.status, 1);
  assert.match(r1.stderr, /no usable server entries/);
  const r2 = postern(['client', 'run', '--config', empty, '--protocols', 'FOO', '--data', join(dir, 'd2')]);
  assert.equal(r2.status, 2);
  assert.match(r2.stderr, /unknown tunnel protocol "FOO"/);
  const r3 = postern([
    'client',
    'run',
    '--config',
    empty,
    '--protocols',
    'QUIC-OSSH',
    '--data',
    join(dir, 'd3'),
  ]);
  assert.equal(r3.status, 2);
  assert.match(r3.stderr, /none of which this client speaks/);
  const r4 = postern(['client', 'run', '--config', join(dir, 'missing.json')]);
  assert.equal(r4.status, 1);
  assert.match(r4.stderr, /cannot read/);
  const r5 = postern(['client', 'run', '--config', empty, '--socks', 'nonsense']);
  assert.equal(r5.status, 2);
  assert.match(r5.stderr, /--socks "nonsense" must be HOST:PORT/);
});
