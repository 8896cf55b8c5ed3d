// SSH identification strings ("SSH-2.0-softwareversion SP comments"): validated here because they come from
// configuration (ours) and go on the wire, where RFC 4253 section 4.2 limits them.

import { PosternError } from '../common/errors.ts';

export const SSH_VERSION_PREFIX = 'SSH-2.0-';
/** RFC 4253: at most 255 characters including the CR LF that ends the line. */
export const MAX_VERSION_STRING_LENGTH = 253;

/** Checks a full identification string and returns what follows "SSH-2.0-" (what ssh2 takes as `ident`). */
export function parseVersionString(version: string): string {
  if (!version.startsWith(SSH_VERSION_PREFIX)) {
    throw new PosternError(
      'BAD_CONFIG',
      `SSH version string must start with "${SSH_VERSION_PREFIX}": ${JSON.stringify(version)}`,
    );
  }
  if (version.length > MAX_VERSION_STRING_LENGTH) {
    throw new PosternError(
      'BAD_CONFIG',
      `SSH version string is longer than ${MAX_VERSION_STRING_LENGTH} characters`,
    );
  }
  const rest = version.slice(SSH_VERSION_PREFIX.length);
  if (rest.length === 0 || rest.startsWith(' ')) {
    throw new PosternError('BAD_CONFIG', 'SSH version string has no software version');
  }
  for (let i = 0; i < rest.length; i++) {
    const c = rest.charCodeAt(i);
    // Printable US-ASCII; a space separates the comments.
    if (c < 0x20 || c > 0x7e) {
      throw new PosternError('BAD_CONFIG', 'SSH version string may contain only printable ASCII characters');
    }
  }
  return rest;
}
