// SqlDb over one SQLite file (better-sqlite3): the embedded default. WAL mode so readers never wait for the
// writer, foreign keys enforced, and a busy timeout for another process holding the write lock.
//
// better-sqlite3 is synchronous while our interface is async, so a transaction stays open across awaits. Every
// connection to the same file in this process therefore shares one mutex: otherwise a second connection's
// write would block the event loop on the lock that the first connection's transaction, which needs the event
// loop to finish, is holding.
import Database from 'better-sqlite3';
import { mkdirSync, realpathSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { PosternError, describeError } from '../common/errors.ts';
import {
  AsyncMutex,
  assertNotInsideOwnTransaction,
  checkBulkInsert,
  runInsideTransaction,
  type BulkColumn,
  type BulkRow,
  type RunResult,
  type SqlDb,
  type SqlExecutor,
  type SqlParam,
  type SqlRow,
} from './sql-db.ts';

/** How long a statement waits for another process's write lock before failing. */
export const SQLITE_BUSY_TIMEOUT_MS = 5000;
/** Prepared statements kept per connection; the cache is cleared when it fills. */
const STATEMENT_CACHE_LIMIT = 256;
/** How much of a failing statement's text an error message quotes. */
const SQL_EXCERPT_CHARS = 160;

interface FileLock {
  mutex: AsyncMutex;
  refs: number;
}

/** One lock per open file in this process, keyed by its real path. */
const fileLocks = new Map<string, FileLock>();

type BoundParams = Record<string, string | number | bigint | Buffer | null>;

function bindParams(params: readonly SqlParam[] | undefined): BoundParams {
  const bound: BoundParams = {};
  if (!params) return bound;
  params.forEach((p, i) => {
    // SQLite reads `$1` as the named parameter "1", which better-sqlite3 binds from the key "1".
    const key = String(i + 1);
    if (p === null || typeof p === 'string' || typeof p === 'number' || typeof p === 'bigint') bound[key] = p;
    else if (typeof p === 'boolean') bound[key] = p ? 1 : 0;
    else if (p instanceof Uint8Array) bound[key] = Buffer.from(p.buffer, p.byteOffset, p.byteLength);
    else
      throw new PosternError('BAD_ARGUMENT', `SQL parameter $${key} has an unsupported type (${typeof p})`);
  });
  return bound;
}

function sqliteCode(e: unknown): string {
  if (typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string') return e.code;
  return '';
}

function excerpt(sql: string): string {
  const flat = sql.replace(/\s+/g, ' ').trim();
  return flat.length > SQL_EXCERPT_CHARS ? `${flat.slice(0, SQL_EXCERPT_CHARS)}...` : flat;
}

/** Turns a better-sqlite3 failure into a PosternError that says what to do about it. */
export function mapSqliteError(e: unknown, path: string, sql?: string): PosternError {
  if (e instanceof PosternError) return e;
  const code = sqliteCode(e);
  const msg = describeError(e);
  const where = sql ? ` (while running: ${excerpt(sql)})` : '';
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    return new PosternError('ALREADY_EXISTS', `already exists: ${msg}`, { cause: e });
  }
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') {
    return new PosternError(
      'STORE',
      `a row refers to one that does not exist, or is still referred to: ${msg}${where}`,
      { cause: e },
    );
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new PosternError(
      'STORE',
      `the SQLite database ${path} stayed locked by another connection for ${SQLITE_BUSY_TIMEOUT_MS} ms; ` +
        `is another Postern process writing to it?`,
      { cause: e },
    );
  }
  if (code === 'SQLITE_NOTADB') {
    return new PosternError('STORE', `${path} is not a SQLite database (or it is damaged)`, { cause: e });
  }
  if (code.startsWith('SQLITE_CORRUPT')) {
    return new PosternError('STORE', `the SQLite database ${path} is damaged: ${msg}`, { cause: e });
  }
  if (code.startsWith('SQLITE_CANTOPEN')) {
    return new PosternError(
      'STORE',
      `cannot open the SQLite database ${path}: check that it is a file (not a folder) in a writable folder`,
      { cause: e },
    );
  }
  if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_PERM') {
    return new PosternError('STORE', `the SQLite database ${path} is read-only: ${msg}`, { cause: e });
  }
  if (code === 'SQLITE_FULL') {
    return new PosternError('STORE', `the disk holding ${path} is full`, { cause: e });
  }
  return new PosternError('STORE', `SQLite error on ${path}: ${msg}${where}`, { cause: e });
}

