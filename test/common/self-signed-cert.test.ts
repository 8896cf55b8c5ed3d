import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, request, type RequestOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import {
  createSelfSignedIdentity,
  certificateFingerprint,
  ipAddressBytes,
  MAX_COMMON_NAME_LENGTH,
} from '../../src/common/self-signed-cert.ts';
import { isPosternError } from '../../src/common/errors.ts';
import { tempDir } from '../helpers/tmp.ts';

const NOW = new Date('2026-11-29T12:34:56.789Z');
const identity = createSelfSignedIdentity({
  commonName: 'postern-backoffice',
  dnsNames: ['localhost', 'bo.example.org'],
  ipAddresses: ['127.0.0.1', '::1', '2001:db8::8:800:200c:417a'],
  validityDays: 30,
  now: NOW,
});

test('Node parses the certificate and reads back what was asked for', () => {
  const x = new X509Certificate(identity.certPem);
  assert.equal(x.subject, 'CN=postern-backoffice');
  assert.equal(x.issuer, 'CN=postern-backoffice');
  assert.equal(x.ca, false);
  assert.ok(x.verify(x.publicKey), 'self-signed: verifies under its own key');
  assert.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.equal(new Date(x.validFrom).getTime(), Date.parse('2026-11-29T11:34:56Z'));
  assert.equal(new Date(x.validTo).getTime(), Date.parse('2026-12-29T12:34:56Z'));
  assert.equal(x.checkHost('localhost'), 'localhost');
  assert.equal(x.checkHost('bo.example.org'), 'bo.example.org');
  assert.equal(x.checkHost('other.example.org'), undefined);
  assert.equal(x.checkIP('127.0.0.1'), '127.0.0.1');
  assert.equal(x.checkIP('::1'), '::1');
  assert.equal(x.checkIP('2001:db8:0:0:8:800:200c:417a'), '2001:db8:0:0:8:800:200c:417a');
  assert.equal(x.checkIP('127.0.0.2'), undefined);
  assert.ok(x.checkPrivateKey(createPrivateKey(identity.keyPem)), 'the key belongs to the certificate');
  assert.equal(identity.fingerprint256, x.fingerprint256);
  const der = Buffer.from(identity.certPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  assert.equal(
    identity.fingerprint256,
    createHash('sha256')
      .update(der)
      .digest('hex')
      .toUpperCase()
      .replace(/(..)(?!$)/g, '$1:'),
  );
  assert.equal(certificateFingerprint(identity.certPem), identity.fingerprint256);
});

test('two identities differ in key, serial and fingerprint', () => {
  const other = createSelfSignedIdentity({
    commonName: 'postern-backoffice',
    dnsNames: ['localhost'],
    now: NOW,
  });
  assert.notEqual(other.fingerprint256, identity.fingerprint256);
  assert.notEqual(
    new X509Certificate(other.certPem).serialNumber,
    new X509Certificate(identity.certPem).serialNumber,
  );
  assert.notEqual(other.keyPem, identity.keyPem);
});

test('dates past 2049 are written as GeneralizedTime and read back', () => {
  const late = createSelfSignedIdentity({
    commonName: 'x',
    ipAddresses: ['127.0.0.1'],
    now: new Date('2049-12-31T00:00:00Z'),
    validityDays: 2,
  });
  const x = new X509Certificate(late.certPem);
  assert.equal(new Date(x.validTo).getTime(), Date.parse('2050-01-02T00:00:00Z'));
});

test('an HTTPS client that pins the certificate reaches a server using it, and only that one', async (t) => {
  const server = createServer({ key: identity.keyPem, cert: identity.certPem }, (_req, res) =>
    res.end('hello'),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const get = (opts: RequestOptions): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/', ...opts }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });
  assert.equal(await get({ ca: identity.certPem }), 'hello');
  assert.equal(await get({ ca: identity.certPem, servername: 'localhost' }), 'hello');
  const stranger = createSelfSignedIdentity({ commonName: 'postern-backoffice', ipAddresses: ['127.0.0.1'] });
  await assert.rejects(get({ ca: stranger.certPem }), /self[- ]signed|unable to verify/i);
  await assert.rejects(get({ ca: identity.certPem, servername: 'elsewhere.example' }), /altnames|Hostname/i);
});

test('openssl reads the certificate the same way (skipped without openssl)', (t) => {
  const probe = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    t.skip('openssl is not installed');
    return;
  }
  const file = join(tempDir(t), 'cert.pem');
  writeFileSync(file, identity.certPem);
  const r = spawnSync('openssl', ['x509', '-noout', '-text', '-fingerprint', '-sha256', '-in', file], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout;
  assert.match(out, /Version: 3 \(0x2\)/);
  assert.match(out, /Signature Algorithm: ecdsa-with-SHA256/);
  assert.match(out, /Issuer: CN\s?=\s?postern-backoffice/);
  assert.match(out, /Subject: CN\s?=\s?postern-backoffice/);
  assert.match(out, /Not Before: Nov 29 11:34:56 2026 GMT/);
  assert.match(out, /Not After : Dec 29 12:34:56 2026 GMT/);
  assert.match(out, /(NIST CURVE: P-256|ASN1 OID: prime256v1)/);
  assert.match(out, /Basic Constraints: critical\s+CA:FALSE/);
  assert.match(out, /Key Usage: critical\s+Digital Signature\n/);
  assert.match(out, /TLS Web Server Authentication/);
  assert.match(
    out,
    /DNS:localhost, DNS:bo\.example\.org, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1, IP Address:2001:DB8:0:0:8:800:200C:417A/,
  );
  assert.ok(out.includes(`Fingerprint=${identity.fingerprint256}`), 'same SHA-256 fingerprint');
  const verify = spawnSync('openssl', ['verify', '-CAfile', file, '-x509_strict', file], {
    encoding: 'utf8',
  });
  assert.equal(verify.status, 0, verify.stdout + verify.stderr);
});

test('IP addresses are encoded in network byte order, every textual form', () => {
  const cases: Array<[string, string]> = [
    ['127.0.0.1', '7f000001'],
    ['::', '0'.repeat(32)],
    ['::1', '0'.repeat(31) + '1'],
    ['fe80::', 'fe80' + '0'.repeat(28)],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['1::2:3', '00010000000000000000000000020003'],
    ['::ffff:192.0.2.1', '00000000000000000000ffffc0000201'],
  ];
  for (const [text, hex] of cases) assert.equal(ipAddressBytes(text).toString('hex'), hex, text);
});

test('bad arguments are refused with BAD_ARGUMENT, naming the problem', () => {
  const bad = (opts: Parameters<typeof createSelfSignedIdentity>[0], re: RegExp) =>
    assert.throws(
      () => createSelfSignedIdentity(opts),
      (e: unknown) => isPosternError(e, 'BAD_ARGUMENT') && re.test(e.message),
    );
  bad({ commonName: '', dnsNames: ['localhost'] }, /common name/);
  bad({ commonName: 'x'.repeat(MAX_COMMON_NAME_LENGTH + 1), dnsNames: ['localhost'] }, /common name/);
  bad({ commonName: 'a\nb', dnsNames: ['localhost'] }, /control characters/);
  bad({ commonName: 'x' }, /at least one/);
  bad({ commonName: 'x', dnsNames: [], ipAddresses: [] }, /at least one/);
  bad({ commonName: 'x', dnsNames: ['bad name'] }, /not a DNS name/);
  bad({ commonName: 'x', dnsNames: ['-lead.example'] }, /not a DNS name/);
  bad({ commonName: 'x', dnsNames: ['a..b'] }, /not a DNS name/);
  bad({ commonName: 'x', dnsNames: ['*.com'] }, /not a DNS name/);
  bad({ commonName: 'x', dnsNames: ['x'.repeat(64) + '.org'] }, /not a DNS name/);
  bad({ commonName: 'x', ipAddresses: ['256.0.0.1'] }, /not an IP address/);
  bad({ commonName: 'x', ipAddresses: ['localhost'] }, /not an IP address/);
  bad({ commonName: 'x', ipAddresses: ['1:2:3:4:5:6:7:8:9'] }, /not an IP address/);
  bad({ commonName: 'x', dnsNames: ['localhost'], validityDays: 0 }, /validity/);
  bad({ commonName: 'x', dnsNames: ['localhost'], validityDays: 1.5 }, /validity/);
  bad({ commonName: 'x', dnsNames: ['localhost'], validityDays: 1e9 }, /validity/);
  bad({ commonName: 'x', dnsNames: ['localhost'], now: new Date(NaN) }, /valid date/);
  bad({ commonName: 'x', dnsNames: Array.from({ length: 101 }, (_, i) => `h${i}.example`) }, /at most/);
  assert.throws(
    () => certificateFingerprint('not a certificate'),
    (e: unknown) => isPosternError(e, 'BAD_KEY'),
  );
});

test('a wildcard name is accepted under a registrable domain', () => {
  const w = createSelfSignedIdentity({ commonName: 'x', dnsNames: ['*.bo.example.org'] });
  const x = new X509Certificate(w.certPem);
  assert.equal(x.checkHost('a.bo.example.org'), '*.bo.example.org');
  assert.equal(x.checkHost('a.b.bo.example.org'), undefined);
});
