// Key material in the forms the reference implementation stores it:
// - Ed25519 (server-entry signing, authorization signing): base64 of the raw 32-byte public key and of Go's
//   64-byte private key (seed ‖ public key).
// - RSA (authenticated data packages, feedback encryption): base64 of DER, PKIX (SubjectPublicKeyInfo) for the
//   public key and PKCS#1 for the private key.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
} from 'node:crypto';
import { PosternError } from '../common/errors.ts';

export interface Ed25519KeyPair {
  /** base64 of the 32-byte public key */
  publicKey: string;
  /** base64 of the 64-byte private key (32-byte seed followed by the public key), as Go stores it */
  privateKey: string;
}

export interface RsaKeyPair {
  /** base64 of the DER SubjectPublicKeyInfo */
  publicKey: string;
  /** base64 of the DER PKCS#1 RSAPrivateKey */
  privateKey: string;
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Strict standard base64 decode: rejects other alphabets, whitespace and bad lengths. */
export function decodeBase64Strict(s: string, what: string): Buffer {
  if (typeof s !== 'string' || s.length % 4 !== 0 || !B64.test(s)) {
    throw new PosternError('BAD_KEY', `${what} is not standard base64`);
  }
  return Buffer.from(s, 'base64');
}

function b64url(b: Uint8Array): string {
  return Buffer.from(b).toString('base64url');
}

/**
 * Node 20 can deadlock when a key made by generateKeyPairSync is exported while the garbage collector frees the
 * generation job (the job's destructor takes the lock the export holds). Asking the generation itself for the
 * encoded keys never exports a KeyObject of that job, so key generation here always goes this way.
 */
export function generateEncodedKeyPair(
  type: 'ed25519' | 'x25519' | 'ec' | 'rsa',
  options: { namedCurve?: string; modulusLength?: number; publicExponent?: number } = {},
  privateType: 'pkcs8' | 'pkcs1' = 'pkcs8',
): { publicKeyDer: Buffer; privateKeyDer: Buffer } {
  const pair = generateKeyPairSync(type as 'ed25519', {
    ...options,
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: privateType as 'pkcs8', format: 'der' },
  });
  return { publicKeyDer: pair.publicKey, privateKeyDer: pair.privateKey };
}

export function generateEd25519KeyPair(): Ed25519KeyPair {
  const { publicKeyDer, privateKeyDer } = generateEncodedKeyPair('ed25519');
  // Both encodings end in the raw 32 bytes: the SPKI in the public key, the PKCS#8 in the seed.
  const pub = publicKeyDer.subarray(publicKeyDer.length - 32);
  const seed = privateKeyDer.subarray(privateKeyDer.length - 32);
  return { publicKey: pub.toString('base64'), privateKey: Buffer.concat([seed, pub]).toString('base64') };
}

export function ed25519PublicKeyObject(publicKeyB64: string): KeyObject {
  const raw = decodeBase64Strict(publicKeyB64, 'Ed25519 public key');
  if (raw.length !== 32)
    throw new PosternError('BAD_KEY', `Ed25519 public key must be 32 bytes, got ${raw.length}`);
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(raw) }, format: 'jwk' });
}

export function ed25519PrivateKeyObject(privateKeyB64: string): KeyObject {
  const raw = decodeBase64Strict(privateKeyB64, 'Ed25519 private key');
  if (raw.length !== 64)
    throw new PosternError('BAD_KEY', `Ed25519 private key must be 64 bytes, got ${raw.length}`);
  const key = createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: b64url(raw.subarray(0, 32)), x: b64url(raw.subarray(32)) },
    format: 'jwk',
  });
  // A Go private key carries its public half; a mismatch means a corrupted or hand-edited key file.
  const x = Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x as string, 'base64url');
  if (!x.equals(raw.subarray(32)))
    throw new PosternError('BAD_KEY', 'Ed25519 private key does not match its public half');
  return key;
}

export function ed25519Sign(privateKeyB64: string, message: Uint8Array): Buffer {
  return cryptoSign(null, message, ed25519PrivateKeyObject(privateKeyB64));
}

export function ed25519Verify(publicKeyB64: string, message: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  return cryptoVerify(null, message, ed25519PublicKeyObject(publicKeyB64), signature);
}

export function generateRsaKeyPair(bits = 2048): RsaKeyPair {
  const { publicKeyDer, privateKeyDer } = generateEncodedKeyPair(
    'rsa',
    { modulusLength: bits, publicExponent: 0x10001 },
    'pkcs1',
  );
  return { publicKey: publicKeyDer.toString('base64'), privateKey: privateKeyDer.toString('base64') };
}

export function rsaPublicKeyObject(publicKeyB64: string): KeyObject {
  const der = decodeBase64Strict(publicKeyB64, 'RSA public key');
  try {
    const k = createPublicKey({ key: der, format: 'der', type: 'spki' });
    if (k.asymmetricKeyType !== 'rsa') throw new Error(`not an RSA key (${k.asymmetricKeyType})`);
    return k;
  } catch (e) {
    throw new PosternError(
      'BAD_KEY',
      `RSA public key is not a DER SubjectPublicKeyInfo: ${(e as Error).message}`,
    );
  }
}

export function rsaPrivateKeyObject(privateKeyB64: string): KeyObject {
  const der = decodeBase64Strict(privateKeyB64, 'RSA private key');
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs1' });
  } catch (e) {
    throw new PosternError('BAD_KEY', `RSA private key is not a DER PKCS#1 key: ${(e as Error).message}`);
  }
}

/** A new RSA SSH host key as psiphond makes one: PEM PKCS#1 private key and the SSH wire blob of its public half. */
export function generateSshHostKey(bits = 2048): { privateKeyPem: string; publicKeyBlobB64: string } {
  const { publicKeyDer, privateKeyDer } = generateEncodedKeyPair(
    'rsa',
    { modulusLength: bits, publicExponent: 0x10001 },
    'pkcs1',
  );
  // Keys imported from their encodings are not tied to a generation job (see generateEncodedKeyPair).
  const privateKey = createPrivateKey({ key: privateKeyDer, format: 'der', type: 'pkcs1' });
  const publicKey = createPublicKey({ key: publicKeyDer, format: 'der', type: 'spki' });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    publicKeyBlobB64: sshRsaPublicKeyBlob(publicKey).toString('base64'),
  };
}

function sshString(b: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

function sshMpint(unsignedBigEndian: Buffer): Buffer {
  let i = 0;
  while (i < unsignedBigEndian.length - 1 && unsignedBigEndian[i] === 0) i++;
  let v = unsignedBigEndian.subarray(i);
  if ((v[0] ?? 0) & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return sshString(v);
}

/** RFC 4253 "ssh-rsa" public key blob: string "ssh-rsa", mpint e, mpint n. */
export function sshRsaPublicKeyBlob(publicKey: KeyObject): Buffer {
  const jwk = publicKey.export({ format: 'jwk' });
  if (jwk.kty !== 'RSA' || !jwk.n || !jwk.e) throw new PosternError('BAD_KEY', 'not an RSA public key');
  return Buffer.concat([
    sshString(Buffer.from('ssh-rsa')),
    sshMpint(Buffer.from(jwk.e, 'base64url')),
    sshMpint(Buffer.from(jwk.n, 'base64url')),
  ]);
}
