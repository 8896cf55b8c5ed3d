// The back office's own secrets on disk: its TLS identity (made self-signed on first run; servers pin it) and the
// operator's bearer token for the report APIs. Both are created once, 0600, and read with a size cap afterwards.
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { PosternError, describeError } from '../common/errors.ts';
import { writeFileAtomic, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE } from '../common/files.ts';
import { createSelfSignedIdentity, certificateFingerprint } from '../common/self-signed-cert.ts';
import type { Clock } from '../common/clock.ts';

export const TLS_COMMON_NAME = 'postern-backoffice';
export const MAX_PEM_FILE_BYTES = 64 * 1024;
export const OPERATOR_TOKEN_BYTES = 32;
export const MAX_OPERATOR_TOKEN_FILE_BYTES = 1024;
/** Shortest operator token accepted from a file an operator wrote by hand. */
export const MIN_OPERATOR_TOKEN_LENGTH = 16;
const TOKEN_PATTERN = /^[\x21-\x7e]+$/;

export interface TlsIdentity {
  keyPem: string;
  certPem: string;
  fingerprint256: string;
  /** True when this call made it. */
  created: boolean;
}

function readCapped(path: string, max: number, what: string): string {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw new PosternError('IO', `cannot read the ${what} ${path}: ${describeError(e)}`, { cause: e });
  }
  if (size > max) throw new PosternError('TOO_LARGE', `the ${what} ${path} is over ${max} bytes`);
  return readFileSync(path, 'utf8');
}

/** The names a certificate made on first run holds: loopback always, plus the listen address and extras. */
export function certificateNames(
  listenAddress: string,
  extra: readonly string[],
): {
  dnsNames: string[];
  ipAddresses: string[];
} {
  const dns = new Set<string>(['localhost']);
  const ips = new Set<string>(['127.0.0.1', '::1']);
  const wildcard = listenAddress === '0.0.0.0' || listenAddress === '::';
  for (const n of wildcard ? extra : [listenAddress, ...extra]) (isIP(n) ? ips : dns).add(n);
  return { dnsNames: [...dns], ipAddresses: [...ips] };
}

/** Reads the TLS identity, or makes one when neither file exists. One file without the other is an error. */
export function ensureTlsIdentity(opts: {
  keyFile: string;
  certFile: string;
  names: { dnsNames: string[]; ipAddresses: string[] };
  clock: Clock;
}): TlsIdentity {
  const haveKey = existsSync(opts.keyFile);
  const haveCert = existsSync(opts.certFile);
  if (haveKey !== haveCert) {
    const missing = haveKey ? opts.certFile : opts.keyFile;
    throw new PosternError(
      'BAD_CONFIG',
      `${missing} is missing while its pair exists: restore it, or remove both to make a new identity (servers pinning the old certificate will then need the new one)`,
    );
  }
  if (!haveKey) {
    const id = createSelfSignedIdentity({
      commonName: TLS_COMMON_NAME,
      ...opts.names,
      now: opts.clock.now(),
    });
    writeFileAtomic(opts.keyFile, id.keyPem, PRIVATE_FILE_MODE);
    writeFileAtomic(opts.certFile, id.certPem, PUBLIC_FILE_MODE);
    return { ...id, created: true };
  }
  const keyPem = readCapped(opts.keyFile, MAX_PEM_FILE_BYTES, 'TLS key');
  const certPem = readCapped(opts.certFile, MAX_PEM_FILE_BYTES, 'TLS certificate');
  return { keyPem, certPem, fingerprint256: certificateFingerprint(certPem), created: false };
}

/** Reads the operator token, or writes a new random one (base64url, 0600) when the file does not exist. */
export function ensureOperatorToken(file: string): { token: string; created: boolean } {
  if (!existsSync(file)) {
    const token = randomBytes(OPERATOR_TOKEN_BYTES).toString('base64url');
    writeFileAtomic(file, token + '\n', PRIVATE_FILE_MODE);
    return { token, created: true };
  }
  const token = readCapped(file, MAX_OPERATOR_TOKEN_FILE_BYTES, 'operator token file').trim();
  if (token.length < MIN_OPERATOR_TOKEN_LENGTH || !TOKEN_PATTERN.test(token)) {
    throw new PosternError(
      'BAD_CONFIG',
      `${file} must hold one token of at least ${MIN_OPERATOR_TOKEN_LENGTH} printable characters without spaces`,
    );
  }
  return { token, created: false };
}

/** Constant-time comparison of a presented bearer token with the operator's (hashes first: lengths differ). */
export function operatorTokenMatches(presented: string, token: string): boolean {
  const h = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(h(presented), h(token));
}