export class SqliteDb implements SqlDb {
  readonly dialect = 'sqlite' as const;
  readonly description: string;
  private readonly raw: Database.Database;
  private readonly lockKey: string;
  private readonly lock: FileLock;
  private readonly statements = new Map<string, Database.Statement>();
  private closed = false;

  private constructor(raw: Database.Database, description: string, lockKey: string, lock: FileLock) {
    this.raw = raw;
    this.description = description;
    this.lockKey = lockKey;
    this.lock = lock;
  }

  /** Opens (creating it and its folder if missing) the SQLite file at `path`; ':memory:' for a private one. */
  static open(path: string): SqliteDb {
    const memory = path === ':memory:';
    const file = memory ? path : resolve(path);
    if (!memory) {
      try {
        mkdirSync(dirname(file), { recursive: true });
      } catch (e) {
        throw new PosternError('STORE', `cannot create the folder for ${file}: ${describeError(e)}`, {
          cause: e,
        });
      }
    }
    let raw: Database.Database | undefined;
    try {
      raw = new Database(file, { timeout: SQLITE_BUSY_TIMEOUT_MS });
      raw.pragma('journal_mode = WAL');
      raw.pragma('foreign_keys = ON');
      // FULL: a committed transaction survives a power cut, not only a crash of the process.
      raw.pragma('synchronous = FULL');
    } catch (e) {
      raw?.close();
      throw mapSqliteError(e, file);
    }
    const lockKey = memory ? `:memory:${Math.random()}` : realpathSync(file);
    let lock = fileLocks.get(lockKey);
    if (!lock) {
      lock = { mutex: new AsyncMutex(), refs: 0 };
      fileLocks.set(lockKey, lock);
    }
    lock.refs++;
    return new SqliteDb(raw, file, lockKey, lock);
  }

  private checkUsable(): void {
    if (this.closed) throw new PosternError('STORE', `the SQLite database ${this.description} is closed`);
    assertNotInsideOwnTransaction(this.lock, this.description);
  }

