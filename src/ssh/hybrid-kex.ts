// The mlkem768x25519-sha256 key exchange (ML-KEM-768 + X25519, SHA-256; as in OpenSSH 9.9 and Go 1.24's
// crypto/ssh), which ssh2 1.17 does not implement.
//
// Why it is needed: the reference client randomises its key exchange list and then refuses any SHA-1 outcome.
// Its list is often reduced so that mlkem768x25519-sha256 is its only non-SHA-1 key exchange in front of
// diffie-hellman-group14-sha1; a server without ML-KEM then negotiates SHA-1 (or nothing) and the reference
// client hangs up. Measured with the reference's own KEXINIT code, that was 1.7% of plain-SSH and 2.7% of OSSH
// connection attempts against a server without it.
//
// How it plugs into ssh2: the exchange has the message flow of an ECDH exchange (client sends Q_C, server
// answers Q_S with its host key signature), so it runs inside ssh2's curve25519-sha256 exchange object with
// its key methods replaced. When a received KEXINIT would negotiate the hybrid, ssh2 is shown a copy in which
// the peer's entry reads "curve25519-sha256" (our offers list that name right after the hybrid, so ssh2
// negotiates it in the same place); the new exchange object is caught as Protocol assigns it, given the real
// KEXINIT for the exchange hash and the hybrid's methods: Q_C = ML-KEM-768 encapsulation key || X25519 key,
// Q_S = ML-KEM ciphertext || X25519 key, K = SHA-256(ML-KEM secret || X25519 secret) encoded as a string.

