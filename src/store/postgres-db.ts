// SqlDb over PostgreSQL (a `pg` Pool): for operators who run the back office on several hosts. An optional
// schema (created if missing) keeps services or test runs apart in one database.
import pg from 'pg';
import { PosternError, describeError } from '../common/errors.ts';
import {
  BULK_INSERT_CHUNK_ROWS,
  assertNotInsideOwnTransaction,
  checkBulkInsert,
  checkSchemaName,
  runInsideTransaction,
  type BulkColumn,
  type BulkColumnType,
  type BulkRow,
  type OpenSqlDbOptions,
  type RunResult,
  type SqlDb,
  type SqlExecutor,
  type SqlParam,
  type SqlRow,
} from './sql-db.ts';

/** Connections one process keeps to the server at most. */
export const PG_POOL_MAX_CONNECTIONS = 10;
/** How long opening a connection may take before we give up and say so. */
export const PG_CONNECT_TIMEOUT_MS = 10_000;
/** Idle connections are closed after this long. */
const PG_IDLE_TIMEOUT_MS = 30_000;
const SQL_EXCERPT_CHARS = 160;
const DEFAULT_PG_PORT = '5432';

// SQLSTATE codes we explain (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const PG_UNIQUE_VIOLATION = '23505';
const PG_FOREIGN_KEY_VIOLATION = '23503';
const PG_INVALID_PASSWORD = '28P01';
const PG_INVALID_AUTHORIZATION = '28000';
const PG_UNKNOWN_DATABASE = '3D000';
const PG_CANNOT_CONNECT_NOW = '57P03';
const PG_DUPLICATE_SCHEMA = '42P06';

/** The parts of a PostgreSQL URL that may be shown to a person: never the password. */
export interface PgTarget {
  user: string;
  host: string;
  port: string;
  database: string;
}

export function isPostgresUrl(target: string): boolean {
  return /^postgres(ql)?:\/\//i.test(target);
}

export function parsePgTarget(url: string): PgTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // The URL may hold a password: do not echo it.
    throw new PosternError(
      'BAD_CONFIG',
      'the PostgreSQL URL is not valid; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE',
    );
  }
  return {
    user: decodeURIComponent(u.username) || process.env['PGUSER'] || process.env['USER'] || '',
    host: u.hostname || 'localhost',
    port: u.port || DEFAULT_PG_PORT,
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || decodeURIComponent(u.username),
  };
}

export function describePgTarget(t: PgTarget, schema?: string): string {
  return `postgres://${t.user}@${t.host}:${t.port}/${t.database}${schema ? ` (schema ${schema})` : ''}`;
}

function excerpt(sql: string): string {
  const flat = sql.replace(/\s+/g, ' ').trim();
  return flat.length > SQL_EXCERPT_CHARS ? `${flat.slice(0, SQL_EXCERPT_CHARS)}...` : flat;
}

function field(e: unknown, name: string): string | undefined {
  if (typeof e === 'object' && e !== null && name in e) {
    const v = (e as Record<string, unknown>)[name];
    return typeof v === 'string' ? v : undefined;
  }
  return undefined;
}

/** Error codes of `e` and, for Node's AggregateError of several addresses, of each inner error. */
function errorCodes(e: unknown): string[] {
  const codes: string[] = [];
  const own = field(e, 'code');
  if (own) codes.push(own);
  if (e instanceof AggregateError) for (const inner of e.errors) codes.push(...errorCodes(inner));
  return codes;
}

/** Turns a `pg` failure into a PosternError that says what to do about it, never showing the password. */
export function mapPgError(e: unknown, t: PgTarget, sql?: string): PosternError {
  if (e instanceof PosternError) return e;
  const codes = errorCodes(e);
  const msg = describeError(e);
  const at = `PostgreSQL at ${t.host}:${t.port}`;
  const where = sql ? ` (while running: ${excerpt(sql)})` : '';
  if (codes.includes(PG_UNIQUE_VIOLATION)) {
    const what = [field(e, 'table'), field(e, 'constraint')].filter(Boolean).join(', ');
    return new PosternError('ALREADY_EXISTS', `already exists: ${what || msg}`, { cause: e });
  }
  if (codes.includes(PG_FOREIGN_KEY_VIOLATION)) {
    return new PosternError(
      'STORE',
      `a row refers to one that does not exist, or is still referred to: ${msg}${where}`,
      { cause: e },
    );
  }
  if (codes.includes(PG_INVALID_PASSWORD)) {
    return new PosternError('STORE', `${at} refused the password for user '${t.user}'`, { cause: e });
  }
  if (codes.includes(PG_INVALID_AUTHORIZATION)) {
    return new PosternError(
      'STORE',
      `${at} does not let user '${t.user}' connect to database '${t.database}' (check the role and pg_hba.conf): ${msg}`,
      { cause: e },
    );
  }
  if (codes.includes(PG_UNKNOWN_DATABASE)) {
    return new PosternError('STORE', `database '${t.database}' does not exist on ${at}; create it first`, {
      cause: e,
    });
  }
  if (codes.includes(PG_CANNOT_CONNECT_NOW)) {
    return new PosternError('STORE', `${at} is starting up or shutting down; try again shortly`, {
      cause: e,
    });
  }
  if (codes.includes('ECONNREFUSED')) {
    return new PosternError(
      'STORE',
      `cannot connect to ${at}: connection refused (is PostgreSQL running and listening there?)`,
      { cause: e },
    );
  }
  if (codes.includes('ENOTFOUND') || codes.includes('EAI_AGAIN')) {
    return new PosternError('STORE', `cannot connect to ${at}: host '${t.host}' not found`, { cause: e });
  }
  if (codes.includes('ETIMEDOUT') || /timeout/i.test(msg)) {
    return new PosternError('STORE', `cannot connect to ${at}: no answer in time (${msg})`, { cause: e });
  }
  if (codes.includes('ECONNRESET') || /terminated/i.test(msg)) {
    return new PosternError('STORE', `the connection to ${at} was lost: ${msg}`, { cause: e });
  }
  return new PosternError('STORE', `PostgreSQL error on ${describePgTarget(t)}: ${msg}${where}`, {
    cause: e,
  });
}