  private prepare(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.raw.prepare(sql);
      if (this.statements.size >= STATEMENT_CACHE_LIMIT) this.statements.clear();
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  /** Runs a statement now; the caller holds the file lock. */
  queryNow<T extends SqlRow>(sql: string, params?: readonly SqlParam[]): T[] {
    try {
      const stmt = this.prepare(sql);
      const bound = bindParams(params);
      if (stmt.reader) return stmt.all(bound) as T[];
      stmt.run(bound);
      return [];
    } catch (e) {
      throw mapSqliteError(e, this.description, sql);
    }
  }

  runNow(sql: string, params?: readonly SqlParam[]): RunResult {
    try {
      const info = this.prepare(sql).run(bindParams(params));
      return { changes: info.changes };
    } catch (e) {
      throw mapSqliteError(e, this.description, sql);
    }
  }

  /** Steps one prepared INSERT per row; the caller holds the file lock and has a transaction open. */
  insertManyNow(table: string, columns: readonly BulkColumn[], rows: readonly BulkRow[]): RunResult {
    const { hasBooleans } = checkBulkInsert(table, columns, rows);
    if (rows.length === 0) return { changes: 0 };
    const sql = `INSERT INTO ${table} (${columns.map((c) => c.name).join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`;
    let changes = 0;
    // A savepoint, so that a row failing half way leaves none of the earlier rows behind even when the caller
    // catches the error and goes on with its transaction.
    this.execNow('SAVEPOINT postern_insert_many');
    try {
      const stmt = this.prepare(sql);
      for (const row of rows) {
        const values = hasBooleans ? row.map((v) => (typeof v === 'boolean' ? (v ? 1 : 0) : v)) : row;
        changes += stmt.run(values).changes;
      }
    } catch (e) {
      try {
        this.raw.exec('ROLLBACK TO postern_insert_many; RELEASE postern_insert_many');
      } catch {
        // SQLite may already have rolled the whole transaction back; the caller's rollback finishes the job.
      }
      throw mapSqliteError(e, this.description, sql);
    }
    this.execNow('RELEASE postern_insert_many');
    return { changes };
  }

  execNow(sql: string): void {
    try {
      this.raw.exec(sql);
    } catch (e) {
      throw mapSqliteError(e, this.description, sql);
    }
  }

  async query<T extends SqlRow = SqlRow>(sql: string, params?: readonly SqlParam[]): Promise<T[]> {
    this.checkUsable();
    return this.lock.mutex.lock(() => this.queryNow<T>(sql, params));
  }

  async run(sql: string, params?: readonly SqlParam[]): Promise<RunResult> {
    this.checkUsable();
    return this.lock.mutex.lock(() => this.runNow(sql, params));
  }

  async exec(sql: string): Promise<void> {
    this.checkUsable();
    return this.lock.mutex.lock(() => this.execNow(sql));
  }

  async insertMany(
    table: string,
    columns: readonly BulkColumn[],
    rows: readonly BulkRow[],
  ): Promise<RunResult> {
    // Its own transaction: all rows or none, and one commit (one fsync) rather than one per row.
    return this.transaction(async () => this.insertManyNow(table, columns, rows));
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    this.checkUsable();
    return this.lock.mutex.lock(async () => {
      // IMMEDIATE takes the write lock now: a deferred transaction that reads and then writes can fail with
      // SQLITE_BUSY on the upgrade, which the busy timeout does not retry.
      this.execNow('BEGIN IMMEDIATE');
      const tx = new SqliteTransaction(this);
      try {
        const result = await runInsideTransaction(this.lock, () => fn(tx));
        tx.finish();
        this.execNow('COMMIT');
        return result;
      } catch (e) {
        tx.finish();
        if (this.raw.inTransaction) {
          try {
            this.raw.exec('ROLLBACK');
          } catch {
            // SQLite rolls back by itself on some errors; the original error is the one to report.
          }
        }
        throw e;
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    assertNotInsideOwnTransaction(this.lock, this.description);
    this.closed = true;
    await this.lock.mutex.lock(() => {
      this.statements.clear();
      this.raw.close();
    });
    this.lock.refs--;
    if (this.lock.refs === 0 && fileLocks.get(this.lockKey) === this.lock) fileLocks.delete(this.lockKey);
  }
}

/** The handle a SQLite transaction gives its callback: runs statements directly, the lock being held. */
class SqliteTransaction implements SqlExecutor {
  readonly dialect = 'sqlite' as const;
  private active = true;

  constructor(private readonly db: SqliteDb) {}

  finish(): void {
    this.active = false;
  }

  private check(): void {
    if (!this.active) throw new PosternError('STORE', 'this transaction has already finished');
  }

  async query<T extends SqlRow = SqlRow>(sql: string, params?: readonly SqlParam[]): Promise<T[]> {
    this.check();
    return this.db.queryNow<T>(sql, params);
  }

  async run(sql: string, params?: readonly SqlParam[]): Promise<RunResult> {
    this.check();
    return this.db.runNow(sql, params);
  }

  async exec(sql: string): Promise<void> {
    this.check();
    this.db.execNow(sql);
  }

  async insertMany(
    table: string,
    columns: readonly BulkColumn[],
    rows: readonly BulkRow[],
  ): Promise<RunResult> {
    this.check();
    return this.db.insertManyNow(table, columns, rows);
  }
}
