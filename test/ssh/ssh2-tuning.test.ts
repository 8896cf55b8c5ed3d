// The per-connection changes to ssh2's cipher objects: pooled padding must lay packets out exactly as ssh2 does,
// and the deciphers must accept packets up to 256 KiB (what Go and OpenSSH send) and nothing larger.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import ssh2Crypto from 'ssh2/lib/protocol/crypto.js';
import {
  probePacketLayout,
  RandomPool,
  ssh2BindingAvailable,
  tuneCipher,
  tuneDecipher,
} from '../../src/ssh/ssh2-tuning.ts';
import { SSH_MAX_PACKET_LENGTH } from '../../src/ssh/wire.ts';

const SUITES = [
  { cipher: 'aes128-gcm@openssh.com' },
  { cipher: 'aes256-gcm@openssh.com' },
  { cipher: 'chacha20-poly1305@openssh.com' },
  { cipher: 'aes128-ctr', mac: 'hmac-sha2-256' },
  { cipher: 'aes256-ctr', mac: 'hmac-sha2-512-etm@openssh.com' },
  { cipher: 'aes192-ctr', mac: 'hmac-sha1-96' },
];

function pair(suite: { cipher: string; mac?: string }) {
  const cipherInfo = ssh2Crypto.CIPHER_INFO[suite.cipher]!;
  const macInfo = suite.mac ? ssh2Crypto.MAC_INFO[suite.mac]! : undefined;
  const key = randomBytes(cipherInfo.keyLen);
  const iv = cipherInfo.ivLen ? randomBytes(cipherInfo.ivLen) : undefined;
  const macKey = macInfo ? randomBytes(macInfo.len) : undefined;
  const wire: Buffer[] = [];
  const payloads: Buffer[] = [];
  const make = () => ({
    cipher: ssh2Crypto.createCipher({
      outbound: {
        onWrite: (d) => wire.push(Buffer.from(d)),
        seqno: 0,
        cipherInfo,
        cipherKey: key,
        cipherIV: iv && Buffer.from(iv),
        macInfo,
        macKey,
      },
    }),
    decipher: ssh2Crypto.createDecipher({
      inbound: {
        onPayload: (p) => {
          payloads.push(Buffer.from(p));
          return undefined;
        },
        seqno: 0,
        decipherInfo: cipherInfo,
        decipherKey: key,
        decipherIV: iv && Buffer.from(iv),
        macInfo,
        macKey,
      },
    }),
  });
  return { ...make(), wire, payloads };
}

function send(cipher: { allocPacket(n: number): Buffer; encrypt(p: Buffer): void }, payload: Buffer): void {
  const packet = cipher.allocPacket(payload.length);
  packet.set(payload, 5);
  cipher.encrypt(packet);
}

/** Feeds bytes to a decipher in uneven pieces, as a socket would. */
function feed(decipher: { decrypt(d: Buffer, p: number, len: number): unknown }, bytes: Buffer): void {
  let off = 0;
  const sizes = [1, 3, 7, 4096, 65536, 17, 100_000];
  for (let i = 0; off < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, bytes.length - off);
    const chunk = Buffer.from(bytes.subarray(off, off + n));
    decipher.decrypt(chunk, 0, chunk.length);
    off += n;
  }
}

test('the native crypto binding is loaded', () => {
  assert.equal(ssh2BindingAvailable, true);
});

for (const suite of SUITES) {
  const name = suite.mac ? `${suite.cipher} + ${suite.mac}` : suite.cipher;

  test(`${name}: pooled padding gives the same packet layout as ssh2`, () => {
    const { cipher } = pair(suite);
    const original = cipher.allocPacket.bind(cipher);
    assert.equal(tuneCipher(cipher), true);
    for (let len = 0; len < 3000; len += 7) {
      const a = original(len);
      const b = cipher.allocPacket(len);
      assert.equal(b.length, a.length, `length for payload ${len}`);
      assert.deepEqual(b.subarray(0, 5), a.subarray(0, 5), `header for payload ${len}`);
    }
  });

  test(`${name}: tuned deciphers take packets up to 256 KiB and refuse larger ones`, () => {
    const { cipher, decipher, wire, payloads } = pair(suite);
    assert.equal(tuneCipher(cipher), true);
    assert.equal(tuneDecipher(decipher), true);
    const sizes = [1, 100, 35_000, 200 * 1024, SSH_MAX_PACKET_LENGTH - 1024];
    const sent = sizes.map((n) => randomBytes(n));
    for (const p of sent) send(cipher, p);
    feed(decipher, Buffer.concat(wire));
    assert.equal(payloads.length, sent.length);
    for (let i = 0; i < sent.length; i++) assert.ok(payloads[i]!.equals(sent[i]!), `payload ${i}`);

    wire.length = 0;
    send(cipher, randomBytes(SSH_MAX_PACKET_LENGTH + 64));
    assert.throws(() => feed(decipher, Buffer.concat(wire)), /Bad packet length/);
  });

  test(`${name}: ssh2's own decipher refuses a 200 KiB packet (why the tuning exists)`, () => {
    const { cipher, decipher, wire } = pair(suite);
    send(cipher, randomBytes(200 * 1024));
    assert.throws(() => feed(decipher, Buffer.concat(wire)), /Bad packet length/);
  });

  test(`${name}: a tampered packet is still refused by the tuned decipher`, () => {
    const { cipher, decipher, wire } = pair(suite);
    tuneDecipher(decipher);
    send(cipher, randomBytes(1000));
    const bytes = Buffer.concat(wire);
    bytes[bytes.length - 20]! ^= 0x40;
    assert.throws(() => feed(decipher, bytes));
  });
}

test('the random pool never hands out the same bytes twice and refills itself', () => {
  const pool = new RandomPool(64);
  const a = Buffer.alloc(40);
  const b = Buffer.alloc(40);
  pool.fill(a, 0, 40);
  pool.fill(b, 0, 40); // needs a refill
  assert.notDeepEqual(a, b);
  const big = Buffer.alloc(100);
  pool.fill(big, 0, 100); // larger than the pool: straight from the CSPRNG
  assert.notDeepEqual(big, Buffer.alloc(100));
});

test('an allocator whose layout we do not understand is left alone', () => {
  assert.equal(
    probePacketLayout(() => Buffer.alloc(3)),
    null,
  );
  assert.equal(
    probePacketLayout((len) => {
      const b = Buffer.alloc(5 + len + 4);
      b.writeUInt32BE(len + 9, 0);
      b[4] = 4;
      return b;
    }),
    null,
    'packet_length that does not match the padding',
  );
  assert.equal(tuneCipher({}), false);
  assert.equal(tuneDecipher({ decrypt() {} }), false);
});
