// RC4 keystream for the OSSH obfuscation layer. Node 20's OpenSSL only offers RC4 through the legacy provider,
// and OSSH needs it for the first few kilobytes of each connection only, so a small in-place implementation is
// enough. RC4 is not a secure cipher: it only hides the SSH handshake's plaintext from naive filters.

import { PosternError } from '../common/errors.ts';

export const RC4_MIN_KEY_LENGTH = 1;
export const RC4_MAX_KEY_LENGTH = 256;
const RC4_STATE_SIZE = 256;

export class Rc4 {
  private readonly s = new Uint8Array(RC4_STATE_SIZE);
  private i = 0;
  private j = 0;

  constructor(key: Uint8Array) {
    if (key.length < RC4_MIN_KEY_LENGTH || key.length > RC4_MAX_KEY_LENGTH) {
      throw new PosternError(
        'BAD_KEY',
        `RC4 key must be ${RC4_MIN_KEY_LENGTH}-${RC4_MAX_KEY_LENGTH} bytes, got ${key.length}`,
      );
    }
    const s = this.s;
    for (let k = 0; k < RC4_STATE_SIZE; k++) s[k] = k;
    let j = 0;
    for (let k = 0; k < RC4_STATE_SIZE; k++) {
      const sk = s[k]!;
      j = (j + sk + key[k % key.length]!) & 0xff;
      s[k] = s[j]!;
      s[j] = sk;
    }
  }

  /** XORs the next `end - start` keystream bytes into `buf[start, end)`, in place. */
  xorInPlace(buf: Uint8Array, start = 0, end = buf.length): void {
    if (start < 0 || end > buf.length || start > end) {
      throw new PosternError(
        'BAD_ARGUMENT',
        `RC4 range [${start}, ${end}) outside a ${buf.length}-byte buffer`,
      );
    }
    const s = this.s;
    let i = this.i;
    let j = this.j;
    for (let k = start; k < end; k++) {
      i = (i + 1) & 0xff;
      const si = s[i]!;
      j = (j + si) & 0xff;
      const sj = s[j]!;
      s[i] = sj;
      s[j] = si;
      buf[k] = buf[k]! ^ s[(si + sj) & 0xff]!;
    }
    this.i = i;
    this.j = j;
  }

  /** XORs one keystream byte into `b` and returns it (byte-at-a-time parsing of obfuscated lines). */
  xorByte(b: number): number {
    const s = this.s;
    const i = (this.i + 1) & 0xff;
    const si = s[i]!;
    const j = (this.j + si) & 0xff;
    const sj = s[j]!;
    s[i] = sj;
    s[j] = si;
    this.i = i;
    this.j = j;
    return (b ^ s[(si + sj) & 0xff]!) & 0xff;
  }

  /** Advances the keystream by `n` bytes without output (for bytes that are read and dropped). */
  skip(n: number): void {
    const s = this.s;
    let i = this.i;
    let j = this.j;
    for (let k = 0; k < n; k++) {
      i = (i + 1) & 0xff;
      const si = s[i]!;
      j = (j + si) & 0xff;
      s[i] = s[j]!;
      s[j] = si;
    }
    this.i = i;
    this.j = j;
  }
}