function toPgParams(params: readonly SqlParam[] | undefined): unknown[] {
  if (!params) return [];
  return params.map((p, i) => {
    if (p === null || typeof p === 'string' || typeof p === 'number') return p;
    // Booleans are 0/1 on both dialects, so one schema (INTEGER columns) serves both.
    if (typeof p === 'boolean') return p ? 1 : 0;
    if (typeof p === 'bigint') return p.toString();
    if (p instanceof Uint8Array) return Buffer.from(p.buffer, p.byteOffset, p.byteLength);
    throw new PosternError('BAD_ARGUMENT', `SQL parameter $${i + 1} has an unsupported type (${typeof p})`);
  });
}

type Queryable = pg.Pool | pg.PoolClient;

async function pgQuery(
  q: Queryable,
  t: PgTarget,
  sql: string,
  params?: readonly SqlParam[],
): Promise<pg.QueryResult<SqlRow>> {
  try {
    return await q.query<SqlRow>(sql, toPgParams(params));
  } catch (e) {
    throw mapPgError(e, t, sql);
  }
}

const PG_ARRAY_TYPES: Record<BulkColumnType, string> = {
  text: 'text[]',
  integer: 'bigint[]',
  real: 'double precision[]',
};

/** One column of rows as a PostgreSQL array literal: '{"a","b\\"c",NULL}' or '{1,2,NULL}'. */
function pgArrayLiteral(rows: readonly BulkRow[], index: number, type: BulkColumnType): string {
  const parts = new Array<string>(rows.length);
  for (let r = 0; r < rows.length; r++) {
    const v = rows[r]![index];
    if (v === null || v === undefined) parts[r] = 'NULL';
    else if (typeof v === 'boolean') parts[r] = v ? '1' : '0';
    else if (type === 'text') parts[r] = `"${String(v).replace(/[\\"]/g, '\\$&')}"`;
    else parts[r] = String(v);
  }
  return `{${parts.join(',')}}`;
}

/** One INSERT ... SELECT FROM unnest(...) per chunk: the arrays travel as one parameter per column. */
async function pgInsertChunks(
  q: Queryable,
  t: PgTarget,
  table: string,
  columns: readonly BulkColumn[],
  rows: readonly BulkRow[],
): Promise<RunResult> {
  const sql =
    `INSERT INTO ${table} (${columns.map((c) => c.name).join(', ')}) ` +
    `SELECT * FROM unnest(${columns.map((c, i) => `$${i + 1}::${PG_ARRAY_TYPES[c.type]}`).join(', ')})`;
  let changes = 0;
  for (let start = 0; start < rows.length; start += BULK_INSERT_CHUNK_ROWS) {
    const chunk = rows.slice(start, start + BULK_INSERT_CHUNK_ROWS);
    const arrays = columns.map((c, i) => pgArrayLiteral(chunk, i, c.type));
    changes += (await pgQuery(q, t, sql, arrays)).rowCount ?? 0;
  }
  return { changes };
}

