// Readers that narrow a result row's columns to the types a store expects. The drivers differ (PostgreSQL
// returns BIGINT and COUNT(*) as strings), and a damaged row must become a STORE error, not a bad object.
import { PosternError } from '../common/errors.ts';
import type { SqlRow } from './sql-db.ts';

function damaged(column: string, expected: string, value: unknown): PosternError {
  const shown = value === null ? 'null' : typeof value;
  return new PosternError('STORE', `column '${column}' holds ${shown} where ${expected} was expected`);
}

export function rowString(row: SqlRow, column: string): string {
  const v = row[column];
  if (typeof v !== 'string') throw damaged(column, 'text', v);
  return v;
}

/** An integer column; accepts the decimal strings PostgreSQL gives for BIGINT and COUNT(*). */
export function rowInteger(row: SqlRow, column: string): number {
  const v = row[column];
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'bigint') n = Number(v);
  else if (typeof v === 'string' && /^-?\d+$/.test(v)) n = Number(v);
  else throw damaged(column, 'an integer', v);
  if (!Number.isSafeInteger(n)) throw damaged(column, 'a safe integer', v);
  return n;
}

/** A 0/1 column (both dialects store booleans as integers). */
export function rowBoolean(row: SqlRow, column: string): boolean {
  const n = rowInteger(row, column);
  if (n !== 0 && n !== 1) throw damaged(column, '0 or 1', row[column]);
  return n === 1;
}

/** A timestamp column stored as ISO-8601 text (UTC, millisecond precision). */
export function rowDate(row: SqlRow, column: string): Date {
  const s = rowString(row, column);
  const d = new Date(s);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(s) || Number.isNaN(d.getTime()))
    throw damaged(column, 'an ISO timestamp', s);
  return d;
}

/** How every store writes a timestamp: ISO-8601 UTC text, which sorts in time order on both dialects. */
export function toSqlTimestamp(d: Date): string {
  if (Number.isNaN(d.getTime())) throw new PosternError('BAD_ARGUMENT', 'invalid date');
  return d.toISOString();
}

/** A JSON text column, parsed; the caller validates the shape. */
export function rowJson(row: SqlRow, column: string): unknown {
  const s = rowString(row, column);
  try {
    return JSON.parse(s);
  } catch {
    throw damaged(column, 'JSON text', s);
  }
}
