// BO.json: defaults, precedence (file, environment, flags), path resolution; and the files made on first run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ManualClock } from '../../src/common/clock.ts';
import { isPosternError } from '../../src/common/errors.ts';
import {
  backofficePaths,
  configBase,
  loadBackofficeConfig,
  DEFAULT_LISTEN_PORT,
  DEFAULT_ROLLUP_INTERVAL_MS,
} from '../../src/backoffice/config.ts';
import {
  certificateNames,
  ensureOperatorToken,
  ensureTlsIdentity,
  operatorTokenMatches,
} from '../../src/backoffice/identity.ts';
import { findHostByDigest } from '../../src/backoffice/host-keys.ts';
import { tempDir } from '../helpers/tmp.ts';

test('defaults: loopback 8443, 60 days, stats.sqlite and secrets in the data folder', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'BO.json');
  writeFileSync(file, JSON.stringify({ NetworkDirectory: '../net' }));
  const c = loadBackofficeConfig(file, {}, {});
  assert.equal(c.ListenAddress, '127.0.0.1');
  assert.equal(c.ListenPort, DEFAULT_LISTEN_PORT);
  assert.equal(c.RetentionDays, 60);
  assert.equal(c.RollupIntervalMs, DEFAULT_ROLLUP_INTERVAL_MS);
  assert.equal(c.SponsorK, 10);
  assert.equal(c.SponsorEpsilon, undefined);
  const p = backofficePaths(c, configBase(file));
  assert.equal(p.dataDir, dir);
  assert.equal(p.networkDir, join(dir, '..', 'net'));
  assert.equal(p.statsDatabase, join(dir, 'stats.sqlite'));
  assert.equal(p.tlsKeyFile, join(dir, 'backoffice-tls-key.pem'));
  assert.equal(p.operatorTokenFile, join(dir, 'operator-token'));
});

test('file, then POSTERN_BACKOFFICE_* environment, then flags', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'BO.json');
  writeFileSync(
    file,
    JSON.stringify({
      NetworkDirectory: '/srv/net',
      DataDirectory: 'data',
      ListenPort: 9000,
      StatsDatabase: 'postgres://stats@db.example/stats',
      RetentionDays: 30,
    }),
  );
  const env = { POSTERN_BACKOFFICE_LISTEN_PORT: '9001', POSTERN_BACKOFFICE_RETENTION_DAYS: '45' };
  const c = loadBackofficeConfig(file, { ListenPort: 9002, ListenAddress: '::1' }, env);
  assert.equal(c.ListenPort, 9002);
  assert.equal(c.ListenAddress, '::1');
  assert.equal(c.RetentionDays, 45);
  const p = backofficePaths(c, configBase(file));
  assert.equal(p.dataDir, join(dir, 'data'));
  assert.equal(p.networkDir, '/srv/net');
  assert.equal(p.statsDatabase, 'postgres://stats@db.example/stats', 'a URL is left as it is');
  assert.equal(p.tlsCertFile, join(dir, 'data', 'backoffice-tls-cert.pem'));
});

test('a bad config names the file and the field', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'BO.json');
  const bad = (value: Record<string, unknown>, field: RegExp) => {
    writeFileSync(file, JSON.stringify(value));
    assert.throws(
      () => loadBackofficeConfig(file, {}, {}),
      (e: unknown) => isPosternError(e, 'BAD_CONFIG') && e.message.includes(file) && field.test(e.message),
    );
  };
  bad({}, /NetworkDirectory/);
  bad({ NetworkDirectory: 'n', ListenPort: 70000 }, /ListenPort/);
  bad({ NetworkDirectory: 'n', RetentionDays: 0 }, /RetentionDays/);
  bad({ NetworkDirectory: 'n', RetentionDays: 1.5 }, /RetentionDays/);
  bad({ NetworkDirectory: 'n', RollupIntervalMs: 10 }, /RollupIntervalMs/);
  bad({ NetworkDirectory: 'n', SponsorK: 0 }, /SponsorK/);
  bad({ NetworkDirectory: 'n', SponsorEpsilon: 0 }, /SponsorEpsilon/);
  bad({ NetworkDirectory: 'n', SponsorEpsilon: 100 }, /SponsorEpsilon/);
});

test('first run makes a TLS identity (key 0600) that later runs read back unchanged', (t) => {
  const dir = tempDir(t);
  const keyFile = join(dir, 'k.pem');
  const certFile = join(dir, 'c.pem');
  const names = certificateNames('192.0.2.7', ['bo.example.org']);
  assert.deepEqual(names, {
    dnsNames: ['localhost', 'bo.example.org'],
    ipAddresses: ['127.0.0.1', '::1', '192.0.2.7'],
  });
  const clock = new ManualClock(new Date('2026-11-29T00:00:00Z'));
  const made = ensureTlsIdentity({ keyFile, certFile, names, clock });
  assert.equal(made.created, true);
  assert.equal(statSync(keyFile).mode & 0o777, 0o600);
  const x = new X509Certificate(readFileSync(certFile));
  assert.equal(x.checkIP('192.0.2.7'), '192.0.2.7');
  assert.ok(x.checkHost('bo.example.org'));
  const again = ensureTlsIdentity({ keyFile, certFile, names, clock });
  assert.equal(again.created, false);
  assert.equal(again.fingerprint256, made.fingerprint256);
  assert.equal(again.keyPem, made.keyPem);
  rmSync(certFile);
  assert.throws(
    () => ensureTlsIdentity({ keyFile, certFile, names, clock }),
    (e: unknown) => isPosternError(e, 'BAD_CONFIG') && e.message.includes(certFile),
  );
  // A wildcard listen address is not a name to put in a certificate.
  assert.deepEqual(certificateNames('0.0.0.0', []).ipAddresses, ['127.0.0.1', '::1']);
});

test('the operator token is made once (0600), read back, and compared exactly', (t) => {
  const file = join(tempDir(t), 'operator-token');
  const made = ensureOperatorToken(file);
  assert.equal(made.created, true);
  assert.match(made.token, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(ensureOperatorToken(file), { token: made.token, created: false });
  assert.ok(operatorTokenMatches(made.token, made.token));
  assert.ok(!operatorTokenMatches(made.token + 'x', made.token));
  assert.ok(!operatorTokenMatches('', made.token));
  writeFileSync(file, 'short\n');
  assert.throws(
    () => ensureOperatorToken(file),
    (e: unknown) => isPosternError(e, 'BAD_CONFIG'),
  );
  writeFileSync(file, 'x'.repeat(4096));
  assert.throws(
    () => ensureOperatorToken(file),
    (e: unknown) => isPosternError(e, 'TOO_LARGE'),
  );
});

test('key digests are looked up among all hosts; malformed digests match nothing', () => {
  const a = Buffer.alloc(32, 1);
  const b = Buffer.alloc(32, 0xab);
  const entries = [
    ['srv-a', a],
    ['srv-b', b],
  ] as const;
  assert.equal(findHostByDigest(entries, b.toString('hex')), 'srv-b');
  assert.equal(findHostByDigest(entries, Buffer.alloc(32, 3).toString('hex')), undefined);
  assert.equal(findHostByDigest(entries, b.toString('hex').toUpperCase()), undefined);
  assert.equal(findHostByDigest(entries, 'zz'), undefined);
  assert.equal(findHostByDigest(entries, ''), undefined);
});
