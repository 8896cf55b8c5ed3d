// Picks the database for a target string: a postgres:// or postgresql:// URL means PostgreSQL, anything else
// is the path of a SQLite file (created, with its folder, if missing).
import { PosternError } from '../common/errors.ts';
import { PostgresDb, isPostgresUrl } from './postgres-db.ts';
import { SqliteDb } from './sqlite-db.ts';
import type { OpenSqlDbOptions, SqlDb } from './sql-db.ts';

export async function openSqlDb(target: string, opts: OpenSqlDbOptions = {}): Promise<SqlDb> {
  if (target.trim() === '') {
    throw new PosternError(
      'BAD_CONFIG',
      'no database given: expected a SQLite file path or a postgres:// URL',
    );
  }
  if (isPostgresUrl(target)) return PostgresDb.open(target, opts);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) {
    throw new PosternError(
      'BAD_CONFIG',
      `unsupported database URL scheme in '${target.split(':')[0]}://...': use a SQLite file path or a postgres:// URL`,
    );
  }
  return SqliteDb.open(target);
}
