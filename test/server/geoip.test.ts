import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, utimesSync, statSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import fc from 'fast-check';
import { ManualClock } from '../../src/common/clock.ts';
import type { Logger } from '../../src/common/logger.ts';
import { writeFileAtomic } from '../../src/common/files.ts';
import { isPosternError } from '../../src/common/errors.ts';
import {
  GEOIP_RELOAD_CHECK_INTERVAL_MS,
  GEOIP_UNKNOWN_VALUE,
  GeoIpService,
  bundledGeoIpFiles,
  geoLogFields,
  openGeoIp,
  unknownGeoInfo,
  type GeoInfo,
} from '../../src/server/geoip.ts';
import { FakeGeoIp } from '../../src/server/geoip-fake.ts';
import { AsnRangeTable } from '../../src/server/asn-ranges.ts';
import { parseIp } from '../../src/server/ip-address.ts';
import { buildMmdb } from '../helpers/mmdb-writer.ts';
import { tempDir } from '../helpers/tmp.ts';

const NONE = unknownGeoInfo();

// Addresses that are special-purpose in some spelling: every one must come back all "None".
const SPECIAL = [
  '127.0.0.1',
  '10.1.2.3',
  '172.16.0.9',
  '192.168.1.1',
  '100.64.0.1',
  '169.254.169.254',
  '0.0.0.0',
  '255.255.255.255',
  '224.0.0.1',
  '192.0.2.1',
  '198.18.0.1',
  '::',
  '::1',
  'fe80::1',
  'fc00::1',
  'fd00::1',
  'ff02::1',
  '2001:db8::1',
  '::ffff:10.0.0.1',
  '::ffff:7f00:1',
  '64:ff9b::a00:1',
];
const MALFORMED = [
  '',
  'abc',
  '127.1',
  '0x7f.1',
  '2130706433',
  '1.2.3.4.5',
  '::ffff:999.1.1.1',
  'fe80::1%eth0',
  'x'.repeat(10_000),
];

function capturingLogger(): { log: Logger; lines: string[] } {
  // A raw pino without the project's redaction: the test must see exactly what the module hands the logger.
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { log: pino<never>({ level: 'trace' }, sink), lines };
}

const cityA = (region: string) =>
  buildMmdb(
    [
      {
        cidr: '8.8.8.0/24',
        data: { country: { iso_code: region }, city: { names: { en: 'New Test City' } }, isp: 'Example ISP' },
      },
      { cidr: '2001:4860::/32', data: { country_code: region, city: 'Flat Layout City' } },
    ],
    { databaseType: 'GeoIP2-City' },
  );

test('the bundled DB-IP Lite and ASN data answer for well-known public addresses, in both families', async () => {
  const geo = await openGeoIp();
  const google = geo.lookup('8.8.8.8');
  assert.equal(google.region, 'US');
  assert.equal(google.asn, '15169');
  assert.match(google.aso, /google/i);
  assert.equal(google.isp, google.aso, 'without an ISP database the ISP is the AS organisation');
  assert.notEqual(google.city, GEOIP_UNKNOWN_VALUE);

  const ripe = geo.lookup('193.0.6.139'); // RIPE NCC, Amsterdam
  assert.equal(ripe.region, 'NL');
  assert.equal(ripe.asn, '3333');

  assert.deepEqual(geo.lookup('::ffff:8.8.8.8'), google, 'an IPv4-mapped address is its IPv4 address');
  assert.deepEqual(geo.lookup('::FFFF:808:808'), google);

  const v6 = geo.lookup('2001:4860:4860::8888');
  assert.equal(v6.asn, '15169');
  assert.match(v6.region, /^[A-Z]{2}$/);

  for (const ip of [...SPECIAL, ...MALFORMED]) assert.deepEqual(geo.lookup(ip), NONE, ip);

  // psiphond's field names and its space → underscore rule.
  assert.deepEqual(geoLogFields({ ...NONE, region: 'US', city: 'Mountain View' }), {
    client_region: 'US',
    client_city: 'Mountain_View',
    client_isp: 'None',
    client_asn: 'None',
    client_aso: 'None',
  });
  assert.ok(geo.databases().every((d) => bundledGeoIpFiles().includes(d.file)));
});

test('lookups never throw and always answer five non-empty fields, whatever the input', async (t) => {
  const dir = tempDir(t);
  const f = join(dir, 'city.mmdb');
  writeFileSync(f, cityA('XA'));
  const geo = await GeoIpService.open({ files: [f] });
  const ipish = fc.stringMatching(/^[0-9a-fA-F:.%[\]x]{0,45}$/);
  fc.assert(
    fc.property(fc.oneof(fc.string(), ipish, fc.ipV4(), fc.ipV6()), (s) => {
      const g = geo.lookup(s);
      assert.deepEqual(Object.keys(g).sort(), ['asn', 'aso', 'city', 'isp', 'region']);
      for (const v of Object.values(g)) assert.ok(typeof v === 'string' && v.length > 0);
    }),
    { numRuns: 300 },
  );
});

