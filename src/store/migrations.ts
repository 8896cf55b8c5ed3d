// Per-service schema migrations. Each service (ops, stats, psicash, ...) numbers its own migrations 1, 2, 3...;
// `schema_migrations` records which are applied, so several services can share one PostgreSQL database. Each
// migration runs in its own transaction (DDL is transactional on both dialects), concurrent migrators wait for
// each other, and a database that a newer Postern has migrated further is refused rather than misread.
import { PosternError } from '../common/errors.ts';
import { rowInteger, toSqlTimestamp } from './row.ts';
import type { SqlDb, SqlDialect, SqlExecutor } from './sql-db.ts';

export interface Migration {
  /** 1 for the first migration of a service, then 2, 3, ... with no gaps */
  version: number;
  /** What it changes, for people reading the code or the error messages */
  description: string;
  /**
   * SQL that runs on both dialects (several statements allowed, no parameters), SQL per dialect, or a
   * function for anything else. It runs inside the migration's transaction.
   */
  up: string | Record<SqlDialect, string> | ((tx: SqlExecutor) => Promise<void>);
}

export interface MigrateResult {
  service: string;
  /** The version the database was at before */
  from: number;
  /** The version it is at now */
  to: number;
  /** The versions this call applied (empty when it was already up to date) */
  applied: number[];
}

export const SCHEMA_MIGRATIONS_TABLE = 'schema_migrations';
const SERVICE_NAME_PATTERN = /^[a-z][a-z0-9_-]{0,63}$/;

const CREATE_SCHEMA_MIGRATIONS = `
CREATE TABLE IF NOT EXISTS ${SCHEMA_MIGRATIONS_TABLE} (
  service TEXT NOT NULL,
  version INTEGER NOT NULL,
  applied_at TEXT NOT NULL,
  PRIMARY KEY (service, version)
)`;

/**
 * Makes concurrent migrators wait for each other. SQLite transactions here already hold the write lock
 * (BEGIN IMMEDIATE); PostgreSQL takes an advisory lock for the current schema until the transaction ends.
 */
async function lockMigrations(tx: SqlExecutor): Promise<void> {
  if (tx.dialect === 'postgres') {
    await tx.query(
      `SELECT pg_advisory_xact_lock(hashtext('postern.schema_migrations:' || coalesce(current_schema(), '')))`,
    );
  }
}

function checkMigrations(service: string, migrations: readonly Migration[]): void {
  if (!SERVICE_NAME_PATTERN.test(service)) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `service name '${service}' must be lowercase letters, digits, - or _`,
    );
  }
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) {
      throw new PosternError(
        'BAD_ARGUMENT',
        `migrations of '${service}' must be numbered 1, 2, 3... in order; position ${i + 1} has version ${m.version}`,
      );
    }
    if (m.description.trim() === '') {
      throw new PosternError('BAD_ARGUMENT', `migration ${m.version} of '${service}' has no description`);
    }
  });
}

/** The highest migration version applied for `service`, 0 when none (or no schema_migrations table yet). */
export async function schemaVersion(db: SqlExecutor, service: string): Promise<number> {
  const rows = await db.query(
    `SELECT COALESCE(MAX(version), 0) AS version FROM ${SCHEMA_MIGRATIONS_TABLE} WHERE service = $1`,
    [service],
  );
  const row = rows[0];
  return row ? rowInteger(row, 'version') : 0;
}

function tooNew(service: string, dbVersion: number, known: number, description: string): PosternError {
  return new PosternError(
    'STORE',
    `the '${service}' data in ${description} is at schema version ${dbVersion}, but this version of Postern ` +
      `knows only up to ${known}: a newer Postern has used this database. Run that newer Postern, or point ` +
      `this one at another database.`,
  );
}

async function applyUp(tx: SqlExecutor, m: Migration): Promise<void> {
  if (typeof m.up === 'function') await m.up(tx);
  else if (typeof m.up === 'string') await tx.exec(m.up);
  else await tx.exec(m.up[tx.dialect]);
}

/** Brings `service`'s tables up to the last of `migrations`; safe to call on every start. */
export async function migrate(
  db: SqlDb,
  service: string,
  migrations: readonly Migration[],
): Promise<MigrateResult> {
  checkMigrations(service, migrations);
  const known = migrations.length;
  await db.transaction(async (tx) => {
    await lockMigrations(tx);
    await tx.exec(CREATE_SCHEMA_MIGRATIONS);
  });
  const from = await schemaVersion(db, service);
  if (from > known) throw tooNew(service, from, known, db.description);

  const applied: number[] = [];
  for (const m of migrations) {
    if (m.version <= from) continue;
    await db.transaction(async (tx) => {
      await lockMigrations(tx);
      // Another process may have applied it while we waited for the lock.
      const current = await schemaVersion(tx, service);
      if (current > known) throw tooNew(service, current, known, db.description);
      if (current >= m.version) return;
      try {
        await applyUp(tx, m);
      } catch (e) {
        const reason = e instanceof Error ? e.message : String(e);
        throw new PosternError(
          'STORE',
          `migration ${m.version} of '${service}' (${m.description}) failed and was rolled back: ${reason}`,
          { cause: e },
        );
      }
      await tx.run(
        `INSERT INTO ${SCHEMA_MIGRATIONS_TABLE} (service, version, applied_at) VALUES ($1, $2, $3)`,
        [service, m.version, toSqlTimestamp(new Date())],
      );
      applied.push(m.version);
    });
  }
  return { service, from, to: Math.max(from, known), applied };
}
