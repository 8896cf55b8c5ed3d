// `postern backoffice init` and `run` as an operator uses them, with a real server's shipper sending a spool
// file to it and the operator reading the report back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { postern, posternSpawn, waitForOutput } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';
import { httpsRequest, tunnelBase, tunnelEvent, ndjson } from './fixtures.ts';

test('init writes BO.json, a TLS identity and a token; run serves, ships and reports; SIGTERM stops it', async (t) => {
  const dir = tempDir(t);
  const net = join(dir, 'net');
  const data = join(dir, 'bo');
  assert.equal(postern(['network', 'init', '--dir', net]).status, 0);

  const init = postern([
    'backoffice',
    'init',
    '--data',
    data,
    '--network',
    net,
    '--listen',
    '127.0.0.1:0',
    '--json',
  ]);
  assert.equal(init.status, 0, init.stderr);
  const out = JSON.parse(init.stdout) as Record<string, string>;
  const cert = readFileSync(join(data, 'backoffice-tls-cert.pem'), 'utf8');
  assert.equal(out['fingerprint256'], new X509Certificate(cert).fingerprint256);
  assert.equal(statSync(join(data, 'backoffice-tls-key.pem')).mode & 0o777, 0o600);
  assert.equal(statSync(join(data, 'operator-token')).mode & 0o777, 0o600);
  const config = JSON.parse(readFileSync(join(data, 'BO.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(config['NetworkDirectory'], net);

  const again = postern(['backoffice', 'init', '--data', data, '--network', net]);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /exists already/);
  const noNet = postern(['backoffice', 'init', '--data', join(dir, 'x'), '--network', join(dir, 'none')]);
  assert.equal(noNet.status, 2);
  assert.match(noNet.stderr, /not a network folder/);

  const child = posternSpawn(['backoffice', 'run', '--config', join(data, 'BO.json')], {
    POSTERN_BACKOFFICE_ROLLUP_INTERVAL_MS: '1000',
  });
  let exited = false;
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => ((exited = true), r(code))));
  t.after(() => {
    if (!exited) child.kill('SIGKILL');
  });
  const line = await waitForOutput(child, 'certificate SHA-256');
  const m = /back office listening on (https:\/\/127\.0\.0\.1:\d+) certificate SHA-256 ([0-9A-F:]{95})/.exec(
    line,
  );
  assert.ok(m, line);
  const url = m[1]!;
  assert.equal(m[2], out['fingerprint256']);
  assert.equal((await httpsRequest(url, cert, { path: '/healthz' })).status, 200);

  // A server generated against this back office ships its spool to it.
  const srv = join(dir, 'srv');
  const certFile = join(data, 'backoffice-tls-cert.pem');
  const gen = postern([
    'server',
    'generate',
    '--network',
    net,
    '--ip',
    '127.0.0.1',
    '--region',
    'CA',
    '--out',
    srv,
    '--host-id',
    'srv1',
    '--backoffice-url',
    url,
    '--backoffice-cert',
    certFile,
  ]);
  assert.equal(gen.status, 0, gen.stderr);
  mkdirSync(join(srv, 'spool'), { recursive: true });
  const today = new Date().toISOString().slice(0, 10);
  const hour = `${today}T00:00:00Z`;
  writeFileSync(
    join(srv, 'spool', 'events-1764410400000-0000000001.jsonl'),
    ndjson([
      tunnelEvent('srv1', { timestamp: hour, start_time: hour }),
      { ...tunnelBase('srv1'), timestamp: hour, event_name: 'unique_user' },
    ]),
  );
  const ship = postern(['stats', 'ship', '--config', join(srv, 'server.json'), '--once', '--json']);
  assert.equal(ship.status, 0, ship.stderr);
  assert.equal((JSON.parse(ship.stdout) as Record<string, number>)['events'], 2);

  const token = readFileSync(join(data, 'operator-token'), 'utf8').trim();
  let rows: Array<Record<string, unknown>> = [];
  for (let i = 0; i < 50 && rows.length === 0; i++) {
    const r = await httpsRequest(url, cert, {
      path: `/v1/stats/daily?from=${today}&to=${today}`,
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(r.status, 200, r.text);
    rows = r.json()['rows'] as Array<Record<string, unknown>>;
    if (rows.length === 0) await new Promise((res) => setTimeout(res, 200));
  }
  assert.equal(rows.length, 1, 'rolled up by the scheduled job');
  assert.equal(rows[0]!['sessions'], 1);
  assert.equal(rows[0]!['region'], 'CA');

  child.kill('SIGTERM');
  assert.equal(await exit, 0);
});
