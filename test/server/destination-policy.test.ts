import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import fc from 'fast-check';
import { isPosternError } from '../../src/common/errors.ts';
import {
  DestinationPolicy,
  PortList,
  type DestinationDecision,
  type ResolvedAddress,
  type Resolver,
} from '../../src/server/destination-policy.ts';
import { classifyIp, formatIp, parseCidr, parseIp, cidrContains } from '../../src/server/ip-address.ts';

/** A resolver that answers from a table and records the names it was asked for (no DNS traffic in tests). */
function tableResolver(table: Record<string, string[] | Error | 'hang'>): Resolver & { asked: string[] } {
  const asked: string[] = [];
  const r = async (host: string): Promise<ResolvedAddress[]> => {
    asked.push(host);
    const v = table[host];
    if (v === undefined) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
    if (v instanceof Error) throw v;
    if (v === 'hang') return new Promise(() => undefined);
    return v.map((address) => ({ address, family: isIP(address) }));
  };
  return Object.assign(r, { asked });
}

function refused(d: DestinationDecision): string {
  assert.equal(d.allowed, false, `expected a refusal, got ${JSON.stringify(d)}`);
  return d.allowed ? '' : d.reason;
}

const FORBIDDEN: [string, string][] = [
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['10.0.0.1', 'private'],
  ['172.16.5.4', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.0.1', 'private'],
  ['169.254.169.254', 'link-local'],
  ['100.64.0.1', 'cgnat'],
  ['100.127.255.255', 'cgnat'],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'this-network'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['255.255.255.255', 'broadcast'],
  ['240.0.0.1', 'reserved'],
  ['192.0.0.8', 'reserved'],
  ['192.88.99.1', 'reserved'],
  ['192.0.2.1', 'documentation'],
  ['198.51.100.7', 'documentation'],
  ['203.0.113.7', 'documentation'],
  ['198.18.0.1', 'benchmark'],
  ['198.19.255.255', 'benchmark'],
  ['::', 'unspecified'],
  ['::1', 'loopback'],
  ['[::1]', 'loopback'],
  ['0:0:0:0:0:0:0:1', 'loopback'],
  ['fe80::1', 'link-local'],
  ['fc00::1', 'private'],
  ['fd12:3456::1', 'private'],
  ['fec0::1', 'private'],
  ['ff02::1', 'multicast'],
  ['2001:db8::1', 'documentation'],
  ['3fff::1', 'documentation'],
  ['2001:2::1', 'benchmark'],
  ['2001::1', 'reserved'],
  ['2002:7f00:1::', 'reserved'],
  ['100::1', 'reserved'],
  ['::127.0.0.1', 'reserved'],
  ['64:ff9b:1::1', 'private'],
  ['4000::1', 'reserved'],
  // IPv4-mapped and NAT64 spellings are judged by the IPv4 address inside.
  ['::ffff:127.0.0.1', 'loopback'],
  ['::FFFF:7f00:1', 'loopback'],
  ['0:0:0:0:0:ffff:7f00:1', 'loopback'],
  ['0000:0000:0000:0000:0000:ffff:127.0.0.1', 'loopback'],
  ['[::ffff:10.0.0.1]', 'private'],
  ['::ffff:169.254.169.254', 'link-local'],
  ['64:ff9b::7f00:1', 'loopback'],
  ['64:ff9b::10.1.2.3', 'private'],
];

test('special-purpose addresses are refused by default, with the range as the reason', async () => {
  const policy = new DestinationPolicy({ resolver: tableResolver({}) });
  for (const [host, reason] of FORBIDDEN) {
    const d = await policy.check(host, 443);
    assert.equal(refused(d), reason, host);
    // The message names the registry block (e.g. "::1/128"), never the address asked for.
    const bare = host.replace(/[[\]]/g, '').replace(/[.*+?^${}()|\\]/g, '\\$&');
    const message = d.allowed ? '' : d.message;
    assert.ok(!new RegExp(`${bare}(?!/)`, 'i').test(message), `message names ${host}: ${message}`);
  }
});

test('public addresses are allowed and the address to dial is canonical; mapped ones dial as IPv4', async () => {
  const policy = new DestinationPolicy({ resolver: tableResolver({}) });
  const cases: [string, string, 4 | 6][] = [
    ['8.8.8.8', '8.8.8.8', 4],
    ['::ffff:8.8.8.8', '8.8.8.8', 4],
    ['::ffff:808:808', '8.8.8.8', 4],
    ['2606:4700:4700:0:0:0:0:1111', '2606:4700:4700::1111', 6],
    ['[2001:4860:4860::8888]', '2001:4860:4860::8888', 6],
    ['64:ff9b::808:808', '64:ff9b::808:808', 6],
  ];
  for (const [host, address, family] of cases) {
    assert.deepEqual(
      await policy.check(host, 443),
      { allowed: true, address, family, port: 443, domain: null },
      host,
    );
  }
});

test('inet_aton shorthands are refused as hosts without being resolved', async () => {
  // net.isIP says 0 for all of these, and the system resolver (getaddrinfo) turns them into addresses:
  // "127.1", "0x7f.1", "2130706433", "0177.0.0.1" and "017700000001" all become 127.0.0.1.
  const resolver = tableResolver({});
  const policy = new DestinationPolicy({ resolver, allowDestinations: [] });
  for (const host of [
    '127.1',
    '0x7f.1',
    '2130706433',
    '0177.0.0.1',
    '0x7f000001',
    '0x7F.0.0.1',
    '127.000.000.001',
    '017700000001',
    '0',
    '1.2.3',
    '10.1',
    '127.0.0.1.',
    '8.8.8.8.',
    '0x0a.0.0.1',
  ]) {
    assert.equal(isIP(host), 0, host);
    assert.equal(refused(await policy.check(host, 80)), 'invalid-host', host);
  }
  for (const host of [
    '',
    ' ',
    '127.0.0.1 ',
    'fe80::1%eth0',
    '[fe80::1%25eth0]',
    'a..b',
    '-x.com',
    'x'.repeat(300),
    'printer.local',
    '[example.com]',
    '[8.8.8.8]',
    'a b.com',
    'ex\u0000ample.com',
  ]) {
    assert.equal(refused(await policy.check(host, 80)), 'invalid-host', JSON.stringify(host));
  }
  assert.deepEqual(resolver.asked, [], 'nothing was resolved');
});

test('names: every answer is checked, the checked address is returned, IPv4 preferred', async () => {
  const resolver = tableResolver({
    'example.com': ['2606:2800:220:1::1', '93.184.216.34'],
    'v6only.example': ['2606:2800:220:1::1', '2606:2800:220:1::2'],
    'rebind.example': ['93.184.216.34', '10.0.0.1'],
    'mapped.example': ['::ffff:127.0.0.1'],
    'empty.example': [],
    'zone.example': ['fe80::1%eth0'],
    'fail.example': Object.assign(new Error('boom'), { code: 'ESERVFAIL' }),
    'slow.example': 'hang',
    localhost: ['127.0.0.1', '::1'],
  });
  const policy = new DestinationPolicy({ resolver, resolveTimeoutMs: 50 });
  assert.deepEqual(await policy.check('Example.COM.', 443), {
    allowed: true,
    address: '93.184.216.34',
    family: 4,
    port: 443,
    domain: 'example.com',
  });
  assert.equal(
    ((await policy.check('v6only.example', 443)) as { address: string }).address,
    '2606:2800:220:1::1',
  );
  assert.equal(refused(await policy.check('rebind.example', 443)), 'private');
  assert.equal(refused(await policy.check('mapped.example', 443)), 'loopback');
  assert.equal(refused(await policy.check('empty.example', 443)), 'no-address');
  assert.equal(refused(await policy.check('zone.example', 443)), 'invalid-host');
  assert.equal(refused(await policy.check('fail.example', 443)), 'resolve-failed');
  assert.equal(refused(await policy.check('nxdomain.example', 443)), 'resolve-failed');
  assert.equal(refused(await policy.check('slow.example', 443)), 'resolve-timeout');
  assert.equal(refused(await policy.check('localhost', 443)), 'loopback');

  // Allowing 127.0.0.0/8 is not allowing ::1: a name with both answers is still refused.
  const tests = new DestinationPolicy({ resolver, allowDestinations: ['127.0.0.0/8'] });
  assert.equal(refused(await tests.check('localhost', 443)), 'loopback');
  const both = new DestinationPolicy({ resolver, allowDestinations: ['127.0.0.0/8', '::1/128'] });
  assert.equal(((await both.check('localhost', 443)) as { address: string }).address, '127.0.0.1');
});

test('the system resolver is used by default (localhost comes from the hosts file)', async () => {
  const policy = new DestinationPolicy();
  assert.equal(refused(await policy.check('localhost', 80)), 'loopback');
  const allowAll = new DestinationPolicy({ allowDestinations: ['127.0.0.0/8', '::1/128'] });
  const d = await allowAll.check('localhost', 80);
  assert.ok(d.allowed && (d.address === '127.0.0.1' || d.address === '::1'));
});

test('AllowDestinations overrides the default refusal, in every spelling; DisallowDestinations wins', async () => {
  const policy = new DestinationPolicy({
    resolver: tableResolver({}),
    allowDestinations: ['127.0.0.0/8', '10.1.0.0/16', 'fd00::/8'],
    disallowDestinations: ['10.1.2.0/24'],
  });
  for (const host of ['127.0.0.1', '::ffff:127.0.0.1', '::ffff:7f00:5', '10.1.9.9', 'fd00::1']) {
    assert.ok((await policy.check(host, 22)).allowed, host);
  }
  assert.equal(((await policy.check('::ffff:127.0.0.1', 22)) as { address: string }).address, '127.0.0.1');
  assert.equal(refused(await policy.check('10.2.0.1', 22)), 'private');
  assert.equal(refused(await policy.check('::1', 22)), 'loopback');
  assert.equal(refused(await policy.check('10.1.2.3', 22)), 'disallowed-destination');
  assert.equal(refused(await policy.check('fc00::1', 22)), 'private');
});

test('ports: psiphond semantics for Allow/Disallow lists, per protocol; bad ports refused', async () => {
  const policy = DestinationPolicy.fromConfig(
    {
      AllowDestinations: ['127.0.0.0/8'],
      AllowTCPPorts: [80, 443, [8000, 8080]],
      DisallowTCPPorts: [25],
      DisallowUDPPorts: [[1, 52]],
    },
    tableResolver({}),
  );
  assert.ok((await policy.check('8.8.8.8', 443)).allowed);
  assert.ok((await policy.check('8.8.8.8', 8080)).allowed);
  assert.equal(refused(await policy.check('8.8.8.8', 22)), 'port-not-allowed');
  assert.equal(refused(await policy.check('8.8.8.8', 25)), 'port-disallowed');
  // As psiphond's AllowSubnets: an allow-listed destination may use any port that is not disallowed.
  assert.ok((await policy.check('127.0.0.1', 22)).allowed);
  assert.equal(refused(await policy.check('127.0.0.1', 25)), 'port-disallowed');
  // UDP has its own lists: no allow list, so everything but the disallowed range.
  assert.ok((await policy.check('8.8.8.8', 53, 'udp')).allowed);
  assert.equal(refused(await policy.check('8.8.8.8', 52, 'udp')), 'port-disallowed');
  for (const port of [0, 65536, -1, 1.5, '80', NaN, null]) {
    assert.equal(refused(await policy.check('8.8.8.8', port)), 'invalid-port', String(port));
  }
  assert.deepEqual(PortList.of([1, [5, 9]]).toJSON(), [1, [5, 9]]);
});

test('bad rules are BAD_CONFIG errors that say what is wrong', () => {
  for (const config of [
    { AllowDestinations: ['10.0.0.1/8'] },
    { AllowDestinations: ['10.0.0.0/33'] },
    { AllowDestinations: ['127.1/8'] },
    { AllowDestinations: 'x' },
    { AllowTCPPorts: [0] },
    { AllowTCPPorts: [[90, 80]] },
    { DisallowTCPPorts: ['80'] },
  ]) {
    assert.throws(
      () => DestinationPolicy.fromConfig(config),
      (e: unknown) => isPosternError(e, 'BAD_CONFIG'),
      JSON.stringify(config),
    );
  }
  assert.throws(() => parseCidr('10.0.0.1/8'), /did you mean 10\.0\.0\.0\/8/);
});

// ---- Properties over address spellings ----

const forbiddenV4 = fc.oneof(
  ...[
    '127.0.0.0/8',
    '10.0.0.0/8',
    '172.16.0.0/12',
    '192.168.0.0/16',
    '169.254.0.0/16',
    '100.64.0.0/10',
    '0.0.0.0/8',
    '224.0.0.0/4',
    '240.0.0.0/4',
    '192.0.2.0/24',
    '198.18.0.0/15',
  ].map((c) => {
    const [base, len] = c.split('/');
    const b = (parseIp(base as string)?.bytes ?? new Uint8Array(4)) as Uint8Array;
    const n = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
    const size = 2 ** (32 - Number(len));
    return fc.integer({ min: 0, max: size - 1 }).map((off) => n + off);
  }),
);

const dotted = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

/** Ways to write an IPv4 address that some parser (ours, net.isIP, inet_aton/getaddrinfo) understands. */
function spellings(n: number): string[] {
  const p = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255] as const;
  const hex = (x: number) => x.toString(16);
  return [
    dotted(n),
    String(n),
    `0x${hex(n)}`,
    `0${n.toString(8)}`,
    `${p[0]}.${(n & 0xffffff) >>> 0}`,
    `${p[0]}.${p[1]}.${(n & 0xffff) >>> 0}`,
    p.map((x) => `0x${hex(x)}`).join('.'),
    p.map((x) => `0${x.toString(8)}`).join('.'),
    p.map((x) => String(x).padStart(3, '0')).join('.'),
    `${dotted(n)}.`,
    `::ffff:${dotted(n)}`,
    `::ffff:${hex(n >>> 16)}:${hex(n & 0xffff)}`,
    `0:0:0:0:0:ffff:${hex(n >>> 16)}:${hex(n & 0xffff)}`,
    `0000:0000:0000:0000:0000:FFFF:${dotted(n)}`,
    `[::ffff:${dotted(n)}]`,
    `64:ff9b::${dotted(n)}`,
    `::${dotted(n)}`,
  ];
}

