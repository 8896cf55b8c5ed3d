// Typed errors with stable codes: every parser and service throws these, so callers (CLI, HTTP, tests)
// can branch on `code` and show `message` to a person.

export type ErrorCode =
  | 'BAD_HEX'
  | 'BAD_JSON'
  | 'BAD_SERVER_ENTRY'
  | 'BAD_SIGNATURE'
  | 'BAD_PACKAGE'
  | 'BAD_AUTHORIZATION'
  | 'BAD_KEY'
  | 'BAD_CONFIG'
  | 'BAD_ARGUMENT'
  | 'TOO_LARGE'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'STORE'
  | 'IO'
  | 'UPLOAD'
  | 'BAD_PREAMBLE'
  | 'REPLAYED_SEED'
  | 'BAD_FRAMING'
  | 'TIMEOUT'
  | 'SSH_PROTOCOL'
  | 'AUTH_FAILED'
  | 'HOST_KEY_MISMATCH'
  | 'REFUSED'
  | 'CLOSED'
  | 'DIAL_FAILED'
  | 'BAD_PROXY_REQUEST'
  | 'BAD_CBOR'
  | 'BAD_API_REQUEST'
  | 'BAD_API_RESPONSE'
  | 'BAD_EVENT'
  | 'BAD_BATCH'
  | 'OUT_OF_ORDER'
  | 'UNAUTHORIZED';

export class PosternError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PosternError';
    this.code = code;
  }
}

export function isPosternError(e: unknown, code?: ErrorCode): e is PosternError {
  return e instanceof PosternError && (code === undefined || e.code === code);
}

/** A short human-readable description of any thrown value, for error messages. */
export function describeError(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
