// RC4 against the known-answer vectors of RFC 6229 and the in-place, chunked use the OSSH layer makes of it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Rc4 } from '../../src/transport/rc4.ts';
import { isPosternError } from '../../src/common/errors.ts';

// RFC 6229 §2, key 0x0102030405 (40 bits): keystream at each offset.
const RFC6229_40_BIT: ReadonlyArray<readonly [number, string]> = [
  [0, 'b2396305f03dc027ccc3524a0a1118a8'],
  [16, '6982944f18fc82d589c403a47a0d0919'],
  [240, '28cb1132c96ce286421dcaadb8b69eae'],
  [256, '1cfcf62b03eddb641d77dfcf7f8d8c93'],
  [496, '42b7d0cdd918a8a33dd51781c81f4041'],
  [512, '6459844432a7da923cfb3eb4980661f6'],
  [752, 'ec10327bde2beefd18f9277680457e22'],
  [768, 'eb62638d4f0ba1fe9fca20e05bf8ff2b'],
  [1008, '45129048e6a0ed0b56b490338f078da5'],
  [1024, '30abbcc7c20b01609f23ee2d5f6bb7df'],
  [1520, '3294f744d8f9790507e70f62e5bbceea'],
  [1536, 'd8729db41882259bee4f825325f5a130'],
  [2032, '1eb14a0c13b3bf47fa2a0ba93ad45b8b'],
  [2048, 'cc582f8ba9f265e2b1be9112e975d2d7'],
  [3056, 'f2e30f9bd102ecbf75aaade9bc35c43c'],
  [3072, 'ec0e11c479dc329dc8da7968fe965681'],
  [4080, '068326a2118416d21f9d04b2cd1ca050'],
  [4096, 'ff25b58995996707e51fbdf08b34d875'],
];

// RFC 6229 §2, key 0x0102030405060708090a0b0c0d0e0f10 (128 bits, the size OSSH uses), offsets 0 and 16.
const RFC6229_128_BIT_KEY = Buffer.from('0102030405060708090a0b0c0d0e0f10', 'hex');
const RFC6229_128_BIT_START = '9ac7cc9a609d1ef7b2932899cde41b975248c4959014126a6e8a84f11d1a9e1c';

function keystream(key: Uint8Array, length: number): Buffer {
  const out = Buffer.alloc(length);
  new Rc4(key).xorInPlace(out);
  return out;
}

test('RFC 6229 40-bit key: keystream matches at every listed offset up to 4096', () => {
  const stream = keystream(Buffer.from('0102030405', 'hex'), 4112);
  for (const [offset, hex] of RFC6229_40_BIT) {
    assert.equal(stream.subarray(offset, offset + 16).toString('hex'), hex, `offset ${offset}`);
  }
});

test('RFC 6229 128-bit key: first 32 keystream bytes', () => {
  assert.equal(keystream(RFC6229_128_BIT_KEY, 32).toString('hex'), RFC6229_128_BIT_START);
});

test('XOR is in place, and chunked calls, xorByte and skip continue one keystream', () => {
  const whole = keystream(RFC6229_128_BIT_KEY, 300);
  const rc4 = new Rc4(Buffer.from(RFC6229_128_BIT_KEY));
  const buf = Buffer.alloc(300);
  rc4.xorInPlace(buf, 0, 7);
  rc4.xorInPlace(buf, 7, 100);
  buf[100] = rc4.xorByte(0);
  rc4.skip(50);
  rc4.xorInPlace(buf, 151, 300);
  assert.deepEqual(buf.subarray(0, 101), whole.subarray(0, 101));
  assert.deepEqual(buf.subarray(101, 151), Buffer.alloc(50), 'skipped bytes are left alone');
  assert.deepEqual(buf.subarray(151), whole.subarray(151));
});

test('decrypting with a second instance restores any plaintext split anywhere', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 1, maxLength: 32 }),
      fc.uint8Array({ maxLength: 600, size: 'max' }),
      fc.nat(600),
      (key, plain, cut) => {
        const data = Buffer.from(plain);
        new Rc4(key).xorInPlace(data);
        const split = Math.min(cut, data.length);
        const dec = new Rc4(key);
        dec.xorInPlace(data, 0, split);
        dec.xorInPlace(data, split, data.length);
        assert.deepEqual(data, Buffer.from(plain));
      },
    ),
    { numRuns: 100 },
  );
});

test('bad keys and ranges are refused with typed errors', () => {
  assert.throws(
    () => new Rc4(new Uint8Array(0)),
    (e) => isPosternError(e, 'BAD_KEY'),
  );
  assert.throws(
    () => new Rc4(new Uint8Array(257)),
    (e) => isPosternError(e, 'BAD_KEY'),
  );
  const rc4 = new Rc4(Buffer.from(RFC6229_128_BIT_KEY));
  assert.throws(
    () => rc4.xorInPlace(Buffer.alloc(4), 2, 5),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
  assert.throws(
    () => rc4.xorInPlace(Buffer.alloc(4), 3, 2),
    (e) => isPosternError(e, 'BAD_ARGUMENT'),
  );
});