import { createHash, createPrivateKey, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';
import { generateEncodedKeyPair } from '../protocol/keys.ts';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import type Protocol from 'ssh2/lib/protocol/Protocol.js';
import { describeError } from '../common/errors.ts';
import { MSG_KEXINIT } from './wire.ts';

export const HYBRID_KEX = 'mlkem768x25519-sha256';
/** The ssh2 exchange the hybrid runs inside; our offers list it right after HYBRID_KEX. */
export const HYBRID_STAND_IN = 'curve25519-sha256';

/** byte SSH_MSG_KEXINIT, byte[16] cookie: the kex name-list follows. */
const KEX_LIST_OFFSET = 17;
const MLKEM768_ENCAPSULATION_KEY_LENGTH = 1184;
const MLKEM768_CIPHERTEXT_LENGTH = 1088;
const X25519_KEY_LENGTH = 32;
/** DER prefix of an X25519 SubjectPublicKeyInfo; the raw 32-byte key follows. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
/** The names in a kex list that are extensions, not key exchanges. */
const PSEUDO_KEX = /^(ext-info-[cs]|kex-strict-[cs]-v00@openssh\.com)$/;

function x25519PublicFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/**
 * A fresh X25519 pair: the private key imported from its encoding, so that no KeyObject of a generation job is
 * ever exported (see generateEncodedKeyPair), and the raw public value from the SPKI encoding.
 */
function x25519KeyPair(): { privateKey: KeyObject; rawPublic: Buffer } {
  const { publicKeyDer, privateKeyDer } = generateEncodedKeyPair('x25519');
  return {
    privateKey: createPrivateKey({ key: privateKeyDer, format: 'der', type: 'pkcs8' }),
    rawPublic: publicKeyDer.subarray(X25519_SPKI_PREFIX.length),
  };
}

function sharedKey(pqSecret: Uint8Array, classicalSecret: Buffer): Buffer {
  return createHash('sha256').update(pqSecret).update(classicalSecret).digest();
}

/** The hybrid's math, one instance per key exchange. Errors are returned, as ssh2's exchange objects do. */
export class HybridServerExchange {
  private reply: Buffer | null = null;

  /** Q_S; valid after computeSecret. */
  publicValue(): Buffer {
    if (!this.reply) throw new Error('hybrid key exchange: no reply computed yet');
    return this.reply;
  }

  computeSecret(clientValue: Buffer): Buffer | Error {
    try {
      if (clientValue.length !== MLKEM768_ENCAPSULATION_KEY_LENGTH + X25519_KEY_LENGTH) {
        throw new Error(`client value has ${clientValue.length} bytes`);
      }
      // encapsulate() checks the key (FIPS 203 section 7.2) and throws on a bad one.
      const { cipherText, sharedSecret } = ml_kem768.encapsulate(
        clientValue.subarray(0, MLKEM768_ENCAPSULATION_KEY_LENGTH),
      );
      const ours = x25519KeyPair();
      const classical = diffieHellman({
        privateKey: ours.privateKey,
        publicKey: x25519PublicFromRaw(clientValue.subarray(MLKEM768_ENCAPSULATION_KEY_LENGTH)),
      });
      this.reply = Buffer.concat([cipherText, ours.rawPublic]);
      return sharedKey(sharedSecret, classical);
    } catch (err) {
      return new Error(`hybrid key exchange failed: ${describeError(err)}`);
    }
  }
}

export class HybridClientExchange {
  private readonly kem = ml_kem768.keygen();
  private readonly x25519 = x25519KeyPair();

  /** Q_C. */
  publicValue(): Buffer {
    return Buffer.concat([this.kem.publicKey, this.x25519.rawPublic]);
  }

  computeSecret(serverValue: Buffer): Buffer | Error {
    try {
      if (serverValue.length !== MLKEM768_CIPHERTEXT_LENGTH + X25519_KEY_LENGTH) {
        throw new Error(`server value has ${serverValue.length} bytes`);
      }
      const pq = ml_kem768.decapsulate(
        serverValue.subarray(0, MLKEM768_CIPHERTEXT_LENGTH),
        this.kem.secretKey,
      );
      const classical = diffieHellman({
        privateKey: this.x25519.privateKey,
        publicKey: x25519PublicFromRaw(serverValue.subarray(MLKEM768_CIPHERTEXT_LENGTH)),
      });
      return sharedKey(pq, classical);
    } catch (err) {
      return new Error(`hybrid key exchange failed: ${describeError(err)}`);
    }
  }
}

/** Reads the kex name-list of a KEXINIT payload; null when malformed (ssh2 then refuses the packet itself). */
export function readKexList(payload: Buffer): { names: string[]; end: number } | null {
  if (payload.length < KEX_LIST_OFFSET + 4 || payload[0] !== MSG_KEXINIT) return null;
  const len = payload.readUInt32BE(KEX_LIST_OFFSET);
  const end = KEX_LIST_OFFSET + 4 + len;
  if (end > payload.length) return null;
  const text = payload.toString('latin1', KEX_LIST_OFFSET + 4, end);
  return { names: text.length ? text.split(',') : [], end };
}

/** The payload with the kex name-list replaced. */
function withKexList(payload: Buffer, names: string[], oldEnd: number): Buffer {
  const list = Buffer.from(names.join(','), 'latin1');
  const out = Buffer.allocUnsafe(KEX_LIST_OFFSET + 4 + list.length + (payload.length - oldEnd));
  payload.copy(out, 0, 0, KEX_LIST_OFFSET);
  out.writeUInt32BE(list.length, KEX_LIST_OFFSET);
  list.copy(out, KEX_LIST_OFFSET + 4);
  payload.copy(out, KEX_LIST_OFFSET + 4 + list.length, oldEnd);
  return out;
}

/** The key exchange RFC 4253 negotiation picks: the client's first that the server also lists. */
export function negotiateKex(clientList: string[], serverList: string[]): string | null {
  for (const name of clientList) {
    if (!PSEUDO_KEX.test(name) && serverList.includes(name)) return name;
  }
  return null;
}

/** The fields of ssh2's exchange object that the hybrid replaces or fixes. */
interface Ssh2Exchange {
  negotiated: { kex: string };
  _remoteKexinit: Buffer;
  generateKeys(): void;
  getPublicKey(): Buffer | undefined;
  convertPublicKey(key: Buffer): Buffer;
  computeSecret(other: Buffer): Buffer | Error;
}

function isSsh2Exchange(v: unknown): v is Ssh2Exchange {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  const negotiated = r['negotiated'];
  return (
    typeof negotiated === 'object' &&
    negotiated !== null &&
    typeof r['computeSecret'] === 'function' &&
    typeof r['getPublicKey'] === 'function' &&
    typeof r['convertPublicKey'] === 'function' &&
    typeof r['generateKeys'] === 'function'
  );
}

interface ProtocolInternals {
  _server: boolean;
  _offer: { lists: { kex: { array: string[] } } };
  _kex: unknown;
}

/**
 * Adds the hybrid key exchange to one Protocol instance. Route every received KEXINIT payload through
 * `onKexinit` (the first one arrives through the handshake decipher, later ones through normal dispatch).
 */
export class HybridKexSupport {
  /** How many key exchanges ran the hybrid. */
  used = 0;
  private readonly proto: Protocol & ProtocolInternals;
  /** The real KEXINIT while ssh2 processes the edited copy. */
  private pendingOriginal: Buffer | null = null;

  constructor(proto: Protocol) {
    this.proto = proto as Protocol & ProtocolInternals;
    let current: unknown = this.proto._kex;
    Object.defineProperty(proto, '_kex', {
      configurable: true,
      enumerable: true,
      get: () => current,
      set: (value: unknown) => {
        current = value;
        if (this.pendingOriginal) this.adopt(value, this.pendingOriginal);
      },
    });
  }

  /** Handles a received KEXINIT: passes it on unchanged, or edited when the hybrid is negotiated. */
  onKexinit(payload: Buffer, next: (payload: Buffer) => unknown): unknown {
    const remote = readKexList(payload);
    const local = this.proto._offer.lists.kex.array;
    if (!remote || !local.includes(HYBRID_KEX)) return next(payload);
    const server = this.proto._server;
    const chosen = server ? negotiateKex(remote.names, local) : negotiateKex(local, remote.names);
    if (chosen !== HYBRID_KEX) return next(payload);
    const edited = withKexList(
      payload,
      remote.names.map((n) => (n === HYBRID_KEX ? HYBRID_STAND_IN : n)),
      remote.end,
    );
    this.pendingOriginal = payload;
    try {
      return next(edited);
    } finally {
      this.pendingOriginal = null;
    }
  }

  /** Turns the stand-in exchange ssh2 just created into the hybrid. */
  private adopt(exchange: unknown, original: Buffer): void {
    if (!isSsh2Exchange(exchange) || exchange.negotiated.kex !== HYBRID_STAND_IN) {
      throw new Error('hybrid key exchange: unexpected ssh2 exchange object');
    }
    exchange._remoteKexinit = original; // the exchange hash covers the KEXINIT as it was sent
    exchange.negotiated.kex = HYBRID_KEX;
    exchange.generateKeys = () => {};
    exchange.convertPublicKey = (key) => key; // Q_C and Q_S are opaque strings, not integers
    if (this.proto._server) {
      const hybrid = new HybridServerExchange();
      exchange.computeSecret = (clientValue) => hybrid.computeSecret(clientValue);
      exchange.getPublicKey = () => hybrid.publicValue();
    } else {
      const hybrid = new HybridClientExchange();
      exchange.computeSecret = (serverValue) => hybrid.computeSecret(serverValue);
      exchange.getPublicKey = () => hybrid.publicValue();
    }
    this.used++;
  }

  /** Routes a handshake decipher's payloads (the first KEXINIT comes through it) via onKexinit. */
  watchDecipher(decipher: unknown): void {
    if (typeof decipher !== 'object' || decipher === null || decipher.constructor.name !== 'NullDecipher')
      return;
    const d = decipher as { _onPayload?: unknown };
    const original = d._onPayload;
    if (typeof original !== 'function') return;
    const next = (payload: Buffer): unknown => (original as (p: Buffer) => unknown).call(decipher, payload);
    d._onPayload = (payload: Buffer): unknown =>
      payload.length > 0 && payload[0] === MSG_KEXINIT ? this.onKexinit(payload, next) : next(payload);
  }
}