/** inet_aton, as getaddrinfo applies it to numeric host names (so the fake resolver behaves like glibc). */
function inetAton(s: string): number | null {
  const parts = s.split('.');
  if (parts.length < 1 || parts.length > 4) return null;
  const nums: number[] = [];
  for (const part of parts) {
    let v: number;
    if (/^0x[0-9a-f]*$/i.test(part)) v = part.length === 2 ? 0 : parseInt(part.slice(2), 16);
    else if (/^0[0-7]*$/.test(part)) v = parseInt(part, 8);
    else if (/^[1-9][0-9]*$/.test(part)) v = parseInt(part, 10);
    else return null;
    nums.push(v);
  }
  const last = nums.pop() as number;
  if (nums.some((x) => x > 255) || last >= 2 ** (8 * (4 - nums.length))) return null;
  let n = 0;
  nums.forEach((x, i) => (n += x * 2 ** (24 - 8 * i)));
  return n + last;
}

const emulatingResolver: Resolver = async (host) => {
  const n = inetAton(host.replace(/\.$/, ''));
  if (n === null) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
  return [{ address: dotted(n), family: 4 }];
};

test('property: no spelling of a forbidden IPv4 address gets through, even via a getaddrinfo-like resolver', async () => {
  const policy = new DestinationPolicy({ resolver: emulatingResolver });
  await fc.assert(
    fc.asyncProperty(forbiddenV4, async (n) => {
      for (const host of spellings(n)) {
        const d = await policy.check(host, 443);
        assert.equal(d.allowed, false, `${host} got through`);
      }
    }),
    { numRuns: 150 },
  );
});

