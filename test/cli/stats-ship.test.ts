// Statistics from the command line: `server generate` gives each server a stats key and records its digest for
// the back office; `stats ship` and `server run` send the spool to the back office named in server.json.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ManualClock } from '../../src/common/clock.ts';
import { generateServer, initNetwork } from '../../src/ops/index.ts';
import { isPosternError } from '../../src/common/errors.ts';
import { listSpoolFiles } from '../../src/server/event-spool.ts';
import { statsKeyDigest, STATS_KEYS_FILE } from '../../src/stats/stats-key.ts';
import { postern, posternSpawn, waitForOutput } from '../helpers/cli.ts';
import { IngestReceiver, makeTestCertificate } from '../helpers/ingest-receiver.ts';
import { tempDir } from '../helpers/tmp.ts';
import { exactlyOnce, writeSpool } from '../stats/shipper-fixtures.ts';
import { freePort } from '../../src/common/free-port.ts';

function posternAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = posternSpawn(args);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((res) => child.once('close', (status) => res({ status, stdout, stderr })));
}

test('server generate keys the server for statistics; stats ship and server run send its spool', async (t) => {
  const dir = tempDir(t);
  const net = await initNetwork({ dir: join(dir, 'net'), clock: new ManualClock(), rsaBits: 1024 });
  t.after(() => net.close());
  const cert = makeTestCertificate();
  const certFile = join(dir, 'bo.pem');
  writeFileSync(certFile, cert.cert);
  const keys: Record<string, string> = {};
  const receiver = await IngestReceiver.start({ certificate: cert, keys, validateEvents: false });
  t.after(() => receiver.close());

  const srv = join(dir, 'srv');
  const port = await freePort();
  const gen = postern([
    'server',
    'generate',
    '--network',
    join(dir, 'net'),
    '--ip',
    '127.0.0.1',
    '--region',
    'CA',
    '--protocols',
    'OSSH',
    '--port',
    `OSSH=${port}`,
    '--host-id',
    'srv-1',
    '--out',
    srv,
    '--backoffice-url',
    receiver.url,
    '--backoffice-cert',
    certFile,
    '--json',
  ]);
  assert.equal(gen.status, 0, gen.stderr);
  const config = JSON.parse(readFileSync(join(srv, 'server.json'), 'utf8')) as Record<string, unknown>;
  const key = config['StatsShipperKey'] as string;
  assert.match(key, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(config['StatsBackOfficeURL'], receiver.url);
  assert.equal(config['StatsBackOfficeCertificate'], cert.cert);
  const registry = join(dir, 'net', STATS_KEYS_FILE);
  assert.equal(statSync(registry).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(readFileSync(registry, 'utf8')), { hosts: { 'srv-1': statsKeyDigest(key) } });
  keys['srv-1'] = key;

  // A back office without its certificate is refused: the server trusts only the pinned one.
  await assert.rejects(
    generateServer(
      net,
      { ip: '127.0.0.1', region: 'CA', out: join(dir, 'x'), hostKeyBits: 1024, backOfficeUrl: receiver.url },
      new ManualClock(),
    ),
    (e) => isPosternError(e, 'BAD_ARGUMENT') && /--backoffice-cert/.test(e.message),
  );
  await assert.rejects(
    generateServer(
      net,
      { ip: '127.0.0.1', region: 'CA', out: join(dir, 'x'), hostKeyBits: 1024, backOfficeUrl: 'http://bo:1' },
      new ManualClock(),
    ),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );

  // stats ship --once: one pass, a report, complete files deleted.
  const spool = join(srv, 'spool');
  mkdirSync(spool, { recursive: true });
  writeSpool(spool, [20, 20, 20]);
  // Spawned, not spawnSync: the receiver answers from this very process.
  const once = await posternAsync([
    'stats',
    'ship',
    '--config',
    join(srv, 'server.json'),
    '--once',
    '--json',
  ]);
  assert.equal(once.status, 0, once.stderr);
  const report = JSON.parse(once.stdout) as { events: number; filesDeleted: number };
  assert.equal(report.events, 60);
  assert.equal(report.filesDeleted, 2);
  assert.equal(exactlyOnce(receiver.events, 60), null);

  // server run ships in process: new spool files appear, and reach the back office; SIGTERM stops it cleanly.
  writeSpool(spool, [15, 15], 60, 1_764_000_001_000);
  const child = posternSpawn(['server', 'run', '--config', join(srv, 'server.json')]);
  t.after(() => child.kill('SIGKILL'));
  await waitForOutput(child, 'running');
  const deadline = Date.now() + 15_000;
  while (receiver.events.length < 90 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(exactlyOnce(receiver.events, 90), null);
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  const left = await listSpoolFiles(spool);
  assert.ok(left.length >= 1, 'the newest file stays');
});

test('stats ship refuses a config that names no back office, saying what to set', (t) => {
  const dir = tempDir(t);
  const cfg = {
    ConfigVersion: 1,
    HostID: 'srv-1',
    ServerIPAddress: '127.0.0.1',
    ListenAddress: '127.0.0.1',
    Region: 'CA',
    TunnelProtocolPorts: {},
    SSHPrivateKey: 'x',
    SSHUserName: 'x',
    SSHPassword: 'x',
    ObfuscatedSSHKey: 'x',
  };
  writeFileSync(join(dir, 'server.json'), JSON.stringify(cfg));
  const r = postern(['stats', 'ship', '--config', join(dir, 'server.json')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /StatsBackOfficeURL/);
  writeFileSync(
    join(dir, 'server.json'),
    JSON.stringify({ ...cfg, StatsBackOfficeURL: 'https://127.0.0.1:1' }),
  );
  const r2 = postern(['stats', 'ship', '--config', join(dir, 'server.json')]);
  assert.equal(r2.status, 1);
  assert.match(r2.stderr, /StatsShipperKey or StatsBackOfficeCertificate/);
  assert.ok(!r2.stderr.includes('127.0.0.1'));
});
