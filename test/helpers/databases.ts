// The database backends every store test runs against: SQLite on a real file in a temporary folder, and
// PostgreSQL in a fresh random schema when POSTERN_TEST_PG holds a URL (`.ci/pg-setup.sh` prints one).
// Use it as:
//   for (const backend of DATABASE_BACKENDS) {
//     describe(`... (${backend.name})`, { skip: backend.skip }, () => {
//       it('...', () => withTestDatabase(backend, async (tdb) => { const db = await tdb.open(); ... }));
//     });
//   }
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openSqlDb, type OpenSqlDbOptions, type SqlDb, type SqlDialect } from '../../src/store/index.ts';

export const PG_URL_ENV = 'POSTERN_TEST_PG';

/** One empty database for one test; every open() is a new connection to that same database. */
export interface TestDatabase {
  readonly name: SqlDialect;
  /** What openSqlDb (or openOpsStore) takes to reach this database */
  readonly target: string;
  readonly options: OpenSqlDbOptions;
  open(): Promise<SqlDb>;
  /** Closes every connection opened here and deletes the database (folder or schema). */
  cleanup(): Promise<void>;
}

export interface DatabaseBackend {
  readonly name: SqlDialect;
  /** A reason to skip this backend's tests, or false to run them */
  readonly skip: string | false;
  create(): Promise<TestDatabase>;
}

function tracked(
  name: SqlDialect,
  target: string,
  options: OpenSqlDbOptions,
  drop: () => Promise<void>,
): TestDatabase {
  const opened: SqlDb[] = [];
  return {
    name,
    target,
    options,
    async open() {
      const db = await openSqlDb(target, options);
      opened.push(db);
      return db;
    },
    async cleanup() {
      for (const db of opened) await db.close().catch(() => {});
      await drop();
    },
  };
}

const sqliteBackend: DatabaseBackend = {
  name: 'sqlite',
  skip: false,
  async create() {
    const dir = mkdtempSync(join(tmpdir(), 'postern-store-'));
    return tracked('sqlite', join(dir, 'data', 'test.sqlite'), {}, async () => {
      rmSync(dir, { recursive: true, force: true });
    });
  },
};

const pgUrl = process.env[PG_URL_ENV];

const postgresBackend: DatabaseBackend = {
  name: 'postgres',
  skip: pgUrl
    ? false
    : `${PG_URL_ENV} is not set (run .ci/pg-setup.sh and export its URL to test PostgreSQL)`,
  async create() {
    if (!pgUrl) throw new Error(`${PG_URL_ENV} is not set`);
    const schema = `test_${randomBytes(6).toString('hex')}`;
    return tracked('postgres', pgUrl, { schema }, async () => {
      const admin = await openSqlDb(pgUrl);
      try {
        await admin.exec(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await admin.close();
      }
    });
  },
};

export const DATABASE_BACKENDS: readonly DatabaseBackend[] = [sqliteBackend, postgresBackend];

/** Runs `fn` with a fresh database of `backend`, deleted afterwards whether `fn` passes or not. */
export async function withTestDatabase<T>(
  backend: DatabaseBackend,
  fn: (tdb: TestDatabase) => Promise<T>,
): Promise<T> {
  const tdb = await backend.create();
  try {
    return await fn(tdb);
  } finally {
    await tdb.cleanup();
  }
}