test('property: whatever a resolver answers, an allowed decision is a public address or an allow-listed one', async () => {
  const allow = parseCidr('203.0.113.0/24');
  const answers = fc.array(
    fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('::1', '::ffff:10.0.0.1', 'junk')),
    {
      minLength: 0,
      maxLength: 4,
    },
  );
  await fc.assert(
    fc.asyncProperty(fc.string({ maxLength: 40 }), answers, async (host, addrs) => {
      const resolver: Resolver = async () => addrs.map((address) => ({ address, family: isIP(address) }));
      const policy = new DestinationPolicy({ resolver, allowDestinations: ['203.0.113.0/24'] });
      const d = await policy.check(host, 443);
      if (!d.allowed) return;
      const ip = parseIp(d.address);
      assert.ok(ip, d.address);
      assert.ok(classifyIp(ip) === null || cidrContains(allow, ip), d.address);
    }),
    { numRuns: 300 },
  );
});

test('property: our IP parser accepts exactly what net.isIP accepts (zone ids aside) and round-trips', () => {
  const ipish = fc.stringMatching(/^[0-9a-fA-F:.]{0,45}$/);
  const near = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), ipish, fc.string({ maxLength: 20 }));
  fc.assert(
    fc.property(near, (s) => {
      const ours = parseIp(s);
      assert.equal(ours === null ? 0 : ours.family, isIP(s), JSON.stringify(s));
      if (!ours) return;
      const text = formatIp(ours);
      assert.deepEqual(parseIp(text), ours, `${s} -> ${text}`);
      if (ours.family === 6 && !text.includes('.')) {
        assert.equal(
          `[${text}]`,
          new URL(`http://[${s}]/`).hostname,
          'RFC 5952 form, as the URL parser writes it',
        );
      }
    }),
    { numRuns: 2000 },
  );
});
