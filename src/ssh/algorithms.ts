// Algorithm lists Postern offers in its SSH key exchange, chosen so negotiation always succeeds with the
// reference implementation (psiphon-tunnel-core's fork of golang.org/x/crypto/ssh) in both directions.
//
// The reference client randomises its KEXINIT (KEXPRNGSeed): each list is shuffled and truncated, possibly to
// a single entry, drawn from Go's defaults (kex: mlkem768x25519-sha256, curve25519-sha256(@libssh.org),
// ecdh-sha2-nistp256/384/521, diffie-hellman-group14-sha256, diffie-hellman-group16-sha512,
// diffie-hellman-group14-sha1; ciphers: aes128/256-gcm, chacha20-poly1305, aes128/192/256-ctr; MACs:
// hmac-sha2-256/512(-etm), hmac-sha1, hmac-sha1-96, without the -etm ones when NoEncryptThenMACHash is set;
// host keys: always including ssh-rsa). It then moves a non-SHA-1 entry it expects the server to have to the
// front, and refuses any SHA-1 outcome. Negotiation takes the client's first entry the server also offers, so
// our server offers every one of those, including the post-quantum hybrid that ssh2 lacks (hybrid-kex.ts).
//
// The reference server (psiphond) randomises its lists for the plain-SSH protocol too (PeerKEXPRNGSeed lets its
// own clients predict them), keeping at least one of its legacy algorithms of each kind; our client offers all
// of those, in our order of preference (post-quantum first, fast AEAD ciphers first, SHA-1 only as a last
// resort).

import type { AlgorithmsOffer } from 'ssh2/lib/protocol/Protocol.js';
import { PosternError } from '../common/errors.ts';
import { HYBRID_KEX, HYBRID_STAND_IN } from './hybrid-kex.ts';

const KEX_COMMON = [
  // HYBRID_STAND_IN must come right after HYBRID_KEX (see hybrid-kex.ts).
  HYBRID_KEX,
  HYBRID_STAND_IN,
  'curve25519-sha256@libssh.org',
  'ecdh-sha2-nistp256',
  'ecdh-sha2-nistp384',
  'ecdh-sha2-nistp521',
  'diffie-hellman-group14-sha256',
  'diffie-hellman-group16-sha512',
];
/** ssh2 implements group exchange only as a client; psiphond may offer it (with SHA-1 group 14 at worst). */
const CLIENT_KEX = [...KEX_COMMON, 'diffie-hellman-group-exchange-sha256', 'diffie-hellman-group14-sha1'];
/** Go's default list still has group14-sha1; a truncated reference client list may hold nothing else we do. */
const SERVER_KEX = [...KEX_COMMON, 'diffie-hellman-group14-sha1'];

/** AEAD first: AES-GCM runs on AES-NI in ssh2's native binding; ChaCha20-Poly1305 where AES is slow. */
const CIPHERS = [
  'aes128-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
  'aes256-gcm@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
];

/** Encrypt-then-MAC variants leave packet lengths in clear text (they matter only with the CTR ciphers). */
const ETM_MACS = ['hmac-sha2-256-etm@openssh.com', 'hmac-sha2-512-etm@openssh.com'];
const MACS = ['hmac-sha2-256', 'hmac-sha2-512', 'hmac-sha1', 'hmac-sha1-96'];

/** Psiphon's host keys are RSA; rsa-sha2-* first, ssh-rsa (SHA-1 signatures) because the reference client may
 * offer only that. */
export const RSA_HOST_KEY_ALGORITHMS = ['rsa-sha2-256', 'rsa-sha2-512', 'ssh-rsa'];

/**
 * Never compression: the reference client may offer zlib@openssh.com first without implementing it, so a server
 * offering it would negotiate something the client cannot speak.
 */
const COMPRESSION = ['none'];

/** A narrower choice of algorithms (for tests, or to pin what a deployment uses); each a subset of ours. */
export interface AlgorithmPreferences {
  kex?: string[];
  cipher?: string[];
  mac?: string[];
  serverHostKey?: string[];
}

export interface OfferOptions {
  /**
   * Whether to offer Encrypt-then-MAC MACs. The reference turns them off (NoEncryptThenMACHash) for every
   * protocol that runs over the OSSH obfuscator, where a clear-text length would help traffic analysis; plain
   * SSH keeps them so it looks like SSH.
   */
  encryptThenMac: boolean;
  preferences?: AlgorithmPreferences;
}

function narrow(what: string, ours: string[], wanted: string[] | undefined): string[] {
  if (wanted === undefined) return [...ours];
  if (wanted.length === 0) throw new PosternError('BAD_ARGUMENT', `empty list of SSH ${what} algorithms`);
  for (const name of wanted) {
    if (!ours.includes(name))
      throw new PosternError('BAD_ARGUMENT', `unsupported SSH ${what} algorithm: ${name}`);
  }
  return [...wanted];
}

function offer(kexList: string[], opts: OfferOptions): AlgorithmsOffer {
  const prefs = opts.preferences ?? {};
  const kex = narrow('key exchange', kexList, prefs.kex);
  // ssh2 runs the hybrid inside its curve25519-sha256 exchange, which must follow it (hybrid-kex.ts).
  const hybrid = kex.indexOf(HYBRID_KEX);
  if (hybrid !== -1 && kex[hybrid + 1] !== HYBRID_STAND_IN) {
    const standIn = kex.indexOf(HYBRID_STAND_IN);
    if (standIn !== -1) kex.splice(standIn, 1);
    kex.splice(kex.indexOf(HYBRID_KEX) + 1, 0, HYBRID_STAND_IN);
  }
  const cipher = narrow('cipher', CIPHERS, prefs.cipher);
  const mac = narrow('MAC', opts.encryptThenMac ? [...ETM_MACS, ...MACS] : MACS, prefs.mac);
  const serverHostKey = narrow('host key', RSA_HOST_KEY_ALGORITHMS, prefs.serverHostKey);
  const direction = () => ({ cipher: [...cipher], mac: [...mac], compress: [...COMPRESSION], lang: [] });
  return { kex, serverHostKey, cs: direction(), sc: direction() };
}

/** What our server offers (ssh2 appends kex-strict-s-v00@openssh.com). */
export function serverOffer(opts: OfferOptions): AlgorithmsOffer {
  return offer(SERVER_KEX, opts);
}

/** What our client offers (ssh2 appends ext-info-c and kex-strict-c-v00@openssh.com). */
export function clientOffer(opts: OfferOptions): AlgorithmsOffer {
  return offer(CLIENT_KEX, opts);
}
