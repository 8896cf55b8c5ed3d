// Database access for every service: one SqlDb interface over SQLite (embedded default) and PostgreSQL,
// per-service migrations, and the stores built on them.
export type {
  BulkColumn,
  BulkColumnType,
  BulkRow,
  OpenSqlDbOptions,
  RunResult,
  SqlDb,
  SqlDialect,
  SqlExecutor,
  SqlParam,
  SqlRow,
} from './sql-db.ts';
export { BULK_INSERT_CHUNK_ROWS, SCHEMA_NAME_PATTERN, SQL_IDENTIFIER_PATTERN } from './sql-db.ts';
export { openSqlDb } from './open-sql-db.ts';
export { SQLITE_BUSY_TIMEOUT_MS } from './sqlite-db.ts';
export { PG_CONNECT_TIMEOUT_MS, PG_POOL_MAX_CONNECTIONS, isPostgresUrl } from './postgres-db.ts';
export { migrate, schemaVersion, SCHEMA_MIGRATIONS_TABLE } from './migrations.ts';
export type { Migration, MigrateResult } from './migrations.ts';
export { rowBoolean, rowDate, rowInteger, rowJson, rowString, toSqlTimestamp } from './row.ts';
export type * from './ops-store.ts';
export { SqlOpsStore, createOpsStore, openOpsStore, OPS_MIGRATIONS, OPS_SERVICE } from './sql-ops-store.ts';
