// `postern up` on a fresh data folder: it sets the network up, runs the back office, the server and the client,
// and curl through either local proxy fetches a loopback origin's bytes intact; it stops cleanly on Ctrl-C, and
// `postern stats report` then shows the session, its bytes and its domain bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { postern, posternSpawn, waitForOutput } from '../helpers/cli.ts';
import { freePort } from '../../src/common/free-port.ts';
import { tempDir } from '../helpers/tmp.ts';
import { startOrigin, expectedSha256 } from '../helpers/origin.ts';
import { readAuthenticatedDataPackage } from '../../src/protocol/authenticated-package.ts';

/** curl's SHA-256 of what it downloaded, via `sha256sum`, without holding the body in memory. */
function curlSha(args: string[]): Promise<{ code: number | null; sha: string }> {
  return new Promise((resolve) => {
    const curl = spawn('curl', ['-sS', '--fail', '--max-time', '120', ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const sum = spawn('sha256sum', [], { stdio: ['pipe', 'pipe', 'inherit'] });
    curl.stdout.pipe(sum.stdin);
    let out = '';
    sum.stdout.on('data', (d: Buffer) => (out += d.toString()));
    let code: number | null = null;
    curl.once('exit', (c) => (code = c));
    sum.once('exit', () => resolve({ code, sha: out.split(' ')[0] ?? '' }));
  });
}

async function runUp(
  data: string,
  check: (ports: { socks: number; http: number; lists: number }) => Promise<void>,
) {
  const ports = {
    socks: await freePort(),
    http: await freePort(),
    lists: await freePort(),
    backoffice: await freePort(),
  };
  const child = posternSpawn([
    'up',
    '--data',
    data,
    '--lists',
    `127.0.0.1:${ports.lists}`,
    '--socks',
    `127.0.0.1:${ports.socks}`,
    '--http',
    `127.0.0.1:${ports.http}`,
    '--backoffice',
    `127.0.0.1:${ports.backoffice}`,
    '--allow-destination',
    '127.0.0.0/8',
  ]);
  await waitForOutput(child, 'press Ctrl-C to stop', 60_000);
  await waitForOutput(child, 'connected via', 30_000).catch(() => undefined);
  try {
    await check(ports);
  } finally {
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGINT');
    assert.equal(await exited, 0, 'Ctrl-C stops everything cleanly');
  }
}

test('postern up: curl through SOCKS5 and HTTP proxies fetches 100 MB intact; the signed list is served', async (t) => {
  const data = join(tempDir(t), 'postern-data');
  const origin = await startOrigin();
  t.after(() => origin.close());
  const N = 100 * 1024 * 1024;
  await runUp(data, async (ports) => {
    const viaSocks = await curlSha([
      '--socks5-hostname',
      `127.0.0.1:${ports.socks}`,
      origin.url(`/bytes/${N}`),
    ]);
    assert.equal(viaSocks.code, 0);
    assert.equal(viaSocks.sha, expectedSha256(N));
    const viaHttp = await curlSha(['-x', `http://127.0.0.1:${ports.http}`, origin.url(`/bytes/${N}`)]);
    assert.equal(viaHttp.code, 0);
    assert.equal(viaHttp.sha, expectedSha256(N));
    // The sponsor counts bytes for "localhost": a request naming it in its Host header is counted under it.
    const named = await curlSha([
      '--socks5-hostname',
      `127.0.0.1:${ports.socks}`,
      '-H',
      'Host: localhost',
      origin.url(`/bytes/${1024 * 1024}`),
    ]);
    assert.equal(named.code, 0);

    // While it runs, the report shows the open tunnel (from the server's load reports) and the bytes for
    // "localhost" (from the client's status requests, every 10 s under up).
    type Live = {
      servers: { hostId: string; establishedTunnels: number }[];
      domains: { domain: string; region: string; bytes: number }[];
    };
    let live: Live = { servers: [], domains: [] };
    const ready = () =>
      live.servers.some((s) => s.establishedTunnels >= 1) &&
      live.domains.some((d) => d.domain === 'localhost' && d.region === 'None' && d.bytes >= 1024 * 1024);
    for (let i = 0; i < 90 && !ready(); i++) {
      await new Promise((r) => setTimeout(r, 1000));
      const r = postern(['stats', 'report', '--data', data, '--date', 'today', '--format', 'json']);
      if (r.status === 0) live = JSON.parse(r.stdout) as Live;
    }
    assert.deepEqual(
      live.servers.map((s) => [s.hostId, s.establishedTunnels]),
      [['local-1', 1]],
    );
    assert.ok(ready(), JSON.stringify(live.domains));

    const client = JSON.parse(readFileSync(join(data, 'client.json'), 'utf8')) as {
      RemoteServerListURLs: { URL: string }[];
      RemoteServerListSignaturePublicKey: string;
      EmbeddedServerEntries: string[];
    };
    const url = client.RemoteServerListURLs.find((u) => u.URL.includes(`:${ports.lists}/`))?.URL;
    assert.ok(url, 'the client config points at the served list');
    const res = await fetch(url);
    const list = readAuthenticatedDataPackage(
      Buffer.from(await res.arrayBuffer()),
      client.RemoteServerListSignaturePublicKey,
    );
    assert.deepEqual(list.split('\n'), client.EmbeddedServerEntries);
    assert.equal(
      (await fetch(url.replace('server_list_compressed', '..%2Fnetwork%2Fnetwork.json'))).status,
      404,
    );
  });
  // Ctrl-C closed the tunnel and shipped its events: the report shows the session, its bytes and domain bytes
  // for the loopback region ("None") and the local sponsor, and no address anywhere.
  assert.ok(existsSync(join(data, 'backoffice', 'stats.sqlite')));
  const r = postern(['stats', 'report', '--data', data, '--date', 'today', '--format', 'json']);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as {
    daily: { sponsorId: string; region: string; sessions: number; uniqueUsers: number; bytes: number }[];
    domains: { region: string; domain: string; bytes: number }[];
  };
  const sessions = report.daily.filter((d) => d.sponsorId === '0000000000000001' && d.region === 'None');
  assert.ok(sessions.reduce((n, d) => n + d.sessions, 0) >= 1, r.stdout);
  assert.ok(sessions.reduce((n, d) => n + d.uniqueUsers, 0) >= 1, r.stdout);
  assert.ok(sessions.reduce((n, d) => n + d.bytes, 0) >= 2 * N, r.stdout);
  const domainBytes = (name: string) =>
    report.domains.filter((d) => d.domain === name && d.region === 'None').reduce((n, d) => n + d.bytes, 0);
  assert.ok(domainBytes('localhost') >= 1024 * 1024, r.stdout);
  assert.ok(domainBytes('(OTHER)') >= 2 * N, r.stdout);
  assert.doesNotMatch(r.stdout, /127\.0\.0\.1/);
  const table = postern(['stats', 'report', '--data', data, '--date', 'today']);
  assert.equal(table.status, 0, table.stderr);
  assert.match(table.stdout, /Domain bytes[\s\S]*localhost/);
});

test('postern up: a second run reuses the network and the server', async (t) => {
  const data = join(tempDir(t), 'postern-data');
  await runUp(data, async () => undefined);
  const entry = readFileSync(join(data, 'server', 'server-entry.dat'), 'utf8');
  await runUp(data, async (ports) => {
    const r = await fetch(`http://127.0.0.1:${ports.lists}/server_list_compressed`);
    assert.equal(r.status, 200);
  });
  assert.equal(readFileSync(join(data, 'server', 'server-entry.dat'), 'utf8'), entry);
});
