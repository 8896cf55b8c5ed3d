// The logger's second line of defence: anything shaped like an IP address or an email address is replaced
// before a log line is written, whatever field it sits in.

const IPV4 =
  /(?<![\d.])(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}(?![\d.]*\d)/g;
// IPv6: at least two colons between hex groups (covers ::1, fe80::1, full forms, v4-mapped).
const IPV6 =
  /(?<![\w:.])(?:[0-9a-fA-F]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9a-fA-F]{1,4})?(?![\w:]|\.\d)/g;
const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+/g;

export const REDACTED_IP = '[ip]';
export const REDACTED_EMAIL = '[email]';

function isIpv6Candidate(s: string): boolean {
  // Reject things like "12:30:45" (times) — a real IPv6 has "::" or at least 8 groups or hex letters.
  if (s.includes('::')) return true;
  const groups = s.split(':');
  return groups.length >= 8 || /[a-fA-F]/.test(s);
}

/** True when `s` holds anything that redactString would replace as an IP address (for refusing, not rewriting). */
export function containsIpAddress(s: string): boolean {
  for (const m of s.matchAll(IPV6)) if (m[0].length >= 2 && isIpv6Candidate(m[0])) return true;
  return s.match(IPV4) !== null;
}

export function redactString(s: string): string {
  // IPv6 before IPv4, so that a v4-mapped address (::ffff:192.0.2.1) goes as one piece.
  let out = s.replace(EMAIL, REDACTED_EMAIL);
  out = out.replace(IPV6, (m) => (m.length >= 2 && isIpv6Candidate(m) ? REDACTED_IP : m));
  return out.replace(IPV4, REDACTED_IP);
}

/** Deeply redacts strings inside any JSON-like value; bounded depth so hostile objects cannot recurse forever. */
export function redactValue(v: unknown, depth = 0): unknown {
  if (typeof v === 'string') return redactString(v);
  if (depth > 8 || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map((x) => redactValue(x, depth + 1));
  if (v instanceof Error) {
    return {
      type: v.name,
      message: redactString(v.message),
      code: (v as { code?: unknown }).code,
      ...(v.stack ? { stack: redactString(v.stack) } : {}),
    };
  }
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = redactValue(x, depth + 1);
  return out;
}
