// The one SQL interface every service store is written against, so the same store code and the same tests run
// on SQLite (embedded default) and PostgreSQL. SQL uses PostgreSQL-style placeholders ($1, $2, ...) on both:
// SQLite reads `$1` natively as a named parameter, so no text is rewritten.
import { AsyncLocalStorage } from 'node:async_hooks';
import { PosternError } from '../common/errors.ts';

export type SqlDialect = 'sqlite' | 'postgres';

/** A value bound to a placeholder. Booleans are stored as 0/1 on both dialects; convert Dates to text first. */
export type SqlParam = string | number | bigint | boolean | null | Uint8Array;

/** A result row as the driver returns it; narrow it with the readers in row.ts. */
export type SqlRow = Record<string, unknown>;

export interface RunResult {
  /** Rows inserted, updated or deleted by the statement */
  changes: number;
}

/** What can run statements: the database itself, or the handle a transaction gives its callback. */
export interface SqlExecutor {
  readonly dialect: SqlDialect;
  /** Runs one statement and returns its rows ([] for a statement that returns none). */
  query<T extends SqlRow = SqlRow>(sql: string, params?: readonly SqlParam[]): Promise<T[]>;
  /** Runs one statement and says how many rows it changed. */
  run(sql: string, params?: readonly SqlParam[]): Promise<RunResult>;
  /** Runs several statements without parameters (schema changes in migrations). */
  exec(sql: string): Promise<void>;
  /**
   * Inserts many rows into one table, all or nothing, far faster than one `run` per row: SQLite steps one
   * prepared statement per row inside a transaction, PostgreSQL sends one INSERT ... SELECT FROM unnest(...)
   * of one array per column. Each row holds one value per column, in the order of `columns`.
   */
  insertMany(table: string, columns: readonly BulkColumn[], rows: readonly BulkRow[]): Promise<RunResult>;
}

/**
 * A column's type for insertMany: PostgreSQL needs it to type its arrays (integer is BIGINT there, a 64-bit
 * INTEGER in SQLite); on SQLite it is checked so that both dialects refuse the same rows.
 */
export type BulkColumnType = 'text' | 'integer' | 'real';

export interface BulkColumn {
  readonly name: string;
  readonly type: BulkColumnType;
}

/** One row for insertMany: booleans are stored as 0/1, as everywhere else. */
export type BulkRow = readonly (string | number | bigint | boolean | null)[];

/** Most rows PostgreSQL gets in one INSERT; longer lists are split, inside one transaction. */
export const BULK_INSERT_CHUNK_ROWS = 20_000;

/** The range of a 64-bit integer column (SQLite INTEGER, PostgreSQL BIGINT). */
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** Table and column names insertMany is willing to put in SQL. */
export const SQL_IDENTIFIER_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Checks insertMany's arguments; throws BAD_ARGUMENT naming the table, column and row that are wrong. Says
 * whether any value is a boolean (to be stored as 0/1), so that callers need not look at every value again.
 */
export function checkBulkInsert(
  table: string,
  columns: readonly BulkColumn[],
  rows: readonly BulkRow[],
): { hasBooleans: boolean } {
  if (!SQL_IDENTIFIER_PATTERN.test(table)) {
    throw new PosternError('BAD_ARGUMENT', `insertMany: '${table}' is not an allowed table name`);
  }
  if (columns.length === 0) throw new PosternError('BAD_ARGUMENT', `insertMany into ${table}: no columns`);
  const seen = new Set<string>();
  for (const c of columns) {
    if (!SQL_IDENTIFIER_PATTERN.test(c.name) || seen.has(c.name)) {
      throw new PosternError(
        'BAD_ARGUMENT',
        `insertMany into ${table}: bad or repeated column name '${c.name}'`,
      );
    }
    if (c.type !== 'text' && c.type !== 'integer' && c.type !== 'real') {
      throw new PosternError(
        'BAD_ARGUMENT',
        `insertMany into ${table}: column ${c.name} has an unknown type`,
      );
    }
    seen.add(c.name);
  }
  const n = columns.length;
  let hasBooleans = false;
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!;
    if (row.length !== n) {
      throw new PosternError(
        'BAD_ARGUMENT',
        `insertMany into ${table}: row ${r} has ${row.length} values for ${n} columns`,
      );
    }
    for (let i = 0; i < n; i++) {
      const v = row[i];
      if (v === null) continue;
      const t = typeof v;
      if (t === 'boolean') hasBooleans = true;
      const ok =
        columns[i]!.type === 'text'
          ? t === 'string'
          : columns[i]!.type === 'integer'
            ? (t === 'number' && Number.isSafeInteger(v)) ||
              (t === 'bigint' && (v as bigint) >= INT64_MIN && (v as bigint) <= INT64_MAX) ||
              t === 'boolean'
            : (t === 'number' && Number.isFinite(v)) || t === 'boolean';
      if (!ok) {
        throw new PosternError(
          'BAD_ARGUMENT',
          `insertMany into ${table}: row ${r}, column ${columns[i]!.name} holds a ${t} where ${columns[i]!.type} is expected`,
        );
      }
    }
  }
  return { hasBooleans };
}

export interface SqlDb extends SqlExecutor {
  /**
   * Runs `fn` in one transaction: committed when `fn` resolves, rolled back when it throws (the error is
   * rethrown). Use only `tx` inside `fn`: calling this database from inside its own transaction throws,
   * rather than deadlocking (SQLite) or silently running outside the transaction (PostgreSQL).
   */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** Closes the connection(s); later calls throw. Closing twice is harmless. */
  close(): Promise<void>;
  /** Where it points, without any password: a file path or postgres://user@host:port/db */
  readonly description: string;
}

export interface OpenSqlDbOptions {
  /**
   * PostgreSQL only: the schema to use (created if missing, then first on the search path). Tests use a random
   * one each so that runs do not collide. SQLite ignores it: one file per service already separates them.
   */
  schema?: string;
}

/** A schema name we are willing to put in SQL: lowercase identifier, at most PostgreSQL's 63 bytes. */
export const SCHEMA_NAME_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

export function checkSchemaName(schema: string): string {
  if (!SCHEMA_NAME_PATTERN.test(schema)) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `schema name '${schema}' is not allowed: use lowercase letters, digits and _ (at most 63), not starting with a digit`,
    );
  }
  return schema;
}

/**
 * Tracks which databases the current async context is inside a transaction of, so a call on the database
 * (instead of on `tx`) from inside the transaction fails clearly instead of waiting forever for itself.
 */
const activeTransactions = new AsyncLocalStorage<Set<object>>();

export async function runInsideTransaction<T>(owner: object, fn: () => Promise<T>): Promise<T> {
  const held = new Set(activeTransactions.getStore() ?? []);
  held.add(owner);
  try {
    return await activeTransactions.run(held, fn);
  } finally {
    // Work that `fn` started and left running may call the database once the transaction is over.
    held.delete(owner);
  }
}

export function assertNotInsideOwnTransaction(owner: object, description: string): void {
  if (activeTransactions.getStore()?.has(owner)) {
    throw new PosternError(
      'STORE',
      `the database ${description} was called from inside one of its own transactions; use the transaction's handle (tx) instead`,
    );
  }
}

/** Serializes async work: each `lock` call waits for the previous one to finish. */
export class AsyncMutex {
  private tail: Promise<void> = Promise.resolve();

  async lock<T>(fn: () => Promise<T> | T): Promise<T> {
    const previous = this.tail;
    let release: () => void = () => {};
    this.tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
