// The SSH password Psiphon clients send: JSON of protocol.SSHPasswordPayload
// {"SessionId","SshPassword","ClientCapabilities","SponsorId"} (empty fields omitted), or, from very old
// clients, the hex session ID followed directly by the password. Decoding follows the reference server's
// passwordCallback: Go's encoding/json (field names match case-insensitively, unknown fields are ignored, a
// wrong type is an error), then a 32-hex-digit session ID and an optional 16-hex-digit sponsor ID; the password
// itself is compared in constant time.

import { timingSafeEqual } from 'node:crypto';
import { PosternError } from '../common/errors.ts';
import { goJsonQuote } from '../protocol/index.ts';
import type { AuthResult } from './server-connection.ts';

/** protocol.PSIPHON_API_CLIENT_SESSION_ID_LENGTH bytes, hex encoded. */
export const SESSION_ID_HEX_LENGTH = 32;
/** server.SSH_PASSWORD_BYTE_LENGTH bytes, hex encoded: the legacy format's password length. */
export const LEGACY_SSH_PASSWORD_HEX_LENGTH = 64;
/** The reference's SPONSOR_ID_LENGTH (hex digits). */
export const SPONSOR_ID_HEX_LENGTH = 16;
/** protocol.CLIENT_CAPABILITY_SERVER_REQUESTS: the client handles psiphon-osl and psiphon-alert requests. */
export const CLIENT_CAPABILITY_SERVER_REQUESTS = 'server-requests';
/** Longest payload we decode (a real one is a few hundred bytes); this also bounds the capability list. */
export const MAX_PASSWORD_PAYLOAD_LENGTH = 4096;

export interface SshPasswordPayload {
  sessionId: string;
  sshPassword: string;
  clientCapabilities: string[];
  /** Empty when the client sent none. */
  sponsorId: string;
}

/** Encodes the payload exactly as Go's json.Marshal does for the reference client (field order, omitempty,
 * Go's string escaping). */
export function encodeSshPasswordPayload(p: SshPasswordPayload): string {
  const fields: string[] = [];
  if (p.sessionId) fields.push(`"SessionId":${goJsonQuote(p.sessionId)}`);
  if (p.sshPassword) fields.push(`"SshPassword":${goJsonQuote(p.sshPassword)}`);
  if (p.clientCapabilities.length > 0) {
    fields.push(`"ClientCapabilities":[${p.clientCapabilities.map(goJsonQuote).join(',')}]`);
  }
  if (p.sponsorId) fields.push(`"SponsorId":${goJsonQuote(p.sponsorId)}`);
  return `{${fields.join(',')}}`;
}

function isHexDigits(s: string): boolean {
  return /^[0-9a-fA-F]*$/.test(s);
}

const FIELDS = ['SessionId', 'SshPassword', 'ClientCapabilities', 'SponsorId'] as const;
type Field = (typeof FIELDS)[number];

/** Go's rule: an exact key match wins, otherwise a case-insensitive one. */
function fieldFor(key: string): Field | null {
  for (const f of FIELDS) if (f === key) return f;
  const lower = key.toLowerCase();
  for (const f of FIELDS) if (f.toLowerCase() === lower) return f;
  return null;
}

/** Decodes like Go's json.Unmarshal into the struct; null on any error (syntax or type), as Go returns one. */
function decodeJson(text: string): SshPasswordPayload | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  const out: SshPasswordPayload = { sessionId: '', sshPassword: '', clientCapabilities: [], sponsorId: '' };
  // JSON null decodes to an empty struct without error.
  if (value === null) return out;
  if (typeof value !== 'object' || Array.isArray(value)) return null;
  for (const [key, v] of Object.entries(value)) {
    const field = fieldFor(key);
    if (field === null || v === null) continue;
    if (field === 'ClientCapabilities') {
      if (!Array.isArray(v)) return null;
      const caps: string[] = [];
      for (const c of v) {
        if (c !== null && typeof c !== 'string') return null;
        caps.push(c ?? '');
      }
      out.clientCapabilities = caps;
      continue;
    }
    if (typeof v !== 'string') return null;
    if (field === 'SessionId') out.sessionId = v;
    else if (field === 'SshPassword') out.sshPassword = v;
    else out.sponsorId = v;
  }
  return out;
}

/** Decodes and checks a password payload from a client; throws AUTH_FAILED with the reason. */
export function parseSshPasswordPayload(password: string): SshPasswordPayload {
  if (password.length > MAX_PASSWORD_PAYLOAD_LENGTH) {
    throw new PosternError('AUTH_FAILED', 'SSH password payload is too long');
  }
  let payload = decodeJson(password);
  if (payload === null) {
    // The reference falls back to the legacy format on any JSON error.
    if (password.length !== SESSION_ID_HEX_LENGTH + LEGACY_SSH_PASSWORD_HEX_LENGTH) {
      throw new PosternError('AUTH_FAILED', 'SSH password payload is neither JSON nor the legacy format');
    }
    payload = {
      sessionId: password.slice(0, SESSION_ID_HEX_LENGTH),
      sshPassword: password.slice(SESSION_ID_HEX_LENGTH),
      clientCapabilities: [],
      sponsorId: '',
    };
  }
  if (payload.sessionId.length !== SESSION_ID_HEX_LENGTH || !isHexDigits(payload.sessionId)) {
    throw new PosternError('AUTH_FAILED', 'SSH password payload has an invalid session ID');
  }
  if (
    payload.sponsorId !== '' &&
    (payload.sponsorId.length !== SPONSOR_ID_HEX_LENGTH || !isHexDigits(payload.sponsorId))
  ) {
    throw new PosternError('AUTH_FAILED', 'SSH password payload has an invalid sponsor ID');
  }
  return payload;
}

/** Constant-time string comparison (the length is not secret). */
export function constantTimeEquals(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  if (x.length !== y.length) {
    timingSafeEqual(x, x);
    return false;
  }
  return timingSafeEqual(x, y);
}

/**
 * An `authenticate` for acceptSshConnection that checks a server's SSH user name and password the way psiphond
 * does and returns the decoded payload.
 */
export function psiphonPasswordAuthenticator(
  expectedUsername: string,
  expectedPassword: string,
): (username: string, password: string) => AuthResult<SshPasswordPayload> {
  return (username, password) => {
    let payload: SshPasswordPayload;
    try {
      payload = parseSshPasswordPayload(password);
    } catch (err) {
      return { ok: false, reason: err instanceof Error ? err.message : 'bad password payload' };
    }
    // Both comparisons always run, so timing tells nothing about which one failed.
    const userOk = constantTimeEquals(username, expectedUsername);
    const passwordOk = constantTimeEquals(payload.sshPassword, expectedPassword);
    if (!userOk || !passwordOk) return { ok: false, reason: 'wrong user name or password' };
    return { ok: true, value: payload };
  };
}
