// Identifiers the reference validates as hex: sponsor and propagation channel IDs are 16 upper-case hex digits.
import { randomBytes } from 'node:crypto';
import { PosternError } from '../common/errors.ts';

export const ID_PATTERN = /^[0-9A-F]{16}$/;

export function newId(): string {
  return randomBytes(8).toString('hex').toUpperCase();
}

/** Normalises an operator-given ID (case-insensitive) or throws BAD_ARGUMENT saying what an ID looks like. */
export function parseId(value: string, what: string): string {
  const id = value.trim().toUpperCase();
  if (!ID_PATTERN.test(id)) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `${what} "${value}" is not valid: it must be 16 hex digits, e.g. ${newId()} (Psiphon clients and servers check this)`,
    );
  }
  return id;
}
