import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  formatIpv6,
  MAX_DOMAIN_LENGTH,
  parseSocks4Request,
  parseSocks5Greeting,
  parseSocks5Request,
  parseUserPass,
  REPLY,
  SOCKS4_REJECTED,
  SocksProtocolError,
  type Parsed,
} from '../../src/client/socks-protocol.ts';

/** Runs a parser on hostile bytes: it needs more, parses within the input, or throws SocksProtocolError. */
function hostile<T>(parse: (b: Buffer) => Parsed<T> | null, bytes: Uint8Array): void {
  try {
    const r = parse(Buffer.from(bytes));
    if (r) assert.ok(r.length > 0 && r.length <= bytes.length);
  } catch (e) {
    assert.ok(e instanceof SocksProtocolError, String(e));
  }
}

/** Every strict prefix needs more; the whole parses; trailing bytes are left alone. */
function incremental<T>(parse: (b: Buffer) => Parsed<T> | null, msg: Buffer): T {
  for (let i = 0; i < msg.length; i++) assert.equal(parse(msg.subarray(0, i)), null, `prefix ${i}`);
  const whole = parse(msg);
  assert.ok(whole);
  assert.equal(whole.length, msg.length);
  const more = parse(Buffer.concat([msg, Buffer.from([0x16, 0x03, 0x01])]));
  assert.deepEqual(more, whole);
  return whole.value;
}

const port = (p: number): Buffer => Buffer.from([p >> 8, p & 0xff]);

describe('SOCKS5 messages', () => {
  it('greeting: methods, incrementally', () => {
    const v = incremental(parseSocks5Greeting, Buffer.from([0x05, 0x02, 0x00, 0x02]));
    assert.deepEqual(v.methods, [0x00, 0x02]);
    assert.throws(() => parseSocks5Greeting(Buffer.from([0x05, 0x00])), SocksProtocolError);
    assert.throws(() => parseSocks5Greeting(Buffer.from([0x04, 0x01, 0x00])), SocksProtocolError);
  });

  it('username/password, incrementally, empty password allowed', () => {
    const msg = Buffer.concat([Buffer.from([0x01, 3]), Buffer.from('bob'), Buffer.from([0])]);
    const v = incremental(parseUserPass, msg);
    assert.equal(v.username.toString(), 'bob');
    assert.equal(v.password.length, 0);
  });

  it('requests for IPv4, IPv6 and domain destinations, incrementally', () => {
    const v4 = incremental(
      parseSocks5Request,
      Buffer.concat([Buffer.from([5, 1, 0, 1, 10, 0, 0, 7]), port(8080)]),
    );
    assert.deepEqual(v4, { version: 5, command: 'connect', host: '10.0.0.7', port: 8080 });
    const six = Buffer.alloc(16);
    six[15] = 1;
    const v6 = incremental(parseSocks5Request, Buffer.concat([Buffer.from([5, 1, 0, 4]), six, port(443)]));
    assert.equal(v6.host, '::1');
    const name = Buffer.from('example.com');
    const d = incremental(
      parseSocks5Request,
      Buffer.concat([Buffer.from([5, 3, 0, 3, name.length]), name, port(53)]),
    );
    assert.deepEqual(d, { version: 5, command: 'udp-associate', host: 'example.com', port: 53 });
  });

  it('rejects what it must, naming the reply', () => {
    const reply = (b: Buffer): number | null => {
      try {
        parseSocks5Request(b);
      } catch (e) {
        assert.ok(e instanceof SocksProtocolError);
        return e.reply;
      }
      return -1;
    };
    assert.equal(reply(Buffer.from([5, 1, 0, 9])), REPLY.ADDRESS_TYPE_NOT_SUPPORTED);
    assert.equal(reply(Buffer.from([5, 7, 0, 1, 1, 2, 3, 4, 0, 80])), REPLY.COMMAND_NOT_SUPPORTED);
    assert.equal(reply(Buffer.from([5, 1, 0, 1, 1, 2, 3, 4, 0, 0])), REPLY.GENERAL_FAILURE);
    const long = Buffer.alloc(MAX_DOMAIN_LENGTH + 1, 0x61);
    assert.equal(
      reply(Buffer.concat([Buffer.from([5, 1, 0, 3, long.length]), long, port(80)])),
      REPLY.GENERAL_FAILURE,
    );
    // 253 characters plus a trailing dot is still a legal name.
    const fqdn = Buffer.concat([Buffer.alloc(MAX_DOMAIN_LENGTH, 0x61), Buffer.from('.')]);
    assert.equal(reply(Buffer.concat([Buffer.from([5, 1, 0, 3, fqdn.length]), fqdn, port(80)])), -1);
  });

  it('formats IPv6 addresses canonically (as the WHATWG URL serializer does)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
          minLength: 8,
          maxLength: 8,
        }),
        (groups) => {
          const b = Buffer.alloc(16);
          groups.forEach((g, i) => b.writeUInt16BE(g, i * 2));
          const expected = new URL(`http://[${groups.map((g) => g.toString(16)).join(':')}]/`).hostname;
          assert.equal(`[${formatIpv6(b)}]`, expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('hostile bytes never crash a parser', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        hostile(parseSocks5Greeting, bytes);
        hostile(parseUserPass, bytes);
        hostile(parseSocks5Request, bytes);
        hostile(parseSocks4Request, bytes);
        // The same with a plausible header, to reach deeper branches.
        hostile(parseSocks5Request, Buffer.concat([Buffer.from([5, 1, 0]), bytes]));
        hostile(parseSocks4Request, Buffer.concat([Buffer.from([4, 1]), bytes]));
      }),
      { numRuns: 500 },
    );
  });
});

describe('SOCKS4 and 4a requests', () => {
  it('SOCKS4 with a user id, and 4a with a name, incrementally', () => {
    const v4 = incremental(
      parseSocks4Request,
      Buffer.concat([Buffer.from([4, 1]), port(80), Buffer.from([127, 0, 0, 1]), Buffer.from('me\0')]),
    );
    assert.deepEqual(v4, { version: 4, command: 'connect', host: '127.0.0.1', port: 80, userId: 'me' });
    const v4a = incremental(
      parseSocks4Request,
      Buffer.concat([
        Buffer.from([4, 1]),
        port(443),
        Buffer.from([0, 0, 0, 9]),
        Buffer.from('\0example.org\0'),
      ]),
    );
    assert.deepEqual(v4a, { version: 4, command: 'connect', host: 'example.org', port: 443, userId: '' });
  });

  it('gives up on a user id or name that does not end', () => {
    const head = Buffer.concat([Buffer.from([4, 1]), port(80), Buffer.from([0, 0, 0, 1])]);
    assert.throws(
      () => parseSocks4Request(Buffer.concat([head, Buffer.alloc(300, 0x41)])),
      (e: unknown) => e instanceof SocksProtocolError && e.reply === SOCKS4_REJECTED,
    );
    assert.throws(
      () => parseSocks4Request(Buffer.concat([head, Buffer.from([0]), Buffer.alloc(300, 0x61)])),
      SocksProtocolError,
    );
  });
});