test('MaxMind-layout and flat-layout records are both read; the first file that knows a field wins', async (t) => {
  const dir = tempDir(t);
  const city = join(dir, 'city.mmdb');
  const isp = join(dir, 'isp.mmdb');
  const asn = join(dir, 'asn.csv');
  writeFileSync(city, cityA('XA'));
  writeFileSync(
    isp,
    buildMmdb(
      [
        {
          cidr: '8.8.8.0/24',
          data: {
            isp: 'Second ISP',
            autonomous_system_number: 64500,
            autonomous_system_organization: 'Test AS Org',
            country: { iso_code: 'ZZ' },
          },
        },
      ],
      { databaseType: 'GeoIP2-ISP' },
    ),
  );
  writeFileSync(
    asn,
    '8.8.8.0,8.8.8.255,64999,"CSV Org, Inc."\n2001:4860::,2001:4860:ffff:ffff:ffff:ffff:ffff:ffff,15169,Google LLC\n',
  );
  const geo = await GeoIpService.open({ files: [city, isp, asn] });
  assert.deepEqual(geo.lookup('8.8.8.8'), {
    region: 'XA',
    city: 'New Test City',
    isp: 'Example ISP',
    asn: '64500',
    aso: 'Test AS Org',
  } satisfies GeoInfo);
  assert.deepEqual(geo.lookup('2001:4860::1'), {
    region: 'XA',
    city: 'Flat Layout City',
    isp: 'Google LLC',
    asn: '15169',
    aso: 'Google LLC',
  });
  assert.deepEqual(geo.lookup('9.9.9.9'), NONE);
});

test('a changed file is picked up after the check interval, a broken one keeps the old data, and no IP is logged', async (t) => {
  const dir = tempDir(t);
  const f = join(dir, 'city.mmdb');
  writeFileSync(f, cityA('XA'));
  const clock = new ManualClock();
  const { log, lines } = capturingLogger();
  const geo = await GeoIpService.open({ files: [f], clock, logger: log });
  assert.equal(geo.lookup('8.8.8.8').region, 'XA');

  writeFileAtomic(f, cityA('XB'));
  clock.advance(GEOIP_RELOAD_CHECK_INTERVAL_MS - 1);
  assert.equal(geo.lookup('8.8.8.8').region, 'XA', 'not checked before the interval');
  await geo.settled();
  assert.equal(geo.lookup('8.8.8.8').region, 'XA');

  clock.advance(1);
  geo.lookup('8.8.8.8'); // starts the check
  await geo.settled();
  assert.equal(geo.lookup('8.8.8.8').region, 'XB', 'reloaded after the interval');

  // A truncated copy (a half-finished download) and then garbage: both refused, old data stays.
  const good = cityA('XC');
  writeFileAtomic(f, good.subarray(0, good.length - 40));
  clock.advance(GEOIP_RELOAD_CHECK_INTERVAL_MS);
  const r1 = await geo.checkForUpdates();
  assert.equal(r1?.failed.length, 1);
  assert.equal(geo.lookup('8.8.8.8').region, 'XB');
  writeFileAtomic(f, Buffer.from('not a database'));
  const r2 = await geo.reload();
  assert.equal(r2.failed.length, 1);
  assert.equal(geo.lookup('8.8.8.8').region, 'XB');

  // Rewritten in place, same inode: the mtime change is enough.
  writeFileSync(f, good);
  const st = statSync(f);
  utimesSync(f, st.atime, new Date(st.mtimeMs + 5_000));
  const r3 = await geo.reload();
  assert.deepEqual(r3.reloaded, [f]);
  assert.equal(geo.lookup('8.8.8.8').region, 'XC');
  assert.deepEqual((await geo.reload()).unchanged, [f], 'an unchanged file is not reopened');

  const text = lines.join('');
  assert.match(text, /reload failed; keeping the previous one/);
  assert.match(text, /GeoIP database reloaded/);
  for (const ip of ['8.8.8.8', '8.8.8.0', '2001:4860']) assert.ok(!text.includes(ip), `log mentions ${ip}`);
});

test('a missing or broken file at start is a BAD_CONFIG error naming it', async (t) => {
  const dir = tempDir(t);
  const broken = join(dir, 'broken.mmdb');
  writeFileSync(broken, 'garbage');
  for (const files of [[join(dir, 'absent.mmdb')], [broken], []]) {
    await assert.rejects(GeoIpService.open({ files }), (e: unknown) => isPosternError(e, 'BAD_CONFIG'));
  }
});

