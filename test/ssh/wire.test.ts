// Parsers of the messages src/ssh reads itself (CHANNEL_OPEN and direct-tcpip data) and of identification
// strings, on hostile bytes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isPosternError } from '../../src/common/errors.ts';
import { parseVersionString } from '../../src/ssh/version.ts';
import {
  encodeDirectTcpipData,
  isValidSshName,
  MAX_CHANNEL_OPEN_EXTRA,
  MSG_CHANNEL_OPEN,
  parseChannelOpen,
  parseDirectTcpipData,
} from '../../src/ssh/wire.ts';

function channelOpen(type: string, sender: number, window: number, maxPacket: number, extra: Buffer): Buffer {
  const t = Buffer.from(type, 'latin1');
  const out = Buffer.alloc(1 + 4 + t.length + 12 + extra.length);
  out[0] = MSG_CHANNEL_OPEN;
  out.writeUInt32BE(t.length, 1);
  t.copy(out, 5);
  out.writeUInt32BE(sender, 5 + t.length);
  out.writeUInt32BE(window, 9 + t.length);
  out.writeUInt32BE(maxPacket, 13 + t.length);
  extra.copy(out, 17 + t.length);
  return out;
}

test('a direct-tcpip open round-trips through our encoder and parser', () => {
  fc.assert(
    fc.property(
      fc.string({ minLength: 1, maxLength: 100 }),
      fc.integer({ min: 0, max: 65535 }),
      fc.string({ maxLength: 50 }),
      fc.integer({ min: 0, max: 65535 }),
      fc.nat(),
      (host, port, origin, originPort, sender) => {
        fc.pre(Buffer.from(host).toString() === host && Buffer.from(origin).toString() === origin);
        const msg = parseChannelOpen(
          channelOpen(
            'direct-tcpip',
            sender,
            1000,
            32768,
            encodeDirectTcpipData(host, port, origin, originPort),
          ),
        );
        assert.equal(msg.type, 'direct-tcpip');
        assert.equal(msg.senderId, sender);
        assert.deepEqual(parseDirectTcpipData(msg.extra), { host, port, originHost: origin, originPort });
      },
    ),
    { numRuns: 200 },
  );
});

test('fuzz: hostile CHANNEL_OPEN bytes give a parsed message or SSH_PROTOCOL, never anything else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const payload = Buffer.concat([Buffer.from([MSG_CHANNEL_OPEN]), Buffer.from(bytes)]);
      try {
        const msg = parseChannelOpen(payload);
        assert.ok(isValidSshName(msg.type));
        try {
          const target = parseDirectTcpipData(msg.extra);
          assert.ok(target.port <= 65535 && target.host.length > 0);
        } catch (e) {
          assert.ok(isPosternError(e, 'SSH_PROTOCOL'));
        }
      } catch (e) {
        assert.ok(isPosternError(e, 'SSH_PROTOCOL'));
      }
    }),
    { numRuns: 500 },
  );
});

test('truncated, oversized and out-of-range fields are refused', () => {
  const ok = encodeDirectTcpipData('example.com', 443, '0.0.0.0', 0);
  for (let cut = 0; cut < ok.length; cut++) {
    assert.throws(
      () => parseDirectTcpipData(ok.subarray(0, cut)),
      (e) => isPosternError(e, 'SSH_PROTOCOL'),
    );
  }
  assert.throws(
    () => parseDirectTcpipData(encodeDirectTcpipData('h', 65536, '', 0)),
    (e) => isPosternError(e, 'SSH_PROTOCOL'),
  );
  assert.throws(
    () => parseDirectTcpipData(encodeDirectTcpipData('', 80, '', 0)),
    (e) => isPosternError(e, 'SSH_PROTOCOL'),
  );
  assert.throws(
    () => parseDirectTcpipData(encodeDirectTcpipData('x'.repeat(256), 80, '', 0)),
    (e) => isPosternError(e, 'SSH_PROTOCOL'),
  );
  const badUtf8 = Buffer.from([0, 0, 0, 2, 0xc3, 0x28, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.throws(
    () => parseDirectTcpipData(badUtf8),
    (e) => isPosternError(e, 'SSH_PROTOCOL'),
  );
  assert.throws(
    () => parseChannelOpen(channelOpen('tun@psiphon.ca', 1, 1, 1, Buffer.alloc(MAX_CHANNEL_OPEN_EXTRA + 1))),
    (e) => isPosternError(e, 'SSH_PROTOCOL'),
  );
  assert.throws(
    () => parseChannelOpen(channelOpen('bad type', 1, 1, 1, Buffer.alloc(0))),
    (e) => isPosternError(e, 'SSH_PROTOCOL'),
  );
});

test('identification strings are checked', () => {
  assert.equal(parseVersionString('SSH-2.0-OpenSSH_8.1'), 'OpenSSH_8.1');
  assert.equal(parseVersionString('SSH-2.0-Postern 1.0 comment'), 'Postern 1.0 comment');
  for (const bad of [
    'OpenSSH',
    'SSH-1.99-x',
    'SSH-2.0-',
    'SSH-2.0- x',
    'SSH-2.0-a\r\nb',
    `SSH-2.0-${'a'.repeat(300)}`,
    'SSH-2.0-é',
  ]) {
    assert.throws(
      () => parseVersionString(bad),
      (e) => isPosternError(e, 'BAD_CONFIG'),
      bad,
    );
  }
});