export class PostgresDb implements SqlDb {
  readonly dialect = 'postgres' as const;
  readonly description: string;
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly target: PgTarget,
    description: string,
  ) {
    this.description = description;
  }

  /** Connects (failing now, with a clear message, if it cannot) and creates `schema` if it is missing. */
  static async open(url: string, opts: OpenSqlDbOptions = {}): Promise<PostgresDb> {
    const target = parsePgTarget(url);
    const schema = opts.schema === undefined ? undefined : checkSchemaName(opts.schema);
    const pool = new pg.Pool({
      connectionString: url,
      max: PG_POOL_MAX_CONNECTIONS,
      connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
      idleTimeoutMillis: PG_IDLE_TIMEOUT_MS,
      // A startup parameter rather than a SET after connecting: it holds for every pooled connection.
      ...(schema ? { options: `-c search_path=${schema}` } : {}),
    });
    // An idle connection that the server drops emits 'error' on the pool; without a listener that would end
    // the process. The pool discards the connection and the next query opens a fresh one.
    pool.on('error', () => {});
    const db = new PostgresDb(pool, target, describePgTarget(target, schema));
    try {
      await pgQuery(pool, target, 'SELECT 1');
      if (schema) {
        try {
          await pool.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
        } catch (e) {
          // Two connections creating the same schema at once: the loser sees a duplicate, which is fine.
          const codes = errorCodes(e);
          if (!codes.includes(PG_UNIQUE_VIOLATION) && !codes.includes(PG_DUPLICATE_SCHEMA)) {
            throw mapPgError(e, target);
          }
        }
      }
    } catch (e) {
      await pool.end().catch(() => {});
      throw e;
    }
    return db;
  }

  private checkUsable(): void {
    if (this.closed) throw new PosternError('STORE', `the database ${this.description} is closed`);
    assertNotInsideOwnTransaction(this, this.description);
  }

  async query<T extends SqlRow = SqlRow>(sql: string, params?: readonly SqlParam[]): Promise<T[]> {
    this.checkUsable();
    return (await pgQuery(this.pool, this.target, sql, params)).rows as T[];
  }

  async run(sql: string, params?: readonly SqlParam[]): Promise<RunResult> {
    this.checkUsable();
    return { changes: (await pgQuery(this.pool, this.target, sql, params)).rowCount ?? 0 };
  }

  async exec(sql: string): Promise<void> {
    this.checkUsable();
    try {
      // Without parameters pg uses the simple protocol, which accepts several statements.
      await this.pool.query(sql);
    } catch (e) {
      throw mapPgError(e, this.target, sql);
    }
  }

  async insertMany(
    table: string,
    columns: readonly BulkColumn[],
    rows: readonly BulkRow[],
  ): Promise<RunResult> {
    this.checkUsable();
    checkBulkInsert(table, columns, rows);
    if (rows.length === 0) return { changes: 0 };
    if (rows.length <= BULK_INSERT_CHUNK_ROWS)
      return pgInsertChunks(this.pool, this.target, table, columns, rows);
    // Several statements: one transaction keeps them all or nothing.
    return this.transaction((tx) => tx.insertMany(table, columns, rows));
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    this.checkUsable();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (e) {
      throw mapPgError(e, this.target);
    }
    const tx = new PostgresTransaction(client, this.target);
    let broken: Error | undefined;
    try {
      await pgQuery(client, this.target, 'BEGIN');
      const result = await runInsideTransaction(this, () => fn(tx));
      tx.finish();
      await pgQuery(client, this.target, 'COMMIT');
      return result;
    } catch (e) {
      tx.finish();
      try {
        await client.query('ROLLBACK');
      } catch (rollbackError) {
        // A connection that cannot roll back is not given back to the pool.
        broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      }
      throw e;
    } finally {
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    assertNotInsideOwnTransaction(this, this.description);
    this.closed = true;
    await this.pool.end();
  }
}

/** The handle a PostgreSQL transaction gives its callback: every statement on the transaction's connection. */
class PostgresTransaction implements SqlExecutor {
  readonly dialect = 'postgres' as const;
  private active = true;

  constructor(
    private readonly client: pg.PoolClient,
    private readonly target: PgTarget,
  ) {}

  finish(): void {
    this.active = false;
  }

  private check(): void {
    if (!this.active) throw new PosternError('STORE', 'this transaction has already finished');
  }

  async query<T extends SqlRow = SqlRow>(sql: string, params?: readonly SqlParam[]): Promise<T[]> {
    this.check();
    return (await pgQuery(this.client, this.target, sql, params)).rows as T[];
  }

  async run(sql: string, params?: readonly SqlParam[]): Promise<RunResult> {
    this.check();
    return { changes: (await pgQuery(this.client, this.target, sql, params)).rowCount ?? 0 };
  }

  async insertMany(
    table: string,
    columns: readonly BulkColumn[],
    rows: readonly BulkRow[],
  ): Promise<RunResult> {
    this.check();
    checkBulkInsert(table, columns, rows);
    if (rows.length === 0) return { changes: 0 };
    // A failing statement aborts the whole PostgreSQL transaction, so no chunk can be committed without the rest.
    return pgInsertChunks(this.client, this.target, table, columns, rows);
  }

  async exec(sql: string): Promise<void> {
    this.check();
    try {
      await this.client.query(sql);
    } catch (e) {
      throw mapPgError(e, this.target, sql);
    }
  }
}