test('ASN CSV: quoted names, both families, numeric bounds, range edges, overlaps clipped', async () => {
  const t = await AsnRangeTable.parse(
    [
      '1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."',
      '1.0.4.0,1.0.7.255,38803,"LLC ""SPUTNIK"""',
      '1.0.6.0,1.0.9.255,1,Overlapping',
      '16779776,16780031,7,Numeric', // 1.0.10.0-1.0.10.255
      '2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,2500,WIDE Project',
      '',
    ].join('\r\n'),
  );
  const at = (ip: string) => t.lookup(parseIp(ip) as NonNullable<ReturnType<typeof parseIp>>);
  assert.deepEqual(at('1.0.0.0'), { asn: 13335, organization: 'Cloudflare, Inc.' });
  assert.deepEqual(at('1.0.0.255'), { asn: 13335, organization: 'Cloudflare, Inc.' });
  assert.equal(at('1.0.1.0'), null);
  assert.deepEqual(at('1.0.7.255'), { asn: 38803, organization: 'LLC "SPUTNIK"' });
  assert.deepEqual(
    at('1.0.8.0'),
    { asn: 1, organization: 'Overlapping' },
    'the overlap is clipped, not dropped',
  );
  assert.deepEqual(at('1.0.10.0'), { asn: 7, organization: 'Numeric' });
  assert.deepEqual(at('2001:200::1'), { asn: 2500, organization: 'WIDE Project' });
  assert.equal(at('2001:201::'), null);
  assert.equal(at('0.0.0.1'), null);
  assert.equal(t.stats.overlapsClipped, 1);

  const v6num = await AsnRangeTable.parse(
    '42540528726795050063891204319802818560,42540528806023212578155541913346768895,2500,WIDE\n',
    'asn-ipv6-num.csv',
  );
  assert.deepEqual(v6num.lookup(parseIp('2001:200::5') as NonNullable<ReturnType<typeof parseIp>>), {
    asn: 2500,
    organization: 'WIDE',
  });
});

test('ASN CSV: hostile input is a BAD_CONFIG/TOO_LARGE error with a line number, never a crash', async () => {
  for (const [text, want] of [
    ['1.0.0.0,1.0.0.255,13335', /line 1: expected 4/],
    ['1.0.0.9,1.0.0.1,1,x', /start is after end/],
    ['1.0.1.0,1.0.1.255,1,a\n1.0.0.0,1.0.0.255,2,b', /line 2: rows must be sorted/],
    ['1.0.0.0,::1,1,x', /different address families/],
    ['1.0.0.0,1.0.0.1,99999999999,x', /AS number/],
    ['1.0.0.0,1.0.0.1,1,"unterminated', /expected 4/],
    ['1.2.3,1.0.0.1,1,x', /not an address/],
    ['', /no rows/],
  ] as const) {
    await assert.rejects(
      AsnRangeTable.parse(text),
      (e: unknown) => isPosternError(e, 'BAD_CONFIG') && want.test(e.message),
    );
  }
  await fc.assert(
    fc.asyncProperty(fc.string({ maxLength: 200 }), async (s) => {
      try {
        await AsnRangeTable.parse(s);
      } catch (e) {
        assert.ok(isPosternError(e), String(e));
      }
    }),
    { numRuns: 200 },
  );
});

test('an ASN CSV file is hot-reloaded like a database file', async (t) => {
  const dir = tempDir(t);
  const f = join(dir, 'asn-ipv4.csv');
  writeFileSync(f, '8.8.8.0,8.8.8.255,15169,Google LLC\n');
  const geo = await GeoIpService.open({ files: [f] });
  assert.equal(geo.lookup('8.8.8.8').asn, '15169');
  writeFileAtomic(f, '8.8.8.0,8.8.8.255,64512,Replaced\n');
  await geo.reload();
  assert.deepEqual(geo.lookup('8.8.8.8'), { ...NONE, isp: 'Replaced', asn: '64512', aso: 'Replaced' });
  writeFileAtomic(f, '8.8.8.0,8.8.8.255\n');
  assert.equal((await geo.reload()).failed.length, 1);
  assert.equal(geo.lookup('8.8.8.8').asn, '64512');
});

test('the bundled city file copied aside reloads too (a real-size file)', async (t) => {
  const dir = tempDir(t);
  const f = join(dir, 'city.mmdb');
  const [v4] = bundledGeoIpFiles();
  copyFileSync(v4 as string, f);
  const geo = await GeoIpService.open({ files: [f] });
  assert.equal(geo.lookup('8.8.8.8').region, 'US');
  writeFileAtomic(f, cityA('XA'));
  await geo.reload();
  assert.equal(geo.lookup('8.8.8.8').region, 'XA');
});

test('the fake answers from its table, counts lookups and treats mapped addresses as IPv4', () => {
  const fake = new FakeGeoIp({ '203.0.113.0/24': { region: 'CA', city: 'Toronto', aso: 'Test AS' } });
  fake.set('203.0.113.7', { region: 'US' });
  assert.deepEqual(fake.lookup('203.0.113.9'), {
    ...NONE,
    region: 'CA',
    city: 'Toronto',
    aso: 'Test AS',
    isp: 'Test AS',
  });
  assert.equal(fake.lookup('::ffff:203.0.113.7').region, 'US');
  assert.deepEqual(fake.lookup('junk'), NONE);
  assert.equal(fake.lookups, 3);
});
